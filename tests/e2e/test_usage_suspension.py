"""利用停止請求 end to end through the gateway (issue 18; 個人情報保護法 98 … 102, 番号法 30).

A resident asks that the prefecture stop using or providing their records under named purposes (seed I.7
特定個人情報の開示・訂正・利用停止請求). From the moment the desk opens the case, the gateway refuses every
answer that provides the person's records under those purposes (FAILED_PRECONDITION, in the operation log,
no personal data in the message), whichever 住民票コード or search finds the person; the decision (stop or
not, with its reason) is a written notice with the 教示; a decision to stop holds after the case is closed,
a decision not to stop lifts the refusal once the requester is told.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import re
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from pypdf import PdfReader

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from juki_services.disclosure.desk import Desk
from juki_services.disclosure.monitor import DeadlineGauge
from juki_services.disclosure.records import Records
from jukilib.config import DatabaseConfig
from jukilib.db.pool import Database
from jukilib.grpc.channels import secure_channel
from jukilib.keyring import Keyring
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import RunningSuite, field_violations
from tests.e2e.test_cases_cli import Clerk, _field, clerk  # noqa: F401 - `clerk`: a registered CLI clerk (fixture)
from tests.e2e.test_flows import _reason

SUSPENSION = "USAGE-SUSPENSION-98"
SCHOLARSHIP, LICENCE = "EDU-SCHOLARSHIP-30-15-2-2", "EDU-LICENCE-30-15-2-1"  # both 教育委員会, LookupResident
SEARCH, TAX = "PASSPORT-SEARCH-30-15-1-1", "TAX-NUMBER-30-15-1-2"  # 企画部: a search; a lookup by 個人番号
NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
USED: list[SyntheticResident] = []


def _person(seed: int) -> SyntheticResident:
    base = generate_residents(1, seed=198_000 + seed)[0]
    resident = dataclasses.replace(base, municipality_code="102016", address=f"群馬県前橋市大手町{seed}番地")
    USED.append(resident)
    return resident


async def _recorded(suite: RunningSuite, resident: SyntheticResident, notification_id: str) -> None:
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            birth_notification(resident, notification_id, dt.date(2026, 3, 1), NOTIFY_TIME),
            metadata=purpose_metadata("CS-NOTIFY-30-6", request_id=str(uuid.uuid4())), timeout=10)


async def _desk(suite: RunningSuite, method: str, request: Any) -> Any:
    """The disclosure desk's clerk, logged in, through the gateway."""
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        return await getattr(disclosure_pb2_grpc.DisclosureServiceStub(channel), method)(
            request, metadata=purpose_metadata(SUSPENSION, credential=suite.credential("disclosure-desk"),
                                               request_id=str(uuid.uuid4())), timeout=20)


async def _organ(suite: RunningSuite, organ: str, method: str, request: Any, purpose: str,
                 request_id: str | None = None) -> Any:
    """An organ's clerk asking the identity register through the gateway."""
    async with secure_channel(suite.gateway, suite.client_tls(organ)) as channel:
        return await getattr(identity_pb2_grpc.IdentityServiceStub(channel), method)(
            request, metadata=purpose_metadata(purpose, credential=suite.credential(organ),
                                               case_reference="licence-2026-001" if purpose == LICENCE else "",
                                               request_id=request_id or str(uuid.uuid4())), timeout=10)


async def _lookup(suite: RunningSuite, code: str, purpose: str = SCHOLARSHIP, request_id: str | None = None) -> Any:
    return await _organ(suite, "kyoiku-iinkai", "LookupResident", identity_pb2.LookupResidentRequest(
        resident_code=code), purpose, request_id)


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


def _request(code: str, purposes: list[str], *, received: dt.datetime | None = None,
             ground: int = dpb.USAGE_SUSPENSION_GROUND_PROVISION_OUTSIDE_PURPOSE,
             ) -> dpb.CreateUsageSuspensionCaseRequest:
    case = dpb.UsageSuspensionCase(
        subject_resident_code=code, requester_kind=dpb.REQUESTER_KIND_PERSON, requester_name="請求者 本人",
        identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD], channel=dpb.CHANNEL_COUNTER, purposes=purposes,
        ground=ground)
    if received is not None:
        case.receive_time.FromDatetime(received)
    return dpb.CreateUsageSuspensionCaseRequest(usage_suspension_case=case)


