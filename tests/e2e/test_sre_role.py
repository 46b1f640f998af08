"""The SRE role reads nothing (issue 21): the authorisation matrix of the `sre` organisation.

The people who keep juki running (the seed's 24-hour monitoring) call the gateway with the `sre`
certificate and an operator of role `sre`. The catalogue grants them `SRE-MONITORING`: the operation log's
status (counts by method, decision and status; the newest checkpoint), nothing that holds personal data.
Proven through the gateway, method by method: every method that answers a record of the files or of the
operation log (`contracts.RECORD_METHODS`), and every other method the catalogue walk knows how to call
(cases, 12-5 reports, review items, operators, the log's entries: each names persons or acts on them), is
refused PERMISSION_DENIED, whether the SRE declares its own purpose or one that grants the method to
another organisation; and what the SRE may call answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2, message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

from juki.gateway.v1 import operation_log_pb2, operation_log_pb2_grpc
from juki_services.gateway import contracts
from juki_services.gateway.app import AGENCY, AGENCY_METHODS_EXPOSED
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from tests.conftest import RunningSuite, eventually
from tests.e2e.test_catalogue_walk import CATALOGUE, RECORD_REQUESTS, WORKFLOW_METHODS

SRE, PURPOSE = "sre", "SRE-MONITORING"
STATUS = "juki.gateway.v1.OperationLogService/GetOperationLogStatus"
REFUSED_METHODS = sorted((contracts.RECORD_METHODS | RECORD_REQUESTS.keys() | WORKFLOW_METHODS) - {STATUS})
NOT_EXPOSED = sorted({m for m in REFUSED_METHODS if m.startswith(f"{AGENCY.full_name}/")
                      and m.split("/")[1] not in AGENCY_METHODS_EXPOSED})
"""Record-bearing methods the gateway serves to nobody (the agency's list of received changes is for the
registers' own certificates): UNIMPLEMENTED to every caller, the SRE included, and logged as denied."""
EXPOSED_REFUSED = [m for m in REFUSED_METHODS if m not in NOT_EXPOSED]


def _purposes_granting(method: str) -> list[str]:
    """The SRE's own purpose, and every purpose of the catalogue that grants `method` to someone else."""
    return [PURPOSE, *sorted(code for code, p in CATALOGUE.purposes.items() if method in p.methods)]


def test_the_catalogue_grants_the_sre_only_the_operation_log_status() -> None:
    granted = {m for p in CATALOGUE.purposes.values() if SRE in p.recipients for m in p.methods}
    assert granted == {STATUS}
    assert not contracts.RECORD_METHODS & granted
    assert CATALOGUE.purposes[PURPOSE].fields == ()


async def _no_messages() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - an async generator that yields nothing


async def _call_as_sre(suite: RunningSuite, method: str, purpose: str) -> grpc.StatusCode:
    """The call's status; a call turned away by the organisation's rate limit (checked before the purpose:
    the matrix makes hundreds of calls) is made again once the limit lets it in."""
    for _ in range(60):
        code = await _call_once(suite, method, purpose)
        if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            return code
        await asyncio.sleep(0.5)
    return code


async def _call_once(suite: RunningSuite, method: str, purpose: str) -> grpc.StatusCode:
    descriptor = contracts.METHODS[method]
    metadata = purpose_metadata(purpose, case_reference=f"disclosureCases/{uuid.uuid4()}",
                                request_id=str(uuid.uuid4()), credential=suite.credential(SRE))
    async with secure_channel(suite.gateway, suite.client_tls(SRE)) as channel:
        try:
            if descriptor.client_streaming:
                stream = channel.stream_stream(f"/{method}", request_serializer=bytes,
                                               response_deserializer=bytes)
                [_ async for _ in stream(_no_messages(), metadata=metadata, timeout=10)]
            else:
                unary = channel.unary_unary(f"/{method}", request_serializer=message.Message.SerializeToString,
                                            response_deserializer=bytes)
                await unary(GetMessageClass(descriptor.input_type)(), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _status(suite: RunningSuite, window: dt.timedelta | None = None) -> operation_log_pb2.OperationLogStatus:
    """The SRE's status call; like `_call_as_sre`, made again while the organisation's rate limit (spent by
    the matrix's hundreds of calls) turns it away."""
    request = operation_log_pb2.GetOperationLogStatusRequest()
    if window is not None:
        request.window.CopyFrom(duration_pb2.Duration(seconds=int(window.total_seconds())))
    metadata = purpose_metadata(PURPOSE, credential=suite.credential(SRE))
    async with secure_channel(suite.gateway, suite.client_tls(SRE)) as channel:
        stub = operation_log_pb2_grpc.OperationLogServiceStub(channel)
        for _ in range(60):
            try:
                answer: operation_log_pb2.OperationLogStatus = await stub.GetOperationLogStatus(
                    request, metadata=metadata, timeout=10)
                return answer
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
            await asyncio.sleep(0.5)
    raise AssertionError("the SRE's status call was rate-limited for 30 s")


@pytest.fixture(scope="module")
async def sre_known(suite: RunningSuite) -> None:
    """The SRE's demo operator is in the registry the gateway reads (refreshed every second)."""
    async def answered() -> bool:
        try:
            await _status(suite)
        except grpc.aio.AioRpcError:
            return False
        return True

    await eventually(answered, timeout=15)


@pytest.mark.parametrize("method", EXPOSED_REFUSED)
async def test_every_record_bearing_method_refuses_the_sre(suite: RunningSuite, sre_known: None, method: str) -> None:
    for purpose in _purposes_granting(method):
        code = await _call_as_sre(suite, method, purpose)
        assert code == grpc.StatusCode.PERMISSION_DENIED, f"{method} as the SRE for {purpose}: {code.name}"


@pytest.mark.parametrize("method", NOT_EXPOSED)
async def test_a_record_bearing_method_the_gateway_does_not_expose_is_refused_to_the_sre_too(
        suite: RunningSuite, sre_known: None, method: str) -> None:
    assert await _call_as_sre(suite, method, PURPOSE) == grpc.StatusCode.UNIMPLEMENTED


async def test_the_sre_reads_the_operation_log_status_counts_only(suite: RunningSuite, sre_known: None) -> None:
    await _call_as_sre(suite, EXPOSED_REFUSED[0], PURPOSE)  # a refusal, counted in the status below
    status = await _status(suite, dt.timedelta(minutes=10))
    assert status.tail_sequence > 0
    assert status.window.seconds == 600
    denied = [c for c in status.method_call_counts if c.decision == operation_log_pb2.DECISION_DENIED]
    assert any(c.method == f"/{EXPOSED_REFUSED[0]}" and c.status == "PERMISSION_DENIED" for c in denied)
    # Counts and positions only: no field of an entry that names who or whom.
    assert {f.name for f in operation_log_pb2.MethodCallCount.DESCRIPTOR.fields} == {
        "method", "decision", "status", "count"}
    assert not re.search(rb"\d{11}", status.SerializeToString()), "an 11-digit code is in the status"


async def test_the_status_window_is_bounded_and_named_when_wrong(suite: RunningSuite, sre_known: None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _status(suite, dt.timedelta(hours=2))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "window" in (refused.value.details() or "")


async def test_the_sre_reads_the_gateways_health(suite: RunningSuite) -> None:
    async with secure_channel(suite.gateway, suite.client_tls(SRE)) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
