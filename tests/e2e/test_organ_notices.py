"""Organs are told of every correction of a value they received (issue 18; 住基法 30-35 follow-up, 12-5, 30-4).

A correction case tells the organs when the municipality's 修正 resolves its report (test_disclosure). Here the
correction comes from elsewhere: the municipality's own 誤記修正, or its 修正 answering a 12-5 report of the
prefecture. The disclosure service follows the registers' 修正 (ListModifications) through the gateway and
writes each organ that received the replaced value a notice naming the person only by what that organ itself
received, under whichever 住民票コード it received it (30-4). Everything is called through the gateway.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from typing import Any

import asyncpg
import grpc
from pypdf import PdfReader

from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2 as opb
from juki.gateway.v1 import operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident
from tests.conftest import RunningSuite, eventually
from tests.e2e.test_disclosure import _decided, _investigated
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _reason, _resident

DESK_PURPOSE = "CORRECTION-30-35"  # the disclosure desk reads the organ notices under it
FOLLOW_UP = "ORGAN-NOTICE-30-35"  # the disclosure service's own purpose for the follow-up
USED: list[SyntheticResident] = []  # every resident of this module, checked for personal data at the end
# What each purpose provides (the catalogue, purposes.toml):
SCHOLARSHIP = "EDU-SCHOLARSHIP-30-15-2-2"  # 教育委員会: 住民票コード, 氏名, 男女の別, 住所 …
LICENCE = "EDU-LICENCE-30-15-2-1"  # 教育委員会: 氏名, 出生の年月日, 住所 only: never the 男女の別
PASSPORT = "PASSPORT-30-15-1-1"  # 知事部局: 氏名, 男女の別, 住所 …, never the 住民票コード
OWN_AFFAIRS = "JUKI-OWN-AFFAIRS"  # 市町村課: 住民票コード, 氏名, 男女の別 …
ORGANS = {SCHOLARSHIP: "kyoiku-iinkai", LICENCE: "kyoiku-iinkai", PASSPORT: "kikaku-bu", OWN_AFFAIRS: "shichoson-ka"}


def _person(index: int) -> SyntheticResident:
    resident = _resident(600 + index)  # apart from every other module's residents
    USED.append(resident)
    return resident


def _other_sex(resident: SyntheticResident) -> str:
    return "2" if resident.sex_code == "1" else "1"


async def _notify(suite: RunningSuite, request: Any) -> Any:
    answer, _ = await _call(suite, "maebashi-cs", "identity.ApplyNotification", request, "CS-NOTIFY-30-6")
    return answer


def _recorded_wrong(resident: SyntheticResident, notification: str) -> Any:
    """The 記載 of `resident` with the wrong 男女の別: the error organs will receive."""
    request = birth_notification(resident, notification, EVENT_DATE, NOTIFY_TIME)
    request.record.sex_code = _other_sex(resident)
    return request


def _modified(resident: SyntheticResident, notification: str, day: int, reason: int,
              resident_code: str | None = None) -> Any:
    """A 修正 (30-6 ①) of `resident` as they truly are, with `reason`, on 1 April + `day` days."""
    request = birth_notification(resident, notification, EVENT_DATE + dt.timedelta(days=day),
                                 NOTIFY_TIME + dt.timedelta(days=day))
    request.change.kind, request.change.reason = rpb.CHANGE_KIND_MODIFY, reason
    if resident_code is not None:
        request.record.resident_code = resident_code
    return request


async def _look_up(suite: RunningSuite, purpose: str, resident_code: str) -> None:
    """The organ of `purpose` looks the person up under it (with a file reference where the purpose needs one)."""
    lookup = identity_pb2.LookupResidentRequest(resident_code=resident_code)
    await _call(suite, ORGANS[purpose], "identity.LookupResident", lookup, purpose,
                case_reference=f"file-{uuid.uuid4().hex[:8]}" if purpose in (LICENCE, OWN_AFFAIRS) else "")


async def _desk(suite: RunningSuite, method: str, request: Any) -> Any:
    """The disclosure desk's clerk, through the gateway."""
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        return await getattr(disclosure_pb2_grpc.DisclosureServiceStub(channel), method)(
            request, metadata=purpose_metadata(DESK_PURPOSE, credential=suite.credential("disclosure-desk"),
                                               request_id=str(uuid.uuid4())), timeout=20)