async def _open(suite: RunningSuite, code: str, purposes: list[str], *, verified: bool = True) -> Any:
    case = await _desk(suite, "CreateUsageSuspensionCase", _request(code, purposes))
    if not verified:
        return case
    return await _desk(suite, "VerifyUsageSuspensionCaseIdentity", dpb.VerifyUsageSuspensionCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=True))


async def _log(suite: RunningSuite, request_id: str) -> asyncpg.Record:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        (row,) = await connection.fetch("SELECT * FROM operation_log WHERE request_id = $1", request_id)
        return row
    finally:
        await connection.close()


async def _notice(suite: RunningSuite, name: str) -> tuple[Any, dict[str, Any], str]:
    """(the document, its JSON, its PDF text read back with pypdf)."""
    document = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=name))
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(document.pdf)).pages)
    return document, json.loads(document.json), re.sub(r"\s+", "", text)  # lines wrap anywhere


def _assert_suspended(error: grpc.aio.AioRpcError, *personal: str) -> None:
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(error) == "USAGE_SUSPENDED"
    for value in personal:  # no personal data in what the organ is told
        assert value not in (error.details() or "")


async def test_a_provision_under_a_named_purpose_is_refused_from_the_moment_the_case_exists(
        suite: RunningSuite) -> None:
    # 個人情報保護法 98 ①(2), 100: while the request is handled, the person's records are not provided under the
    # purposes it names; other purposes and other persons are not affected.
    person, other = _person(1), _person(2)
    await _recorded(suite, person, "us-1")
    await _recorded(suite, other, "us-2")
    assert (await _lookup(suite, person.resident_code)).record.full_name == person.full_name

    case = await _desk(suite, "CreateUsageSuspensionCase", _request(person.resident_code, [SCHOLARSHIP]))

    assert case.state == dpb.USAGE_SUSPENSION_STATE_RECEIVED
    assert list(case.suspended_purposes) == [SCHOLARSHIP]
    request_id = str(uuid.uuid4())
    refused = await _refused(_lookup(suite, person.resident_code, request_id=request_id))
    _assert_suspended(refused, person.resident_code, person.full_name)
    row = await _log(suite, request_id)  # logged like every refusal, with the person it concerned
    assert (row["decision"], row["reason"], row["status"]) == (2, "USAGE_SUSPENDED", "FAILED_PRECONDITION")
    assert person.resident_code in row["resident_codes"] and row["disclosed_fields"] == []
    assert (await _lookup(suite, person.resident_code, LICENCE)).record.full_name == person.full_name
    assert (await _lookup(suite, other.resident_code)).record.full_name == other.full_name


async def test_the_person_is_refused_under_every_resident_code_they_had_by_search_and_by_individual_number(
        suite: RunningSuite) -> None:
    # 住基法 30-4: a new 住民票コード is the same person. The request names the code the person knew (the former
    # one); the organs reach the person by the new code, by the 4 items, by the 個人番号: all refused.
    person, spare = _person(3), _person(4)
    await _recorded(suite, person, "us-3")
    change = birth_notification(person, "us-3-code", dt.date(2026, 3, 2), NOTIFY_TIME)
    change.change.kind, change.change.reason = rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST
    change.previous_resident_code, change.record.resident_code = person.resident_code, spare.resident_code
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            change, metadata=purpose_metadata("CS-NOTIFY-30-6", request_id=str(uuid.uuid4())), timeout=10)

    case = await _open(suite, person.resident_code, [SCHOLARSHIP, SEARCH, TAX], verified=False)

    assert set(case.resident_codes) == {person.resident_code, spare.resident_code}
    _assert_suspended(await _refused(_lookup(suite, spare.resident_code)), spare.resident_code, person.full_name)
    birth = rpb.PartialDate(precision=rpb.DATE_PRECISION_DAY, year=person.birth_date.year,
                            month=person.birth_date.month, day=person.birth_date.day)
    search = identity_pb2.SearchResidentsRequest(query=rpb.SearchQuery(
        full_name=person.full_name, birth_date=birth, sex_code=person.sex_code, municipality_code="102016"))
    _assert_suspended(await _refused(_organ(suite, "kikaku-bu", "SearchResidents", search, SEARCH)),
                      person.full_name)
    by_number = identity_pb2.LookupResidentByIndividualNumberRequest(individual_number=person.individual_number)
    _assert_suspended(await _refused(_organ(suite, "kikaku-bu", "LookupResidentByIndividualNumber", by_number, TAX)),
                      person.individual_number, person.full_name)


