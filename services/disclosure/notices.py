"""The written notices (書面): content as data, rendered to a printable PDF and a machine-readable JSON.

Each notice is built once from the exact record versions it uses; the PDF (reportlab with a built-in
Japanese CID font, so no font file ships) and the JSON are stored with their SHA-256 and those
versions, and never changed. The PDFs carry personal data by nature; nothing here logs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki_services.disclosure.records import FileRecords
from jukilib.domain.dates import JAPAN

FONT = "HeiseiMin-W3"
pdfmetrics.registerFont(UnicodeCIDFont(FONT))
ISSUER = "群馬県知事"

TITLES: dict[int, str] = {
    pb.DOCUMENT_KIND_DECISION_NOTICE: "本人確認情報開示決定通知書",
    pb.DOCUMENT_KIND_EXTENSION_NOTICE: "本人確認情報開示決定等期限延長通知書",
    pb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE: "本人確認情報訂正等申出調査結果通知書",
    pb.DOCUMENT_KIND_RECIPIENT_NOTICE: "提供済み本人確認情報の訂正について(通知)",
    pb.DOCUMENT_KIND_REJECTION_NOTICE: "本人確認情報開示請求却下通知書",
    pb.DOCUMENT_KIND_USAGE_SUSPENSION_DECISION_NOTICE: "保有個人情報利用停止請求に対する決定通知書",
    pb.DOCUMENT_KIND_USAGE_SUSPENSION_EXTENSION_NOTICE: "保有個人情報利用停止決定等期限延長通知書",
}

# 教示 of a 処分 (行政不服審査法 第82条, 行政事件訴訟法 第46条): how and within which periods to object.
OBJECTION_LINES = (
    "(教示)",
    "1 この決定に不服がある場合は、この決定があったことを知った日の翌日から起算して3か月以内に、群馬県知事に対して"
    "審査請求をすることができます(行政不服審査法第2条、第4条、第18条第1項)。",
    "2 この決定の取消しを求める訴えは、この決定があったことを知った日の翌日から起算して6か月以内に、群馬県を被告として"
    "(訴訟において群馬県を代表する者は群馬県知事となります。)提起することができます(行政事件訴訟法第11条、第14条第1項)。"
    "ただし、審査請求をした場合には、その審査請求に対する裁決があったことを知った日の翌日から起算して6か月以内に"
    "提起することができます。",
)
LABELS = {
    "residentCode": "住民票コード", "individualNumber": "個人番号", "fullName": "氏名",
    "fullNameKana": "氏名の振り仮名", "kanaConfirmed": "振り仮名確認", "formerSurname": "旧氏", "alias": "通称",
    "birthDate": "出生の年月日", "sexCode": "男女の別", "address": "住所", "addressMunicipalityCode": "住所の市町村",
    "overseasEmigrant": "国外転出者である旨",
    "addressDate": "住所を定めた年月日", "domicileMunicipalityCode": "本籍地の市町村",
}
KINDS = {"CHANGE_KIND_RECORD": "記載", "CHANGE_KIND_REMOVE": "消除", "CHANGE_KIND_MODIFY": "修正"}
ACTIONS = {"CORRECTION_ACTION_CORRECT": "訂正", "CORRECTION_ACTION_ADD": "追加", "CORRECTION_ACTION_DELETE": "削除"}
FILE_TITLES: dict[str, str] = {"identity": "都道府県知事保存本人確認情報",
                               "annex": "都道府県知事保存附票本人確認情報 (住基法30-44-13)"}


@dataclass(frozen=True)
class Notice:
    """One notice, ready to store."""

    kind: int
    addressee: str
    pdf: bytes
    json: str
    record_versions: list[str] = field(default_factory=list)

    @property
    def pdf_sha256(self) -> str:
        return hashlib.sha256(self.pdf).hexdigest()

    @property
    def json_sha256(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()


def _as_dict(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message)
    return data


def _japan(moment: dt.datetime) -> str:
    return moment.astimezone(JAPAN).strftime("%Y年%m月%d日 %H:%M")


def _day(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def _value(value: Any) -> str:
    if not isinstance(value, dict):
        return "該当" if value is True else str(value)
    if not value:
        return "-"
    if value.get("originalText"):  # a PartialDate as the municipality wrote it
        return str(value["originalText"])
    if "precision" in value or {"year", "month", "day"} & value.keys():  # a PartialDate or a Date
        return "-".join(str(value[k]) for k in ("year", "month", "day") if k in value) or "不詳"
    return json.dumps(value, ensure_ascii=False)


def record_lines(record: dict[str, Any], indent: str = "  ") -> list[str]:
    return [f"{indent}{LABELS.get(key, key)}: {_value(value)}" for key, value in record.items()]


class _Writer:
    """Lines of Japanese text on A4 pages, wrapped to the width."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.canvas = canvas.Canvas(self.buffer, pagesize=A4, invariant=1)
        self.canvas.setTitle("notice")
        self.width, self.height = A4
        self.y = self.height - 60

    def line(self, text: str, size: float = 10.5) -> None:
        limit = self.width - 100
        while True:
            cut = len(text)
            while cut > 1 and pdfmetrics.stringWidth(text[:cut], FONT, size) > limit:
                cut -= 1
            self._draw(text[:cut], size)
            text = "    " + text[cut:] if cut < len(text) else ""
            if not text:
                return

    def _draw(self, text: str, size: float) -> None:
        if self.y < 60:
            self.canvas.showPage()
            self.y = self.height - 60
        self.canvas.setFont(FONT, size)
        self.canvas.drawString(50, self.y, text)
        self.y -= size * 1.6

    def finish(self) -> bytes:
        self.canvas.save()
        return self.buffer.getvalue()