async def _notified(suite: RunningSuite, resident_code: str, count: int = 1) -> list[Any]:
    """The organ notifications about the person (by the code the 修正 recorded), once `count` exist."""
    found: list[Any] = []

    async def listed() -> bool:
        page = await _desk(suite, "ListOrganNotifications", dpb.ListOrganNotificationsRequest(page_size=500))
        found[:] = [n for n in page.organ_notifications if n.subject_resident_code == resident_code]
        return len(found) >= count

    await eventually(listed, timeout=30, interval=0.5)  # under the operator rate limit
    return found


async def _notices(suite: RunningSuite, notification: Any) -> dict[str, tuple[Any, str]]:
    """Each notice of a notification by addressee: (the document, its PDF's text read back)."""
    notices = {}
    for name in notification.documents:
        document = await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=name))
        assert document.kind == dpb.DOCUMENT_KIND_RECIPIENT_NOTICE
        text = re.sub(r"\n {4}", "", "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(document.pdf)).pages))
        notices[document.addressee] = (document, text)
    return notices


async def _log(suite: RunningSuite, condition: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        return await connection.fetch(f"SELECT * FROM operation_log WHERE {condition}", *args)
    finally:
        await connection.close()


async def test_organs_that_received_a_wrong_value_are_told_after_the_municipality_s_own_clerical_correction(
        suite: RunningSuite) -> None:
    # 住基法 30-35 follow-up: the municipality corrected its own 誤記 (30-6 ①, no correction request, no 12-5
    # report); every organ given the wrong 男女の別 is told in writing; an organ never given it is not.
    resident, other = _person(1), _person(6)
    await _notify(suite, _recorded_wrong(resident, "organ-1"))
    await _notify(suite, _recorded_wrong(other, "organ-6"))
    await _look_up(suite, SCHOLARSHIP, resident.resident_code)
    await _look_up(suite, PASSPORT, resident.resident_code)
    await _look_up(suite, PASSPORT, other.resident_code)
    await _notify(suite, _modified(resident, "organ-1-fix", 1, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION))

    # The 教育委員会 received the other person's record only for 教員免許 (氏名, 出生の年月日, 住所): not the 男女の別.
    await _look_up(suite, LICENCE, other.resident_code)
    await _notify(suite, _modified(other, "organ-6-fix", 1, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION))

    (notification,) = await _notified(suite, resident.resident_code)
    assert notification.file == dpb.RECORD_FILE_IDENTITY
    assert list(notification.field_paths) == ["record.sex_code"]
    assert notification.version.endswith("/versions/2") and notification.previous_version.endswith("/versions/1")
    assert sorted(notification.recipients) == ["kikaku-bu", "kyoiku-iinkai"]
    (others,) = await _notified(suite, other.resident_code)
    assert list(others.recipients) == ["kikaku-bu"]  # not the 教育委員会: it never received the 男女の別
    notices = await _notices(suite, notification)
    assert sorted(notices) == ["kikaku-bu", "kyoiku-iinkai"]
    sexes = {"1": "男", "2": "女"}
    for organ, (document, text) in notices.items():
        content = json.loads(document.json)
        # What it received (the wrong value) and what is recorded now, in words; nothing it did not receive.
        assert f"男女の別: {sexes[_other_sex(resident)]}" in text and f"男女の別: {sexes[resident.sex_code]}" in text
        assert content["fields"] == ["record.sex_code"] and document.document_number in text
        for value in (resident.full_name, resident.address, resident.individual_number, resident.full_name_kana):
            assert value not in text and value not in document.json, organ
    # Named by the 住民票コード only to the organ that received it.
    kyoiku, kikaku = notices["kyoiku-iinkai"], notices["kikaku-bu"]
    assert resident.resident_code in kyoiku[1] and "群馬県教育委員会 御中" in kyoiku[1]
    assert resident.resident_code not in kikaku[1] and resident.resident_code not in kikaku[0].json
    # The follow-up read the person's history and provisions through the gateway, under its own purpose and
    # its own reference; every read of a notice is logged under the resident.
    follow_up = await _log(suite, "organization = 'disclosure' AND purpose = $1 AND case_reference = $2",
                           FOLLOW_UP, notification.name)
    assert {r["method"].rsplit("/", 1)[-1] for r in follow_up} == {"ListResidentVersions", "ListProvisionRecords"}
    reads = await _log(suite, "organization = 'disclosure-desk' AND method LIKE '%/GetDisclosureDocument' "
                              "AND $1 = ANY(resident_codes)", resident.resident_code)
    assert len(reads) >= 2


async def test_a_12_5_report_of_the_prefecture_resolved_by_the_municipality_s_correction_notifies_the_organs(
        suite: RunningSuite) -> None:
    # 住基法 12-5: the prefecture's desk reports the wrong 男女の別 to the municipality; its 修正 resolves the report;
    # the organ that received the wrong value is told (30-35 follow-up), with no correction case involved.
    resident = _person(2)
    await _notify(suite, _recorded_wrong(resident, "organ-2"))
    await _look_up(suite, SCHOLARSHIP, resident.resident_code)
    async with secure_channel(suite.gateway, suite.client_tls("shichoson-ka")) as channel:
        report = await identity_pb2_grpc.IdentityServiceStub(channel).CreateMunicipalityReport(
            rpb.CreateMunicipalityReportRequest(municipality_report=rpb.MunicipalityReport(
                resident_code=resident.resident_code, reason_code="ITEM_MISMATCH", fields=["record.sex_code"])),
            metadata=purpose_metadata("PREFECTURE-REPORTS-12-5", credential=suite.credential("shichoson-ka"),
                                      request_id=str(uuid.uuid4())), timeout=10)
    assert report.source == rpb.REPORT_SOURCE_PREFECTURE_FINDING
    await _notify(suite, _modified(resident, "organ-2-fix", 1, rpb.CHANGE_REASON_EX_OFFICIO_CORRECTION))

    (notification,) = await _notified(suite, resident.resident_code)
    assert list(notification.recipients) == ["kyoiku-iinkai"]
    ((document, text),) = (await _notices(suite, notification)).values()
    assert document.addressee == "kyoiku-iinkai" and resident.resident_code in text
    assert resident.full_name not in text


async def test_an_organ_that_received_the_value_under_a_former_code_is_told_by_that_code_only(
        suite: RunningSuite) -> None:
    # 住基法 30-4: the person changed 住民票コード after the organ received the wrong value; the provision under
    # the former code is found, and the notice names the person by the code that organ received, not the new one.
    resident, spare = _person(3), _person(4)
    await _notify(suite, _recorded_wrong(resident, "organ-3"))
    await _look_up(suite, SCHOLARSHIP, resident.resident_code)
    change = _modified(resident, "organ-3-code", 1, rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, spare.resident_code)
    change.record.sex_code = _other_sex(resident)  # only the code changes
    change.previous_resident_code = resident.resident_code
    await _notify(suite, change)
    await _look_up(suite, OWN_AFFAIRS, spare.resident_code)
    await _notify(suite, _modified(resident, "organ-3-fix", 2, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION,
                                   spare.resident_code))

    # The change of code corrected nothing (the former code was right when provided): one notification.
    (notification,) = await _notified(suite, spare.resident_code)
    assert sorted(notification.recipients) == ["kyoiku-iinkai", "shichoson-ka"]
    notices = await _notices(suite, notification)
    former, current = notices["kyoiku-iinkai"], notices["shichoson-ka"]
    assert resident.resident_code in former[1] and spare.resident_code not in former[1]
    assert spare.resident_code not in former[0].json
    assert spare.resident_code in current[1] and resident.resident_code not in current[1]


async def test_a_correction_handled_by_a_correction_case_is_not_notified_twice(suite: RunningSuite) -> None:
    # 住基法 30-35: the correction case's completion tells the organs; the follower sees the same 修正 (it resolved
    # the case's 12-5 report) and issues nothing more.
    resident = _person(5)
    wrong = birth_notification(resident, "organ-5", EVENT_DATE, NOTIFY_TIME)
    wrong.record.full_name = "誤記　次郎"
    await _notify(suite, wrong)
    await _look_up(suite, SCHOLARSHIP, resident.resident_code)
    disclosure, _, _ = await _decided(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    investigating = await _investigated(suite, disclosure.name, resident.full_name)
    waiting = await _desk(suite, "ConcludeCorrectionInvestigation", dpb.ConcludeCorrectionInvestigationRequest(
        name=investigating.name, etag=investigating.etag, error_found=True, reason_code="ITEM_MISMATCH"))
    await _notify(suite, _modified(resident, "organ-5-fix", 1, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION))

    async def result_notified() -> bool:
        case = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name))
        return bool(case.state == dpb.CORRECTION_STATE_RESULT_NOTIFIED)

    await eventually(result_notified, timeout=30, interval=0.5)
    done = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name))
    (recipient,) = done.wrong_value_recipients
    assert recipient.organization == "kyoiku-iinkai" and recipient.notice

    connection = await asyncpg.connect(suite.database_url("disclosure"))
    try:
        async def followed() -> bool:
            return bool(await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM organ_notification WHERE subject_resident_code = $1)",
                resident.resident_code))

        await eventually(followed, timeout=30, interval=0.2)
        row = await connection.fetchrow(
            """SELECT n.correction_case_id, n.recipients,
                      (SELECT count(*) FROM disclosure_document d WHERE d.case_kind = 'organ' AND d.case_id = n.id)
                          AS documents
               FROM organ_notification n WHERE subject_resident_code = $1""", resident.resident_code)
    finally:
        await connection.close()
    assert row is not None and f"correctionCases/{row['correction_case_id']}" == done.name
    assert list(row["recipients"]) == [] and row["documents"] == 0
    page = await _desk(suite, "ListOrganNotifications", dpb.ListOrganNotificationsRequest(page_size=500))
    assert not [n for n in page.organ_notifications if n.subject_resident_code == resident.resident_code]