async def _change_code(suite: RunningSuite, person: SyntheticResident, new_code: str, notification_id: str) -> None:
    """The municipality's 30-4 change of 住民票コード (変更請求), notified through the gateway (30-6)."""
    change = birth_notification(person, notification_id, dt.date(2026, 3, 5), NOTIFY_TIME)
    change.change.kind, change.change.reason = rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST
    change.previous_resident_code, change.record.resident_code = person.resident_code, new_code
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            change, metadata=purpose_metadata("CS-NOTIFY-30-6", request_id=str(uuid.uuid4())), timeout=10)


async def _suspension_in_force_everywhere(suite: RunningSuite) -> None:
    """Wait for the gateway's next read of the suspensions in force (every second): the list carries the person's
    resources, which a case answer does not."""
    await asyncio.sleep(1.5)


async def test_a_resident_code_given_after_the_case_was_opened_is_refused_too(suite: RunningSuite) -> None:
    # 住基法 30-4: a new 住民票コード is the same person. The request was filed under the code the person had then;
    # the municipality changes it while the case is handled, and later again after a decision to stop: an organ
    # reaching the person by either new code is refused (個人情報保護法 100, 101), by lookup and by search.
    person, second, third = _person(13), _person(14), _person(15)
    await _recorded(suite, person, "us-13")
    case = await _open(suite, person.resident_code, [SCHOLARSHIP, SEARCH], verified=False)
    assert list(case.resident_codes) == [person.resident_code]
    await _suspension_in_force_everywhere(suite)

    await _change_code(suite, person, second.resident_code, "us-13-code")

    request_id = str(uuid.uuid4())
    refused = await _refused(_lookup(suite, second.resident_code, request_id=request_id))
    _assert_suspended(refused, second.resident_code, person.resident_code, person.full_name)
    row = await _log(suite, request_id)  # logged under the code it was reached by
    assert (row["reason"], row["status"]) == ("USAGE_SUSPENDED", "FAILED_PRECONDITION")
    assert second.resident_code in row["resident_codes"]
    birth = rpb.PartialDate(precision=rpb.DATE_PRECISION_DAY, year=person.birth_date.year,
                            month=person.birth_date.month, day=person.birth_date.day)
    search = identity_pb2.SearchResidentsRequest(query=rpb.SearchQuery(
        full_name=person.full_name, birth_date=birth, sex_code=person.sex_code, municipality_code="102016"))
    _assert_suspended(await _refused(_organ(suite, "kikaku-bu", "SearchResidents", search, SEARCH)),
                      person.full_name)
    # Another purpose is not named: the organ is answered, under the new code.
    assert (await _lookup(suite, second.resident_code, LICENCE)).record.full_name == person.full_name

    verified = await _desk(suite, "VerifyUsageSuspensionCaseIdentity", dpb.VerifyUsageSuspensionCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=True))
    decided = await _desk(suite, "DecideUsageSuspensionCase", dpb.DecideUsageSuspensionCaseRequest(
        name=verified.name, etag=verified.etag, decision=dpb.USAGE_SUSPENSION_DECISION_STOP,
        reason="目的外の提供が認められたため", stopped_purposes=[SCHOLARSHIP]))
    notified = await _desk(suite, "NotifyUsageSuspensionCase", dpb.NotifyUsageSuspensionCaseRequest(
        name=decided.name, etag=decided.etag))
    await _desk(suite, "CloseUsageSuspensionCase", dpb.CloseUsageSuspensionCaseRequest(
        name=notified.name, etag=notified.etag))
    await _change_code(suite, dataclasses.replace(person, resident_code=second.resident_code), third.resident_code,
                       "us-13-code-2")
    await _suspension_in_force_everywhere(suite)

    # Stopped for good under SCHOLARSHIP (101 ①), whichever code; SEARCH was not decided stopped.
    _assert_suspended(await _refused(_lookup(suite, third.resident_code)), third.resident_code, person.full_name)
    assert (await _organ(suite, "kikaku-bu", "SearchResidents", search, SEARCH)).candidates


