"""SQL of the register engine. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from datetime import datetime

import asyncpg

from jukilib.register.model import (
    Change,
    ChangeKind,
    CurrentRecord,
    Notification,
    OrderKey,
    RecordState,
    SearchCriteria,
    SearchKeys,
    StoredVersion,
)

_VERSION_COLUMNS = """
    v.person_id, v.version, v.resident_code, v.state, v.record, v.change_kind, v.change_reason,
    v.event_date, v.notify_time, v.receive_time, v.municipality_code, v.notification_id, v.created_at
"""
_ORDER = "v.event_date, v.notify_time, v.municipality_code, v.notification_id"
_ORDER_DESC = "v.event_date DESC, v.notify_time DESC, v.municipality_code DESC, v.notification_id DESC"


def version_from_row(row: asyncpg.Record) -> StoredVersion:
    return StoredVersion(
        person_id=row["person_id"],
        version=row["version"],
        resident_code=row["resident_code"],
        state=RecordState(row["state"]),
        record=row["record"],
        change=Change(
            kind=ChangeKind(row["change_kind"]),
            reason=row["change_reason"],
            event_date=row["event_date"],
            notify_time=row["notify_time"],
            receive_time=row["receive_time"],
            municipality_code=row["municipality_code"],
            notification_id=row["notification_id"],
        ),
        created_at=row["created_at"],
    )


# --- ingest ----------------------------------------------------------------------------------------

async def find_receipt(
    connection: asyncpg.Connection, municipality_code: str, notification_id: str
) -> tuple[bytes, StoredVersion] | None:
    """The stored answer to an earlier notification with this id, with the digest of its request."""
    row = await connection.fetchrow(
        f"""SELECT r.request_digest, {_VERSION_COLUMNS}
            FROM notification_receipt r
            JOIN person_version v ON v.person_id = r.person_id AND v.version = r.version
            WHERE r.municipality_code = $1 AND r.notification_id = $2""",
        municipality_code, notification_id,
    )
    if row is None:
        return None
    return bytes(row["request_digest"]), version_from_row(row)


async def person_of_code(connection: asyncpg.Connection, resident_code: str) -> uuid.UUID | None:
    """The person who has, or had, this 住民票コード."""
    found: uuid.UUID | None = await connection.fetchval(
        """SELECT id FROM person WHERE resident_code = $1
           UNION ALL SELECT person_id FROM resident_code_history WHERE resident_code = $1
           LIMIT 1""",
        resident_code,
    )
    return found


async def lock_person(connection: asyncpg.Connection, person_id: uuid.UUID) -> asyncpg.Record | None:
    """The person's row, locked for this transaction (notifications for one person are serialised)."""
    return await connection.fetchrow(
        "SELECT id, resident_code, state, current_version, last_version FROM person WHERE id = $1 FOR UPDATE",
        person_id,
    )


async def neighbours(
    connection: asyncpg.Connection, person_id: uuid.UUID, key: OrderKey
) -> tuple[StoredVersion | None, StoredVersion | None]:
    """The versions just before and just after `key` in the person's history."""
    before = await connection.fetchrow(
        f"""SELECT {_VERSION_COLUMNS} FROM person_version v
            WHERE v.person_id = $1 AND ({_ORDER}) < ($2, $3, $4, $5) ORDER BY {_ORDER_DESC} LIMIT 1""",
        person_id, *key,
    )
    after = await connection.fetchrow(
        f"""SELECT {_VERSION_COLUMNS} FROM person_version v
            WHERE v.person_id = $1 AND ({_ORDER}) > ($2, $3, $4, $5) ORDER BY {_ORDER} LIMIT 1""",
        person_id, *key,
    )
    return (version_from_row(before) if before else None, version_from_row(after) if after else None)


async def insert_version(
    connection: asyncpg.Connection, person_id: uuid.UUID, version: int, state: RecordState,
    notification: Notification,
) -> datetime:
    change = notification.change
    created_at: datetime = await connection.fetchval(
        """INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind,
               change_reason, event_date, notify_time, receive_time, municipality_code, notification_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           RETURNING created_at""",
        person_id, version, notification.resident_code, int(state), notification.record, int(change.kind),
        change.reason, change.event_date, change.notify_time, change.receive_time,
        change.municipality_code, change.notification_id,
    )
    return created_at


def _search_values(keys: SearchKeys) -> tuple[object, ...]:
    return (keys.name_key, keys.kana_key, keys.birth_year, keys.birth_month, keys.birth_day, keys.sex_code,
            keys.municipality_code)


async def insert_person(
    connection: asyncpg.Connection, person_id: uuid.UUID, state: RecordState, notification: Notification
) -> None:
    await connection.execute(
        """INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record,
               updated_at, name_key, kana_key, birth_year, birth_month, birth_day, sex_code, municipality_code)
           VALUES ($1, $2, $3, 1, 1, $4, $5, now(), $6, $7, $8, $9, $10, $11, $12)""",
        person_id, notification.resident_code, int(state), notification.change.event_date, notification.record,
        *_search_values(notification.search),
    )


async def make_current(
    connection: asyncpg.Connection, person_id: uuid.UUID, version: int, state: RecordState,
    notification: Notification,
) -> None:
    """Make `version` the person's current record (it is the newest in event order)."""
    await connection.execute(
        """UPDATE person SET resident_code = $2, state = $3, current_version = $4, last_version = $4,
               event_date = $5, record = $6, updated_at = now(), name_key = $7, kana_key = $8, birth_year = $9,
               birth_month = $10, birth_day = $11, sex_code = $12, municipality_code = $13
           WHERE id = $1""",
        person_id, notification.resident_code, int(state), version, notification.change.event_date,
        notification.record, *_search_values(notification.search),
    )


