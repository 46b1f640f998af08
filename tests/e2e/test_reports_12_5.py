"""Reports to municipalities (住基法 12-5) that close only when the error is fixed, end to end through the
gateway with mTLS (issue 17).

- A report names fields of the record. It resolves only when the addressed municipality's notification
  changes a reported field to another value in the current record: a 修正 that leaves the reported field
  as it was (a 転居 leaving a wrong name wrong) resolves nothing.
- A report of a record that should not be in the file (誤載) resolves on the municipality's 消除.
- The municipality answers "investigated, no error" with a reason, or "fixed" naming its notification; either
  closes the report with that outcome (the correction case that waits on it: tests/e2e/test_disclosure.py).
- A report names only fields the record has.
- The prefecture's 12-5 desk (総務部市町村課, its own purpose and operator role) reports a person missing
  from the file (脱漏), resolved by the addressed municipality's 記載, and lists the overdue reports.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib.errors import STATUS_DETAILS_KEY
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import RunningSuite, field_violations

MAEBASHI = "102016"
NOTIFY_TIME = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
REPORTS = "CS-REPORTS-12-5"
DESK = "PREFECTURE-REPORTS-12-5"
MOVE_WITHIN = rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY  # 転居


def _resident(seed: int) -> SyntheticResident:
    base = generate_residents(1, seed=125_000 + seed)[0]
    return dataclasses.replace(base, municipality_code=MAEBASHI, address=f"群馬県前橋市大手町{seed}番地")


async def _notify(suite: RunningSuite, resident: SyntheticResident, notification_id: str, day: int,
                  kind: int = rpb.CHANGE_KIND_RECORD, reason: int = rpb.CHANGE_REASON_BIRTH) -> Any:
    request = birth_notification(resident, notification_id, dt.date(2026, 4, day), NOTIFY_TIME + dt.timedelta(days=day))
    request.change.kind, request.change.reason = kind, reason
    return await _identity(suite, "ApplyNotification", request, "CS-NOTIFY-30-6")


async def _identity(suite: RunningSuite, method: str, request: Any, purpose: str = REPORTS) -> Any:
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        return await getattr(identity_pb2_grpc.IdentityServiceStub(channel), method)(
            request, metadata=purpose_metadata(purpose, request_id=str(uuid.uuid4())), timeout=10)


async def _agency_reports(suite: RunningSuite, resident: SyntheticResident, reason_code: str,
                          fields: list[str], *, forward: bool = True) -> Any:
    """住基法 30-8: the agency reports an error in the prefecture's record; the desk reviews it and (with
    `forward`) reports it to the municipality (12-5)."""
    async with secure_channel(suite.address("agency"), suite.server_tls("gateway")) as channel:
        received = await agency_pb2_grpc.AgencyServiceStub(channel).SendErrorReport(agency_pb2.SendErrorReportRequest(
            file=agency_pb2.FILE_IDENTITY, resident_code=resident.resident_code, reason_code=reason_code,
            fields=fields), timeout=10)
    if not forward:
        return received
    await _desk(suite, "InvestigateMunicipalityReport", rpb.InvestigateMunicipalityReportRequest(name=received.name))
    return await _desk(suite, "ForwardMunicipalityReport", rpb.ForwardMunicipalityReportRequest(name=received.name))


async def _report(suite: RunningSuite, name: str) -> Any:
    return await _identity(suite, "GetMunicipalityReport", rpb.GetMunicipalityReportRequest(name=name))


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = status_pb2.Status.FromString(dict(error.trailing_metadata() or ())[STATUS_DETAILS_KEY])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


async def test_a_correction_that_leaves_the_reported_field_as_it_was_leaves_the_report_open(
        suite: RunningSuite) -> None:
    resident = _resident(1)
    await _notify(suite, resident, "r125-1a", 1)
    report = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.full_name"])
    assert report.source == rpb.REPORT_SOURCE_AGENCY_ERROR_REPORT  # from who made it (30-8), not from the request
    # A 転居 within the municipality: the address changes, the reported name stays as it was.
    moved = dataclasses.replace(resident, address="群馬県前橋市大手町99番地")
    await _notify(suite, moved, "r125-1b", 2, rpb.CHANGE_KIND_MODIFY, MOVE_WITHIN)
    still = await _report(suite, report.name)
    assert still.state == rpb.REPORT_STATE_OPEN and still.outcome == rpb.REPORT_OUTCOME_UNSPECIFIED
    # The municipality's 誤記修正 of the name: the reported field now has another value.
    renamed = dataclasses.replace(moved, full_name=moved.full_name + "子")
    fixed = await _notify(suite, renamed, "r125-1c", 3, rpb.CHANGE_KIND_MODIFY,
                          rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION)
    resolved = await _report(suite, report.name)
    assert resolved.state == rpb.REPORT_STATE_RESOLVED and resolved.outcome == rpb.REPORT_OUTCOME_CORRECTED
    assert resolved.resolving_version == fixed.resident_version.version == 3


async def test_a_report_of_a_record_that_should_not_be_there_resolves_on_its_removal(suite: RunningSuite) -> None:
    resident = _resident(2)
    await _notify(suite, resident, "r125-2a", 1)
    report = await _agency_reports(suite, resident, "DUPLICATE_RECORD", ["record.resident_code"])
    removed = await _notify(suite, resident, "r125-2b", 2, rpb.CHANGE_KIND_REMOVE, rpb.CHANGE_REASON_EX_OFFICIO_REMOVAL)
    resolved = await _report(suite, report.name)
    assert (resolved.state, resolved.outcome) == (rpb.REPORT_STATE_RESOLVED, rpb.REPORT_OUTCOME_CORRECTED)
    assert resolved.resolving_version == removed.resident_version.version


async def test_the_municipality_answers_no_error_with_its_reason_and_the_report_closes_so(
        suite: RunningSuite) -> None:
    resident = _resident(3)
    await _notify(suite, resident, "r125-3a", 1)
    report = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.birth_date"])
    answered = await _identity(suite, "AnswerMunicipalityReport", rpb.AnswerMunicipalityReportRequest(
        name=report.name, outcome=rpb.REPORT_OUTCOME_NO_ERROR, reason_code="RECORD_MATCHES_EVIDENCE"))
    assert (answered.state, answered.outcome) == (rpb.REPORT_STATE_RESOLVED, rpb.REPORT_OUTCOME_NO_ERROR)
    assert answered.answer_reason_code == "RECORD_MATCHES_EVIDENCE" and answered.resolving_version == 0
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await _identity(suite, "AnswerMunicipalityReport", rpb.AnswerMunicipalityReportRequest(
            name=report.name, outcome=rpb.REPORT_OUTCOME_NO_ERROR, reason_code="RECORD_MATCHES_EVIDENCE"))
    assert (again.value.code(), _reason(again.value)) == (grpc.StatusCode.FAILED_PRECONDITION, "REPORT_RESOLVED")


async def test_the_municipality_answers_fixed_naming_its_own_later_notification(suite: RunningSuite) -> None:
    resident = _resident(4)
    await _notify(suite, resident, "r125-4a", 1)
    report = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.full_name"])
    with pytest.raises(grpc.aio.AioRpcError) as earlier:  # the reported version itself fixes nothing
        await _identity(suite, "AnswerMunicipalityReport", rpb.AnswerMunicipalityReportRequest(
            name=report.name, outcome=rpb.REPORT_OUTCOME_CORRECTED, notification_id="r125-4a"))
    assert _reason(earlier.value) == "FIXING_NOTIFICATION_NOT_FOUND"
    moved = dataclasses.replace(resident, address="群馬県前橋市大手町98番地")
    await _notify(suite, moved, "r125-4b", 2, rpb.CHANGE_KIND_MODIFY, MOVE_WITHIN)
    answered = await _identity(suite, "AnswerMunicipalityReport", rpb.AnswerMunicipalityReportRequest(
        name=report.name, outcome=rpb.REPORT_OUTCOME_CORRECTED, notification_id="r125-4b"))
    assert (answered.outcome, answered.resolving_version) == (rpb.REPORT_OUTCOME_CORRECTED, 2)


@pytest.mark.parametrize(("answer", "field"), [
    (rpb.AnswerMunicipalityReportRequest(outcome=rpb.REPORT_OUTCOME_NO_ERROR), "reason_code"),
    (rpb.AnswerMunicipalityReportRequest(outcome=rpb.REPORT_OUTCOME_CORRECTED), "notification_id"),
    (rpb.AnswerMunicipalityReportRequest(reason_code="NO_ERROR_FOUND"), "outcome"),
])
async def test_an_answer_without_what_its_outcome_needs_is_refused_naming_the_field(
        suite: RunningSuite, answer: Any, field: str) -> None:
    resident = _resident({"reason_code": 11, "notification_id": 12, "outcome": 13}[field])
    await _notify(suite, resident, f"r125-5-{field}", 1)
    report = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.full_name"])
    answer.name = report.name
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _identity(suite, "AnswerMunicipalityReport", answer)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in field_violations(refused.value)
    assert (await _report(suite, report.name)).state == rpb.REPORT_STATE_OPEN  # nothing changed


async def test_another_municipality_cannot_answer_a_report(suite: RunningSuite) -> None:
    resident = _resident(6)
    await _notify(suite, resident, "r125-6a", 1)
    report = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.full_name"])
    async with secure_channel(suite.gateway, suite.client_tls("cs-102024")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await identity_pb2_grpc.IdentityServiceStub(channel).AnswerMunicipalityReport(
                rpb.AnswerMunicipalityReportRequest(name=report.name, outcome=rpb.REPORT_OUTCOME_NO_ERROR,
                                                    reason_code="NOT_OURS"),
                metadata=purpose_metadata(REPORTS, request_id=str(uuid.uuid4())), timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await _report(suite, report.name)).state == rpb.REPORT_STATE_OPEN


async def test_a_report_names_only_fields_of_the_record(suite: RunningSuite) -> None:
    resident = _resident(7)
    await _notify(suite, resident, "r125-7a", 1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.shoe_size"])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["municipality_report.fields"]


async def _desk(suite: RunningSuite, method: str, request: Any) -> Any:
    """The prefecture's 12-5 desk (総務部市町村課), a clerk logged in, through the gateway."""
    async with secure_channel(suite.gateway, suite.client_tls("shichoson-ka")) as channel:
        return await getattr(identity_pb2_grpc.IdentityServiceStub(channel), method)(
            request, metadata=purpose_metadata(DESK, credential=suite.credential("shichoson-ka"),
                                               request_id=str(uuid.uuid4())), timeout=10)


