"""The COPY writer of the initial load: the rows of `jukilib.register.rows` as PostgreSQL COPY text,
encoded in the worker processes (`encode`), written by the main process (`write`).

Every decision of a load records a new person (version 1, current). Each person is COPYed once into an
unlogged staging table and spread from there into `person` and `person_version` with INSERT … SELECT, so
the record's JSON is parsed once although two tables hold it; the values a load gives every version
alike (state, version, kind, notification and receipt time, digest) are written once, as
parameters of those statements (they are alike by construction: the worker decides every row with the
load's time and digest). Outbox rows, unique keys and the hooks' rows are COPYed directly.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from jukilib.register.model import REPORT_AT_MUNICIPALITY_SQL, REPORT_CORRECTED, REPORT_RESOLVED
from jukilib.register.rows import PersonRow, ReviewRow, Rows
from jukilib.register.store import queue_accepted

STAGING = "juki_bulk_load_staging"
_STAGING_COLUMNS = ["person_id", "resident_code", "event_date", "record", "name_key", "kana_key", "birth_year",
                    "birth_month", "birth_day", "sex_code", "search_municipality_code", "change_reason",
                    "municipality_code", "notification_id"]
CREATE_STAGING = f"""
CREATE UNLOGGED TABLE {STAGING} (
    person_id uuid NOT NULL, resident_code text NOT NULL, event_date date NOT NULL, record jsonb NOT NULL,
    name_key text, kana_key text, birth_year integer, birth_month integer, birth_day integer, sex_code text,
    search_municipality_code text, change_reason smallint NOT NULL, municipality_code text NOT NULL,
    notification_id text NOT NULL)"""
_INSERT_PERSONS = f"""
INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record, updated_at,
                    name_key, kana_key, birth_year, birth_month, birth_day, sex_code, municipality_code,
                    change_kind, change_reason, notify_time, receive_time, notifying_municipality_code,
                    notification_id, version_created_at)
SELECT person_id, resident_code, $1, $2, $2, event_date, record, now(), name_key, kana_key,
       birth_year, birth_month, birth_day, sex_code, search_municipality_code,
       $3, change_reason, $4, $5, municipality_code, notification_id, now()
FROM {STAGING}"""
_INSERT_VERSIONS = f"""
INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind, change_reason,
                            event_date, notify_time, receive_time, municipality_code, notification_id,
                            request_digest)
SELECT person_id, $2, resident_code, $1, record, $3, change_reason,
       event_date, $4, $5, municipality_code, notification_id, $6
FROM {STAGING}"""
Uniform = tuple[int, int, int, dt.datetime, dt.datetime, bytes]
"""(state, version, change kind, notify time, receive time, request digest), alike for every version."""


@dataclass
class Encoded:
    """A chunk's rows as COPY text."""

    staging: bytes = b""
    uniform: Uniform | None = None
    outbox: bytes = b""
    keys: bytes = b""
    """`person_key` rows (the unique keys of the persons)."""
    review: list[ReviewRow] = field(default_factory=list)
    """Records with characters to identify (文字同定), for the review queue."""
    tables: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    """(table, columns, COPY text) of the hooks' tables."""


def encode(rows: Rows) -> Encoded:
    """COPY text of the rows of a load's decisions (every one a new person's first version)."""
    if len(rows.versions) != len(rows.new_persons) or rows.advanced_persons or rows.late_only:
        raise ValueError("a load records new persons only")
    # What a load gives every version alike, from its first: the worker decides every row with the load's
    # time and digest as a 記載 of a new person (`jukilib.register.load.workers`).
    uniform = _uniform_of(rows.new_persons[0].decision) if rows.new_persons else None
    staging = _staging_unescaped(rows.new_persons)
    if staging is None:
        staging = _staging_escaped(rows.new_persons)
    tables = [(table.table, [name for name, _ in table.columns], copy_rows(table.records).encode())
              for table in rows.kept]
    return Encoded(staging.encode(), uniform, copy_rows(rows.outbox).encode(),
                   copy_rows(rows.claimed_keys).encode(), rows.review, tables)


_STAGING_TABS = len(_STAGING_COLUMNS) - 1


def _staging_unescaped(persons: list[PersonRow]) -> str | None:
    """The staging rows written as they are, or None when a value needs COPY's escapes: nearly never, so the
    text is checked once, not each value. A value holding a tab, newline, carriage return or backslash
    changes the count of these the rows must hold (their separators and NULL markers)."""
    lines: list[str] = []
    nulls = 0
    for decision, _, record_json in persons:
        notification = decision.notification
        change, keys = notification.change, notification.search
        kana, year, month, day = keys.kana_key, keys.birth_year, keys.birth_month, keys.birth_day
        nulls += (kana is None) + (year is None) + (month is None) + (day is None)
        lines.append(
            f"{decision.person_id}\t{notification.resident_code}\t{change.event_date.isoformat()}\t{record_json}\t"
            f"{keys.name_key}\t{NULL if kana is None else kana}\t{NULL if year is None else year}\t"
            f"{NULL if month is None else month}\t{NULL if day is None else day}\t{keys.sex_code}\t"
            f"{keys.municipality_code}\t{change.reason}\t{change.municipality_code}\t{change.notification_id}\n")
    text = "".join(lines)
    if (text.count("\t") != _STAGING_TABS * len(lines) or text.count("\n") != len(lines)
            or text.count("\\") != nulls or "\r" in text):
        return None
    return text


