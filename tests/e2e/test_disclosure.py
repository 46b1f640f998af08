"""Disclosure and correction end to end through the gateway (issue 6: 住基法 30-32 … 30-35, 30-44-13).

Staff of the disclosure desk call the gateway; the disclosure service gathers records and makes 12-5
reports through the gateway too, under its own purposes, so every step is in the operation log.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from pypdf import PdfReader

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from juki_services.disclosure.desk import Desk
from juki_services.disclosure.monitor import DeadlineGauge
from juki_services.disclosure.records import Records
from jukilib.config import DatabaseConfig
from jukilib.db.pool import Database
from jukilib.domain.dates import wareki
from jukilib.grpc.channels import secure_channel
from jukilib.keyring import Keyring
from jukitools import cli_cases
from jukitools.client import purpose_metadata, save_credential
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident
from tests.conftest import RunningSuite, eventually
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _reason, _resident, _violated_fields

DISCLOSURE, CORRECTION = "DISCLOSURE-30-32", "CORRECTION-30-35"
OPERATOR = "kaiji-0001"  # the demo disclosure clerk (DEMO_OPERATORS)
USED: list[SyntheticResident] = []  # every resident of this module, checked for personal data at the end


def _person(index: int) -> SyntheticResident:
    resident = _resident(200 + index)
    USED.append(resident)
    return resident


async def _desk(suite: RunningSuite, method: str, request: Any, purpose: str = DISCLOSURE,
                stub: str = "disclosure") -> Any:
    """A call of the disclosure desk's clerk through the gateway (to the disclosure service, or `identity`)."""
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        service = (disclosure_pb2_grpc.DisclosureServiceStub if stub == "disclosure"
                   else identity_pb2_grpc.IdentityServiceStub)(channel)
        return await getattr(service, method)(request, metadata=purpose_metadata(
            purpose, credential=suite.credential("disclosure-desk"), request_id=str(uuid.uuid4())), timeout=20)


def _new_case(resident_code: str, scopes: list[int], received: dt.datetime | None = None,
              documents: list[int] | None = None) -> dpb.CreateDisclosureCaseRequest:
    case = dpb.DisclosureCase(
        subject_resident_code=resident_code, requester_kind=dpb.REQUESTER_KIND_PERSON, requester_name="請求者 本人",
        identity_documents=documents or [dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD], channel=dpb.CHANNEL_COUNTER,
        scopes=scopes)
    if received is not None:
        case.receive_time.FromDatetime(received)
    return dpb.CreateDisclosureCaseRequest(disclosure_case=case)


async def _open_verified(suite: RunningSuite, resident_code: str, scopes: list[int],
                         received: dt.datetime | None = None) -> Any:
    case = await _desk(suite, "CreateDisclosureCase", _new_case(resident_code, scopes, received))
    return await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=True))


async def _decided(suite: RunningSuite, resident_code: str, scopes: list[int]) -> tuple[Any, dict[str, Any], str]:
    """Open, verify and decide a case; returns (case, the notice's JSON, the notice's PDF text)."""
    verified = await _open_verified(suite, resident_code, scopes)
    decided = await _desk(suite, "DecideDisclosureCase", dpb.DecideDisclosureCaseRequest(
        name=verified.name, etag=verified.etag))
    (notice_name,) = decided.documents
    notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=notice_name))
    assert notice.kind == dpb.DOCUMENT_KIND_DECISION_NOTICE
    assert notice.pdf_sha256 == hashlib.sha256(notice.pdf).hexdigest()
    assert notice.json_sha256 == hashlib.sha256(notice.json.encode()).hexdigest()
    return decided, json.loads(notice.json), _pdf_text(notice.pdf)