async def note_version_number(connection: asyncpg.Connection, person_id: uuid.UUID, version: int) -> None:
    """A late version exists; the current record stays as it is."""
    await connection.execute("UPDATE person SET last_version = $2 WHERE id = $1", person_id, version)


async def keep_former_code(connection: asyncpg.Connection, person_id: uuid.UUID, resident_code: str) -> None:
    """Remember a code the person no longer has (lookups by it keep finding the person)."""
    await connection.execute(
        """INSERT INTO resident_code_history (resident_code, person_id) VALUES ($1, $2)
           ON CONFLICT (resident_code) DO NOTHING""",
        resident_code, person_id,
    )


async def insert_receipt(
    connection: asyncpg.Connection, notification: Notification, person_id: uuid.UUID, version: int
) -> None:
    change = notification.change
    await connection.execute(
        """INSERT INTO notification_receipt (municipality_code, notification_id, request_digest, person_id,
               version, received_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        change.municipality_code, change.notification_id, notification.digest, person_id, version,
        change.receive_time,
    )


async def insert_outbox(
    connection: asyncpg.Connection, person_id: uuid.UUID, version: int, key: str, trace_parent: str | None
) -> None:
    await connection.execute(
        "INSERT INTO outbox (person_id, version, idempotency_key, trace_parent) VALUES ($1, $2, $3, $4)",
        person_id, version, key, trace_parent,
    )


# --- reads -----------------------------------------------------------------------------------------

async def fetch_version(connection: asyncpg.Connection, person_id: uuid.UUID, version: int) -> StoredVersion | None:
    row = await connection.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM person_version v WHERE v.person_id = $1 AND v.version = $2",
        person_id, version,
    )
    return version_from_row(row) if row else None


async def current_by_id(connection: asyncpg.Connection, person_id: uuid.UUID) -> CurrentRecord | None:
    row = await connection.fetchrow(
        f"""SELECT p.updated_at AS person_updated_at, {_VERSION_COLUMNS}
            FROM person p JOIN person_version v ON v.person_id = p.id AND v.version = p.current_version
            WHERE p.id = $1""",
        person_id,
    )
    if row is None:
        return None
    return CurrentRecord(person_id=row["person_id"], current=version_from_row(row), updated_at=row["person_updated_at"])


async def current_by_ids(connection: asyncpg.Connection, person_ids: list[uuid.UUID]) -> list[CurrentRecord]:
    rows = await connection.fetch(
        f"""SELECT p.updated_at AS person_updated_at, {_VERSION_COLUMNS}
            FROM person p JOIN person_version v ON v.person_id = p.id AND v.version = p.current_version
            WHERE p.id = ANY($1::uuid[])""",
        person_ids,
    )
    found = {row["person_id"]: row for row in rows}
    return [CurrentRecord(pid, version_from_row(found[pid]), found[pid]["person_updated_at"])
            for pid in person_ids if pid in found]


async def version_as_of(connection: asyncpg.Connection, person_id: uuid.UUID, day: dt.date,
                        by_receipt: bool) -> StoredVersion | None:
    """The version that stood on `day`: by event date, or by what had been received (Japan time)."""
    condition = ("(v.receive_time AT TIME ZONE 'Asia/Tokyo')::date <= $2" if by_receipt
                 else "v.event_date <= $2")
    row = await connection.fetchrow(
        f"""SELECT {_VERSION_COLUMNS} FROM person_version v
            WHERE v.person_id = $1 AND {condition} ORDER BY {_ORDER_DESC} LIMIT 1""",
        person_id, day,
    )
    return version_from_row(row) if row else None


async def list_versions(
    connection: asyncpg.Connection, person_id: uuid.UUID, offset: int, limit: int
) -> list[StoredVersion]:
    """The person's history in event order."""
    rows = await connection.fetch(
        f"""SELECT {_VERSION_COLUMNS} FROM person_version v
            WHERE v.person_id = $1 ORDER BY {_ORDER} OFFSET $2 LIMIT $3""",
        person_id, offset, limit,
    )
    return [version_from_row(row) for row in rows]


async def search(connection: asyncpg.Connection, criteria: SearchCriteria) -> list[asyncpg.Record]:
    """Persons whose name or reading key equals the query's and whose date of birth agrees where both
    are known; sex and municipality narrow when given. Ordered by id: stable, no ranking."""
    year, month, day = criteria.birth
    return await connection.fetch(
        """SELECT id, name_key = $1 AS name_matched, kana_key = $2 AS kana_matched
           FROM person
           WHERE (name_key = $1 OR kana_key = $2)
             AND ($3::int IS NULL OR birth_year IS NULL OR birth_year = $3)
             AND ($4::int IS NULL OR birth_month IS NULL OR birth_month = $4)
             AND ($5::int IS NULL OR birth_day IS NULL OR birth_day = $5)
             AND ($6::text IS NULL OR sex_code = $6)
             AND ($7::text IS NULL OR municipality_code = $7)
           ORDER BY id LIMIT $8""",
        criteria.name_key, criteria.kana_key, year, month, day, criteria.sex_code, criteria.municipality_code,
        criteria.limit,
    )
