"""The written notices (書面): official documents, rendered to a printable PDF and a machine-readable JSON.

A notice is built in two steps. A builder (`decision_notice`, `rejection_notice`, …) turns the exact record
versions it uses into a `Draft`: the body, in words (男/女, the reason's and the municipality's names,
Japanese field names, every date in 和暦), and the JSON content. `issue` then gives every notice the same
frame, in one place: the document number (文書番号), the date, the addressee, the issuer, the title, the
body, the 教示 when the notice is a 処分 (declared once per kind in `NOTICE_KINDS`), and the responsible
section with its contact. A new kind of 処分 notice gets its 教示 by declaring itself a 処分 there.

The PDF embeds a subset of IPAex明朝 (shipped in `fonts/` with its licence), so that what the reader sees
is fixed by the stored bytes and their SHA-256, on any reader. The PDF and the JSON are stored with their
SHA-256 and the record versions, and never changed. The PDFs carry personal data by nature; nothing here
logs.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki_services.disclosure.records import FileRecords
from jukilib.domain.dates import JAPAN, wareki, wareki_partial, wareki_time
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.domain.sex import sex_label

FONT = "IPAexMincho"
FONT_FILE = Path(__file__).parent / "fonts" / "ipaexm.ttf"


@functools.cache
def _font() -> str:
    """Register the TrueType font once; reportlab embeds a subset of it (the glyphs used) in each PDF."""
    pdfmetrics.registerFont(TTFont(FONT, str(FONT_FILE)))
    return FONT


@dataclass(frozen=True)
class Office:
    """Who issues the notices and who answers for them (the disclosure service's configuration)."""

    issuer: str = "群馬県知事"
    """The issuer line (発信者): the 処分庁 of the decisions (住基法 30-32, 30-35)."""
    prefecture: str = "群馬県"
    """The local public entity: the defendant of a 取消訴訟 (行政事件訴訟法 11 ①)."""
    section: str = "群馬県生活こども部県民活動支援・広聴課情報公開係"
    """The responsible section (担当), the seed's 請求先 for 開示・訂正・利用停止."""
    address: str = "〒371-8570 群馬県前橋市大手町一丁目1番1号"
    """The section's postal address."""
    telephone: str = "027-226-2270"
    """The section's telephone number."""
    number_prefix: str = "群馬県広聴"
    """What precedes 第 in the document number."""

    def document_number(self, fiscal_year: int, sequence: int) -> str:
        """文書番号: `{prefix}第{年度}-{sequence, 6 digits}号`, e.g. 群馬県広聴第2026-000123号. The fiscal year
        is written in 西暦 so that numbers sort and stay unique across a change of 元号."""
        return f"{self.number_prefix}第{fiscal_year}-{sequence:06d}号"

    def contact_lines(self) -> list[str]:
        return [f"担当 {self.section}", f"     {self.address}  電話 {self.telephone}"]


@dataclass(frozen=True)
class NoticeKind:
    """A kind of notice: its title, and whether it is a 処分 (then it carries the 教示)."""

    title: str
    disposition: bool


NOTICE_KINDS: dict[int, NoticeKind] = {
    # 住基法 30-32 ②: the decision to disclose, or that nothing is kept, is a 処分.
    pb.DOCUMENT_KIND_DECISION_NOTICE: NoticeKind("本人確認情報開示決定通知書", disposition=True),
    # 30-33 ②: telling the requester of an extension decides nothing.
    pb.DOCUMENT_KIND_EXTENSION_NOTICE: NoticeKind("本人確認情報開示決定等期限延長通知書", disposition=False),
    # 30-35: the result of the investigation (訂正する/しない) decides the request.
    pb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE: NoticeKind("本人確認情報訂正等申出調査結果通知書", disposition=True),
    # To an organ that received a wrong value: information between administrative bodies, not a 処分.
    pb.DOCUMENT_KIND_RECIPIENT_NOTICE: NoticeKind("提供済み本人確認情報の訂正について(通知)", disposition=False),
    # Refusing the request (identity not verified, not the person's own data) is a 処分.
    pb.DOCUMENT_KIND_REJECTION_NOTICE: NoticeKind("本人確認情報開示請求却下通知書", disposition=True),
    # 個人情報保護法 101: the decision to stop or not to stop (or to reject the request) is a 処分.
    pb.DOCUMENT_KIND_USAGE_SUSPENSION_DECISION_NOTICE: NoticeKind("保有個人情報利用停止請求に対する決定通知書",
                                                                  disposition=True),
    # 102 ②: telling the requester of an extension decides nothing.
    pb.DOCUMENT_KIND_USAGE_SUSPENSION_EXTENSION_NOTICE: NoticeKind("保有個人情報利用停止決定等期限延長通知書",
                                                                   disposition=False),
}
TITLES: dict[int, str] = {kind: notice_kind.title for kind, notice_kind in NOTICE_KINDS.items()}
NOT_EXIST_TITLE = "本人確認情報不開示決定通知書"


def objection_lines(office: Office) -> tuple[str, ...]:
    """教示 of a 処分 (行政不服審査法 82 ①, 行政事件訴訟法 46 ①): to whom, how and within which periods to
    object. The issuer has no superior 行政庁, so the 審査請求 is made to the issuer itself (行政不服審査法 4 (1))."""
    return (
        "(教示)",
        f"1 この決定に不服がある場合は、この決定があったことを知った日の翌日から起算して3か月以内に、{office.issuer}に"
        "対して審査請求をすることができます(行政不服審査法第2条、第4条、第18条第1項)。ただし、この決定があった日の"
        "翌日から起算して1年を経過した場合は、審査請求をすることができなくなります(同法第18条第2項)。",
        "2 この決定の取消しを求める訴えは、この決定があったことを知った日の翌日から起算して6か月以内に、"
        f"{office.prefecture}を被告として(訴訟において{office.prefecture}を代表する者は{office.issuer}となります。)提起することができます"
        "(行政事件訴訟法第11条、第14条第1項)。ただし、審査請求をした場合には、その審査請求に対する裁決があったことを"
        "知った日の翌日から起算して6か月以内に提起することができます(同法第14条第3項)。",
    )


DEFAULT_OFFICE = Office()
OBJECTION_LINES = objection_lines(DEFAULT_OFFICE)
"""The 教示 with the default office (for readers of the text; notices use their own office's)."""

LABELS = {
    "residentCode": "住民票コード", "individualNumber": "個人番号", "fullName": "氏名",
    "fullNameKana": "氏名の振り仮名", "kanaConfirmed": "振り仮名確認", "formerSurname": "旧氏", "alias": "通称",
    "birthDate": "出生の年月日", "sexCode": "男女の別", "address": "住所", "addressMunicipalityCode": "住所の市町村",
    "overseasEmigrant": "国外転出者である旨",
    "addressDate": "住所を定めた年月日", "domicileMunicipalityCode": "本籍地の市町村",
}
KINDS = {"CHANGE_KIND_RECORD": "記載", "CHANGE_KIND_REMOVE": "消除", "CHANGE_KIND_MODIFY": "修正"}
# 異動事由 (juki.register.v1.ChangeReason), in the words of the 住民記録システム標準仕様書.
REASONS = {
    "CHANGE_REASON_DOMESTIC_MOVE_IN": "国内転入", "CHANGE_REASON_MOVE_IN_FROM_ABROAD": "国外転入等",
    "CHANGE_REASON_BIRTH": "出生", "CHANGE_REASON_EX_OFFICIO_RECORD_NATURALISATION": "職権記載(帰化等)",
    "CHANGE_REASON_EX_OFFICIO_RECORD_NATIONALITY_LOSS": "職権記載(国籍喪失)",
    "CHANGE_REASON_EX_OFFICIO_RECORD": "職権記載", "CHANGE_REASON_REISSUE": "改製", "CHANGE_REASON_RECREATION": "再製",
    "CHANGE_REASON_CANCELLATION_INCREASE": "異動の取消し(増)", "CHANGE_REASON_DOMESTIC_MOVE_OUT": "国内転出",
    "CHANGE_REASON_MOVE_ABROAD": "国外転出", "CHANGE_REASON_DEATH": "死亡",
    "CHANGE_REASON_EX_OFFICIO_REMOVAL_NATURALISATION": "職権消除(帰化等)",
    "CHANGE_REASON_EX_OFFICIO_REMOVAL_NATIONALITY_LOSS": "職権消除(国籍喪失)",
    "CHANGE_REASON_EX_OFFICIO_REMOVAL": "職権消除", "CHANGE_REASON_CANCELLATION_DECREASE": "異動の取消し(減)",
    "CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY": "転居", "CHANGE_REASON_MINOR_CORRECTION": "軽微な修正",
    "CHANGE_REASON_EX_OFFICIO_CORRECTION": "職権修正", "CHANGE_REASON_CLERICAL_ERROR_CORRECTION": "誤記修正",
    "CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST": "個人番号の変更請求",
    "CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_CORRECTION": "個人番号の職権修正",
    "CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_RECORD": "個人番号の職権記載",
    "CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST": "住民票コードの変更請求",
    "CHANGE_REASON_RESIDENT_CODE_EX_OFFICIO_RECORD": "住民票コードの職権記載",
    "CHANGE_REASON_FORMER_SURNAME_CHANGE": "旧氏の記載・変更・削除", "CHANGE_REASON_ALIAS_CHANGE": "通称の記載・削除",
    "CHANGE_REASON_CANCELLATION_MODIFY": "異動の取消し(修正)",
}
# A municipality's reasons for finding no error in a 12-5 report (AnswerMunicipalityReport); a code not
# listed is told as the municipality's investigation, never as the code.
ANSWER_REASONS = {
    "RECORD_MATCHES_EVIDENCE": "記録が確認書類の内容と一致しているため",
    "RECORD_MATCHES_FAMILY_REGISTER": "記録が戸籍の記載と一致しているため",
    "RECORD_MATCHES_NOTIFICATION": "記録が届出の内容と一致しているため",
    "RECORD_MATCHES_RESIDENT_RECORD": "記録が住民票の記載と一致しているため",
}
ACTIONS = {"CORRECTION_ACTION_CORRECT": "訂正", "CORRECTION_ACTION_ADD": "追加", "CORRECTION_ACTION_DELETE": "削除"}
FILE_TITLES: dict[str, str] = {"identity": "都道府県知事保存本人確認情報",
                               "annex": "都道府県知事保存附票本人確認情報 (住基法30-44-13)"}


@dataclass(frozen=True)
class Draft:
    """A notice before it is numbered: what only its kind says. `issue` gives it the common frame."""

    kind: int
    addressee: str
    """As stored: `requester`, or the organisation code of a recipient organ."""
    salutation: str
    """As printed: `山田 太郎 様`, `群馬県教育委員会 御中`."""
    issued: dt.datetime
    content: dict[str, Any]
    body: list[str]
    record_versions: list[str] = field(default_factory=list)
    title: str = ""
    """A title other than the kind's (the decision that nothing is kept)."""


@dataclass(frozen=True)
class Notice:
    """One notice, numbered and rendered, ready to store."""

    kind: int
    addressee: str
    number: str
    pdf: bytes
    json: str
    record_versions: list[str] = field(default_factory=list)

    @property
    def pdf_sha256(self) -> str:
        return hashlib.sha256(self.pdf).hexdigest()

    @property
    def json_sha256(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()


def issue(draft: Draft, number: str, office: Office) -> Notice:
    """The notice as issued: 文書番号, date, addressee, issuer, title, body, the 教示 of a 処分, and the section
    that answers for it, in the PDF and the JSON alike."""
    kind = NOTICE_KINDS[draft.kind]
    title = draft.title or kind.title
    issued_on = draft.issued.astimezone(JAPAN).date()
    objection = objection_lines(office) if kind.disposition else ()
    content = {"document": title, "document_number": number, "issued_at": draft.issued.isoformat(),
               "issued_on": wareki(issued_on), "issuer": office.issuer, "section": office.section,
               "contact": {"address": office.address, "telephone": office.telephone},
               **draft.content, "record_versions": draft.record_versions}
    if objection:
        content["objection"] = list(objection)
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, indent=1)
    writer = _Writer(title)
    writer.line(number, align="right")
    writer.line(wareki(issued_on), align="right")
    writer.line("")
    writer.line(draft.salutation)
    writer.line("")
    writer.line(office.issuer, align="right")
    writer.line("")
    writer.line(title, 16, align="center")
    writer.line("")
    for line in draft.body:
        writer.line(line)
    if objection:
        writer.line("")
        for line in objection:
            writer.line(line)
    writer.line("")
    for line in office.contact_lines():
        writer.line(line)
    return Notice(draft.kind, draft.addressee, number, writer.finish(), text, draft.record_versions)


def _as_dict(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message)
    return data


def _municipality(code: str) -> str:
    """The municipality's name; one outside the prefecture's table by its 団体コード."""
    found = gunma_municipalities().get(code)
    return found.name if found is not None else f"団体コード{code}の市町村"


def _date(value: Mapping[str, Any]) -> str:
    """A google.type.Date or a PartialDate in 和暦. A partial date (頃, 上旬, 不詳) is written as the
    municipality wrote it, the only text that says what the parts do not; a full date always in 和暦."""
    precision = value.get("precision", "")
    if value.get("originalText") and precision not in ("", "DATE_PRECISION_DAY"):
        return str(value["originalText"])
    if precision == "DATE_PRECISION_UNKNOWN" or not {"year", "month", "day"} & value.keys():
        return "不詳"
    text = wareki_partial(value.get("year"), value.get("month"), value.get("day"))
    return text + "頃" if precision == "DATE_PRECISION_APPROXIMATE" else text


NUMBER_WITHHELD = "(この通知には記載しません。訂正後の個人番号は番号法第19条の定めにより照会してください。)"
"""What an organ's notice says of a 個人番号: the notice is no 番号法 19 provision; the organ asks for the corrected
number under its own 番号利用事務."""


def _organ_value(path: str, value: Any) -> str:
    if path in ("record.individual_number", "individualNumber"):
        return NUMBER_WITHHELD
    return value_text(camel(path), value)


def value_text(key: str, value: Any) -> str:
    """A record field's value in words: 男/女, the municipality's name, dates in 和暦."""
    if key == "sexCode":
        return sex_label(str(value)) or "不明"
    if key.endswith("MunicipalityCode") or key == "municipalityCode":
        return _municipality(str(value)) if value else "-"
    if isinstance(value, bool):
        return ("確認済み" if key == "kanaConfirmed" else "該当") if value else "-"
    if isinstance(value, dict):
        return _date(value) if value else "-"
    return str(value) if value != "" else "-"


def label(path: str) -> str:
    """A field path (`record.full_name`) or JSON key (`fullName`) in Japanese."""
    key = camel(path)
    return LABELS.get(key, key)


def record_lines(record: dict[str, Any], indent: str = "  ") -> list[str]:
    return [f"{indent}{LABELS.get(key, key)}: {value_text(key, value)}" for key, value in record.items()]


class _Writer:
    """Lines of Japanese text on A4 pages, wrapped to the width, in the one embedded font."""

    def __init__(self, title: str = "") -> None:
        self.font = _font()
        self.buffer = io.BytesIO()
        # The initial font is the embedded one too: no unembedded standard font enters the PDF.
        self.canvas = canvas.Canvas(self.buffer, pagesize=A4, invariant=1, initialFontName=self.font,
                                    initialFontSize=10.5)
        self.canvas.setTitle(title or "notice")
        self.width, self.height = A4
        self.y = self.height - 60

    def line(self, text: str, size: float = 10.5, *, align: str = "left") -> None:
        limit = self.width - 100
        if align != "left" and pdfmetrics.stringWidth(text, self.font, size) <= limit:
            self._draw(text, size, align)
            return
        while True:
            cut = len(text)
            while cut > 1 and pdfmetrics.stringWidth(text[:cut], self.font, size) > limit:
                cut -= 1
            self._draw(text[:cut], size, "left")
            text = "    " + text[cut:] if cut < len(text) else ""
            if not text:
                return

    def _draw(self, text: str, size: float, align: str) -> None:
        if self.y < 60:
            self.canvas.showPage()
            self.y = self.height - 60
        self.canvas.setFont(self.font, size)
        if align == "right":
            self.canvas.drawRightString(self.width - 50, self.y, text)
        elif align == "center":
            self.canvas.drawCentredString(self.width / 2, self.y, text)
        else:
            self.canvas.drawString(50, self.y, text)
        self.y -= size * 1.6

    def finish(self) -> bytes:
        self.canvas.save()
        return self.buffer.getvalue()


def render(title: str, lines: Iterable[str]) -> bytes:
    """A bare page of text (title and lines) in the embedded font."""
    writer = _Writer(title)
    writer.line(title, 16)
    writer.line("")
    for text in lines:
        writer.line(text)
    return writer.finish()


def _file_section(records: FileRecords) -> tuple[dict[str, Any], list[str]]:
    title = FILE_TITLES[records.file]
    if records.current is None:
        return {"found": False}, [f"■ {title}", "  該当する情報はありません。"]
    current = _as_dict(records.current)
    history = [_as_dict(v) for v in records.versions]
    lines = [f"■ {title}", f"  現在の記録 (第{records.current.version}版)"]
    lines += record_lines(current.get("record", {}), "    ")
    lines.append("  変更情報 (全履歴)")
    for version in history:
        change = version.get("change", {})
        kind = KINDS.get(change.get("kind", ""), "-")
        reason = REASONS.get(change.get("reason", ""), "-")
        lines.append(f"   第{version.get('version')}版 {kind} (異動事由: {reason}) "
                     f"異動日 {_date(change.get('eventDate', {}))} "
                     f"通知市町村 {value_text('municipalityCode', change.get('municipalityCode', ''))}")
        lines += record_lines(version.get("record", {}), "      ")
    return {"found": True, "current": current, "history": history}, lines


def _provision_section(provisions: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [_as_dict(p) for p in provisions]
    lines = ["■ 提供状況 (提供年月日, 提供先, 利用事務, 根拠, 提供された情報)"]
    if not rows:
        lines.append("  提供の記録はありません。")
    for provision in provisions:  # the catalogue's names; the codes only for what it no longer lists
        lines.append(f"  {wareki_time(provision.time.ToDatetime(dt.UTC))} "
                     f"{provision.recipient_name or provision.recipient} {provision.affair or provision.purpose} "
                     f"({provision.legal_basis}) {'、'.join(label(f) for f in provision.fields)}")
    return rows, lines


def _requester_part(case: Any) -> tuple[dict[str, Any], list[str]]:
    """What every notice to the requester of a disclosure says of the request."""
    content = {"case": case.name, "requester_name": case.requester_name,
               "receive_time": case.receive_time.ToDatetime(dt.UTC).isoformat(),
               "subject_resident_code": case.subject_resident_code}
    lines = [f"請求受付日時: {wareki_time(case.receive_time.ToDatetime(dt.UTC))}", f"事件番号: {case.name}",
             f"対象の住民票コード: {case.subject_resident_code}"]
    return content, lines


def _received_on(case: Any) -> str:
    return wareki(case.receive_time.ToDatetime(dt.UTC).astimezone(JAPAN).date())


def decision_notice(case: Any, identity: FileRecords | None, annex: FileRecords | None,
                    provisions: list[Any] | None, issued: dt.datetime) -> tuple[Draft, bool]:
    """開示決定通知書 (30-32 ②), also when no record exists; returns (draft, anything found)."""
    content, lines = _requester_part(case)
    versions: list[str] = []
    found = False
    lines.append("")
    body: list[str] = []
    for key, records in (("identity_file", identity), ("annex_file", annex)):
        if records is None:
            continue
        section, section_lines = _file_section(records)
        content[key] = section
        body += [*section_lines, ""]
        versions += records.version_names()
        found = found or records.found
    if provisions is not None:
        content["provision_status"], provision_lines = _provision_section(provisions)
        body += provision_lines
        found = found or bool(provisions)
    content["decision"] = "DISCLOSE" if found else "NOT_EXIST"
    if found:
        lines.append(f"{_received_on(case)}付けで請求のあった自己の本人確認情報の開示について、住民基本台帳法"
                     "第30条の32第2項の規定により、次のとおり開示することに決定しました。")
    else:
        lines.append(f"{_received_on(case)}付けで請求のあった自己の本人確認情報は、保存されていないため開示できません"
                     "(該当する情報はありません)。")
    lines += ["", *body]
    draft = Draft(pb.DOCUMENT_KIND_DECISION_NOTICE, "requester", f"{case.requester_name} 様", issued, content,
                  lines, versions, "" if found else NOT_EXIST_TITLE)
    return draft, found


def extension_notice(case: Any, deadline: dt.date, new_deadline: dt.date, reason: str,
                     issued: dt.datetime) -> Draft:
    """開示決定等期限延長通知書 (30-33 ②): the reason and the new deadline, before the deadline passes."""
    content, lines = _requester_part(case)
    content.update({"statutory_deadline": deadline.isoformat(), "new_deadline": new_deadline.isoformat(),
                    "reason": reason})
    lines += ["", f"{_received_on(case)}付けで請求のあった自己の本人確認情報の開示について、住民基本台帳法"
              "第30条の33第2項の規定により、開示決定等の期限を次のとおり延長します。",
              f"  本来の期限: {wareki(deadline)}", f"  延長後の期限: {wareki(new_deadline)}", f"  延長の理由: {reason}"]
    return Draft(pb.DOCUMENT_KIND_EXTENSION_NOTICE, "requester", f"{case.requester_name} 様", issued, content, lines)


def rejection_notice(case: Any, reason: str, issued: dt.datetime) -> Draft:
    """開示請求却下通知書 (30-32, a 処分): the request is refused, with the reason (the 教示 comes with the kind)."""
    content, lines = _requester_part(case)
    content.update({"decision": "REJECTED", "reason": reason})
    lines += ["", f"{_received_on(case)}付けで住民基本台帳法第30条の32第1項の規定により請求のあった自己の本人確認情報の"
              "開示は、次の理由により却下します。", f"  却下の理由: {reason}"]
    return Draft(pb.DOCUMENT_KIND_REJECTION_NOTICE, "requester", f"{case.requester_name} 様", issued, content, lines)


def correction_result_notice(correction: Any, requester_name: str, *, outcome: str,
                             steps: list[str], corrected: dict[str, Any], versions: list[str],
                             issued: dt.datetime, municipality_answer: str | None = None) -> Draft:
    """調査結果通知書 (30-35): the written result of the investigation. `municipality_answer`: the reason code
    of a municipality that, told of an error (12-5), investigated and found none."""
    items = [_as_dict(item) for item in correction.items]
    content = {"case": correction.name, "disclosure_case": correction.disclosure_case,
               "requester_name": requester_name, "subject_resident_code": correction.subject_resident_code,
               "items": items, "outcome": outcome, "investigation_steps": steps, "corrected_record": corrected}
    if municipality_answer is not None:
        content["municipality_answer_reason_code"] = municipality_answer
    lines = [f"事件番号: {correction.name}", f"対象の住民票コード: {correction.subject_resident_code}", "",
             "住民基本台帳法第30条の35の規定による自己の本人確認情報の訂正等の申出について、調査の結果を次のとおり"
             "通知します。", "", "■ 申出の内容"]
    lines += [f"  {label(i['field'])}: {ACTIONS.get(i.get('action', ''), '-')} "
              f"{value_text(camel(i['field']), i.get('requestedValue', ''))}" for i in items]
    lines += ["■ 調査の経過", *[f"  {n}. {s}" for n, s in enumerate(steps, 1)], "■ 調査の結果"]
    if outcome == "NO_ERROR" and municipality_answer is not None:
        why = ANSWER_REASONS.get(municipality_answer, "市町村長の調査の結果による")
        lines.append("  市町村長に通報し(住基法12条の5)、市町村長が調査した結果、記録に誤りは認められませんでした"
                     f"(理由: {why})。記録は訂正されていません。")
    elif outcome == "NO_ERROR":
        lines.append("  調査の結果、記録に誤りは認められませんでした。")
    else:
        lines.append("  誤りが認められたため市町村長に通報し(住基法12条の5)、"
                     "市町村長の修正により次のとおり訂正されました。")
        lines += record_lines(corrected, "    ")
    return Draft(pb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE, "requester", f"{requester_name} 様", issued, content,
                 lines, versions)


def recipient_notice(correction: Any, recipient: dict[str, Any], corrected: dict[str, Any],
                     issued: dt.datetime) -> Draft:
    """To an organ that received a value later corrected: what it received, when, and the right value. The
    person is named only by what the organ itself received: the 住民票コード only if it was provided to it
    (never to an annex recipient: 30-44-6 provides none), else the provision and the values it received."""
    fields = recipient["fields"]
    values = {key: value for key, value in corrected.items()
              if f"record.{snake(key)}" in fields and key != "individualNumber"}
    received = recipient.get("received_values", {})
    content = {"case": correction.name, "addressee": recipient["organization"],
               "provisions": recipient["provisions"], "fields": fields,
               "received_values": {path: _organ_value(path, value) for path, value in received.items()},
               "corrected_values": values}
    lines = ["貴機関に提供した次の本人確認情報に誤りがあり、市町村長の修正により訂正されましたので、"
             "住民基本台帳法第30条の35の規定による調査の結果として通知します。", ""]
    codes = recipient.get("received_resident_codes") or (
        [correction.subject_resident_code] if recipient.get("received_resident_code") else [])
    if codes:
        content["subject_resident_code"] = codes[0] if len(codes) == 1 else codes
        lines.append(f"  対象の住民票コード: {'、'.join(codes)}")
    lines += ["■ 提供した内容 (誤り)",
              *(f"  {label(path)}: {_organ_value(path, value)}" for path, value in received.items()),
              "■ 提供の記録 (提供日時, 利用事務, 提供した情報)"]
    lines += [f"  {wareki_time(dt.datetime.fromisoformat(p['time']))} {p.get('affair') or p['purpose']} "
              f"{'、'.join(label(f) for f in p['fields'])}" for p in recipient["provisions"]]
    lines += ["■ 訂正後の内容", *record_lines(values, "  ")]
    if "record.individual_number" in fields:
        lines.append(f"  {label('record.individual_number')}: {NUMBER_WITHHELD}")
    organ = recipient.get("organization_name") or recipient["organization"]
    return Draft(pb.DOCUMENT_KIND_RECIPIENT_NOTICE, recipient["organization"], f"{organ} 御中",
                 issued, content, lines, sorted({p["record_version"] for p in recipient["provisions"]}))


def camel(path: str) -> str:
    head, *rest = path.removeprefix("record.").split("_")
    return head + "".join(part.title() for part in rest)


def snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


# 個人情報保護法 98 ①: each ground of a 利用停止請求, by the article the handling is said to break (番号法 30 reads
# the articles for 特定個人情報).
SUSPENSION_GROUNDS: dict[int, str] = {
    pb.USAGE_SUSPENSION_GROUND_RETENTION_BEYOND_PURPOSE: "利用目的の達成に必要な範囲を超えた保有 (第61条第2項違反)",
    pb.USAGE_SUSPENSION_GROUND_IMPROPER_HANDLING: "不適正な取扱い (第63条違反)",
    pb.USAGE_SUSPENSION_GROUND_WRONGFUL_ACQUISITION: "偽りその他不正の手段による取得 (第64条違反)",
    pb.USAGE_SUSPENSION_GROUND_USE_OUTSIDE_PURPOSE: "利用目的以外の目的のための利用 (第69条第1項及び第2項違反)",
    pb.USAGE_SUSPENSION_GROUND_PROVISION_OUTSIDE_PURPOSE: "利用目的以外の目的のための提供 (第69条第1項及び第2項違反)",
    pb.USAGE_SUSPENSION_GROUND_PROVISION_ABROAD: "外国にある第三者への提供 (第71条第1項違反)",
    pb.USAGE_SUSPENSION_GROUND_NUMBER_ACT: "番号法に違反する特定個人情報の取扱い (番号法第30条により読み替えて適用)",
}
_SUSPENSION_DECISIONS = {
    "STOP": "個人情報の保護に関する法律第101条第1項の規定により、次のとおり利用停止をすることに決定しました。",
    "NOT_STOP": "個人情報の保護に関する法律第101条第2項の規定により、利用停止をしないことに決定しました。",
    "REJECTED": "次の理由により却下します(個人情報の保護に関する法律第98条第1項)。",
    "EXTENDED": "個人情報の保護に関する法律第102条第2項の規定により、利用停止決定等の期限を次のとおり延長します。",
}


def usage_suspension_notice(case: Any, outcome: str, reason: str, issued: dt.datetime, *,
                            purposes: Iterable[str] = (), deadline: dt.date | None = None,
                            new_deadline: dt.date | None = None) -> Draft:
    """The written answer to a 利用停止請求 (個人情報保護法 101, 102 ②): `outcome` STOP (for `purposes`) or
    NOT_STOP with the reason, REJECTED (identity not verified, not the person's own data), each a 処分 (the
    教示 comes with the kind); or EXTENDED, the extension of the deadline (`deadline` → `new_deadline`)."""
    stopped = list(purposes)
    content, lines = _requester_part(case)
    content.update({"decision": outcome, "reason": reason, "requested_purposes": list(case.purposes),
                    "ground": pb.UsageSuspensionGround.Name(case.ground)})
    lines += ["", f"利用停止を求められた利用目的: {'、'.join(case.purposes)}",
              f"請求の理由: {SUSPENSION_GROUNDS.get(case.ground, '')}", "",
              f"{_received_on(case)}付けで請求のあった保有個人情報の利用停止について、{_SUSPENSION_DECISIONS[outcome]}"]
    salutation = f"{case.requester_name} 様"
    if outcome == "EXTENDED":
        assert deadline is not None and new_deadline is not None
        content.update({"statutory_deadline": deadline.isoformat(), "new_deadline": new_deadline.isoformat()})
        lines += [f"  本来の期限: {wareki(deadline)}", f"  延長後の期限: {wareki(new_deadline)}",
                  f"  延長の理由: {reason}"]
        return Draft(pb.DOCUMENT_KIND_USAGE_SUSPENSION_EXTENSION_NOTICE, "requester", salutation, issued, content,
                     lines)
    if outcome == "STOP":
        content["stopped_purposes"] = stopped
        lines.append(f"  利用停止をする利用目的: {'、'.join(stopped)}")
    lines.append(f"  {'却下の理由' if outcome == 'REJECTED' else '理由'}: {reason}")
    return Draft(pb.DOCUMENT_KIND_USAGE_SUSPENSION_DECISION_NOTICE, "requester", salutation, issued, content, lines)
