"""The written notices are official documents (issue 18): every kind is rendered, its fonts are embedded
subsets, and its text, read back with pypdf, carries what it must (文書番号, issuer, section and contact,
words instead of codes, 和暦 dates, the 教示 of a 処分) and nothing it must not."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any

import pytest
from pypdf import PdfReader

from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.gateway.v1 import operation_log_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from juki_services.disclosure import corrections, notices
from juki_services.disclosure.records import FileRecords
from jukilib.domain.dates import fiscal_year, wareki, wareki_partial, wareki_time

ISSUED = dt.datetime(2026, 12, 6, 1, 30, tzinfo=dt.UTC)  # 令和8年12月6日 10時30分 in Japan
RECEIVED = dt.datetime(2026, 11, 20, 0, 15, tzinfo=dt.UTC)
CODE = "12345678901"
OFFICE = notices.Office()
NUMBER = OFFICE.document_number(2026, 7)
OBJECTION_WORDS = ("(教示)", "審査請求", "行政不服審査法", "3か月以内", "取消し", "行政事件訴訟法", "6か月以内",
                   "群馬県を被告")
RAW = re.compile(r"[A-Z]+_[A-Z_]+|record\.[a-z_]+|"
                 r"[a-z]+[A-Z][A-Za-z]+:|(?:19|20)\d\d年|\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d")


def _change(kind: int, reason: int, day: dt.date, municipality: str) -> register_pb2.ChangeInfo:
    change = register_pb2.ChangeInfo(kind=kind, reason=reason, municipality_code=municipality)
    change.event_date.year, change.event_date.month, change.event_date.day = day.year, day.month, day.day
    return change


def _identity() -> FileRecords:
    record = identity_pb2.IdentityRecord(
        resident_code=CODE, individual_number="123456789018", full_name="上毛　花子",
        full_name_kana="ジョウモウ　ハナコ",
        birth_date=register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_DAY, year=1990, month=4, day=1,
                                            original_text="1990-04-01"),  # a full date is written in 和暦 all the same
        sex_code="2", address="群馬県前橋市大手町一丁目1番1号", address_municipality_code="102016")
    version = identity_pb2.ResidentVersion(
        name="residents/r1/versions/1", record=record, version=1,
        change=_change(register_pb2.CHANGE_KIND_RECORD, register_pb2.CHANGE_REASON_BIRTH, dt.date(2026, 4, 1),
                       "102024"))
    return FileRecords("identity", identity_pb2.Resident(name="residents/r1", record=record, version=1), [version])


def _annex() -> FileRecords:
    record = annex_pb2.AnnexRecord(
        resident_code=CODE, full_name="上毛　花子", overseas_emigrant=True, sex_code="2",
        birth_date=register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_APPROXIMATE, year=1990,
                                            original_text="平成2年頃"),
        domicile_municipality_code="102032")
    record.address_date.year, record.address_date.month, record.address_date.day = 2026, 5, 1
    version = annex_pb2.AnnexResidentVersion(
        name="annexResidents/a1/versions/1", record=record, version=1,
        change=_change(register_pb2.CHANGE_KIND_MODIFY, register_pb2.CHANGE_REASON_MOVE_ABROAD, dt.date(2026, 5, 1),
                       "102032"))
    return FileRecords("annex", annex_pb2.AnnexResident(name="annexResidents/a1", record=record, version=1), [version])


def _provision(recipient: str, fields: list[str], moment: dt.datetime) -> operation_log_pb2.ProvisionRecord:
    provision = operation_log_pb2.ProvisionRecord(
        recipient=recipient, recipient_name="群馬県教育委員会", purpose="EDU-SCHOLARSHIP-30-15-2-2",
        affair="高等学校等就学支援金の支給に関する事務", legal_basis="住基法30-15②(2) 条例",
        method="/juki.identity.v1.IdentityService/LookupResident", fields=fields,
        record_versions=["residents/r1/versions/1"])
    provision.time.FromDatetime(moment)
    return provision


def _case() -> pb.DisclosureCase:
    case = pb.DisclosureCase(name="disclosureCases/c1", subject_resident_code=CODE, requester_name="上毛　花子")
    case.receive_time.FromDatetime(RECEIVED)
    return case


def _suspension() -> pb.UsageSuspensionCase:
    case = pb.UsageSuspensionCase(name="usageSuspensionCases/u1", subject_resident_code=CODE,
                                  requester_name="上毛　花子", purposes=["EDU-SCHOLARSHIP-30-15-2-2"],
                                  ground=pb.USAGE_SUSPENSION_GROUND_PROVISION_OUTSIDE_PURPOSE)
    case.receive_time.FromDatetime(RECEIVED)
    return case


def _correction() -> pb.CorrectionCase:
    return pb.CorrectionCase(
        name="correctionCases/k1", disclosure_case="disclosureCases/c1", subject_resident_code=CODE,
        items=[pb.CorrectionItem(field="record.sex_code", action=pb.CORRECTION_ACTION_CORRECT, requested_value="1")])


def _recipients(with_code: bool, received_code: str = CODE) -> list[dict[str, Any]]:
    """An organ given the wrong 男女の別 of version 1, held under `received_code`; version 2 corrects it under
    CODE (a new 住民票コード when `received_code` differs, 30-4)."""
    t0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    wrong = identity_pb2.ResidentVersion(name="residents/r1/versions/1", version=1,
                                         record=identity_pb2.IdentityRecord(sex_code="2", resident_code=received_code))
    right = identity_pb2.ResidentVersion(name="residents/r1/versions/2", version=2,
                                         record=identity_pb2.IdentityRecord(sex_code="1", resident_code=CODE))
    wrong.create_time.FromDatetime(t0)
    right.create_time.FromDatetime(t0 + dt.timedelta(days=2))
    fields = ["record.sex_code", "record.full_name"] + (["record.resident_code"] if with_code else [])
    provision = _provision("kyoiku-iinkai", fields, t0 + dt.timedelta(days=1))
    return corrections.wrong_value_recipients("identity", [wrong, right], wrong=1, resolving=2,
                                              fields=["record.sex_code"], provisions=[provision])


def _drafts() -> dict[str, notices.Draft]:
    """One draft of every kind of notice (and of each way a kind can end)."""
    disclosed, _ = notices.decision_notice(_case(), _identity(), _annex(),
                                           [_provision("kyoiku-iinkai", ["record.full_name", "record.resident_code"],
                                                       RECEIVED - dt.timedelta(days=30))], ISSUED)
    nothing, _ = notices.decision_notice(_case(), FileRecords("identity"), None, None, ISSUED)
    (organ,) = _recipients(with_code=False)
    return {
        "decision": disclosed,
        "not_exist": nothing,
        "extension": notices.extension_notice(_case(), dt.date(2026, 12, 20), dt.date(2027, 1, 19),
                                              "記録の確認に時間を要するため", ISSUED),
        "rejection": notices.rejection_notice(_case(), "本人であることを確認できなかったため", ISSUED),
        "correction_corrected": notices.correction_result_notice(
            _correction(), "上毛　花子", outcome="CORRECTED", steps=["市町村の住民票と照合した"],
            corrected={"sexCode": "1"}, versions=["identity:residents/r1/versions/2"], issued=ISSUED),
        "correction_no_error": notices.correction_result_notice(
            _correction(), "上毛　花子", outcome="NO_ERROR", steps=["市町村の住民票と照合した"], corrected={},
            versions=[], issued=ISSUED, municipality_answer="RECORD_MATCHES_FAMILY_REGISTER"),
        "recipient": notices.recipient_notice(_correction(), organ, {"sexCode": "1"}, ISSUED),
        "suspension_stop": notices.usage_suspension_notice(
            _suspension(), "STOP", "目的外の提供が認められたため", ISSUED, purposes=["EDU-SCHOLARSHIP-30-15-2-2"]),
        "suspension_not_stop": notices.usage_suspension_notice(_suspension(), "NOT_STOP", "違反は認められないため",
                                                               ISSUED),
        "suspension_rejected": notices.usage_suspension_notice(_suspension(), "REJECTED",
                                                               "本人であることを確認できなかったため", ISSUED),
        "suspension_extension": notices.usage_suspension_notice(
            _suspension(), "EXTENDED", "関係機関への照会に時間を要するため", ISSUED, deadline=dt.date(2026, 12, 20),
            new_deadline=dt.date(2027, 1, 19)),
    }


def _issued(name: str) -> notices.Notice:
    return notices.issue(_drafts()[name], NUMBER, OFFICE)


def _text(pdf: bytes) -> str:
    """The text read back, a line wrapped to the width joined again (a continuation line is indented)."""
    return re.sub(r"\n(?: {4})?", "", "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages))


def _fonts(pdf: bytes) -> list[Any]:
    found = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for reference in page["/Resources"]["/Font"].values():
            font = reference.get_object()
            found += [d.get_object() for d in font["/DescendantFonts"]] if "/DescendantFonts" in font else [font]
    return found


def test_the_samples_cover_every_kind_of_notice() -> None:
    assert {d.kind for d in _drafts().values()} == set(notices.NOTICE_KINDS)


@pytest.mark.parametrize("name", sorted(_drafts()))
def test_every_notice_embeds_a_subset_of_its_font(name: str) -> None:
    # A PDF that does not embed its font shows empty boxes on a reader without Japanese fonts: what the reader
    # sees would not be fixed by the stored SHA-256 (pdffonts: emb yes, sub yes).
    pdf = _issued(name).pdf
    fonts = _fonts(pdf)
    assert fonts
    for font in fonts:
        descriptor = font["/FontDescriptor"].get_object()
        assert "/FontFile2" in descriptor or "/FontFile3" in descriptor, font["/BaseFont"]
        assert re.fullmatch(r"/[A-Z]{6}\+IPAexMincho", str(font["/BaseFont"])), font["/BaseFont"]
    assert len(pdf) < 120_000  # a subset, not the 7.8 MB font


@pytest.mark.parametrize("name", sorted(_drafts()))
def test_every_notice_carries_its_number_date_issuer_and_section_in_the_pdf_and_the_json(name: str) -> None:
    notice = _issued(name)
    text = _text(notice.pdf)
    for words in (NUMBER, "令和8年12月6日", "群馬県知事", OFFICE.section, OFFICE.telephone, OFFICE.address):
        assert words in text and words in notice.json
    assert notice.number == NUMBER and '"document_number": "群馬県広聴第2026-000007号"' in notice.json


@pytest.mark.parametrize("name", sorted(_drafts()))
def test_every_notice_says_words_not_codes_and_dates_in_one_style(name: str) -> None:
    text = _text(_issued(name).pdf)
    assert not RAW.findall(text), RAW.findall(text)
    assert "男女の別: 2" not in text and "男女の別: 1" not in text


@pytest.mark.parametrize(("name", "disposition"), [
    ("decision", True), ("not_exist", True), ("rejection", True), ("correction_corrected", True),
    ("correction_no_error", True), ("extension", False), ("recipient", False), ("suspension_stop", True),
    ("suspension_not_stop", True), ("suspension_rejected", True), ("suspension_extension", False)])
def test_a_disposition_tells_how_to_object_and_other_notices_do_not(name: str, disposition: bool) -> None:
    # 行政不服審査法 82 ①, 行政事件訴訟法 46 ①: a 処分 in writing tells whom to ask for review, and within which
    # periods 審査請求 (3 months) and 取消訴訟 (6 months) may be brought.
    notice = _issued(name)
    text = _text(notice.pdf)
    assert notices.NOTICE_KINDS[notice.kind].disposition is disposition
    assert all((words in text) is disposition for words in OBJECTION_WORDS)
    assert ('"objection"' in notice.json) is disposition


def test_the_decision_names_sex_reasons_municipalities_and_fields_in_words() -> None:
    text = _text(_issued("decision").pdf)
    for words in ("男女の別: 女", "出生の年月日: 平成2年4月1日", "住所の市町村: 前橋市", "本籍地の市町村: 桐生市",
                  "第1版 記載 (異動事由: 出生) 異動日 令和8年4月1日 通知市町村 高崎市", "異動事由: 国外転出",
                  "出生の年月日: 平成2年頃", "住所を定めた年月日: 令和8年5月1日", "国外転出者である旨: 該当",
                  "氏名、住民票コード", "令和8年10月21日", "令和8年11月20日付けで請求のあった", "上毛　花子 様",
                  "群馬県教育委員会 高等学校等就学支援金の支給に関する事務 (住基法30-15②(2) 条例)"):
        assert words in text, words
    assert "本人確認情報開示決定通知書" in text


def test_a_decision_that_nothing_is_kept_says_so_in_its_title() -> None:
    text = _text(_issued("not_exist").pdf)
    assert "本人確認情報不開示決定通知書" in text and "該当する情報はありません" in text


def test_the_extension_gives_both_deadlines_in_wareki() -> None:
    text = _text(_issued("extension").pdf)
    assert "本来の期限: 令和8年12月20日" in text and "延長後の期限: 令和9年1月19日" in text


def test_the_correction_result_names_the_municipality_answer_not_its_code() -> None:
    no_error = _issued("correction_no_error")
    assert "戸籍の記載と一致" in _text(no_error.pdf) and "RECORD_MATCHES_FAMILY_REGISTER" in no_error.json
    corrected = _text(_issued("correction_corrected").pdf)
    assert "男女の別: 訂正 男" in corrected and "訂正されました" in corrected and "男女の別: 男" in corrected


def test_an_organ_notice_names_the_person_only_by_what_the_organ_received() -> None:
    # 住基法 30-35 follow-up: an organ not given the 住民票コード does not learn it from the notice.
    (without,) = _recipients(with_code=False)
    (with_code,) = _recipients(with_code=True)
    plain = notices.issue(notices.recipient_notice(_correction(), without, {"sexCode": "1"}, ISSUED), NUMBER, OFFICE)
    coded = notices.issue(notices.recipient_notice(_correction(), with_code, {"sexCode": "1"}, ISSUED), NUMBER, OFFICE)
    assert CODE not in plain.json and CODE not in _text(plain.pdf)
    assert CODE in coded.json and CODE in _text(coded.pdf)
    text = _text(plain.pdf)
    assert "群馬県教育委員会 御中" in text and "男女の別: 女" in text and "男女の別: 男" in text
    assert "高等学校等就学支援金の支給に関する事務" in text and "kyoiku-iinkai" not in text
    assert "令和8年4月2日" in text  # when it was provided, in 和暦


def test_an_organ_given_a_former_code_is_named_that_code_never_the_current_one() -> None:
    # 住基法 30-35 follow-up, 30-4: the organ received the person under the code they had then; the notice names
    # the person by that code, and does not tell the organ the code the person has now.
    former = "98765432109"
    (recipient,) = _recipients(with_code=True, received_code=former)
    notice = notices.issue(notices.recipient_notice(_correction(), recipient, {"sexCode": "1"}, ISSUED), NUMBER,
                           OFFICE)
    assert former in notice.json and former in _text(notice.pdf)
    assert CODE not in notice.json and CODE not in _text(notice.pdf)


def test_the_same_notice_renders_to_the_same_bytes() -> None:
    # The stored SHA-256 fixes the document: rendering it again gives the same bytes.
    assert _issued("decision").pdf == _issued("decision").pdf


def test_every_change_reason_has_its_japanese_name() -> None:
    reasons = set(register_pb2.ChangeReason.keys()) - {"CHANGE_REASON_UNSPECIFIED"}
    assert reasons == set(notices.REASONS)
    kinds = set(register_pb2.ChangeKind.keys()) - {"CHANGE_KIND_UNSPECIFIED"}
    assert kinds == set(notices.KINDS)


def test_the_document_number_carries_the_fiscal_year_and_a_six_digit_sequence() -> None:
    assert OFFICE.document_number(2026, 123) == "群馬県広聴第2026-000123号"
    assert notices.Office(number_prefix="県民").document_number(2027, 1) == "県民第2027-000001号"
    # 地方自治法 208 ①: the fiscal year runs from 1 April to 31 March.
    assert fiscal_year(dt.date(2027, 3, 31)) == 2026 and fiscal_year(dt.date(2027, 4, 1)) == 2027


@pytest.mark.parametrize(("day", "text"), [
    (dt.date(2019, 4, 30), "平成31年4月30日"), (dt.date(2019, 5, 1), "令和元年5月1日"),
    (dt.date(1989, 1, 7), "昭和64年1月7日"), (dt.date(1989, 1, 8), "平成元年1月8日"),
    (dt.date(1926, 12, 25), "昭和元年12月25日"), (dt.date(1912, 7, 30), "大正元年7月30日"),
    (dt.date(1873, 1, 1), "明治6年1月1日"), (dt.date(2026, 12, 6), "令和8年12月6日")])
def test_days_are_written_in_wareki_from_the_first_day_of_each_era(day: dt.date, text: str) -> None:
    assert wareki(day) == text


def test_partial_dates_and_instants_are_written_in_wareki() -> None:
    assert wareki_partial(1990, None, None) == "平成2年"
    assert wareki_partial(1990, 2, None) == "平成2年2月"
    assert wareki_partial(2023, 2, 29) == "令和5年2月29日"  # a non-calendar day, kept as sent (§4.3)
    assert wareki_partial(None, None, None) == "年月日不詳"
    assert wareki_time(dt.datetime(2026, 12, 5, 15, 5, tzinfo=dt.UTC)) == "令和8年12月6日 0時05分"
