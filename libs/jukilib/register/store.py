"""SQL of the register engine. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from jukilib.register.model import Change, ChangeKind, CurrentRecord, Notification, RecordState, StoredVersion

_VERSION_COLUMNS = """
    v.person_id, v.version, v.resident_code, v.state, v.record, v.change_kind, v.change_reason,
    v.event_date, v.notify_time, v.receive_time, v.municipality_code, v.notification_id, v.created_at
"""


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


async def lock_person(connection: asyncpg.Connection, resident_code: str) -> asyncpg.Record | None:
    """The person's row, locked for this transaction (notifications for one person are serialised)."""
    return await connection.fetchrow(
        "SELECT id, state, current_version, last_version, event_date FROM person WHERE resident_code = $1 FOR UPDATE",
        resident_code,
    )


async def insert_version(
    connection: asyncpg.Connection,
    person_id: uuid.UUID,
    version: int,
    state: RecordState,
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


async def insert_person(
    connection: asyncpg.Connection, person_id: uuid.UUID, state: RecordState, notification: Notification
) -> None:
    await connection.execute(
        """INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record,
               updated_at)
           VALUES ($1, $2, $3, 1, 1, $4, $5, now())""",
        person_id, notification.resident_code, int(state), notification.change.event_date, notification.record,
    )


async def advance_person(
    connection: asyncpg.Connection,
    person_id: uuid.UUID,
    version: int,
    state: RecordState,
    notification: Notification,
    *,
    becomes_current: bool,
) -> None:
    """Record that `version` exists; make it current unless it is older than the current one."""
    if becomes_current:
        await connection.execute(
            """UPDATE person SET state = $2, current_version = $3, last_version = $3, event_date = $4,
                   record = $5, updated_at = now()
               WHERE id = $1""",
            person_id, int(state), version, notification.change.event_date, notification.record,
        )
    else:
        await connection.execute("UPDATE person SET last_version = $2 WHERE id = $1", person_id, version)


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


async def fetch_version(connection: asyncpg.Connection, person_id: uuid.UUID, version: int) -> StoredVersion | None:
    row = await connection.fetchrow(
        f"SELECT {_VERSION_COLUMNS} FROM person_version v WHERE v.person_id = $1 AND v.version = $2",
        person_id, version,
    )
    return version_from_row(row) if row else None


async def _current(connection: asyncpg.Connection, where: str, key: object) -> CurrentRecord | None:
    row = await connection.fetchrow(
        f"""SELECT p.updated_at AS person_updated_at, {_VERSION_COLUMNS}
            FROM person p JOIN person_version v ON v.person_id = p.id AND v.version = p.current_version
            WHERE {where}""",
        key,
    )
    if row is None:
        return None
    return CurrentRecord(person_id=row["person_id"], current=version_from_row(row), updated_at=row["person_updated_at"])


async def current_by_id(connection: asyncpg.Connection, person_id: uuid.UUID) -> CurrentRecord | None:
    return await _current(connection, "p.id = $1", person_id)


async def current_by_resident_code(connection: asyncpg.Connection, resident_code: str) -> CurrentRecord | None:
    return await _current(connection, "p.resident_code = $1", resident_code)


async def list_versions(
    connection: asyncpg.Connection, person_id: uuid.UUID, after_version: int, limit: int
) -> list[StoredVersion]:
    rows = await connection.fetch(
        f"""SELECT {_VERSION_COLUMNS} FROM person_version v
            WHERE v.person_id = $1 AND v.version > $2 ORDER BY v.version LIMIT $3""",
        person_id, after_version, limit,
    )
    return [version_from_row(row) for row in rows]