def _staging_escaped(persons: list[PersonRow]) -> str:
    """The staging rows with every text value escaped for COPY."""
    lines: list[str] = []
    for decision, _, record_json in persons:
        notification = decision.notification
        change, keys = notification.change, notification.search
        kana = keys.kana_key
        lines.append(
            f"{decision.person_id}\t{notification.resident_code}\t{change.event_date.isoformat()}\t"
            f"{copy_text(record_json)}\t{copy_text(keys.name_key)}\t{NULL if kana is None else copy_text(kana)}\t"
            f"{_nullable(keys.birth_year)}\t{_nullable(keys.birth_month)}\t{_nullable(keys.birth_day)}\t"
            f"{copy_text(keys.sex_code)}\t{copy_text(keys.municipality_code)}\t{change.reason}\t"
            f"{change.municipality_code}\t{copy_text(change.notification_id)}\n")
    return "".join(lines)


def _uniform_of(decision: Any) -> Uniform:
    change = decision.notification.change
    return (int(decision.state), decision.version, int(change.kind), change.notify_time, change.receive_time,
            decision.notification.digest)


async def write(connection: asyncpg.Connection, encoded: Encoded) -> None:
    """Write a chunk in the load's transaction (the staging table exists: `CREATE_STAGING`)."""
    if encoded.uniform is not None:
        await connection.copy_to_table(STAGING, source=io.BytesIO(encoded.staging), columns=_STAGING_COLUMNS,
                                       format="text")
        await connection.execute(_INSERT_PERSONS, *encoded.uniform[:5])
        await connection.execute(_INSERT_VERSIONS, *encoded.uniform)
        await connection.execute(f"TRUNCATE {STAGING}")
    if encoded.outbox:
        await connection.copy_to_table("outbox", source=io.BytesIO(encoded.outbox),
                                       columns=["person_id", "version", "idempotency_key"], format="text")
    if encoded.keys:
        await connection.copy_to_table("person_key", source=io.BytesIO(encoded.keys),
                                       columns=["key", "person_id", "current"], format="text")
    for table, columns, payload in encoded.tables:
        await connection.copy_to_table(table, source=io.BytesIO(payload), columns=columns, format="text")
    await queue_accepted(connection, encoded.review)


async def resolve_omissions(connection: asyncpg.Connection, load_time: dt.datetime) -> None:
    """住基法 12-5 (脱漏): the load's 記載 of a person reported missing, by the municipality the report went to,
    resolves the report as an online 記載 does (`jukilib.register.store`)."""
    await connection.execute(
        f"""UPDATE municipality_report m
            SET person_id = p.id, state = {REPORT_RESOLVED}, outcome = {REPORT_CORRECTED}, resolve_time = $1,
                resolving_version = 1
            FROM person p JOIN person_version v ON v.person_id = p.id AND v.version = 1
            WHERE m.person_id IS NULL AND m.state IN ({REPORT_AT_MUNICIPALITY_SQL})
              AND p.resident_code = m.resident_code AND v.municipality_code = m.municipality_code
              AND v.receive_time = $1""", load_time)


NULL = "\\N"


def _nullable(value: int | str | None) -> str:
    return NULL if value is None else str(value)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str) -> str:
    """A text value in PostgreSQL's COPY text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: copy_text, int: str, bool: lambda value: "t" if value else "f", type(None): lambda _: "\\N",
    bytes: lambda value: "\\\\x" + value.hex(), uuid.UUID: str, dt.date: dt.date.isoformat,
    dt.datetime: dt.datetime.isoformat,
}


def copy_rows(records: list[tuple[Any, ...]]) -> str:
    """Rows of Python values in COPY text format (of the types of `_ENCODERS` only: a KeyError names another).
    Encoded column by column: a column holds one type in nearly every table, and a column of one type is
    encoded by one loop in C (a load writes millions of rows)."""
    if not records:
        return ""
    columns = [_copy_column(values) for values in zip(*records, strict=True)]
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


def _copy_column(values: tuple[Any, ...]) -> Sequence[str]:
    """The values of one column in COPY text format."""
    kinds = set(map(type, values))
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is str:
        joined = "".join(values)  # escapes are checked once in the whole column: nearly never needed
        if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
            return [copy_text(value) for value in values]
        return values
    if kind is int:
        return list(map(str, values))
    if kind is bytes:
        return ["\\\\x" + value.hex() for value in values]
    encoders = _ENCODERS
    return [encoders[type(value)](value) for value in values]