def _pdf_text(pdf: bytes) -> str:
    """The notice's text read back; a line wrapped to the page width (continued indented) joined again."""
    return re.sub(r"\n {4}", "", "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages))


async def _notify(suite: RunningSuite, request: Any, purpose: str = "CS-NOTIFY-30-6",
                  method: str = "identity.ApplyNotification") -> Any:
    answer, _ = await _call(suite, "maebashi-cs", method, request, purpose)
    return answer


async def _log(suite: RunningSuite, condition: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        return await connection.fetch(f"SELECT * FROM operation_log WHERE {condition}", *args)
    finally:
        await connection.close()


# --- disclosure ------------------------------------------------------------------------------------

async def test_full_disclosure_notice_names_the_resident_and_keeps_the_record_versions(suite: RunningSuite) -> None:
    resident = _person(1)
    await _notify(suite, birth_notification(resident, "disc-1", EVENT_DATE, NOTIFY_TIME))
    await _notify(suite, annex_notification(resident, "disc-1-annex", EVENT_DATE, moved_abroad=False),
                  "CS-NOTIFY-30-41", "annex.ApplyNotification")
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident",
                identity_pb2.LookupResidentRequest(resident_code=resident.resident_code), "EDU-SCHOLARSHIP-30-15-2-2")

    case, content, text = await _decided(suite, resident.resident_code, [
        dpb.DISCLOSURE_SCOPE_IDENTITY_FILE, dpb.DISCLOSURE_SCOPE_ANNEX_FILE, dpb.DISCLOSURE_SCOPE_PROVISION_STATUS])

    assert case.state == dpb.DISCLOSURE_STATE_DECIDED_DISCLOSE
    assert resident.full_name in text and "本人確認情報開示決定通知書" in text
    assert resident.individual_number in text and resident.address in text
    identity = content["identity_file"]
    assert identity["current"]["record"]["fullName"] == resident.full_name
    assert len(identity["history"]) == 1 and content["annex_file"]["found"]
    assert [p["recipient"] for p in content["provision_status"]] == ["kyoiku-iinkai"]
    assert content["decision"] == "DISCLOSE"
    assert any(v.startswith("identity:residents/") and v.endswith("/versions/1") for v in content["record_versions"])
    assert any(v.startswith("annex:annexResidents/") for v in content["record_versions"])

    notified = await _desk(suite, "NotifyDisclosureCase", dpb.NotifyDisclosureCaseRequest(name=case.name,
                                                                                          etag=case.etag))
    closed = await _desk(suite, "CloseDisclosureCase", dpb.CloseDisclosureCaseRequest(name=case.name,
                                                                                       etag=notified.etag))
    assert closed.state == dpb.DISCLOSURE_STATE_CLOSED and closed.deadline_status == dpb.DEADLINE_STATUS_NONE
    # Every transition is in the operation log; the service's own reads name the case.
    methods = {row["method"].rsplit("/", 1)[-1] for row in await _log(
        suite, "organization = 'disclosure-desk' AND $1 = ANY(resident_codes)", resident.resident_code)}
    assert {"CreateDisclosureCase", "VerifyDisclosureCaseIdentity", "DecideDisclosureCase",
            "NotifyDisclosureCase", "CloseDisclosureCase"} <= methods
    # Every read of a document is logged under the resident it concerns.
    assert "GetDisclosureDocument" in methods
    reads = await _log(suite, "organization = 'disclosure' AND case_reference = $1", case.name)
    assert {r["purpose"] for r in reads} == {"DISCLOSURE-RECORDS-30-32"} and all(r["status"] == "OK" for r in reads)


async def test_no_record_is_decided_with_a_notice_saying_so(suite: RunningSuite) -> None:
    absent = _person(2)
    case, content, text = await _decided(suite, absent.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    assert case.state == dpb.DISCLOSURE_STATE_DECIDED_NOT_EXIST
    assert content["decision"] == "NOT_EXIST" and content["identity_file"] == {"found": False}
    assert "該当する情報はありません" in text


async def test_overseas_emigrant_receives_their_own_annex_record_in_full(suite: RunningSuite) -> None:
    # 住基法 30-44-13: disclosure to the person is not bound by the 30-44-6 limit to 国外転出者 affairs; the
    # annex file still answers no 住民票コード (issue 18): the notice names the person's code from the case.
    abroad = _person(3)
    await _notify(suite, annex_notification(abroad, "disc-3-annex", EVENT_DATE, moved_abroad=True),
                  "CS-NOTIFY-30-41", "annex.ApplyNotification")
    case, content, text = await _decided(suite, abroad.resident_code, [dpb.DISCLOSURE_SCOPE_ANNEX_FILE])
    record = content["annex_file"]["current"]["record"]
    assert case.state == dpb.DISCLOSURE_STATE_DECIDED_DISCLOSE
    assert "residentCode" not in record and record["overseasEmigrant"] is True
    assert record["fullName"] == abroad.full_name and "addressDate" in record and "birthDate" in record
    assert abroad.full_name in text and abroad.resident_code in text and "国外転出者である旨" in text


async def test_extension_is_refused_after_the_deadline(suite: RunningSuite) -> None:
    late = _person(4)
    received = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    case = await _open_verified(suite, late.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE], received)
    assert case.deadline_status == dpb.DEADLINE_STATUS_OVERDUE
    new_deadline = dt.date.today() + dt.timedelta(days=10)
    extension = dpb.DeadlineExtension(reason="記録の確認に時間を要するため")
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = (
        new_deadline.year, new_deadline.month, new_deadline.day)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
            name=case.name, etag=case.etag, extension=extension))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(refused.value) == "DEADLINE_PASSED"
    overdue = await _desk(suite, "ListDisclosureCases", dpb.ListDisclosureCasesRequest(
        deadline_status=dpb.DEADLINE_STATUS_OVERDUE, page_size=500))
    assert case.name in {c.name for c in overdue.disclosure_cases}


