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
_VERSION_WIDTH = _VERSION_COLUMNS.count(",") + 1
"""Columns `_VERSION_COLUMNS` selects (`version_from_row` reads them by position)."""
VERSION_COLUMNS = _VERSION_COLUMNS
"""For statements outside this module (the relay's claim) that read versions with `version_from_row`."""
_ORDER = "v.event_date, v.notify_time, v.municipality_code, v.notification_id"
_ORDER_DESC = "v.event_date DESC, v.notify_time DESC, v.municipality_code DESC, v.notification_id DESC"


_STATES = {int(state): state for state in RecordState}
_KINDS = {int(kind): kind for kind in ChangeKind}


def version_from_row(row: asyncpg.Record) -> StoredVersion:
    """The version in the first columns of `row`: every query selects `_VERSION_COLUMNS` first, anything
    else after them. By position, and enum members by dict: a batch lookup reads 1,000 rows, and this is
    2.1 µs a row against 4.8 µs by column name and enum call (an unknown state or kind still raises)."""
    (person_id, version, resident_code, state, record, kind, reason, event_date, notify_time, receive_time,
     municipality_code, notification_id, created_at) = row[:_VERSION_WIDTH]
    return StoredVersion(
        person_id, version, resident_code, _STATES.get(state) or RecordState(state), record,
        Change(_KINDS.get(kind) or ChangeKind(kind), reason, event_date, notify_time, receive_time,
               municipality_code, notification_id),
        created_at,
    )


# --- ingest ----------------------------------------------------------------------------------------

async def find_receipt(
    connection: asyncpg.Connection, municipality_code: str, notification_id: str
) -> tuple[bytes, StoredVersion] | None:
    """The stored answer to an earlier notification with this id, with the digest of its request (the
    version a notification made is its receipt): `find_receipts` of one."""
    key = (municipality_code, notification_id)
    return (await find_receipts(connection, [key])).get(key)