def render(title: str, lines: Iterable[str]) -> bytes:
    writer = _Writer()
    writer.line(title, 16)
    writer.line("")
    for text in lines:
        writer.line(text)
    return writer.finish()


def _build(kind: int, addressee: str, content: dict[str, Any], lines: list[str], versions: list[str]) -> Notice:
    content = {"document": TITLES[kind], "issuer": ISSUER, **content, "record_versions": versions}
    text = json.dumps(content, ensure_ascii=False, sort_keys=True, indent=1)
    return Notice(kind, addressee, render(TITLES[kind], lines), text, versions)


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
        kind = KINDS.get(change.get("kind", ""), change.get("kind", ""))
        reason = str(change.get("reason", "")).removeprefix("CHANGE_REASON_")
        lines.append(f"   第{version.get('version')}版 {kind} ({reason}) "
                     f"異動日 {_value(change.get('eventDate', {}))} 通知市町村 {change.get('municipalityCode', '')}")
        lines += record_lines(version.get("record", {}), "      ")
    return {"found": True, "current": current, "history": history}, lines


def _provision_section(provisions: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    rows = [_as_dict(p) for p in provisions]
    lines = ["■ 提供状況 (提供年月日, 提供先, 利用事由, 提供された情報)"]
    if not rows:
        lines.append("  提供の記録はありません。")
    for provision in provisions:
        lines.append(f"  {_japan(provision.time.ToDatetime(dt.UTC))} {provision.recipient} {provision.purpose} "
                     f"({provision.legal_basis}) {', '.join(provision.fields)}")
    return rows, lines


def _header(case: Any, issued: dt.datetime) -> tuple[dict[str, Any], list[str]]:
    content = {"case": case.name, "issued_at": issued.isoformat(), "requester_name": case.requester_name,
               "receive_time": case.receive_time.ToDatetime(dt.UTC).isoformat(),
               "subject_resident_code": case.subject_resident_code}
    lines = [f"{case.requester_name} 様", f"{_japan(issued)}", ISSUER, "",
             f"請求受付日時: {_japan(case.receive_time.ToDatetime(dt.UTC))}", f"事件番号: {case.name}",
             f"対象の住民票コード: {case.subject_resident_code}"]
    return content, lines


def decision_notice(case: Any, identity: FileRecords | None, annex: FileRecords | None,
                    provisions: list[Any] | None, issued: dt.datetime) -> tuple[Notice, bool]:
    """開示決定通知書 (30-32 ②), also when no record exists; returns (notice, anything found)."""
    content, lines = _header(case, issued)
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
        lines.append("住民基本台帳法第30条の32第2項の規定により、次のとおり開示することに決定しました。")
    else:
        lines.append("請求のあった本人確認情報は、保存されていないため開示できません(該当する情報はありません)。")
    lines += ["", *body]
    return _build(pb.DOCUMENT_KIND_DECISION_NOTICE, "requester", content, lines, versions), found


def extension_notice(case: Any, deadline: dt.date, new_deadline: dt.date, reason: str,
                     issued: dt.datetime) -> Notice:
    """開示決定等期限延長通知書 (30-33 ②): the reason and the new deadline, before the deadline passes."""
    content, lines = _header(case, issued)
    content.update({"statutory_deadline": deadline.isoformat(), "new_deadline": new_deadline.isoformat(),
                    "reason": reason})
    lines += ["", "住民基本台帳法第30条の33第2項の規定により、開示決定等の期限を次のとおり延長します。",
              f"  本来の期限: {_day(deadline)}", f"  延長後の期限: {_day(new_deadline)}", f"  延長の理由: {reason}"]
    return _build(pb.DOCUMENT_KIND_EXTENSION_NOTICE, "requester", content, lines, [])


def rejection_notice(case: Any, reason: str, issued: dt.datetime) -> Notice:
    """開示請求却下通知書 (30-32, a 処分): the request is refused, with the reason and the 教示."""
    content, lines = _header(case, issued)
    content.update({"decision": "REJECTED", "reason": reason, "objection": list(OBJECTION_LINES)})
    lines += ["", "住民基本台帳法第30条の32第1項の規定による開示の請求は、次の理由により却下します。",
              f"  却下の理由: {reason}", "", *OBJECTION_LINES]
    return _build(pb.DOCUMENT_KIND_REJECTION_NOTICE, "requester", content, lines, [])


def correction_result_notice(correction: Any, requester_name: str, *, outcome: str,
                             steps: list[str], corrected: dict[str, Any], versions: list[str],
                             issued: dt.datetime, municipality_answer: str | None = None) -> Notice:
    """調査結果通知書 (30-35): the written result of the investigation. `municipality_answer`: the reason code
    of a municipality that, told of an error (12-5), investigated and found none."""
    items = [_as_dict(item) for item in correction.items]
    content = {"case": correction.name, "disclosure_case": correction.disclosure_case, "issued_at": issued.isoformat(),
               "requester_name": requester_name, "subject_resident_code": correction.subject_resident_code,
               "items": items, "outcome": outcome, "investigation_steps": steps, "corrected_record": corrected}
    if municipality_answer is not None:
        content["municipality_answer_reason_code"] = municipality_answer
    lines = [f"{requester_name} 様", _japan(issued), ISSUER, "", f"事件番号: {correction.name}",
             f"対象の住民票コード: {correction.subject_resident_code}", "", "■ 申出の内容"]
    lines += [f"  {LABELS.get(camel(i['field']), i['field'])}: {ACTIONS.get(i.get('action', ''), '')} "
              f"{i.get('requestedValue', '')}" for i in items]
    lines += ["■ 調査の経過", *[f"  {n}. {s}" for n, s in enumerate(steps, 1)], "■ 調査の結果"]
    if outcome == "NO_ERROR" and municipality_answer is not None:
        lines.append("  市町村長に通報し(住基法12条の5)、市町村長が調査した結果、記録に誤りは認められませんでした"
                     f"(理由: {municipality_answer})。記録は訂正されていません。")
    elif outcome == "NO_ERROR":
        lines.append("  調査の結果、記録に誤りは認められませんでした。")
    else:
        lines.append("  誤りが認められたため市町村長に通報し(住基法12条の5)、"
                     "市町村長の修正により次のとおり訂正されました。")
        lines += record_lines(corrected, "    ")
    return _build(pb.DOCUMENT_KIND_CORRECTION_RESULT_NOTICE, "requester", content, lines, versions)


def recipient_notice(correction: Any, recipient: dict[str, Any], corrected: dict[str, Any],
                     issued: dt.datetime) -> Notice:
    """To an organ that received a value later corrected: what it received, when, and the right value. The
    person is named only by what the organ itself received: the 住民票コード only if it was provided to it
    (never to an annex recipient: 30-44-6 provides none), else the provision and the values it received."""
    fields = recipient["fields"]
    values = {key: value for key, value in corrected.items() if f"record.{snake(key)}" in fields}
    received = {path: _value(value) for path, value in recipient.get("received_values", {}).items()}
    content = {"case": correction.name, "issued_at": issued.isoformat(), "addressee": recipient["organization"],
               "provisions": recipient["provisions"], "fields": fields, "received_values": received,
               "corrected_values": values}
    lines = [f"{recipient['organization']} 御中", _japan(issued), ISSUER, "",
             "貴機関に提供した次の本人確認情報に誤りがあり、市町村長の修正により訂正されましたので通知します。"]
    if recipient.get("received_resident_code"):
        content["subject_resident_code"] = correction.subject_resident_code
        lines.append(f"  対象の住民票コード: {correction.subject_resident_code}")
    lines += ["■ 提供した内容 (誤り)",
              *(f"  {path.removeprefix('record.')}: {value}" for path, value in received.items()), "■ 提供の記録"]
    lines += [f"  {p['time']} {p['purpose']} {p['record_version']} {', '.join(p['fields'])}"
              for p in recipient["provisions"]]
    lines += ["■ 訂正後の内容", *record_lines(values, "  ")]
    return _build(pb.DOCUMENT_KIND_RECIPIENT_NOTICE, recipient["organization"], content, lines,
                  sorted({p["record_version"] for p in recipient["provisions"]}))


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
    "REJECTED": "個人情報の保護に関する法律第98条第1項の規定による利用停止の請求は、次の理由により却下します。",
    "EXTENDED": "個人情報の保護に関する法律第102条第2項の規定により、利用停止決定等の期限を次のとおり延長します。",
}