async def test_juki_cases_lists_open_cases_with_deadlines_and_states(
        suite: RunningSuite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    received = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
    overdue = await _open_verified(suite, _person(11).resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE], received)
    fresh = await _desk(suite, "CreateDisclosureCase", _new_case(_person(12).resident_code,
                                                                 [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    desk = suite.pki.clients["disclosure-desk"]
    (tmp_path / "endpoints.json").write_text(json.dumps({
        "gateway": suite.gateway, "services": {}, "ca_cert": str(suite.pki.ca_cert), "database_url": "",
        "client_certs": {"disclosure-desk": {"cert": str(desk.cert), "key": str(desk.key)}}}))
    save_credential(tmp_path, OPERATOR, suite.credential("disclosure-desk"))  # as `juki operators login` does
    parser = argparse.ArgumentParser()
    cli_cases.add_parser(parser.add_subparsers(dest="command"))

    assert await cli_cases.run(parser.parse_args(["cases", "list", "--overdue", "--operator", OPERATOR]),
                               tmp_path) == 0
    listed = capsys.readouterr().out
    (row,) = [line for line in listed.splitlines() if line.startswith(overdue.name)]
    assert "IDENTITY_VERIFIED" in row and "OVERDUE" in row and fresh.name not in listed
    assert await cli_cases.run(parser.parse_args(["cases", "list", "--operator", OPERATOR]), tmp_path) == 0
    everything = capsys.readouterr().out
    assert fresh.name in everything and "RECEIVED" in everything
    assert _person(11).full_name not in everything and _person(11).resident_code not in everything


async def test_one_extension_before_the_deadline_with_a_written_notice(suite: RunningSuite) -> None:
    resident = _person(5)
    case = await _open_verified(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    new = dt.date(case.deadline.year, case.deadline.month, case.deadline.day) + dt.timedelta(days=20)
    extension = dpb.DeadlineExtension(reason="大量の記録の確認に時間を要するため")
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = new.year, new.month, new.day
    extended = await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
        name=case.name, etag=case.etag, extension=extension))
    assert extended.state == dpb.DISCLOSURE_STATE_EXTENDED and extended.extension.notice
    notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(
        name=extended.extension.notice))
    assert notice.kind == dpb.DOCUMENT_KIND_EXTENSION_NOTICE
    text = _pdf_text(notice.pdf)
    assert "延長" in text and "大量の記録の確認に時間を要するため" in text
    assert f"延長後の期限: {wareki(new)}" in text  # the documents' one date style
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
            name=case.name, etag=extended.etag, extension=extension))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION and _reason(again.value) == "ALREADY_EXTENDED"


