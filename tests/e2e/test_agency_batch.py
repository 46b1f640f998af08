"""The agency stand-in's batch methods (AIP-233): all or nothing, in order, idempotent by key, bounded; and
not reachable through the gateway (only ⑤ queries are)."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki_services.gateway.app import exposed_methods
from jukilib.grpc.channels import secure_channel
from tests.conftest import RunningSuite
from tests.integration.registers import resident_code


def _identity_change(key: str, code: str, version: int) -> agency_pb2.RecordIdentityChangeRequest:
    return agency_pb2.RecordIdentityChangeRequest(idempotency_key=key, resident_version=identity_pb2.ResidentVersion(
        version=version, record=identity_pb2.IdentityRecord(resident_code=code)))


async def _count(suite: RunningSuite, keys: list[str]) -> int:
    connection = await asyncpg.connect(suite.database_url("agency"))
    try:
        return int(await connection.fetchval(
            "SELECT count(*) FROM received_change WHERE idempotency_key = ANY($1::text[])", keys))
    finally:
        await connection.close()


async def test_a_batch_is_recorded_once_in_order_and_a_retry_is_answered_as_duplicates(suite: RunningSuite) -> None:
    code = resident_code(900_001)
    keys = [f"identity/{uuid.uuid4()}/{n}" for n in (1, 2, 3)]
    async with secure_channel(suite.address("agency"), suite.server_tls("identity")) as channel:
        stub = agency_pb2_grpc.AgencyServiceStub(channel)
        first = await stub.BatchRecordIdentityChanges(agency_pb2.BatchRecordIdentityChangesRequest(
            requests=[_identity_change(k, code, n) for n, k in enumerate(keys[:2], 1)]), timeout=10)
        again = await stub.BatchRecordIdentityChanges(agency_pb2.BatchRecordIdentityChangesRequest(
            requests=[_identity_change(k, code, n) for n, k in enumerate(keys, 1)]), timeout=10)
        annex = await stub.BatchRecordAnnexChanges(agency_pb2.BatchRecordAnnexChangesRequest(requests=[
            agency_pb2.RecordAnnexChangeRequest(idempotency_key=f"annex/{uuid.uuid4()}/1",
                                                annex_resident_version=annex_pb2.AnnexResidentVersion(version=1))]),
            timeout=10)
    assert [(r.idempotency_key, r.duplicate) for r in first.change_receipts] == [(k, False) for k in keys[:2]]
    assert [(r.idempotency_key, r.duplicate) for r in again.change_receipts] == [
        (keys[0], True), (keys[1], True), (keys[2], False)]
    assert again.change_receipts[0].receive_time == first.change_receipts[0].receive_time
    assert len(annex.change_receipts) == 1 and not annex.change_receipts[0].duplicate
    assert await _count(suite, keys) == 3


@pytest.mark.parametrize(("size", "missing_key", "field"), [
    (0, None, "requests"), (1001, None, "requests"), (3, 1, "requests[1].idempotency_key")])
async def test_a_batch_out_of_bounds_or_without_a_key_is_refused_naming_the_field(
        suite: RunningSuite, size: int, missing_key: int | None, field: str) -> None:
    code = resident_code(900_002)
    keys = ["" if n == missing_key else f"identity/{uuid.uuid4()}/{n}" for n in range(size)]
    async with secure_channel(suite.address("agency"), suite.server_tls("identity")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agency_pb2_grpc.AgencyServiceStub(channel).BatchRecordIdentityChanges(
                agency_pb2.BatchRecordIdentityChangesRequest(
                    requests=[_identity_change(k, code, n + 1) for n, k in enumerate(keys)]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
    assert await _count(suite, [k for k in keys if k]) == 0


def test_the_gateway_does_not_expose_the_agency_record_methods() -> None:
    agency_methods = {m for m in exposed_methods() if m.startswith("juki.agency.v1.")}
    assert agency_methods == {"juki.agency.v1.AgencyService/QueryResident"}