async def test_a_field_the_correction_case_did_not_report_is_notified_by_the_follow_up_alone(
        suite: RunningSuite) -> None:
    # 住基法 30-35: the resident asked to correct the name; the municipality's 修正 corrects the 男女の別 too. The
    # case tells the organ of the name, the follow-up of the 男女の別 only: every corrected value once.
    resident = _person(7)
    wrong = _recorded_wrong(resident, "organ-7")
    wrong.record.full_name = "誤記　三郎"
    await _notify(suite, wrong)
    await _look_up(suite, SCHOLARSHIP, resident.resident_code)
    disclosure, _, _ = await _decided(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    investigating = await _investigated(suite, disclosure.name, resident.full_name)
    waiting = await _desk(suite, "ConcludeCorrectionInvestigation", dpb.ConcludeCorrectionInvestigationRequest(
        name=investigating.name, etag=investigating.etag, error_found=True, reason_code="ITEM_MISMATCH"))
    await _notify(suite, _modified(resident, "organ-7-fix", 1, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION))

    (notification,) = await _notified(suite, resident.resident_code)
    assert sorted(notification.field_paths) == ["record.full_name", "record.sex_code"]
    ((document, text),) = (await _notices(suite, notification)).values()
    assert document.addressee == "kyoiku-iinkai" and json.loads(document.json)["fields"] == ["record.sex_code"]
    assert "誤記　三郎" not in text and resident.full_name not in text

    async def result_notified() -> bool:
        case = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name))
        return bool(case.state == dpb.CORRECTION_STATE_RESULT_NOTIFIED)

    await eventually(result_notified, timeout=30, interval=0.5)
    done = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name))
    (recipient,) = done.wrong_value_recipients
    assert list(recipient.fields) == ["record.full_name"]