async def test_a_requester_without_their_resident_code_is_found_by_the_4_items_with_minimised_candidates(
        suite: RunningSuite) -> None:
    # 住基法 30-32 ①: the desk identifies the person asking by name, birth date, sex and municipality, under a
    # purpose of its own; the candidates carry nothing beyond what tells them apart.
    resident = _person(44)
    await _notify(suite, birth_notification(resident, "disc-search-1", EVENT_DATE, NOTIFY_TIME))
    birth = register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_DAY, year=resident.birth_date.year,
                                     month=resident.birth_date.month, day=resident.birth_date.day)
    search = identity_pb2.SearchResidentsRequest(query=register_pb2.SearchQuery(
        full_name=resident.full_name, birth_date=birth, sex_code=resident.sex_code,
        municipality_code=resident.municipality_code))
    found = await _desk(suite, "SearchResidents", search, "DISCLOSURE-SUBJECT-SEARCH", stub="identity")
    (candidate,) = [c for c in found.candidates if c.resident.record.resident_code == resident.resident_code]
    record = candidate.resident.record
    assert record.full_name == resident.full_name
    assert not record.individual_number and not record.address  # minimised
    case = await _desk(suite, "CreateDisclosureCase", _new_case(record.resident_code,
                                                                [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    assert case.subject_resident_code == resident.resident_code
    with pytest.raises(grpc.aio.AioRpcError) as other_purpose:
        await _desk(suite, "SearchResidents", search, DISCLOSURE, stub="identity")
    assert other_purpose.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_provision_status_covers_provisions_under_every_resident_code_the_person_had(
        suite: RunningSuite) -> None:
    # 住基法 30-32 (提供状況), 30-4: a new 住民票コード does not hide what was provided under the old one.
    resident, spare = _person(45), _person(46)
    await _notify(suite, birth_notification(resident, "disc-code-1", EVENT_DATE, NOTIFY_TIME))
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident",
                identity_pb2.LookupResidentRequest(resident_code=resident.resident_code), "EDU-SCHOLARSHIP-30-15-2-2")
    change = birth_notification(resident, "disc-code-2", EVENT_DATE + dt.timedelta(days=1), NOTIFY_TIME)
    change.change.kind = register_pb2.CHANGE_KIND_MODIFY
    change.change.reason = register_pb2.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST
    change.previous_resident_code, change.record.resident_code = resident.resident_code, spare.resident_code
    await _notify(suite, change)
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident",
                identity_pb2.LookupResidentRequest(resident_code=spare.resident_code), "EDU-SCHOLARSHIP-30-15-2-2")

    _, content, _ = await _decided(suite, spare.resident_code, [dpb.DISCLOSURE_SCOPE_PROVISION_STATUS])

    provided = content["provision_status"]
    assert [p["recipient"] for p in provided] == ["kyoiku-iinkai", "kyoiku-iinkai"]  # under each code, once


async def test_a_refused_request_gets_a_written_notice_with_its_reason_and_how_to_object(
        suite: RunningSuite) -> None:
    # 住基法 30-32: refusing a request is a 処分; the requester is told in writing why, and how to object
    # (行政不服審査法: 審査請求 within 3 months; 行政事件訴訟法: 取消訴訟 within 6 months).
    case = await _desk(suite, "CreateDisclosureCase", _new_case(_person(43).resident_code,
                                                                [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
            name=case.name, etag=case.etag, verified=False))
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violated_fields(no_reason.value) == {"rejection_reason"}
    reason = "提示された書類により請求者が本人であることを確認できなかったため"
    rejected = await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=False, rejection_reason=reason))
    assert rejected.state == dpb.DISCLOSURE_STATE_REJECTED_IDENTITY
    (notice_name,) = rejected.documents
    notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=notice_name))
    assert notice.kind == dpb.DOCUMENT_KIND_REJECTION_NOTICE
    text = _pdf_text(notice.pdf).replace("\n", "")
    for words in (reason, "却下", "審査請求", "3か月以内", "取消し", "6か月以内"):
        assert words in text