async def test_a_decision_to_stop_is_a_written_notice_and_keeps_the_refusal_after_the_case_is_closed(
        suite: RunningSuite) -> None:
    # 個人情報保護法 100, 101 ①: stop for the purposes decided, for good; the requester is told in writing with the
    # reason and how to object (a 処分: 行政不服審査法 審査請求, 行政事件訴訟法 取消訴訟). A purpose asked for but
    # not decided stopped is provided again from the decision.
    person = _person(5)
    await _recorded(suite, person, "us-5")
    case = await _open(suite, person.resident_code, [SCHOLARSHIP, LICENCE])
    reason = "奨学金事務において利用目的以外の目的のための提供が認められたため"

    decided = await _desk(suite, "DecideUsageSuspensionCase", dpb.DecideUsageSuspensionCaseRequest(
        name=case.name, etag=case.etag, decision=dpb.USAGE_SUSPENSION_DECISION_STOP, reason=reason,
        stopped_purposes=[SCHOLARSHIP]))

    assert decided.state == dpb.USAGE_SUSPENSION_STATE_DECIDED_STOP
    assert list(decided.suspended_purposes) == [SCHOLARSHIP]
    assert (await _lookup(suite, person.resident_code, LICENCE)).record.full_name == person.full_name
    (name,) = decided.documents
    document, content, text = await _notice(suite, name)
    assert document.kind == dpb.DOCUMENT_KIND_USAGE_SUSPENSION_DECISION_NOTICE
    assert document.subject_resident_code == person.resident_code
    assert content["decision"] == "STOP" and content["stopped_purposes"] == [SCHOLARSHIP]
    assert "利用停止をすることに決定しました" in text and reason in text and SCHOLARSHIP in text
    assert "教示" in text and "審査請求" in text and "3か月以内" in text and "6か月以内" in text
    notified = await _desk(suite, "NotifyUsageSuspensionCase", dpb.NotifyUsageSuspensionCaseRequest(
        name=decided.name, etag=decided.etag))
    closed = await _desk(suite, "CloseUsageSuspensionCase", dpb.CloseUsageSuspensionCaseRequest(
        name=notified.name, etag=notified.etag))
    assert closed.state == dpb.USAGE_SUSPENSION_STATE_CLOSED
    _assert_suspended(await _refused(_lookup(suite, person.resident_code)), person.resident_code)


async def test_a_decision_not_to_stop_lifts_the_refusal_once_the_requester_is_notified(suite: RunningSuite) -> None:
    # 個人情報保護法 101 ②: a decision not to stop is told in writing, with the reason and the 教示; until the
    # requester is told, the request is still being handled and the refusal holds.
    person = _person(6)
    await _recorded(suite, person, "us-6")
    case = await _open(suite, person.resident_code, [SCHOLARSHIP])
    reason = "奨学金事務における提供は住民基本台帳法第30条の15第2項に基づくものであり違反は認められないため"
    decided = await _desk(suite, "DecideUsageSuspensionCase", dpb.DecideUsageSuspensionCaseRequest(
        name=case.name, etag=case.etag, decision=dpb.USAGE_SUSPENSION_DECISION_NOT_STOP, reason=reason))

    _assert_suspended(await _refused(_lookup(suite, person.resident_code)), person.resident_code)
    (name,) = decided.documents
    _, content, text = await _notice(suite, name)
    assert content["decision"] == "NOT_STOP"
    assert "利用停止をしないことに決定しました" in text and reason in text and "審査請求" in text

    notified = await _desk(suite, "NotifyUsageSuspensionCase", dpb.NotifyUsageSuspensionCaseRequest(
        name=decided.name, etag=decided.etag))

    assert list(notified.suspended_purposes) == []
    assert (await _lookup(suite, person.resident_code)).record.full_name == person.full_name


async def test_a_rejected_request_is_answered_in_writing_and_lifts_the_refusal(suite: RunningSuite) -> None:
    # Identity not verified, or not the person's own data: the request is rejected in writing with the reason and
    # the 教示, and nothing is stopped.
    person = _person(7)
    await _recorded(suite, person, "us-7")
    case = await _open(suite, person.resident_code, [SCHOLARSHIP], verified=False)
    _assert_suspended(await _refused(_lookup(suite, person.resident_code)), person.resident_code)
    reason = "提示された書類により請求者が本人であることを確認できなかったため"

    rejected = await _desk(suite, "VerifyUsageSuspensionCaseIdentity", dpb.VerifyUsageSuspensionCaseIdentityRequest(
        name=case.name, etag=case.etag, verified=False, rejection_reason=reason))

    assert rejected.state == dpb.USAGE_SUSPENSION_STATE_REJECTED
    assert (await _lookup(suite, person.resident_code)).record.full_name == person.full_name
    _, content, text = await _notice(suite, rejected.documents[0])
    assert content["decision"] == "REJECTED" and "却下します" in text and reason in text and "教示" in text


