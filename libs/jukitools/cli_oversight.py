"""`juki incident …` and `juki pia report`: the oversight records and the figures of the PIA (issue 19).

`juki incident add|list|update` keep the incident register through the gateway's AuditRecordService as a
logged-in auditor (`--operator`, default JUKI_OPERATOR; `--as auditor`), so each entry is in the operation
log. `juki audit review` (in `cli_audit`) records a review the same way.

`juki pia report --as-of DATE` gives what the assessment's threshold judgement (特定個人情報保護評価指針 第6)
needs, from the system itself: the persons in each file on that date (対象人数: everyone the file records,
removed persons included, since the file keeps them), the operators who could handle them (取扱者数, from
the operation log as `juki audit who-could` counts them) and the serious incidents of the year before. It
reads counts only (the registers' and the gateway's runtime roles), never a record; `--pdf FILE` writes the
same as a PDF with the notices' embedded font.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from juki.gateway.v1 import audit_records_pb2 as pb
from juki.gateway.v1 import audit_records_pb2_grpc
from jukilib.config import UsageError
from jukilib.domain.dates import JAPAN
from jukitools.calls import print_answer, print_error
from jukitools.client import gateway_channel, load_credential, purpose_metadata
from jukitools.local import LocalSuite
from jukitools.runner import connected

PURPOSE = "AUDIT-RECORDS"
REGISTERS = ("identity", "annex")
STATE_NAMES = {"open": pb.INCIDENT_STATE_OPEN, "reported": pb.INCIDENT_STATE_REPORTED,
               "closed": pb.INCIDENT_STATE_CLOSED}
# 特定個人情報保護評価指針 第6 1: 対象人数 and 取扱者数 decide which assessment is due.
PERSON_THRESHOLDS = (1_000, 10_000, 100_000, 300_000)
HANDLER_THRESHOLD = 500


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a date or time: {text!r} (ISO 8601, e.g. 2026-12-01T09:00+09:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=JAPAN)


def add_parsers(commands: Any) -> None:
    incident = commands.add_parser("incident", help="the incident register (漏えい等の事案), as an auditor")
    incident.add_argument("action", choices=("add", "list", "update"),
                          help="add: record an incident; list: the register; update: change one as it is handled")
    incident.add_argument("name", nargs="?", default="", help="update: incidents/{id}")
    incident.add_argument("--occurred", default="", help="when it happened (ISO 8601; JST when no zone)")
    incident.add_argument("--discovered", default="", help="when it was found")
    incident.add_argument("--summary", default="", help="概要")
    incident.add_argument("--item", action="append", default=[], help="a data item concerned (repeat)")
    incident.add_argument("--persons", type=int, default=None, help="本人の数")
    incident.add_argument("--cause", default=None, help="原因")
    incident.add_argument("--prevention", default=None, help="再発防止のための措置")
    incident.add_argument("--serious", action="store_true", default=None, help="a serious incident (重大事故)")
    incident.add_argument("--state", choices=tuple(STATE_NAMES), default=None,
                          help="where it stands: open, reported (to the Commission), closed")
    incident.add_argument("--reported-at", default="", help="when it was reported to the Commission")
    _caller_options(incident)
    pia = commands.add_parser("pia", help="the figures of the privacy impact assessment, from the system")
    pia.add_argument("action", choices=("report",), help="report: the figures of the threshold judgement")
    pia.add_argument("--as-of", type=dt.date.fromisoformat, default=None, help="YYYY-MM-DD (default: today, JST)")
    pia.add_argument("--pdf", type=Path, default=None, help="also write the report as a PDF")


def _caller_options(parser: Any) -> None:
    parser.add_argument("--as", dest="caller", default="auditor", help="client certificate (sample caller)")
    parser.add_argument("--operator", default=os.environ.get("JUKI_OPERATOR", "kansa-0001"),
                        help="the auditor who logged in (default JUKI_OPERATOR, else kansa-0001)")


async def call(suite: LocalSuite, args: argparse.Namespace, method: str, request: Any) -> int:
    """One AuditRecordService call through the gateway as the logged-in auditor; prints the answer."""
    home = suite.running_home()
    metadata = purpose_metadata(PURPOSE, credential=load_credential(home, args.operator))
    async with gateway_channel(suite.endpoints(), args.caller) as channel:
        try:
            answer = await getattr(audit_records_pb2_grpc.AuditRecordServiceStub(channel), method)(
                request, metadata=metadata, timeout=30)
        except grpc.aio.AioRpcError as error:
            print_error(error)
            return 1
    print_answer(answer)
    return 0


def _incident(args: argparse.Namespace) -> tuple[pb.Incident, list[str]]:
    """The incident the options describe, and the field paths they set."""
    incident, paths = pb.Incident(name=args.name), []
    for option, field in (("occurred", "occur_time"), ("discovered", "discover_time"),
                          ("reported_at", "commission_report_time")):
        if getattr(args, option):
            getattr(incident, field).FromDatetime(_moment(getattr(args, option)))
            paths.append(field)
    for option, field in (("summary", "summary"), ("cause", "cause"), ("prevention", "prevention_measures")):
        if getattr(args, option):
            setattr(incident, field, getattr(args, option))
            paths.append(field)
    if args.item:
        incident.data_items.extend(args.item)
        paths.append("data_items")
    if args.persons is not None:
        incident.persons_affected = args.persons
        paths.append("persons_affected")
    if args.serious is not None:
        incident.serious = args.serious
        paths.append("serious")
    if args.state:
        incident.state = STATE_NAMES[args.state]
        paths.append("state")
    return incident, paths


async def incident_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    if args.action == "list":
        return await call(suite, args, "ListIncidents", pb.ListIncidentsRequest(page_size=500))
    incident, paths = _incident(args)
    if args.action == "add":
        return await call(suite, args, "CreateIncident", pb.CreateIncidentRequest(incident=incident))
    if not args.name:
        raise UsageError("incident update needs the incident's name (incidents/{id})")
    return await call(suite, args, "UpdateIncident", pb.UpdateIncidentRequest(
        incident=incident, update_mask=field_mask_pb2.FieldMask(paths=paths)))


@dataclass(frozen=True)
class PiaFigures:
    as_of: dt.date
    persons: dict[str, int]
    handlers: int
    serious_incidents: int
    incidents: int


def assessment_due(persons: int, handlers: int, serious_incident: bool) -> str:
    """Which assessment the 特定個人情報保護評価指針 (第6 1) asks for a file of `persons`."""
    if persons < PERSON_THRESHOLDS[0]:
        return "評価の実施は義務付けられない (対象人数1,000人未満)"
    if persons < PERSON_THRESHOLDS[1]:
        return "基礎項目評価"
    if persons < PERSON_THRESHOLDS[2] and not (handlers >= HANDLER_THRESHOLD or serious_incident):
        return "基礎項目評価"
    if persons < PERSON_THRESHOLDS[3] and not (handlers >= HANDLER_THRESHOLD or serious_incident):
        return "基礎項目評価及び重点項目評価"
    if persons < PERSON_THRESHOLDS[2]:
        return "基礎項目評価及び重点項目評価 (取扱者数500人以上又は重大事故)"
    return "基礎項目評価及び全項目評価"


async def pia_figures(suite: LocalSuite, as_of: dt.date) -> PiaFigures:
    from juki_services.gateway.who_could import changes_of, who_could

    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), JAPAN)
    persons = {}
    for register in REGISTERS:
        async with connected(suite.database_url(register), register) as connection:
            persons[register] = await connection.fetchval(
                "SELECT count(DISTINCT person_id) FROM person_version WHERE receive_time < $1", end)
    async with connected(suite.operation_log_url(), "gateway") as connection:
        rows = await connection.fetch(
            "SELECT sequence, time, status, detail FROM operation_log WHERE detail <> '' AND time < $1 "
            "ORDER BY sequence", end)
        incidents = await connection.fetch(
            "SELECT serious FROM incident WHERE discover_time >= $1 AND discover_time < $2",
            end - dt.timedelta(days=366), end)
    handlers = len(who_could(changes_of(rows), as_of))
    return PiaFigures(as_of, persons, handlers, sum(1 for r in incidents if r["serious"]), len(incidents))


def pia_lines(figures: PiaFigures) -> list[str]:
    files = {"identity": "都道府県知事保存本人確認情報ファイル", "annex": "都道府県知事保存附票本人確認情報ファイル"}
    lines = [f"特定個人情報保護評価のしきい値判断に用いる数値 ({figures.as_of.isoformat()} 現在, juki の記録から)", "",
             f"取扱者数 (その日に本人確認情報を扱うことができた操作者): {figures.handlers}人"
             f" ({'500人以上' if figures.handlers >= HANDLER_THRESHOLD else '500人未満'})",
             f"過去1年以内の事案: {figures.incidents}件 (うち重大事故 {figures.serious_incidents}件)", ""]
    for register, count in figures.persons.items():
        lines += [f"{files[register]}: 対象人数 {count:,}人",
                  f"  評価: {assessment_due(count, figures.handlers, figures.serious_incidents > 0)}"]
    return lines


async def pia_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    figures = await pia_figures(suite, args.as_of or dt.datetime.now(JAPAN).date())
    lines = pia_lines(figures)
    print("\n".join(lines))
    if args.pdf is not None:
        from juki_services.disclosure.notices import render

        args.pdf.write_bytes(render("特定個人情報保護評価 しきい値判断の数値", lines))
        print(f"PDF: {args.pdf}", file=sys.stderr)
    return 0