async def person_of_code(connection: asyncpg.Connection, resident_code: str) -> uuid.UUID | None:
    """The person who has, or had, this 住民票コード."""
    found: uuid.UUID | None = await connection.fetchval(
        """SELECT id FROM (SELECT id, 0 AS rank FROM person WHERE resident_code = $1
                           UNION ALL SELECT person_id, 1 FROM resident_code_history WHERE resident_code = $1) AS owner
           ORDER BY rank LIMIT 1""",
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
    """The version, and with it the notification's receipt (its request digest)."""
    change = notification.change
    created_at: datetime = await connection.fetchval(
        """INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind,
               change_reason, event_date, notify_time, receive_time, municipality_code, notification_id,
               request_digest)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           RETURNING created_at""",
        person_id, version, notification.resident_code, int(state), notification.record, int(change.kind),
        change.reason, change.event_date, change.notify_time, change.receive_time,
        change.municipality_code, change.notification_id, notification.digest,
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


# A person's current version (aliases p and v), and the columns `current_from_row` reads.
_CURRENT = "person p JOIN person_version v ON v.person_id = p.id AND v.version = p.current_version"
_CURRENT_COLUMNS = f"{_VERSION_COLUMNS}, p.updated_at AS person_updated_at"


def current_from_row(row: asyncpg.Record) -> CurrentRecord:
    version = version_from_row(row)
    return CurrentRecord(version.person_id, version, row[_VERSION_WIDTH])  # person_updated_at, just after


async def current_by_id(connection: asyncpg.Connection, person_id: uuid.UUID) -> CurrentRecord | None:
    row = await connection.fetchrow(f"SELECT {_CURRENT_COLUMNS} FROM {_CURRENT} WHERE p.id = $1", person_id)
    return None if row is None else current_from_row(row)


async def current_by_ids(connection: asyncpg.Connection, person_ids: list[uuid.UUID]) -> list[CurrentRecord]:
    rows = await connection.fetch(f"SELECT {_CURRENT_COLUMNS} FROM {_CURRENT} WHERE p.id = ANY($1::uuid[])",
                                  person_ids)
    found = {row["person_id"]: row for row in rows}
    return [current_from_row(found[pid]) for pid in person_ids if pid in found]


async def current_by_codes(connection: asyncpg.Connection, resident_codes: list[str]) -> dict[str, CurrentRecord]:
    """The current record of whoever has, or had, each of these 住民票コード (a code held now wins over the
    same code kept as another person's former one); codes nobody had are absent. One statement for the
    codes held now; a second, for former codes, only when some code was not found by the first."""
    rows = await connection.fetch(
        f"SELECT {_CURRENT_COLUMNS}, p.resident_code AS requested_code FROM {_CURRENT} "
        "WHERE p.resident_code = ANY($1::text[])", resident_codes)
    found = {row["requested_code"]: current_from_row(row) for row in rows}
    if len(found) < len(resident_codes):
        former = await connection.fetch(
            f"""SELECT {_CURRENT_COLUMNS}, h.resident_code AS requested_code
                FROM resident_code_history h JOIN {_CURRENT} ON p.id = h.person_id
                WHERE h.resident_code = ANY($1::text[])""",
            [code for code in resident_codes if code not in found])
        found.update((row["requested_code"], current_from_row(row)) for row in former)
    return found


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


# --- batch ingest (RegisterEngine.apply_many) ------------------------------------------------------
# Set-based counterparts of the ingest statements above: a batch of notifications costs a handful of
# statements, whatever its size. The caller owns the transaction and the order of the writes
# (persons, then versions, then what references them).

async def find_receipts(
    connection: asyncpg.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[bytes, StoredVersion]]:
    """The stored answers to earlier notifications with these (municipality, notification id)."""
    if not keys:
        return {}
    rows = await connection.fetch(
        f"""SELECT {_VERSION_COLUMNS}, v.request_digest
            FROM unnest($1::text[], $2::text[]) AS wanted (municipality_code, notification_id)
            JOIN person_version v
              ON v.municipality_code = wanted.municipality_code AND v.notification_id = wanted.notification_id""",
        [m for m, _ in keys], [n for _, n in keys],
    )
    found = {}
    for row in rows:
        version = version_from_row(row)
        found[(version.change.municipality_code, version.change.notification_id)] = (
            bytes(row["request_digest"]), version)
    return found


async def lock_persons_of_codes(connection: asyncpg.Connection, resident_codes: list[str]) -> list[asyncpg.Record]:
    """Who has, or had, each of these 住民票コード: rows (code, person_id), the persons locked for this
    transaction in id order (two batches lock their common persons in the same order)."""
    if not resident_codes:
        return []
    return await connection.fetch(
        """SELECT known.code, p.id AS person_id
           FROM (SELECT resident_code AS code, id AS person_id FROM person WHERE resident_code = ANY($1::text[])
                 UNION ALL
                 SELECT resident_code, person_id FROM resident_code_history WHERE resident_code = ANY($1::text[])
                ) AS known
           JOIN person p ON p.id = known.person_id
           ORDER BY p.id
           FOR UPDATE OF p""",
        resident_codes,
    )


async def persons_with_newest_key(connection: asyncpg.Connection, person_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Locked persons as they are now, with the order key and state of their current version (the newest
    in event order): a notification after that key needs no neighbour query."""
    if not person_ids:
        return []
    return await connection.fetch(
        f"""SELECT p.id, p.resident_code, p.state, p.current_version, p.last_version,
                   v.event_date, v.notify_time, v.municipality_code, v.notification_id
            FROM {_CURRENT} WHERE p.id = ANY($1::uuid[])""",
        person_ids,
    )


def newest_key_of(row: asyncpg.Record) -> OrderKey:
    return (row["event_date"], row["notify_time"], row["municipality_code"], row["notification_id"])


PersonRow = tuple[uuid.UUID, int, int, int, Notification, str]
"""(person id, state, current version, last version, notification of the current version, its record as JSON)"""
VersionRow = tuple[uuid.UUID, int, int, Notification, str]
"""(person id, version, state, notification, its record as JSON)"""


def _person_columns(rows: list[PersonRow]) -> list[list[object]]:
    """Columns (id, resident code, state, current version, last version, event date, record, search keys)."""
    values = [(person_id, n.resident_code, state, current, last, n.change.event_date, record,
               *_search_values(n.search)) for person_id, state, current, last, n, record in rows]
    return [list(column) for column in zip(*values, strict=True)]


async def insert_persons(connection: asyncpg.Connection, rows: list[PersonRow]) -> None:
    """New persons with their current record."""
    if not rows:
        return
    await connection.execute(
        """INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record,
               updated_at, name_key, kana_key, birth_year, birth_month, birth_day, sex_code, municipality_code)
           SELECT u.id, u.resident_code, u.state, u.current_version, u.last_version, u.event_date, u.record::jsonb,
                  now(),
                  u.name_key, u.kana_key, u.birth_year, u.birth_month, u.birth_day, u.sex_code, u.municipality_code
           FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::bigint[], $5::bigint[], $6::date[],
                       $7::text[], $8::text[], $9::text[], $10::int[], $11::int[], $12::int[], $13::text[],
                       $14::text[])
             AS u (id, resident_code, state, current_version, last_version, event_date, record, name_key, kana_key,
                   birth_year, birth_month, birth_day, sex_code, municipality_code)""",
        *_person_columns(rows),
    )


async def make_current_many(connection: asyncpg.Connection, rows: list[PersonRow]) -> None:
    """Existing persons whose current record advanced."""
    if not rows:
        return
    await connection.execute(
        """UPDATE person p SET resident_code = u.resident_code, state = u.state, current_version = u.current_version,
               last_version = u.last_version, event_date = u.event_date, record = u.record::jsonb, updated_at = now(),
               name_key = u.name_key, kana_key = u.kana_key, birth_year = u.birth_year, birth_month = u.birth_month,
               birth_day = u.birth_day, sex_code = u.sex_code, municipality_code = u.municipality_code
           FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::bigint[], $5::bigint[], $6::date[],
                       $7::text[], $8::text[], $9::text[], $10::int[], $11::int[], $12::int[], $13::text[],
                       $14::text[])
             AS u (id, resident_code, state, current_version, last_version, event_date, record, name_key, kana_key,
                   birth_year, birth_month, birth_day, sex_code, municipality_code)
           WHERE p.id = u.id""",
        *_person_columns(rows),
    )


async def note_version_numbers(connection: asyncpg.Connection, rows: list[tuple[uuid.UUID, int]]) -> None:
    """Persons that got late versions only: (person id, last version); current records stay."""
    if not rows:
        return
    await connection.execute(
        """UPDATE person p SET last_version = u.last_version
           FROM unnest($1::uuid[], $2::bigint[]) AS u (id, last_version) WHERE p.id = u.id""",
        [person_id for person_id, _ in rows], [last for _, last in rows],
    )


async def insert_versions(connection: asyncpg.Connection,
                          rows: list[VersionRow]) -> dict[tuple[uuid.UUID, int], datetime]:
    """New versions, each with its notification's receipt (request digest); returns their creation times."""
    if not rows:
        return {}
    changes = [n.change for _, _, _, n, _ in rows]
    created = await connection.fetch(
        """INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind,
               change_reason, event_date, notify_time, receive_time, municipality_code, notification_id,
               request_digest)
           SELECT u.person_id, u.version, u.resident_code, u.state, u.record::jsonb, u.change_kind, u.change_reason,
                  u.event_date, u.notify_time, u.receive_time, u.municipality_code, u.notification_id,
                  u.request_digest
           FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::smallint[], $5::text[], $6::smallint[],
                       $7::smallint[], $8::date[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[],
                       $13::bytea[])
             AS u (person_id, version, resident_code, state, record, change_kind, change_reason, event_date,
                   notify_time, receive_time, municipality_code, notification_id, request_digest)
           RETURNING person_id, version, created_at""",
        [r[0] for r in rows], [r[1] for r in rows], [r[3].resident_code for r in rows],
        [r[2] for r in rows], [r[4] for r in rows], [int(c.kind) for c in changes],
        [c.reason for c in changes], [c.event_date for c in changes], [c.notify_time for c in changes],
        [c.receive_time for c in changes], [c.municipality_code for c in changes],
        [c.notification_id for c in changes], [r[3].digest for r in rows],
    )
    return {(row["person_id"], row["version"]): row["created_at"] for row in created}