async def test_the_deadline_runs_until_the_resident_is_notified_and_may_be_extended_until_then(
        suite: RunningSuite) -> None:
    # 住基法 30-33 ①: the disclosure is to be carried out within 30 days: a decided case whose notice has not
    # been sent is still running, overdue past its deadline, listed and counted with the open ones.
    received = dt.datetime.now(dt.UTC) - dt.timedelta(days=35)
    late = await _open_verified(suite, _person(40).resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE], received)
    decided = await _desk(suite, "DecideDisclosureCase", dpb.DecideDisclosureCaseRequest(name=late.name,
                                                                                         etag=late.etag))
    assert decided.state in (dpb.DISCLOSURE_STATE_DECIDED_DISCLOSE, dpb.DISCLOSURE_STATE_DECIDED_NOT_EXIST)
    assert decided.deadline_status == dpb.DEADLINE_STATUS_OVERDUE
    overdue = await _desk(suite, "ListDisclosureCases", dpb.ListDisclosureCasesRequest(
        deadline_status=dpb.DEADLINE_STATUS_OVERDUE, page_size=500))
    assert decided.name in {case.name for case in overdue.disclosure_cases}
    notified = await _desk(suite, "NotifyDisclosureCase", dpb.NotifyDisclosureCaseRequest(name=decided.name,
                                                                                          etag=decided.etag))
    assert notified.deadline_status == dpb.DEADLINE_STATUS_NONE
    # 30-33 ②: a decided case not yet notified can still be extended before its deadline; it stays decided.
    recent, _, _ = await _decided(suite, _person(41).resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    new = dt.date(recent.deadline.year, recent.deadline.month, recent.deadline.day) + dt.timedelta(days=10)
    extension = dpb.DeadlineExtension(reason="写しの作成に時間を要するため")
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = new.year, new.month, new.day
    extended = await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
        name=recent.name, etag=recent.etag, extension=extension))
    assert extended.state == recent.state and extended.extension.notice
    # A received request, identity not verified yet, can be extended too, and still needs its verification.
    received_only = await _desk(suite, "CreateDisclosureCase", _new_case(_person(42).resident_code,
                                                                         [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    waiting = await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
        name=received_only.name, etag=received_only.etag, extension=extension))
    assert waiting.state == dpb.DISCLOSURE_STATE_RECEIVED
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
            name=notified.name, etag=notified.etag, extension=extension))
    assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(closed.value) == "INVALID_STATE_TRANSITION"