def _omission(resident: SyntheticResident, municipality: str = MAEBASHI) -> Any:
    return rpb.CreateMunicipalityReportRequest(municipality_report=rpb.MunicipalityReport(
        resident_code=resident.resident_code, reason_code="OMISSION", municipality_code=municipality))


async def test_the_desk_reports_a_person_missing_and_the_municipality_s_record_resolves_it(
        suite: RunningSuite) -> None:
    # 住基法 12-5 (脱漏): the governor learns that a resident of 前橋市 is missing from the file.
    missing = _resident(20)
    report = await _desk(suite, "CreateMunicipalityReport", _omission(missing))
    assert (report.state, report.source) == (rpb.REPORT_STATE_OPEN, rpb.REPORT_SOURCE_PREFECTURE_FINDING)
    assert (report.municipality_code, report.version, report.resident_code) == (MAEBASHI, 0, missing.resident_code)
    listed = await _identity(suite, "ListMunicipalityReports", rpb.ListMunicipalityReportsRequest())
    assert report.name in {r.name for r in listed.municipality_reports}  # the addressed municipality sees it
    recorded = await _notify(suite, missing, "r125-20a", 1)
    resolved = await _report(suite, report.name)
    assert (resolved.state, resolved.outcome) == (rpb.REPORT_STATE_RESOLVED, rpb.REPORT_OUTCOME_CORRECTED)
    assert resolved.resolving_version == recorded.resident_version.version == 1
    with pytest.raises(grpc.aio.AioRpcError) as recorded_already:  # now in the file: not an omission
        await _desk(suite, "CreateMunicipalityReport", _omission(missing))
    assert _reason(recorded_already.value) == "PERSON_IN_FILE"