async def insert_outbox_rows(connection: asyncpg.Connection, rows: list[tuple[uuid.UUID, int, str]],
                             trace_parent: str | None) -> None:
    """Outbox rows (person id, version, idempotency key), given ids in this order (the relay delivers a
    person's changes in id order)."""
    if not rows:
        return
    await connection.execute(
        """INSERT INTO outbox (person_id, version, idempotency_key, trace_parent)
           SELECT u.person_id, u.version, u.idempotency_key, $4
           FROM unnest($1::uuid[], $2::bigint[], $3::text[]) WITH ORDINALITY
             AS u (person_id, version, idempotency_key, position)
           ORDER BY u.position""",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], trace_parent,
    )


async def keep_former_codes(connection: asyncpg.Connection, rows: list[tuple[str, uuid.UUID]]) -> None:
    """Former codes (code, person id); a code already kept stays with its person."""
    if not rows:
        return
    await connection.execute(
        """INSERT INTO resident_code_history (resident_code, person_id)
           SELECT * FROM unnest($1::text[], $2::uuid[])
           ON CONFLICT (resident_code) DO NOTHING""",
        [code for code, _ in rows], [person_id for _, person_id in rows],
    )


async def resolve_reports_by_corrections(connection: asyncpg.Connection, rows: list[tuple[uuid.UUID, str, int]],
                                         resolved_at: datetime) -> None:
    """Batch form of `reports.resolve_by_correction`: each (person id, municipality, version of a 修正)
    resolves that municipality's open reports on the person. One row per (person, municipality): the
    first correction in apply order, as applying one by one would leave it."""
    if not rows:
        return
    await connection.execute(
        """UPDATE municipality_report m SET state = 3, resolve_time = $4, resolving_version = u.version
           FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS u (person_id, municipality_code, version)
           WHERE m.person_id = u.person_id AND m.municipality_code = u.municipality_code AND m.state <> 3""",
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], resolved_at,
    )