async def test_bad_requests_are_refused_naming_the_field(suite: RunningSuite) -> None:
    person = _person(8)
    cases = [
        (_request(person.resident_code, [SCHOLARSHIP, "NO-SUCH-PURPOSE"]), {"usage_suspension_case.purposes[1]"}),
        # The person's own requests and a municipality's notifications are not uses a suspension can stop.
        (_request(person.resident_code, ["CS-NOTIFY-30-6"]), {"usage_suspension_case.purposes[0]"}),
        (_request(person.resident_code, [SCHOLARSHIP], ground=dpb.USAGE_SUSPENSION_GROUND_UNSPECIFIED),
         {"usage_suspension_case.ground"}),
        (_request("12345", [SCHOLARSHIP]), {"usage_suspension_case.subject_resident_code"}),
        (_request(person.resident_code, []), {"usage_suspension_case.purposes"}),
    ]
    for request, fields in cases:
        refused = await _refused(_desk(suite, "CreateUsageSuspensionCase", request))
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(refused)) == fields
    case = await _open(suite, person.resident_code, [SCHOLARSHIP])
    refused = await _refused(_desk(suite, "DecideUsageSuspensionCase", dpb.DecideUsageSuspensionCaseRequest(
        name=case.name, decision=dpb.USAGE_SUSPENSION_DECISION_STOP, reason="理由", stopped_purposes=[LICENCE])))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused) == ["stopped_purposes[0]"]


async def test_the_state_machine_refuses_out_of_order_transitions(suite: RunningSuite) -> None:
    person = _person(9)
    received = await _open(suite, person.resident_code, [SCHOLARSHIP], verified=False)
    decide = dpb.DecideUsageSuspensionCaseRequest(name=received.name, decision=dpb.USAGE_SUSPENSION_DECISION_STOP,
                                                  reason="理由")
    for method, request in [
        ("DecideUsageSuspensionCase", decide),  # identity not verified yet
        ("NotifyUsageSuspensionCase", dpb.NotifyUsageSuspensionCaseRequest(name=received.name)),
        ("CloseUsageSuspensionCase", dpb.CloseUsageSuspensionCaseRequest(name=received.name)),
    ]:
        refused = await _refused(_desk(suite, method, request))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _reason(refused) == "INVALID_STATE_TRANSITION"
    verified = await _desk(suite, "VerifyUsageSuspensionCaseIdentity", dpb.VerifyUsageSuspensionCaseIdentityRequest(
        name=received.name, verified=True))
    again = await _refused(_desk(suite, "VerifyUsageSuspensionCaseIdentity",
                                 dpb.VerifyUsageSuspensionCaseIdentityRequest(name=verified.name, verified=True)))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_deadline_is_30_days_extendable_once_by_30_days_in_writing_and_counted_like_the_others(
        suite: RunningSuite) -> None:
    # 個人情報保護法 102 ①②: decide within 30 days of the request; extend by at most 30 days, with the reason in
    # writing. Late cases show in the case list and the deadline gauge beside disclosure cases.
    database = Database(DatabaseConfig(url=suite.database_url("disclosure"), migration_url=None))
    await database.connect()
    channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never called: the gauge only counts
    try:
        gauge = DeadlineGauge(database, Desk(database, Records(channel), 14, keyring=Keyring.generate()))
        before = await gauge.measure()
        late = await _desk(suite, "CreateUsageSuspensionCase", _request(
            _person(10).resident_code, [SCHOLARSHIP], received=dt.datetime.now(dt.UTC) - dt.timedelta(days=35)))
        after = await gauge.measure()
    finally:
        await channel.close()
        await database.close()
    assert {k: after[k] - before[k] for k in after} == {"open": 1, "at_risk": 1, "overdue": 1}
    assert late.deadline_status == dpb.DEADLINE_STATUS_OVERDUE
    overdue = await _desk(suite, "ListUsageSuspensionCases", dpb.ListUsageSuspensionCasesRequest(
        deadline_status=dpb.DEADLINE_STATUS_OVERDUE, page_size=500))
    assert late.name in [c.name for c in overdue.usage_suspension_cases]

    case = await _desk(suite, "CreateUsageSuspensionCase", _request(_person(11).resident_code, [SCHOLARSHIP]))
    deadline = dt.date(case.deadline.year, case.deadline.month, case.deadline.day)
    extension = dpb.DeadlineExtension(reason="関係機関への照会に時間を要するため")
    too_late = deadline + dt.timedelta(days=31)
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = (
        too_late.year, too_late.month, too_late.day)
    refused = await _refused(_desk(suite, "ExtendUsageSuspensionCase", dpb.ExtendUsageSuspensionCaseRequest(
        name=case.name, extension=extension)))
    assert field_violations(refused) == ["extension.new_deadline"]
    extension.new_deadline.day = (deadline + dt.timedelta(days=30)).day
    extension.new_deadline.month = (deadline + dt.timedelta(days=30)).month
    extension.new_deadline.year = (deadline + dt.timedelta(days=30)).year
    extended = await _desk(suite, "ExtendUsageSuspensionCase", dpb.ExtendUsageSuspensionCaseRequest(
        name=case.name, etag=case.etag, extension=extension))
    assert extended.state == dpb.USAGE_SUSPENSION_STATE_RECEIVED and extended.extension.notice
    document, content, text = await _notice(suite, extended.extension.notice)
    assert document.kind == dpb.DOCUMENT_KIND_USAGE_SUSPENSION_EXTENSION_NOTICE
    assert content["decision"] == "EXTENDED" and "延長" in text and "関係機関への照会に時間を要するため" in text


