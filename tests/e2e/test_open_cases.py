"""Disclosure and correction work names an open case, through the gateway (issue 19).

住基法 30-32 … 30-35 (30-44-13) and 個人情報保護法 76 … 102: a person's records and provision history are read
for the person's own request while it is handled. The gateway asks the disclosure service whether the call's
case reference names one of its cases that is open, before it forwards anything, and refuses otherwise
(PERMISSION_DENIED with the reason, in the operation log like every refusal): a made-up reference, an unknown
case, a rejected or closed one. The desk's read of a resident's provision history has a purpose of its own
that requires an open case; the disclosure service's own reads for a case (DISCLOSURE-RECORDS-30-32,
CORRECTION-REPORT-12-5) require one too.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import asyncpg
import grpc

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2 as opb
from juki.gateway.v1 import operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import RunningSuite
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _reason

DESK, PROVISIONS, RECORDS = "DISCLOSURE-30-32", "DISCLOSURE-PROVISIONS-30-32", "DISCLOSURE-RECORDS-30-32"
USED: list[SyntheticResident] = []


def _person(seed: int) -> SyntheticResident:
    base = generate_residents(1, seed=197_000 + seed)[0]
    resident = dataclasses.replace(base, municipality_code="102016", address=f"群馬県前橋市大手町{seed}番地の2")
    USED.append(resident)
    return resident


async def _recorded(suite: RunningSuite, resident: SyntheticResident, notification_id: str) -> None:
    await _call(suite, "maebashi-cs", "identity.ApplyNotification",
                birth_notification(resident, notification_id, EVENT_DATE, NOTIFY_TIME), "CS-NOTIFY-30-6")


async def _desk(suite: RunningSuite, method: str, request: Any) -> Any:
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        return await getattr(disclosure_pb2_grpc.DisclosureServiceStub(channel), method)(
            request, metadata=purpose_metadata(DESK, credential=suite.credential("disclosure-desk"),
                                               request_id=str(uuid.uuid4())), timeout=20)


async def _open_case(suite: RunningSuite, code: str,
                     scopes: tuple[int, ...] = (dpb.DISCLOSURE_SCOPE_PROVISION_STATUS,)) -> Any:
    case = dpb.DisclosureCase(
        subject_resident_code=code, requester_kind=dpb.REQUESTER_KIND_PERSON, requester_name="請求者 本人",
        identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD], channel=dpb.CHANNEL_COUNTER, scopes=scopes)
    return await _desk(suite, "CreateDisclosureCase", dpb.CreateDisclosureCaseRequest(disclosure_case=case))


async def _history(suite: RunningSuite, code: str, case_reference: str, purpose: str = PROVISIONS,
                   ) -> tuple[str, opb.ListProvisionRecordsResponse | grpc.aio.AioRpcError]:
    """The desk's clerk reading a resident's provision history: (request id, the answer or the refusal)."""
    request_id = str(uuid.uuid4())
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        try:
            return request_id, await operation_log_pb2_grpc.OperationLogServiceStub(channel).ListProvisionRecords(
                opb.ListProvisionRecordsRequest(resident_code=code), metadata=purpose_metadata(
                    purpose, case_reference=case_reference, credential=suite.credential("disclosure-desk"),
                    request_id=request_id), timeout=10)
        except grpc.aio.AioRpcError as error:
            return request_id, error


async def _as_disclosure_service(suite: RunningSuite, code: str, case_reference: str) -> grpc.aio.AioRpcError | Any:
    """A read under the disclosure service's own purpose, with its certificate, as its desk would make it."""
    async with secure_channel(suite.gateway, suite.server_tls("disclosure")) as channel:
        try:
            return await identity_pb2_grpc.IdentityServiceStub(channel).LookupResident(
                identity_pb2.LookupResidentRequest(resident_code=code), metadata=purpose_metadata(
                    RECORDS, case_reference=case_reference, request_id=str(uuid.uuid4())), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error


async def _logged(suite: RunningSuite, request_id: str) -> asyncpg.Record:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        (row,) = await connection.fetch("SELECT decision, reason, status, case_reference, resident_codes "
                                        "FROM operation_log WHERE request_id = $1", request_id)
        return row
    finally:
        await connection.close()


def _refused(outcome: Any, reason: str, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> None:
    assert isinstance(outcome, grpc.aio.AioRpcError), "answered, where it must be refused"
    assert (outcome.code(), _reason(outcome)) == (code, reason)


async def test_the_provision_history_is_read_only_under_an_open_case_and_every_refusal_is_logged(
        suite: RunningSuite) -> None:
    # 個人情報保護法 76 / 住基法 30-32: the provision history (提供状況) is read for the person's own request.
    resident = _person(1)
    await _recorded(suite, resident, "open-case-1")
    case = await _open_case(suite, resident.resident_code)

    request_id, answer = await _history(suite, resident.resident_code, case.name)
    assert isinstance(answer, opb.ListProvisionRecordsResponse)
    logged = await _logged(suite, request_id)
    assert (logged["status"], logged["case_reference"]) == ("OK", case.name)

    for reference, reason in (("", "CASE_REFERENCE_REQUIRED"), ("desk-2026-001", "CASE_REFERENCE_NOT_A_CASE"),
                              (f"disclosureCases/{uuid.uuid4()}", "CASE_NOT_FOUND"),
                              (f"correctionCases/{uuid.uuid4()}", "CASE_NOT_FOUND")):
        request_id, refused = await _history(suite, resident.resident_code, reference)
        _refused(refused, reason)
        logged = await _logged(suite, request_id)
        assert (logged["decision"], logged["reason"], logged["status"]) == (
            opb.DECISION_DENIED, reason, "PERMISSION_DENIED")
        assert resident.resident_code not in (refused.details() or "")  # type: ignore[union-attr]


async def test_the_desks_case_purpose_no_longer_reads_the_provision_history(suite: RunningSuite) -> None:
    resident = _person(2)
    case = await _open_case(suite, resident.resident_code)
    _, refused = await _history(suite, resident.resident_code, case.name, purpose=DESK)
    _refused(refused, "METHOD_NOT_ALLOWED")


async def test_a_rejected_or_closed_case_reads_nothing_more(suite: RunningSuite) -> None:
    # 住基法 30-32: a request whose requester was not identified is refused in writing; nothing is gathered
    # for it any more, and nothing once the case is closed.
    resident = _person(3)
    await _recorded(suite, resident, "open-case-3")
    case = await _open_case(suite, resident.resident_code)
    assert not isinstance(await _as_disclosure_service(suite, resident.resident_code, case.name),
                          grpc.aio.AioRpcError)
    rejected = await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=False, rejection_reason="本人確認書類の提示がなかったため"))
    # The case answer passed through this gateway: its cached "open" is gone at once.
    _refused(await _as_disclosure_service(suite, resident.resident_code, case.name), "CASE_NOT_OPEN")
    _, refused = await _history(suite, resident.resident_code, case.name)
    _refused(refused, "CASE_NOT_OPEN")
    await _desk(suite, "CloseDisclosureCase", dpb.CloseDisclosureCaseRequest(name=rejected.name, etag=rejected.etag))
    request_id, refused = await _history(suite, resident.resident_code, case.name)
    _refused(refused, "CASE_NOT_OPEN")
    assert (await _logged(suite, request_id))["decision"] == opb.DECISION_DENIED