def usage_suspension_notice(case: Any, outcome: str, reason: str, issued: dt.datetime, *,
                            purposes: Iterable[str] = (), deadline: dt.date | None = None,
                            new_deadline: dt.date | None = None) -> Notice:
    """The written answer to a 利用停止請求 (個人情報保護法 101, 102 ②): `outcome` STOP (for `purposes`) or
    NOT_STOP with the reason, REJECTED (identity not verified, not the person's own data), each a 処分 with the
    教示; or EXTENDED, the extension of the deadline (`deadline` → `new_deadline`) with its reason."""
    content, lines = _header(case, issued)
    stopped = list(purposes)
    content.update({"decision": outcome, "reason": reason, "requested_purposes": list(case.purposes),
                    "ground": pb.UsageSuspensionGround.Name(case.ground)})
    lines += ["", f"利用停止を求められた利用目的: {', '.join(case.purposes)}",
              f"請求の理由: {SUSPENSION_GROUNDS.get(case.ground, '')}", "", _SUSPENSION_DECISIONS[outcome]]
    if outcome == "EXTENDED":
        assert deadline is not None and new_deadline is not None
        content.update({"statutory_deadline": deadline.isoformat(), "new_deadline": new_deadline.isoformat()})
        lines += [f"  本来の期限: {_day(deadline)}", f"  延長後の期限: {_day(new_deadline)}", f"  延長の理由: {reason}"]
        return _build(pb.DOCUMENT_KIND_USAGE_SUSPENSION_EXTENSION_NOTICE, "requester", content, lines, [])
    if outcome == "STOP":
        content["stopped_purposes"] = stopped
        lines.append(f"  利用停止をする利用目的: {', '.join(stopped)}")
    label = "却下の理由" if outcome == "REJECTED" else "理由"
    content["objection"] = list(OBJECTION_LINES)
    lines += [f"  {label}: {reason}", "", *OBJECTION_LINES]
    return _build(pb.DOCUMENT_KIND_USAGE_SUSPENSION_DECISION_NOTICE, "requester", content, lines, [])
