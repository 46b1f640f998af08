"""Auditors' view of the operation log through the gateway: the misuse review and a resident's
provision history (for provision-status disclosure)."""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import grpc
import pytest

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2 as opb
from juki.gateway.v1 import operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from tests.conftest import RunningSuite
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _resident


async def _identity(suite: RunningSuite, caller: str, method: str, request: object, purpose: str,
                    case_reference: str = "") -> object:
    async with secure_channel(suite.gateway, suite.client_tls(caller)) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        metadata = purpose_metadata(purpose, case_reference=case_reference, credential=suite.credential(caller))
        return await getattr(stub, method)(request, metadata=metadata, timeout=10)


async def _oplog(suite: RunningSuite, caller: str, method: str, request: object, purpose: str,
                 case_reference: str = "") -> object:
    async with secure_channel(suite.gateway, suite.client_tls(caller)) as channel:
        stub = operation_log_pb2_grpc.OperationLogServiceStub(channel)
        return await getattr(stub, method)(request, metadata=purpose_metadata(
            purpose, case_reference=case_reference, credential=suite.credential(caller)), timeout=10)


async def _open_case(suite: RunningSuite, resident_code: str) -> str:
    """The resident's disclosure request of their provision status, opened at the desk (issue 19: the desk reads
    the provision history only under an open case)."""
    case = dpb.DisclosureCase(
        subject_resident_code=resident_code, requester_kind=dpb.REQUESTER_KIND_PERSON, requester_name="請求者 本人",
        identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD], channel=dpb.CHANNEL_COUNTER,
        scopes=[dpb.DISCLOSURE_SCOPE_PROVISION_STATUS])
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        opened = await disclosure_pb2_grpc.DisclosureServiceStub(channel).CreateDisclosureCase(
            dpb.CreateDisclosureCaseRequest(disclosure_case=case),
            metadata=purpose_metadata("DISCLOSURE-30-32", credential=suite.credential("disclosure-desk")), timeout=10)
    return str(opened.name)


async def test_misuse_review_and_provision_history(suite: RunningSuite) -> None:
    twins = [_resident(80 + i) for i in range(2)]
    for index, twin in enumerate(twins):
        request = birth_notification(twin, f"audit-{index}", EVENT_DATE, NOTIFY_TIME)
        request.record.full_name, request.record.full_name_kana = "赤城　花子", "アカギ　ハナコ"
        request.record.birth_date.year, request.record.birth_date.month, request.record.birth_date.day = 1990, 1, 2
        await _identity(suite, "maebashi-cs", "ApplyNotification", request, "CS-NOTIFY-30-6")
    target = twins[0].resident_code
    lookup = identity_pb2.LookupResidentRequest(resident_code=target)
    await _identity(suite, "kyoiku-iinkai", "LookupResident", lookup, "EDU-SCHOLARSHIP-30-15-2-2")
    await _identity(suite, "shichoson-ka", "LookupResident", lookup, "JUKI-OWN-AFFAIRS", case_reference="AUD-1")
    with pytest.raises(grpc.aio.AioRpcError):
        await _identity(suite, "kyoiku-iinkai", "LookupResident", lookup,
                        "ELECTION-30-15-2-2")
    search = identity_pb2.SearchResidentsRequest(query=register_pb2.SearchQuery(
        full_name="赤城 花子", birth_date=register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_YEAR,
                                                                 year=1990)))
    found = await _identity(suite, "kikaku-bu", "SearchResidents", search, "PASSPORT-SEARCH-30-15-1-1")
    assert len(found.candidates) == 2  # type: ignore[attr-defined]

    now = dt.datetime.now(dt.UTC)
    review = opb.GetMisuseReportRequest(many_operators=2, many_candidates=2)
    review.start_time.FromDatetime(now - dt.timedelta(hours=1))
    review.end_time.FromDatetime(now + dt.timedelta(minutes=5))
    hour = now.astimezone(ZoneInfo("Asia/Tokyo")).hour
    # Office hours that exclude the current hour make every call of this test off-hours.
    # Late in the day the office hours are 0-1: midnight is a start hour (explicit presence), not "unset".
    review.office_start_hour, review.office_end_hour = (hour + 1, hour + 2) if hour < 22 else (0, 1)
    report = await _oplog(suite, "auditor", "GetMisuseReport", review, "AUDIT-OPERATION-LOG")
    assert target in {r.resident_code for r in report.residents_of_interest}  # type: ignore[attr-defined]
    assert any(e.method.endswith("/SearchResidents") for e in report.broad_searches)  # type: ignore[attr-defined]
    assert any(e.reason == "PURPOSE_NOT_GRANTED" for e in report.denied)  # type: ignore[attr-defined]
    assert report.off_hours and report.volumes  # type: ignore[attr-defined]
    # The municipality's notifications are a system's calls: apart, never off-hours use nor operator volume.
    assert all(e.operator for e in report.off_hours) and all(v.operator for v in report.volumes)  # type: ignore[attr-defined]
    notify = "/juki.identity.v1.IdentityService/ApplyNotification"
    assert any(s.organization == "102016" and s.method == notify and s.calls >= 2
               for s in report.system_calls)  # type: ignore[attr-defined]

    history = await _oplog(suite, "disclosure-desk", "ListProvisionRecords",
                           opb.ListProvisionRecordsRequest(resident_code=target), "DISCLOSURE-PROVISIONS-30-32",
                           await _open_case(suite, target))
    recipients = {(p.recipient, p.purpose) for p in history.provision_records}  # type: ignore[attr-defined]
    assert {("kyoiku-iinkai", "EDU-SCHOLARSHIP-30-15-2-2"), ("shichoson-ka", "JUKI-OWN-AFFAIRS")} <= recipients
    assert all(p.fields and p.legal_basis for p in history.provision_records)  # type: ignore[attr-defined]
    assert ("maebashi-cs", "CS-NOTIFY-30-6") not in recipients and \
        not any(p.method.endswith("ApplyNotification") for p in history.provision_records)  # type: ignore[attr-defined]


async def test_the_gateway_signs_its_head_into_the_journal_outside_the_database(suite: RunningSuite) -> None:
    """Issue 19: the running gateway exports its chain head (JUKI_CHECKPOINT_EXPORT_SECONDS, 1 s) to the journal
    in JUKI_CHECKPOINT_DIR, and `juki audit verify` holds the whole log to it."""
    from juki_services.gateway.checkpoints import read_journal
    from tests.integration.test_operation_log import _verify

    assert suite.home is not None
    lookup = identity_pb2.LookupResidentRequest(resident_code=_resident(97).resident_code)
    with pytest.raises(grpc.aio.AioRpcError):  # not found: logged all the same
        await _identity(suite, "kyoiku-iinkai", "LookupResident", lookup, "EDU-SCHOLARSHIP-30-15-2-2")
    journal = suite.home / "checkpoints"
    for _ in range(50):
        heads = read_journal(journal) if journal.exists() else []
        if heads:
            break
        await asyncio.sleep(0.1)
    assert heads, "no signed head was exported within 5 s"
    result = _verify(suite.database_url("gateway"), suite.home, journal)
    assert result.returncode == 0, result.stderr
    assert "kept outside the database, the newest naming record" in result.stdout