async def _follow_up_read(suite: RunningSuite, code: str, reference: str) -> grpc.aio.AioRpcError | None:
    """A read of the person's provisions under the follow-up's purpose, with the disclosure service's certificate."""
    async with secure_channel(suite.gateway, suite.server_tls("disclosure")) as channel:
        try:
            await operation_log_pb2_grpc.OperationLogServiceStub(channel).ListProvisionRecords(
                opb.ListProvisionRecordsRequest(resident_code=code), metadata=purpose_metadata(
                    FOLLOW_UP, case_reference=reference, request_id=str(uuid.uuid4())), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error
    return None


async def test_an_organ_that_received_annex_data_is_told_of_its_correction_without_a_resident_code(
        suite: RunningSuite) -> None:
    # 住基法 30-44-13 applies 30-35 to the annex file: the 本籍地's own 誤記修正 of a 国外転出者's 附票 reaches the
    # department that received the wrong 氏名 under 30-44-6, and its notice names the person only by what it
    # received there: never a 住民票コード, which annex data never carries (30-44-6).
    from jukitools.demo.notifications import annex_notification

    resident = _person(17)
    wrong = annex_notification(resident, "organ-annex-7", EVENT_DATE, moved_abroad=True, notify_time=NOTIFY_TIME)
    wrong.record.full_name = "誤記　太郎"
    await _call(suite, "maebashi-cs", "annex.ApplyNotification", wrong, "CS-NOTIFY-30-41")
    await _call(suite, "kikaku-bu", "annex.LookupAnnexResident",
                annex_pb2.LookupAnnexResidentRequest(resident_code=resident.resident_code), "ANNEX-OVERSEAS-30-44-6-2")
    fixed = annex_notification(resident, "organ-annex-7-fix", EVENT_DATE + dt.timedelta(days=1), moved_abroad=True,
                               notify_time=NOTIFY_TIME + dt.timedelta(days=1))
    fixed.change.kind, fixed.change.reason = rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION
    fixed.record.address_date.CopyFrom(wrong.record.address_date)  # only the 氏名 is corrected
    await _call(suite, "maebashi-cs", "annex.ApplyNotification", fixed, "CS-NOTIFY-30-41")

    (notification,) = await _notified(suite, resident.resident_code)
    assert notification.file == dpb.RECORD_FILE_ANNEX and list(notification.field_paths) == ["record.full_name"]
    assert list(notification.recipients) == ["kikaku-bu"]
    ((document, text),) = (await _notices(suite, notification)).values()
    assert "誤記　太郎" in text and resident.full_name in text  # the wrong value it received, and the right one
    assert resident.resident_code not in text and resident.resident_code not in document.json
    # The reads of the notice are logged under the resident all the same (the feed named the code).
    reads = await _log(suite, "organization = 'disclosure-desk' AND method LIKE '%/GetDisclosureDocument' "
                              "AND $1 = ANY(resident_codes)", resident.resident_code)
    assert reads


async def test_an_organ_that_received_a_wrong_individual_number_is_told_of_its_correction(
        suite: RunningSuite) -> None:
    # 番号法 7 ② / 住基法 30-35 follow-up: the municipality corrects a wrong 個人番号 ex officio (個人番号の職権修正);
    # the department that received the number (番号利用事務) is told. The register keeps the number apart from
    # the record: the feed compares it all the same, and the notice never prints a 個人番号.
    from jukitools.demo.residents import generate_residents

    resident = _person(19)
    wrong_number = generate_residents(1, seed=9619)[0].individual_number
    recorded = birth_notification(resident, "organ-number-19", EVENT_DATE, NOTIFY_TIME)
    recorded.record.individual_number = wrong_number
    await _notify(suite, recorded)
    await _call(suite, "kikaku-bu", "identity.LookupResidentByIndividualNumber",
                identity_pb2.LookupResidentByIndividualNumberRequest(individual_number=wrong_number),
                "TAX-NUMBER-30-15-1-2")
    await _notify(suite, _modified(resident, "organ-number-19-fix", 1,
                                   rpb.CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_CORRECTION))

    (notification,) = await _notified(suite, resident.resident_code)
    assert list(notification.field_paths) == ["record.individual_number"]
    assert list(notification.recipients) == ["kikaku-bu"]
    ((document, text),) = (await _notices(suite, notification)).values()
    assert "個人番号: (この通知には記載しません" in text
    for number in (wrong_number, resident.individual_number):
        assert number not in text and number not in document.json


async def test_a_finished_or_made_up_follow_up_opens_no_record(suite: RunningSuite) -> None:
    # Issue 19 (住基法 30-35): the follow-up's reads are admitted only while it is open; once its notices are issued,
    # or under a follow-up that does not exist, the gateway refuses them.
    resident = _person(8)
    await _notify(suite, _recorded_wrong(resident, "organ-8"))
    await _look_up(suite, PASSPORT, resident.resident_code)
    await _notify(suite, _modified(resident, "organ-8-fix", 1, rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION))
    (notification,) = await _notified(suite, resident.resident_code)

    async def closed() -> bool:  # a replica keeps a positive answer JUKI_OPEN_CASE_CACHE_SECONDS (5 s)
        return await _follow_up_read(suite, resident.resident_code, notification.name) is not None

    await eventually(closed, timeout=15, interval=0.5)
    for reference, reason in ((notification.name, "CASE_NOT_OPEN"),
                              (f"organNotifications/{uuid.uuid4()}", "CASE_NOT_FOUND"),
                              ("organNotifications/made-up", "CASE_REFERENCE_NOT_A_CASE")):
        refused = await _follow_up_read(suite, resident.resident_code, reference)
        assert refused is not None and refused.code() == grpc.StatusCode.PERMISSION_DENIED, reference
        assert _reason(refused) == reason


async def test_no_personal_data_of_organ_notice_residents_in_logs(suite: RunningSuite, log_lines: list[str]) -> None:
    # Runs last in this module.
    logs = "\n".join(log_lines)
    assert USED
    for resident in USED:
        for value in (resident.full_name, resident.address, resident.individual_number, resident.resident_code):
            assert value not in logs
