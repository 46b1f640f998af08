"""The misuse review counts operators' work in Japan time: a human call at 22:30 JST is off-hours use, a
municipality's notification at 03:00 JST is a system call reported apart, and `juki audit report`
prints every time in JST."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from juki.gateway.v1 import operation_log_pb2
from juki_services.gateway.chain import SigningKey, ensure_signing_key
from juki_services.gateway.oplog import LogEntry, OperationLog, Review, closed_days, misuse_report
from jukilib.config import DatabaseConfig
from jukilib.db.pool import Database
from tests.conftest import fresh_database

JST = ZoneInfo("Asia/Tokyo")
LOOKUP = "/juki.identity.v1.IdentityService/LookupResident"
NOTIFY = "/juki.identity.v1.IdentityService/ApplyNotification"


def _review_day() -> dt.date:
    """The latest working day before today (Japan time): inside `juki audit report`'s default 7 days."""
    day = dt.datetime.now(JST).date() - dt.timedelta(days=1)
    while day.isoweekday() >= 6 or closed_days(day, day):
        day -= dt.timedelta(days=1)
    return day


def _at(day: dt.date, hour: int, minute: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), JST).astimezone(dt.UTC)


def _entry(time: dt.datetime, organization: str, operator: str, method: str, purpose: str, code: str) -> LogEntry:
    return LogEntry(time=time, request_id=f"r-{code}", trace_id="0" * 32, organization=organization,
                    operator=operator, method=method, purpose=purpose,
                    decision=operation_log_pb2.DECISION_ALLOWED, reason="purpose granted",
                    status="OK", resident_codes=[code])


def _report(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jukitools.cli", "audit", "report"],
                          env={**os.environ, "JUKI_DATABASE_URL": url}, capture_output=True, text=True, timeout=60,
                          check=False)


async def test_only_operators_calls_outside_office_hours_are_off_hours_and_systems_are_apart(
        admin_url: str, home: Path) -> None:
    day = _review_day()
    urls = (await fresh_database(admin_url))["gateway"]
    database = Database(DatabaseConfig(url=urls.url, migration_url=None))
    await database.connect()
    log = OperationLog(database, SigningKey.load(ensure_signing_key(home / "operation-log.key")))
    writer = asyncio.create_task(log.run())
    try:
        late = await log.write(_entry(_at(day, 22, 30), "kyoiku-iinkai", "kyoiku-0001", LOOKUP,
                                      "EDU-SCHOLARSHIP-30-15-2-2", "70000000001"))
        night_system = await log.write(_entry(_at(day, 3, 0), "102016", "", NOTIFY, "CS-NOTIFY-30-6",
                                              "70000000002"))
        office = await log.write(_entry(_at(day, 10, 0), "kikaku-bu", "kikaku-0001", LOOKUP, "JUKI-OWN-AFFAIRS",
                                        "70000000003"))
    finally:
        writer.cancel()
        await database.close()
    assert night_system and office

    connection = await asyncpg.connect(urls.url)
    try:
        report = await misuse_report(connection, Review(_at(day, 0, 0), _at(day + dt.timedelta(days=1), 0, 0),
                                                        8, 19, 3, 10))
    finally:
        await connection.close()
    assert [e.sequence for e in report.off_hours] == [late]
    assert {(v.organization, v.operator) for v in report.volumes} == {("kyoiku-iinkai", "kyoiku-0001"),
                                                                      ("kikaku-bu", "kikaku-0001")}
    assert {v.hour.ToDatetime(dt.UTC).astimezone(JST).hour for v in report.volumes} == {22, 10}
    (system,) = report.system_calls
    assert (system.organization, system.method, system.calls, system.residents) == ("102016", NOTIFY, 1, 1)
    assert system.first_time.ToDatetime(dt.UTC) == _at(day, 3, 0) == system.last_time.ToDatetime(dt.UTC)

    printed = await asyncio.to_thread(_report, urls.url)
    assert printed.returncode == 0, printed.stderr
    heading, *sections = printed.stdout.split("\n\n")
    assert heading.startswith("Misuse review, ") and heading.count(" JST") == 2
    section = {s.splitlines()[0].split(" (")[0].split(":")[0]: s.splitlines()[1:] for s in sections}
    assert section["Off-hours calls of operators"] == [
        f"  #{late} {day:%Y-%m-%d} 22:30 JST kyoiku-iinkai/kyoiku-0001 {LOOKUP}"]
    assert sorted(section["Busiest operator-hours"]) == sorted([
        f"  {day:%Y-%m-%d} 22:00 JST  kyoiku-iinkai/kyoiku-0001  1 calls, 1 residents",
        f"  {day:%Y-%m-%d} 10:00 JST  kikaku-bu/kikaku-0001  1 calls, 1 residents"])
    assert section["Calls of systems"] == [
        f"  102016 {NOTIFY}  1 calls, 1 residents, {day:%Y-%m-%d} 03:00 JST to {day:%Y-%m-%d} 03:00 JST"]


