"""Notices are official documents (issue 18), proven on real documents fetched through the gateway with
GetDisclosureDocument: the font is embedded (a subset), each notice has its own 文書番号 in the PDF, the JSON
and the resource, the issuer and the responsible section, words instead of codes, 和暦 dates, and the 教示
exactly when the notice is a 処分 (行政不服審査法 82 ①, 行政事件訴訟法 46 ①)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.identity.v1 import identity_pb2
from juki_services.disclosure.notices import Office
from jukilib.domain.dates import JAPAN, wareki
from jukilib.domain.sex import sex_label
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident
from tests.conftest import RunningSuite
from tests.e2e.test_disclosure import _desk, _new_case, _notify, _open_verified, _pdf_text
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _resident
from tests.unit.test_notices import OBJECTION_WORDS, RAW, _fonts

USED: list[SyntheticResident] = []
NUMBER = re.compile(r"群馬県広聴第\d{4}-\d{6}号")
OFFICE = Office()


def _person(index: int) -> SyntheticResident:
    resident = _resident(290 + index)  # apart from test_disclosure's residents (200 + n)
    USED.append(resident)
    return resident


def _text(pdf: bytes) -> str:
    return re.sub(r"\n(?: {4})?", "", _pdf_text(pdf))


async def _document(suite: RunningSuite, name: str) -> Any:
    return await _desk(suite, "GetDisclosureDocument", dpb.GetDisclosureDocumentRequest(name=name))


async def _decide(suite: RunningSuite, resident_code: str, scopes: list[int]) -> Any:
    case = await _open_verified(suite, resident_code, scopes)
    return await _desk(suite, "DecideDisclosureCase", dpb.DecideDisclosureCaseRequest(name=case.name,
                                                                                      etag=case.etag))


async def test_a_decision_fetched_through_the_gateway_is_an_official_document(suite: RunningSuite) -> None:
    resident = _person(1)
    await _notify(suite, birth_notification(resident, "notice-1", EVENT_DATE, NOTIFY_TIME))
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident",
                identity_pb2.LookupResidentRequest(resident_code=resident.resident_code), "EDU-SCHOLARSHIP-30-15-2-2")
    decided = await _decide(suite, resident.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE,
                                                            dpb.DISCLOSURE_SCOPE_PROVISION_STATUS])
    (name,) = decided.documents
    notice = await _document(suite, name)
    text = _text(notice.pdf)

    # The font travels in the document (pdffonts: emb yes, sub yes).
    for font in _fonts(notice.pdf):
        descriptor = font["/FontDescriptor"].get_object()
        assert "/FontFile2" in descriptor and re.fullmatch(r"/[A-Z]{6}\+IPAexMincho", str(font["/BaseFont"]))
    # One 文書番号, the same in the resource, the JSON and the PDF.
    assert NUMBER.fullmatch(notice.document_number)
    assert json.loads(notice.json)["document_number"] == notice.document_number and notice.document_number in text
    # Issued by the governor, dated in 和暦, with the section that answers for it.
    today = dt.datetime.now(JAPAN).date()
    assert any(wareki(day) in text for day in (today, today - dt.timedelta(days=1)))
    for words in (OFFICE.issuer, OFFICE.section, OFFICE.telephone, f"{decided.requester_name} 様"):
        assert words in text
    # Words instead of codes.
    for words in (f"男女の別: {sex_label(resident.sex_code)}", "住所の市町村: 前橋市", "異動事由: 国内転入",
                  "通知市町村 前橋市", "氏名", "住民票コード", "出生の年月日: " + wareki(resident.birth_date),
                  "群馬県教育委員会 高等学校等就学支援金"):  # 提供先 and 利用事務 by their names
        assert words in text, words
    assert not RAW.findall(text) and "EDU-SCHOLARSHIP" not in text, RAW.findall(text)
    # A 処分: how to object, and within which periods.
    assert all(words in text for words in OBJECTION_WORDS)
    listed = await _desk(suite, "ListDisclosureDocuments", dpb.ListDisclosureDocumentsRequest(parent=decided.name))
    assert [d.document_number for d in listed.disclosure_documents] == [notice.document_number]


async def test_every_notice_has_its_own_number_and_only_a_disposition_tells_how_to_object(
        suite: RunningSuite) -> None:
    first, second, third = _person(2), _person(3), _person(4)
    for resident, notification in ((first, "notice-2"), (second, "notice-3")):
        await _notify(suite, birth_notification(resident, notification, EVENT_DATE, NOTIFY_TIME))
    # Two decisions at once are numbered one after the other, never twice the same number.
    decided = await asyncio.gather(*(_decide(suite, r.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
                                     for r in (first, second)))
    numbers = [(await _document(suite, case.documents[0])).document_number for case in decided]
    # An extension (30-33 ②) decides nothing: it is numbered too, but carries no 教示.
    case = await _desk(suite, "CreateDisclosureCase", _new_case(third.resident_code,
                                                                [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE]))
    new = dt.date(case.deadline.year, case.deadline.month, case.deadline.day) + dt.timedelta(days=15)
    extension = dpb.DeadlineExtension(reason="記録の確認に時間を要するため")
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = new.year, new.month, new.day
    extended = await _desk(suite, "ExtendDisclosureCase", dpb.ExtendDisclosureCaseRequest(
        name=case.name, etag=case.etag, extension=extension))
    notice = await _document(suite, extended.extension.notice)
    text = _text(notice.pdf)
    numbers.append(notice.document_number)
    assert all(NUMBER.fullmatch(n) for n in numbers) and len(set(numbers)) == 3
    assert f"延長後の期限: {wareki(new)}" in text and not any(words in text for words in OBJECTION_WORDS)
    assert "objection" not in json.loads(notice.json)


async def test_no_personal_data_of_notice_residents_in_logs(suite: RunningSuite, log_lines: list[str]) -> None:
    # Runs last in this module.
    logs = "\n".join(log_lines)
    assert USED
    for resident in USED:
        for value in (resident.full_name, resident.address, resident.individual_number):
            assert value not in logs
