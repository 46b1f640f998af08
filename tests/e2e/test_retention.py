"""The retention purge end to end through the gateway (issue 17: retention that cannot destroy evidence).

住基法 30-6 ③ / 30-41 ③ (DOMAIN §A.5): the governor keeps the files for the period the 施行令 sets; 150 years
here, never less. The purge is each register's PurgeExpiredRecords, reached only through the gateway by a
retention clerk of 総務部市町村課 (PREFECTURE-RETENTION), so that the operation log records who purged which
register, when, and how it ended; the register records the run under the same request id.

- A purge past the period removes superseded versions and removed persons, and keeps what a review item
  names and the person an open disclosure case is about (the register asks the disclosure service).
- A period of 0 or less is INVALID_ARGUMENT naming the field, and deletes nothing.
- The role is the purge's own: the desk's report clerk alone may not purge.
- The disclosure service answers the registers that one question, and the registers nothing else.
Below the gateway (the function's own refusals, 12-5 reports, failing closed): tests/integration/test_retention.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2 as opb
from juki.gateway.v1 import operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import RunningSuite, eventually, field_violations, issue_credential

MAEBASHI = "102016"
NOTIFY_TIME = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
RETENTION = "PREFECTURE-RETENTION"
CLERK = "shichoson-0001"  # the demo operator of 総務部市町村課 (DEMO_OPERATORS)
PURGE = "/juki.identity.v1.IdentityService/PurgeExpiredRecords"


def _resident(seed: int) -> SyntheticResident:
    base = generate_residents(1, seed=170_000 + seed)[0]
    return dataclasses.replace(base, municipality_code=MAEBASHI, address=f"群馬県前橋市大手町{seed}番地")


async def _notify(suite: RunningSuite, resident: SyntheticResident, notification_id: str, day: int,
                  kind: int = rpb.CHANGE_KIND_RECORD, reason: int = rpb.CHANGE_REASON_BIRTH) -> Any:
    request = birth_notification(resident, notification_id, dt.date(2026, 4, day), NOTIFY_TIME + dt.timedelta(days=day))
    request.change.kind, request.change.reason = kind, reason
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        return await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            request, metadata=purpose_metadata("CS-NOTIFY-30-6", request_id=str(uuid.uuid4())), timeout=10)


async def _superseded(suite: RunningSuite, resident: SyntheticResident, tag: str) -> None:
    await _notify(suite, resident, f"{tag}-1", 1)
    await _notify(suite, resident, f"{tag}-2", 2, rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_MINOR_CORRECTION)


async def _removed(suite: RunningSuite, resident: SyntheticResident, tag: str) -> None:
    await _notify(suite, resident, f"{tag}-1", 1)
    await _notify(suite, resident, f"{tag}-2", 2, rpb.CHANGE_KIND_REMOVE, rpb.CHANGE_REASON_DEATH)


async def _purge(suite: RunningSuite, request: rpb.PurgeExpiredRecordsRequest, request_id: str,
                 credential: str | None = None) -> rpb.PurgeExpiredRecordsResponse:
    """The retention clerk of 総務部市町村課, logged in, purging the identity register through the gateway."""
    metadata = purpose_metadata(RETENTION, credential=suite.credential("shichoson-ka") if credential is None
                                else credential, request_id=request_id)
    async with secure_channel(suite.gateway, suite.client_tls("shichoson-ka")) as channel:
        answer: rpb.PurgeExpiredRecordsResponse = await identity_pb2_grpc.IdentityServiceStub(
            channel).PurgeExpiredRecords(request, metadata=metadata, timeout=30)
    return answer


async def _logged(suite: RunningSuite, request_id: str) -> opb.OperationLogEntry:
    """The operation log's entry of `request_id`, as the auditor reads it (AUDIT-OPERATION-LOG)."""
    async with secure_channel(suite.gateway, suite.client_tls("auditor")) as channel:
        page = await operation_log_pb2_grpc.OperationLogServiceStub(channel).ListOperationLogEntries(
            opb.ListOperationLogEntriesRequest(purpose=RETENTION, page_size=100),
            metadata=purpose_metadata("AUDIT-OPERATION-LOG", credential=suite.credential("auditor")), timeout=10)
    (entry,) = [e for e in page.operation_log_entries if e.request_id == request_id]
    return entry


@pytest.fixture
async def register_db(suite: RunningSuite) -> AsyncIterator[asyncpg.Connection]:
    """The suite's identity schema as its owner: for backdating rows and filing a review item, as no
    service's call can."""
    connection = await asyncpg.connect(suite.owner_url("identity"))
    await connection.execute("SET search_path TO identity")
    try:
        yield connection
    finally:
        await connection.close()


async def _received_151_years_ago(suite: RunningSuite, db: asyncpg.Connection, *residents: SyntheticResident) -> None:
    """These residents' versions as if received 151 years ago, once the agency has every one of them."""
    codes = [r.resident_code for r in residents]
    persons = "SELECT id FROM person WHERE resident_code = ANY($1)"

    async def delivered() -> bool:
        return await db.fetchval(f"SELECT count(*) FROM outbox WHERE person_id IN ({persons}) "
                                 "AND state <> 'delivered'", codes) == 0

    await eventually(delivered, timeout=20)
    await db.execute(f"UPDATE person_version SET receive_time = receive_time - interval '151 years' "
                     f"WHERE person_id IN ({persons})", codes)


async def _versions(db: asyncpg.Connection, resident: SyntheticResident) -> list[int]:
    rows = await db.fetch("SELECT v.version FROM person_version v JOIN person p ON p.id = v.person_id "
                          "WHERE p.resident_code = $1 ORDER BY v.version", resident.resident_code)
    return [r["version"] for r in rows]


