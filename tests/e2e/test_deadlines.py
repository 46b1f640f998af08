"""Deadlines through the real gateway (jukilib.grpc.deadlines): a forwarded call reaches its backend with
no more time than its caller gave, a slow backend is answered DEADLINE_EXCEEDED within the caller's
deadline (and logged), and the configured default bounds only a call whose caller set no deadline.

The backend here is a stand-in for the agency's `QueryResident` (⑤, passed through by the gateway) that
records the time its call was given and answers after a set delay."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukitools.client import purpose_metadata
from jukitools.suite import service_migrations
from tests.conftest import RunningSuite, eventually, service_config

QUERY = "/juki.agency.v1.AgencyService/QueryResident"
CALLER = "kikaku-bu"
PURPOSE = "AGENCY-QUERY"
DEFAULT_TIMEOUT = 1.0
"""The replica's JUKI_CALL_TIMEOUT_SECONDS: what a call without a deadline is given."""
CODE = "12345678901"


@dataclass
class SlowAgency(grpc.GenericRpcHandler):
    """Answers QueryResident after `delay` seconds, noting the time each call was given."""

    delay: float = 0.0
    given: list[float | None] = field(default_factory=list)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return grpc.unary_unary_rpc_method_handler(self._query) if details.method == QUERY else None

    async def _query(self, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        self.given.append(context.time_remaining())
        await asyncio.sleep(self.delay)
        code = agency_pb2.QueryResidentRequest.FromString(request).resident_code
        record = identity_pb2.IdentityRecord(resident_code=code, full_name="上野 太郎")
        return identity_pb2.ResidentVersion(name=f"residents/{code}/versions/1", version=1,
                                            record=record).SerializeToString()


@dataclass
class Setting:
    agency: SlowAgency
    gateway: str


@pytest.fixture(scope="module")
async def setting(suite: RunningSuite, home: Path) -> AsyncIterator[Setting]:
    """A gateway replica on the suite's database and backends, but for the agency, which is `SlowAgency`."""
    agency = SlowAgency()
    server = aio.server()
    server.add_generic_rpc_handlers((agency,))
    cert, key, ca = suite.server_tls("agency").read()
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True))
    await server.start()
    targets = {name: suite.address(name) for name in ("identity", "annex", "disclosure")}
    targets["agency"] = f"127.0.0.1:{port}"
    config = dataclasses.replace(service_config("gateway", suite.pki, suite.databases["gateway"], home, targets),
                                 backend_timeout=DEFAULT_TIMEOUT)
    from juki_services.gateway import app

    replica = GrpcService(config, service_migrations("gateway"), app.build)
    await replica.start()
    try:
        await replica.wait_ready(30)
        yield Setting(agency, f"127.0.0.1:{replica.port}")
    finally:
        await replica.stop(0.5)
        await server.stop(0)


async def _query(suite: RunningSuite, setting: Setting, *, delay: float, timeout: float | None,
                 ) -> tuple[identity_pb2.ResidentVersion | grpc.StatusCode, float, float | None, str]:
    """(the answer or its status code, seconds it took, time the backend was given, request id)."""
    setting.agency.delay = delay
    setting.agency.given.clear()
    request_id = str(uuid.uuid4())
    metadata = purpose_metadata(PURPOSE, credential=suite.credential(CALLER), request_id=request_id,
                                case_reference="PASSPORT-2026-0001")
    async with secure_channel(setting.gateway, suite.client_tls(CALLER)) as channel:
        stub = agency_pb2_grpc.AgencyServiceStub(channel)
        started = time.monotonic()
        answer: identity_pb2.ResidentVersion | grpc.StatusCode
        try:
            answer = await stub.QueryResident(agency_pb2.QueryResidentRequest(resident_code=CODE),
                                              metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            answer = error.code()
        took = time.monotonic() - started
    (given,) = setting.agency.given
    return answer, took, given, request_id


async def test_a_callers_deadline_reaches_the_backend_no_longer_than_the_caller_gave(
        suite: RunningSuite, setting: Setting) -> None:
    answer, _, given, _ = await _query(suite, setting, delay=0.0, timeout=2.0)

    assert isinstance(answer, identity_pb2.ResidentVersion)
    assert answer.record.resident_code == CODE
    assert given is not None
    assert 1.0 < given < 2.0


async def test_a_slow_backend_is_answered_deadline_exceeded_within_the_callers_deadline_and_logged(
        suite: RunningSuite, setting: Setting) -> None:
    answer, took, given, request_id = await _query(suite, setting, delay=5.0, timeout=1.0)

    assert answer == grpc.StatusCode.DEADLINE_EXCEEDED
    assert took < 2.0  # the caller's 1 s, not the backend's 5 s nor the default
    assert given is not None and given < 1.0

    async def logged_as_the_backend_running_out() -> bool:
        connection = await asyncpg.connect(suite.database_url("gateway"))
        try:
            rows = await connection.fetch("SELECT status, reason FROM operation_log WHERE request_id = $1",
                                          request_id)
        finally:
            await connection.close()
        return [(row["status"], "backend answered DEADLINE_EXCEEDED" in row["reason"]) for row in rows] == [
            ("DEADLINE_EXCEEDED", True)]

    # The gateway's call out ran out first (its caller's deadline less a margin), so the gateway itself
    # logged the failure: a call cut by its caller's deadline alone would leave no entry.
    await eventually(logged_as_the_backend_running_out)


async def test_without_a_deadline_the_configured_default_bounds_the_backend_call(
        suite: RunningSuite, setting: Setting) -> None:
    answer, took, given, _ = await _query(suite, setting, delay=3.0, timeout=None)

    assert answer == grpc.StatusCode.DEADLINE_EXCEEDED
    assert given is not None and given <= DEFAULT_TIMEOUT + 0.02  # gRPC sends a deadline rounded up a little
    assert took < 2.5


async def test_a_deadline_longer_than_the_default_is_passed_on_and_honoured(
        suite: RunningSuite, setting: Setting) -> None:
    answer, _, given, _ = await _query(suite, setting, delay=1.5, timeout=4.0)

    assert isinstance(answer, identity_pb2.ResidentVersion)
    assert given is not None and DEFAULT_TIMEOUT < given <= 4.0