async def test_invalid_transition_names_the_state_and_a_stale_etag_is_aborted(suite: RunningSuite) -> None:
    case = await _desk(suite, "CreateDisclosureCase", _new_case(_person(6).resident_code,
                                                                [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await _desk(suite, "NotifyDisclosureCase", dpb.NotifyDisclosureCaseRequest(name=case.name))
    assert invalid.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "RECEIVED" in (invalid.value.details() or "")
    await _desk(suite, "VerifyDisclosureCaseIdentity", dpb.VerifyDisclosureCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=True))
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await _desk(suite, "DecideDisclosureCase", dpb.DecideDisclosureCaseRequest(name=case.name, etag=case.etag))
    assert stale.value.code() == grpc.StatusCode.ABORTED


async def test_two_clerks_deciding_one_case_at_once_decide_it_once(suite: RunningSuite) -> None:
    resident = _person(13)
    await _notify(suite, birth_notification(resident, "disc-13", EVENT_DATE, NOTIFY_TIME))
    case = await _open_verified(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    request = dpb.DecideDisclosureCaseRequest(name=case.name, etag=case.etag)
    outcomes = await asyncio.gather(*(_desk(suite, "DecideDisclosureCase", request) for _ in range(2)),
                                    return_exceptions=True)
    decided = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(decided) == 1 and len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.ABORTED
    assert len(decided[0].documents) == 1


async def test_deadline_gauge_counts_open_at_risk_and_overdue_cases(suite: RunningSuite) -> None:
    database = Database(DatabaseConfig(url=suite.database_url("disclosure"), migration_url=None))
    await database.connect()
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never called: the gauge only counts
    try:
        gauge = DeadlineGauge(database, Desk(database, Records(channel), 14, keyring=Keyring.generate()))
        before = await gauge.measure()
        received = dt.datetime.now(dt.UTC) - dt.timedelta(days=35)
        await _desk(suite, "CreateDisclosureCase", _new_case(_person(14).resident_code,
                                                             [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE], received))
        after = await gauge.measure()
    finally:
        await channel.close()
        await database.close()
    assert {k: after[k] - before[k] for k in after} == {"open": 1, "at_risk": 1, "overdue": 1}


async def test_residence_record_copy_is_refused_naming_the_field(suite: RunningSuite) -> None:
    request = _new_case(_person(7).resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE],
                        documents=[dpb.IDENTITY_DOCUMENT_RESIDENCE_RECORD_COPY])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _desk(suite, "CreateDisclosureCase", request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violated_fields(refused.value) == {"disclosure_case.identity_documents"}


# --- correction ------------------------------------------------------------------------------------

def _correction(case: str, field: str, value: str) -> dpb.CreateCorrectionCaseRequest:
    return dpb.CreateCorrectionCaseRequest(correction_case=dpb.CorrectionCase(
        disclosure_case=case, file=dpb.RECORD_FILE_IDENTITY,
        items=[dpb.CorrectionItem(field=field, action=dpb.CORRECTION_ACTION_CORRECT, requested_value=value)]))


async def _investigated(suite: RunningSuite, disclosure: str, value: str) -> Any:
    correction = await _desk(suite, "CreateCorrectionCase", _correction(disclosure, "record.full_name", value),
                             CORRECTION)
    assert correction.state == dpb.CORRECTION_STATE_RECEIVED
    return await _desk(suite, "RecordInvestigationStep", dpb.RecordInvestigationStepRequest(
        name=correction.name, etag=correction.etag,
        step=dpb.InvestigationStep(description="市町村の住民票と照合した")), CORRECTION)


async def test_correction_closes_by_itself_when_the_municipality_corrects_and_recipients_are_noticed(
        suite: RunningSuite) -> None:
    resident = _person(8)
    wrong = birth_notification(resident, "corr-1", EVENT_DATE, NOTIFY_TIME)
    wrong.record.full_name = "誤記　太郎"
    await _notify(suite, wrong)
    lookup = identity_pb2.LookupResidentRequest(resident_code=resident.resident_code)
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident", lookup, "EDU-SCHOLARSHIP-30-15-2-2")
    disclosure, _, text = await _decided(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    assert "誤記　太郎" in text

    investigating = await _investigated(suite, disclosure.name, resident.full_name)
    waiting = await _desk(suite, "ConcludeCorrectionInvestigation", dpb.ConcludeCorrectionInvestigationRequest(
        name=investigating.name, etag=investigating.etag, error_found=True, reason_code="ITEM_MISMATCH"), CORRECTION)
    assert waiting.state == dpb.CORRECTION_STATE_AWAITING_CS_UPDATE and waiting.municipality_report
    reports, _ = await _call(suite, "maebashi-cs", "identity.ListMunicipalityReports",
                             register_pb2.ListMunicipalityReportsRequest(), "CS-REPORTS-12-5")
    (report,) = [r for r in reports.municipality_reports if r.name == waiting.municipality_report]
    assert report.source == register_pb2.REPORT_SOURCE_CORRECTION_REQUEST and report.fields == ["record.full_name"]
    with pytest.raises(grpc.aio.AioRpcError) as early:  # nothing moves before the municipality corrects
        await _desk(suite, "CompleteCorrectionCase", dpb.CompleteCorrectionCaseRequest(name=waiting.name), CORRECTION)
    assert _reason(early.value) == "REPORT_NOT_RESOLVED"

    # The municipality corrects the 住民票 ex officio and notifies the 修正 (30-6).
    fixed = birth_notification(resident, "corr-2", EVENT_DATE, NOTIFY_TIME + dt.timedelta(days=1))
    fixed.change.kind, fixed.change.reason = register_pb2.CHANGE_KIND_MODIFY, \
        register_pb2.CHANGE_REASON_CLERICAL_ERROR_CORRECTION
    fixed.change.event_date.day = 2
    await _notify(suite, fixed)
    # An organ that reads only after the correction received no wrong value.
    await _call(suite, "kikaku-bu", "identity.LookupResident", lookup, "PASSPORT-30-15-1-1")

    async def result_notified() -> bool:
        case = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name), CORRECTION)
        return bool(case.state == dpb.CORRECTION_STATE_RESULT_NOTIFIED)

    await eventually(result_notified, timeout=20, interval=0.5)  # under the operator rate limit
    done = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name), CORRECTION)
    assert done.resolving_version == 2
    (recipient,) = done.wrong_value_recipients
    assert recipient.organization == "kyoiku-iinkai" and list(recipient.fields) == ["record.full_name"]
    assert list(recipient.purposes) == ["EDU-SCHOLARSHIP-30-15-2-2"]
    assert len(recipient.record_versions) == 1 and recipient.record_versions[0].endswith("/versions/1")
    organ_notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(
        name=recipient.notice), CORRECTION)
    assert organ_notice.kind == dpb.DOCUMENT_KIND_RECIPIENT_NOTICE and organ_notice.addressee == "kyoiku-iinkai"
    assert resident.full_name in _pdf_text(organ_notice.pdf) and "群馬県教育委員会 御中" in _pdf_text(organ_notice.pdf)
    listed = await _desk(suite, "ListDisclosureDocuments", dpb.ListDisclosureDocumentsRequest(parent=done.name),
                         CORRECTION)
    kinds = sorted(d.kind for d in listed.disclosure_documents)
    assert kinds == [dpb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE, dpb.DOCUMENT_KIND_RECIPIENT_NOTICE]
    assert all(not d.pdf for d in listed.disclosure_documents)
    (result_name,) = [d.name for d in listed.disclosure_documents
                      if d.kind == dpb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE]
    result = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=result_name),
                         CORRECTION)
    assert resident.full_name in _pdf_text(result.pdf) and "市町村の住民票と照合した" in _pdf_text(result.pdf)
    assert json.loads(result.json)["outcome"] == "CORRECTED" and len(result.record_versions) == 2
    closed = await _desk(suite, "CloseCorrectionCase", dpb.CloseCorrectionCaseRequest(name=done.name, etag=done.etag),
                         CORRECTION)
    assert closed.state == dpb.CORRECTION_STATE_CLOSED
    # The report and the follow-up went through the gateway under the service's purpose, naming the case.
    logged = await _log(suite, "organization = 'disclosure' AND case_reference = $1 AND status = 'OK'", waiting.name)
    assert {r["method"].rsplit("/", 1)[-1] for r in logged} >= {
        "CreateMunicipalityReport", "GetMunicipalityReport", "CompleteCorrectionCase"}
    assert any(r["method"].endswith("/CompleteCorrectionCase") and resident.resident_code in r["resident_codes"]
               for r in logged)
    with pytest.raises(grpc.aio.AioRpcError) as again:  # the transition happened once
        await _desk(suite, "CompleteCorrectionCase", dpb.CompleteCorrectionCaseRequest(name=done.name), CORRECTION)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_municipality_finding_no_error_closes_the_correction_with_a_truthful_written_result(
        suite: RunningSuite) -> None:
    # 住基法 12-5, 30-35: the prefecture reported an error; the municipality investigated and found none.
    # The resident is told so in writing; nothing says the record was corrected, and no organ is noticed.
    resident = _person(12)
    await _notify(suite, birth_notification(resident, "corr-12", EVENT_DATE, NOTIFY_TIME))
    disclosure, _, _ = await _decided(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    investigating = await _investigated(suite, disclosure.name, "別の氏名")
    waiting = await _desk(suite, "ConcludeCorrectionInvestigation", dpb.ConcludeCorrectionInvestigationRequest(
        name=investigating.name, etag=investigating.etag, error_found=True, reason_code="ITEM_MISMATCH"), CORRECTION)
    answered, _ = await _call(suite, "maebashi-cs", "identity.AnswerMunicipalityReport",
                              register_pb2.AnswerMunicipalityReportRequest(
                                  name=waiting.municipality_report, outcome=register_pb2.REPORT_OUTCOME_NO_ERROR,
                                  reason_code="RECORD_MATCHES_FAMILY_REGISTER"), "CS-REPORTS-12-5")
    assert answered.outcome == register_pb2.REPORT_OUTCOME_NO_ERROR

    async def result_notified() -> bool:
        case = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name), CORRECTION)
        return bool(case.state == dpb.CORRECTION_STATE_RESULT_NOTIFIED)

    await eventually(result_notified, timeout=20, interval=0.5)  # under the operator rate limit
    done = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name), CORRECTION)
    assert not done.wrong_value_recipients and done.resolving_version == 0
    (document,) = done.documents
    result = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=document), CORRECTION)
    text = _pdf_text(result.pdf)
    assert result.kind == dpb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE
    assert "誤りは認められませんでした" in text and "記録は訂正されていません" in text
    assert "訂正されました" not in text
    content = json.loads(result.json)
    assert content["outcome"] == "NO_ERROR" and content["municipality_answer_reason_code"] == \
        "RECORD_MATCHES_FAMILY_REGISTER" and content["corrected_record"] == {}