async def test_juki_cases_runs_a_usage_suspension_from_request_to_closing(
        suite: RunningSuite, clerk: Clerk) -> None:  # noqa: F811 - the imported fixture
    person = _person(12)
    await _recorded(suite, person, "us-12")
    opened = await clerk("suspend", "--resident-code", person.resident_code, "--requester-name", "請求者 本人",
                         "--document", "passport", "--purpose", SCHOLARSHIP, "--purpose", LICENCE,
                         "--ground", "provision-outside-purpose")
    name = opened.splitlines()[0]
    assert name.startswith("usageSuspensionCases/") and _field(opened, "state") == ["RECEIVED"]
    assert _field(opened, "refused") == [f"{SCHOLARSHIP}, {LICENCE}"]
    _assert_suspended(await _refused(_lookup(suite, person.resident_code)), person.resident_code)
    assert _field(await clerk("verify", name), "state") == ["IDENTITY_VERIFIED"]
    missing = await clerk("decide", name, "--stop", status=1)  # no reason
    assert missing.startswith("INVALID_ARGUMENT: ")
    decided = await clerk("decide", name, "--stop", "--stop-purpose", SCHOLARSHIP, "--reason", "目的外提供のため")
    assert _field(decided, "state") == ["DECIDED_STOP"] and _field(decided, "refused") == [SCHOLARSHIP]
    assert "USAGE_SUSPENSION_DECISION_NOTICE" in await clerk("documents", name)
    await clerk("notify", name)
    assert _field(await clerk("close", name), "state") == ["CLOSED"]
    assert name in await clerk("list", "--suspensions", "--all")
    _assert_suspended(await _refused(_lookup(suite, person.resident_code)), person.resident_code)
    printed = "".join(clerk.printed)
    assert person.resident_code not in printed and person.full_name not in printed


async def test_no_personal_data_of_these_residents_reached_the_service_logs(log_lines: list[str]) -> None:
    text = "\n".join(log_lines)
    for resident in USED:
        for value in (resident.full_name, resident.resident_code, resident.individual_number, resident.address):
            assert value not in text


async def test_the_list_of_suspensions_is_the_gateways_own_and_not_exposed(suite: RunningSuite) -> None:
    # Who asked to stop what is itself personal data: no caller reads the list through the gateway.
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        refused = await _refused(disclosure_pb2_grpc.DisclosureServiceStub(channel).ListActiveUsageSuspensions(
            dpb.ListActiveUsageSuspensionsRequest(), metadata=purpose_metadata(
                SUSPENSION, credential=suite.credential("disclosure-desk"), request_id=str(uuid.uuid4())),
            timeout=10))
    assert refused.code() == grpc.StatusCode.UNIMPLEMENTED