async def _open_disclosure_case(suite: RunningSuite, resident: SyntheticResident) -> None:
    case = dpb.DisclosureCase(
        subject_resident_code=resident.resident_code, requester_kind=dpb.REQUESTER_KIND_PERSON,
        requester_name="請求者 本人", identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD],
        channel=dpb.CHANNEL_COUNTER, scopes=[dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        await disclosure_pb2_grpc.DisclosureServiceStub(channel).CreateDisclosureCase(
            dpb.CreateDisclosureCaseRequest(disclosure_case=case), metadata=purpose_metadata(
                "DISCLOSURE-30-32", credential=suite.credential("disclosure-desk"), request_id=str(uuid.uuid4())),
            timeout=20)


async def test_a_purge_keeps_open_cases_and_review_items_and_is_in_the_operation_log(
        suite: RunningSuite, register_db: asyncpg.Connection) -> None:
    superseded, removed, case_subject, reviewed = (_resident(n) for n in (1, 2, 3, 4))
    await _superseded(suite, superseded, "ret-1")
    await _removed(suite, removed, "ret-2")
    await _removed(suite, case_subject, "ret-3")
    await _superseded(suite, reviewed, "ret-4")
    await _open_disclosure_case(suite, case_subject)  # 30-32: the person asked for their records
    # A 外字 to identify in the reviewed person's first version (DOMAIN §C): the review queue keeps it.
    await register_db.execute(
        """INSERT INTO review_item (id, kind, rule, municipality_code, notification_id, change_kind, person_id,
                                    version, field_paths)
           SELECT $1, 2, 'CHARACTER_IDENTIFICATION', $2, 'ret-4-1', 1, p.id, 1, '{record.full_name}'
           FROM person p WHERE p.resident_code = $3""", uuid.uuid4(), MAEBASHI, reviewed.resident_code)
    await _received_151_years_ago(suite, register_db, superseded, removed, case_subject, reviewed)

    request_id = str(uuid.uuid4())
    answer = await _purge(suite, rpb.PurgeExpiredRecordsRequest(request_id=request_id), request_id)

    # Gone: the superseded version and the removed person. Kept: the open case's person, the reviewed version.
    assert (answer.versions_purged, answer.persons_purged) == (2, 1)
    assert (answer.versions_held, answer.persons_held) == (2, 1)
    assert (answer.superseded_years, answer.removed_years, answer.dry_run) == (150, 150, False)
    assert await _versions(register_db, superseded) == [2]
    assert await _versions(register_db, removed) == []
    assert await _versions(register_db, case_subject) == [1, 2]
    assert await _versions(register_db, reviewed) == [1, 2]
    # Who purged which register, when, and the decision: in the hash-chained operation log.
    entry = await _logged(suite, request_id)
    assert (entry.organization, entry.operator, entry.method) == ("shichoson-ka", CLERK, PURGE)
    assert (entry.decision, entry.status, entry.legal_basis) == (opb.DECISION_ALLOWED, "OK", "住基法30-6③, 30-41③")
    # The register's own record of the run joins the log by its request id.
    run = await register_db.fetchrow("SELECT * FROM retention_run WHERE request_id = $1", request_id)
    assert run is not None and (run["operator"], run["versions_purged"], run["persons_purged"]) == (CLERK, 2, 1)


@pytest.mark.parametrize(("seed", "field", "years"), [(10, "superseded_years", 0.0), (11, "removed_years", -5.0),
                                                      (12, "superseded_years", 149.0)])
async def test_a_period_shorter_than_150_years_is_refused_naming_the_field_and_deletes_nothing(
        suite: RunningSuite, register_db: asyncpg.Connection, seed: int, field: str, years: float) -> None:
    resident = _resident(seed)
    await _superseded(suite, resident, f"ret-{seed}")
    await _received_151_years_ago(suite, register_db, resident)
    request_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _purge(suite, rpb.PurgeExpiredRecordsRequest(**{field: years}), request_id)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == [field]
    assert await _versions(register_db, resident) == [1, 2]
    assert await register_db.fetchval("SELECT count(*) FROM retention_run WHERE request_id = $1", request_id) == 0
    entry = await _logged(suite, request_id)
    assert (entry.operator, entry.method, entry.status) == (CLERK, PURGE, "INVALID_ARGUMENT")


async def test_the_12_5_desk_clerk_alone_may_not_purge(suite: RunningSuite, register_db: asyncpg.Connection) -> None:
    assert suite.home is not None
    report_clerk = issue_credential(suite.home, CLERK, "shichoson-ka", frozenset({"report_clerk"}))
    runs = await register_db.fetchval("SELECT count(*) FROM retention_run")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _purge(suite, rpb.PurgeExpiredRecordsRequest(dry_run=True), str(uuid.uuid4()), report_clerk)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await register_db.fetchval("SELECT count(*) FROM retention_run") == runs


async def test_the_disclosure_service_tells_the_registers_only_whom_open_cases_are_about(
        suite: RunningSuite) -> None:
    holds = dpb.ListRetentionHoldsRequest()
    # The identity register's own certificate: the holds, and nothing else of the disclosure service.
    async with secure_channel(suite.address("disclosure"), suite.server_tls("identity")) as channel:
        stub = disclosure_pb2_grpc.DisclosureServiceStub(channel)
        await stub.ListRetentionHolds(holds, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.ListDisclosureCases(dpb.ListDisclosureCasesRequest(), timeout=10)
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nobody else asks it, not even the gateway's certificate.
    async with secure_channel(suite.address("disclosure"), suite.server_tls("gateway")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as gateway:
            await disclosure_pb2_grpc.DisclosureServiceStub(channel).ListRetentionHolds(holds, timeout=10)
        assert gateway.value.code() == grpc.StatusCode.PERMISSION_DENIED