@pytest.mark.parametrize(("report", "field"), [
    (rpb.MunicipalityReport(resident_code="12345678901", reason_code="OMISSION"),
     "municipality_report.municipality_code"),
    (rpb.MunicipalityReport(resident_code="12345678901", reason_code="OMISSION", municipality_code="131016"),
     "municipality_report.municipality_code"),
    (rpb.MunicipalityReport(resident_code="12345678901", reason_code="ITEM_MISMATCH", fields=["record.address"],
                            municipality_code=MAEBASHI), "municipality_report.municipality_code"),
])
async def test_an_omission_names_a_municipality_of_the_prefecture_and_only_an_omission_does(
        suite: RunningSuite, report: Any, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _desk(suite, "CreateMunicipalityReport", rpb.CreateMunicipalityReportRequest(municipality_report=report))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(refused.value) == [field]


async def test_the_desk_lists_reports_open_past_the_overdue_period(suite: RunningSuite) -> None:
    late, recent = _resident(21), _resident(22)
    old = await _desk(suite, "CreateMunicipalityReport", _omission(late))
    new = await _desk(suite, "CreateMunicipalityReport", _omission(recent))
    connection = await asyncpg.connect(suite.database_url("identity"))
    try:  # made 31 days ago: past the default 30 days (JUKI_REPORT_OVERDUE_DAYS)
        await connection.execute("UPDATE municipality_report SET create_time = now() - interval '31 days' "
                                 "WHERE resident_code = $1", late.resident_code)
    finally:
        await connection.close()
    overdue = await _desk(suite, "ListMunicipalityReports", rpb.ListMunicipalityReportsRequest(
        overdue_only=True, page_size=500))
    names = {r.name for r in overdue.municipality_reports}
    assert old.name in names and new.name not in names and all(r.overdue for r in overdue.municipality_reports)
    assert not (await _desk(suite, "GetMunicipalityReport", rpb.GetMunicipalityReportRequest(name=new.name))).overdue


async def test_the_desk_cannot_answer_for_a_municipality(suite: RunningSuite) -> None:
    report = await _desk(suite, "CreateMunicipalityReport", _omission(_resident(23)))
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # not a method of its purpose
        await _desk(suite, "AnswerMunicipalityReport", rpb.AnswerMunicipalityReportRequest(
            name=report.name, outcome=rpb.REPORT_OUTCOME_NO_ERROR, reason_code="NOT_OURS"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_agency_report_is_reviewed_before_any_municipality_is_told(suite: RunningSuite) -> None:
    # 住基法 30-8: the agency's report is received for the prefecture's review, not forwarded blindly.
    resident = _resident(24)
    await _notify(suite, resident, "r125-24a", 1)
    received = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.full_name"], forward=False)
    assert (received.state, received.source) == (rpb.REPORT_STATE_RECEIVED, rpb.REPORT_SOURCE_AGENCY_ERROR_REPORT)
    listed = await _identity(suite, "ListMunicipalityReports", rpb.ListMunicipalityReportsRequest(page_size=500))
    assert received.name not in {r.name for r in listed.municipality_reports}  # the municipality knows nothing
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await _report(suite, received.name)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    renamed = dataclasses.replace(resident, full_name=resident.full_name + "子")
    await _notify(suite, renamed, "r125-24b", 2, rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION)
    unchanged = await _desk(suite, "GetMunicipalityReport", rpb.GetMunicipalityReportRequest(name=received.name))
    assert unchanged.state == rpb.REPORT_STATE_RECEIVED  # a report nobody was told of is not resolved
    with pytest.raises(grpc.aio.AioRpcError) as skipped:  # forwarded only after an investigation
        await _desk(suite, "ForwardMunicipalityReport", rpb.ForwardMunicipalityReportRequest(name=received.name))
    assert _reason(skipped.value) == "REPORT_STATE_CONFLICT"
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await _desk(suite, "DismissMunicipalityReport", rpb.DismissMunicipalityReportRequest(name=received.name))
    assert field_violations(no_reason.value) == ["reason_code"]
    await _desk(suite, "InvestigateMunicipalityReport", rpb.InvestigateMunicipalityReportRequest(name=received.name))
    dismissed = await _desk(suite, "DismissMunicipalityReport", rpb.DismissMunicipalityReportRequest(
        name=received.name, reason_code="ALREADY_CORRECTED"))
    assert (dismissed.state, dismissed.dismiss_reason_code) == (rpb.REPORT_STATE_DISMISSED, "ALREADY_CORRECTED")
    with pytest.raises(grpc.aio.AioRpcError) as not_theirs:  # a municipality cannot review the agency's reports
        await _identity(suite, "InvestigateMunicipalityReport", rpb.InvestigateMunicipalityReportRequest(
            name=received.name))
    assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_report_on_a_removed_person_is_resolved_by_a_correction_of_its_history(suite: RunningSuite) -> None:
    # 住基法 12-5: the person died (消除) with a wrong name on record; the municipality corrects the name in the
    # record's history (a 修正 dated within its life), and that resolves the report.
    resident = _resident(25)
    await _notify(suite, resident, "r125-25a", 1)
    await _notify(suite, resident, "r125-25b", 5, rpb.CHANGE_KIND_REMOVE, rpb.CHANGE_REASON_DEATH)
    report = await _agency_reports(suite, resident, "ITEM_MISMATCH", ["record.full_name"])
    assert (report.state, report.version) == (rpb.REPORT_STATE_OPEN, 2)
    renamed = dataclasses.replace(resident, full_name=resident.full_name + "子")
    fixed = await _notify(suite, renamed, "r125-25c", 3, rpb.CHANGE_KIND_MODIFY,
                          rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION)
    resolved = await _report(suite, report.name)
    assert (resolved.state, resolved.outcome) == (rpb.REPORT_STATE_RESOLVED, rpb.REPORT_OUTCOME_CORRECTED)
    assert resolved.resolving_version == fixed.resident_version.version == 3