async def test_correction_needs_a_disclosure_of_the_file(suite: RunningSuite) -> None:
    # A case decided "no record" does not qualify (30-35: a person who received a disclosure).
    nothing, _, _ = await _decided(suite, _person(9).resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _desk(suite, "CreateCorrectionCase", _correction(nothing.name, "record.full_name", "x"), CORRECTION)
    assert _reason(refused.value) == "NOT_DISCLOSED"


async def test_correction_without_error_gets_a_written_result(suite: RunningSuite) -> None:
    resident = _person(10)
    await _notify(suite, birth_notification(resident, "corr-10", EVENT_DATE, NOTIFY_TIME))
    disclosure, _, _ = await _decided(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    investigating = await _investigated(suite, disclosure.name, "別の氏名")
    no_error = await _desk(suite, "ConcludeCorrectionInvestigation", dpb.ConcludeCorrectionInvestigationRequest(
        name=investigating.name, etag=investigating.etag, error_found=False), CORRECTION)
    assert no_error.state == dpb.CORRECTION_STATE_RESULT_NOTIFIED and len(no_error.documents) == 1
    assert [s.description for s in no_error.investigation_steps] == ["市町村の住民票と照合した"]
    listed = await _desk(suite, "ListCorrectionCases", dpb.ListCorrectionCasesRequest(page_size=500), CORRECTION)
    (same,) = [c for c in listed.correction_cases if c.name == no_error.name]
    assert same == no_error
    notice = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(
        name=no_error.documents[0]), CORRECTION)
    assert "誤りは認められませんでした" in _pdf_text(notice.pdf) and notice.record_versions[0].endswith("/versions/1")
    assert json.loads(notice.json)["outcome"] == "NO_ERROR"


async def test_no_personal_data_of_disclosure_residents_in_logs(suite: RunningSuite, log_lines: list[str]) -> None:
    # Runs last in this module.
    logs = "\n".join(log_lines)
    assert USED
    for resident in USED:
        for value in (resident.full_name, resident.address, resident.individual_number, "誤記　太郎"):
            assert value not in logs