def test_national_holidays_and_the_year_end_closure_are_closed_days() -> None:
    days = closed_days(dt.date(2026, 4, 28), dt.date(2027, 1, 5))
    assert dt.date(2026, 4, 29) in days  # 昭和の日
    assert dt.date(2026, 5, 6) in days  # 振替休日: 憲法記念日 fell on a Sunday
    assert dt.date(2026, 11, 23) in days  # 勤労感謝の日
    assert {dt.date(2026, 12, 29), dt.date(2026, 12, 31), dt.date(2027, 1, 3)} <= set(days)  # 年末年始 (休日条例)
    assert dt.date(2026, 11, 24) not in days and dt.date(2027, 1, 4) not in days


async def _written(admin_url: str, home: Path, entries: list[LogEntry]) -> tuple[str, list[int]]:
    urls = (await fresh_database(admin_url))["gateway"]
    database = Database(DatabaseConfig(url=urls.url, migration_url=None))
    await database.connect()
    log = OperationLog(database, SigningKey.load(ensure_signing_key(home / "operation-log.key")))
    writer = asyncio.create_task(log.run())
    try:
        sequences = list(await asyncio.gather(*(log.write(entry) for entry in entries)))
    finally:
        writer.cancel()
        await database.close()
    return urls.url, sequences


async def _review(url: str, start: dt.datetime, end: dt.datetime) -> operation_log_pb2.MisuseReport:
    connection = await asyncpg.connect(url)
    try:
        return await misuse_report(connection, Review(start, end, 8, 19, 3, 10))
    finally:
        await connection.close()


async def test_an_operators_call_on_a_national_holiday_or_at_the_year_end_is_off_hours(admin_url: str,
                                                                                    home: Path) -> None:
    days = [dt.date(2026, 11, 23), dt.date(2026, 12, 29), dt.date(2026, 11, 24)]  # holiday, 年末, working day
    url, sequences = await _written(admin_url, home, [
        _entry(_at(day, 10, 0), "kyoiku-iinkai", "kyoiku-0001", LOOKUP, "EDU-SCHOLARSHIP-30-15-2-2",
               f"7000000010{i}") for i, day in enumerate(days)])
    report = await _review(url, _at(dt.date(2026, 11, 20), 0, 0), _at(dt.date(2027, 1, 1), 0, 0))
    assert sorted(e.sequence for e in report.off_hours) == sorted(sequences[:2])


async def test_a_section_too_long_to_list_says_how_many_it_left_out(admin_url: str, home: Path) -> None:
    day = _review_day()
    denied = [dataclasses.replace(_entry(_at(day, 10, 0), "kikaku-bu", "kikaku-0001", LOOKUP, "ELECTION",
                                         f"7{i:010d}"), decision=operation_log_pb2.DECISION_DENIED,
                                  status="PERMISSION_DENIED", reason="PURPOSE_NOT_GRANTED") for i in range(510)]
    url, _ = await _written(admin_url, home, denied)
    report = await _review(url, _at(day, 0, 0), _at(day + dt.timedelta(days=1), 0, 0))
    assert len(report.denied) == 500
    assert [(o.section, o.count) for o in report.omitted] == [("denied", 10)]
    printed = await asyncio.to_thread(_report, url)
    assert "Denied attempts: 510" in printed.stdout
    assert "… and 490 more (narrow the period to list them)" in printed.stdout