async def test_the_disclosure_services_own_reads_need_an_open_case_of_its_own(suite: RunningSuite) -> None:
    # 住基法 30-32 ② (30-44-13): the service's full reads of a person, 個人番号 included, only for a real case.
    resident = _person(4)
    await _recorded(suite, resident, "open-case-4")
    _refused(await _as_disclosure_service(suite, resident.resident_code, "case-made-up"), "CASE_REFERENCE_NOT_A_CASE")
    _refused(await _as_disclosure_service(suite, resident.resident_code, f"usageSuspensionCases/{uuid.uuid4()}"),
             "CASE_NOT_FOUND")


async def test_a_decision_gathers_the_records_under_its_open_case(suite: RunningSuite) -> None:
    """The desk's decision reads through the gateway while its case is SEARCHING (open): every read is allowed
    and logged under the case."""
    resident = _person(5)
    await _recorded(suite, resident, "open-case-5")
    case = await _open_case(suite, resident.resident_code, (dpb.DISCLOSURE_SCOPE_IDENTITY_FILE,
                                                            dpb.DISCLOSURE_SCOPE_PROVISION_STATUS))
    verified = await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=True))
    decided = await _desk(suite, "DecideDisclosureCase", dpb.DecideDisclosureCaseRequest(
        name=verified.name, etag=verified.etag))
    assert decided.state == dpb.DISCLOSURE_STATE_DECIDED_DISCLOSE
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        reads = await connection.fetch("SELECT purpose, status FROM operation_log WHERE case_reference = $1 "
                                       "AND organization = 'disclosure'", case.name)
    finally:
        await connection.close()
    assert reads and {(r["purpose"], r["status"]) for r in reads} == {(RECORDS, "OK")}


async def test_whether_a_case_is_open_is_the_gateways_own_question_and_not_exposed(suite: RunningSuite) -> None:
    # Which cases exist is itself information about residents' requests: nobody asks it through the gateway.
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        try:
            await disclosure_pb2_grpc.DisclosureServiceStub(channel).GetCaseStatus(
                dpb.GetCaseStatusRequest(name=f"disclosureCases/{uuid.uuid4()}"), metadata=purpose_metadata(
                    DESK, credential=suite.credential("disclosure-desk"), request_id=str(uuid.uuid4())), timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        else:
            raise AssertionError("GetCaseStatus answered through the gateway")


async def test_no_personal_data_of_these_residents_reached_the_service_logs(log_lines: list[str]) -> None:
    text = "\n".join(log_lines)
    for resident in USED:
        for value in (resident.full_name, resident.resident_code, resident.individual_number, resident.address):
            assert value not in text
