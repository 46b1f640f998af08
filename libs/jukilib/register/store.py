"""SQL of the register engine. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from jukilib.keyring import Sealed
from jukilib.register.decide import Decision, Person, StoredFollower, StoredNeighbour
from jukilib.register.model import (
    REPORT_AT_MUNICIPALITY_SQL,
    REPORT_CORRECTED,
    REPORT_RESOLVED,
    REPORTS_FIXED_BY_REMOVAL,
    REVIEW_MOVE_HALF,
    REVIEW_OPEN,
    REVIEW_REFUSED,
    REVIEW_SETTLED,
    Change,
    ChangeKind,
    CurrentRecord,
    OrderKey,
    PersonId,
    RecordState,
    SearchCriteria,
    SearchKeys,
    StoredVersion,
)
from jukilib.register.rows import PersonRow, ReportFix, ReviewRow, Rows, TableRows, VersionRow

VERSION_COLUMNS = """
    v.person_id, v.version, v.resident_code, v.state, v.record, v.change_kind, v.change_reason,
    v.event_date, v.notify_time, v.receive_time, v.municipality_code, v.notification_id, v.created_at
"""
_VERSION_WIDTH = VERSION_COLUMNS.count(",") + 1  # `version_from_row` reads them by position
_ORDER = "v.event_date, v.notify_time, v.municipality_code, v.notification_id"
_ORDER_DESC = "v.event_date DESC, v.notify_time DESC, v.municipality_code DESC, v.notification_id DESC"


_STATES = {int(state): state for state in RecordState}
_KINDS = {int(kind): kind for kind in ChangeKind}


def version_from_row(row: asyncpg.Record) -> StoredVersion:
    """The version in the first columns of `row`: every query selects `VERSION_COLUMNS` first, anything
    else after them. By position, and enum members by dict, because a batch lookup reads 1,000 rows
    (docs/performance.md, "Reading versions"); an unknown state or kind still raises."""
    (person_id, version, resident_code, state, record, kind, reason, event_date, notify_time, receive_time,
     municipality_code, notification_id, created_at) = row[:_VERSION_WIDTH]
    return StoredVersion(
        person_id, version, resident_code, _STATES.get(state) or RecordState(state), record,
        Change(_KINDS.get(kind) or ChangeKind(kind), reason, event_date, notify_time, receive_time,
               municipality_code, notification_id),
        created_at,
    )


# --- reads -----------------------------------------------------------------------------------------

async def person_of_code(connection: asyncpg.Connection, resident_code: str, follow_former: bool = True,
                         ) -> PersonId | None:
    """The person who has (or, with `follow_former`, had) this 住民票コード."""
    found: PersonId | None = await connection.fetchval(
        """SELECT id FROM (SELECT id, 0 AS rank FROM person WHERE resident_code = $1
                           UNION ALL SELECT person_id, 1 FROM resident_code_history
                                     WHERE resident_code = $1 AND $2) AS owner
           ORDER BY rank LIMIT 1""",
        resident_code, follow_former,
    )
    return found



# A person's current version, and the columns `current_from_row` reads: `VERSION_COLUMNS` in their order, all
# from `person`, which holds the current version's record and change information (migration 0018): a lookup
# reads one row.
_CURRENT = "person p"
_CURRENT_COLUMNS = """
    p.id AS person_id, p.current_version AS version, p.resident_code, p.state, p.record, p.change_kind,
    p.change_reason, p.event_date, p.notify_time, p.receive_time, p.notifying_municipality_code AS municipality_code,
    p.notification_id, p.version_created_at AS created_at, p.updated_at AS person_updated_at"""


def current_from_row(row: asyncpg.Record) -> CurrentRecord:
    version = version_from_row(row)
    return CurrentRecord(version.person_id, version, row[_VERSION_WIDTH])  # person_updated_at, just after


async def current_by_id(connection: asyncpg.Connection, person_id: PersonId) -> CurrentRecord | None:
    row = await connection.fetchrow(f"SELECT {_CURRENT_COLUMNS} FROM {_CURRENT} WHERE p.id = $1", person_id)
    return None if row is None else current_from_row(row)


async def current_by_ids(connection: asyncpg.Connection, person_ids: list[PersonId]) -> list[CurrentRecord]:
    rows = await connection.fetch(f"SELECT {_CURRENT_COLUMNS} FROM {_CURRENT} WHERE p.id = ANY($1::uuid[])",
                                  person_ids)
    found = {row["person_id"]: row for row in rows}
    return [current_from_row(found[pid]) for pid in person_ids if pid in found]


async def current_by_codes(connection: asyncpg.Connection, resident_codes: list[str], follow_former: bool = True,
                           ) -> dict[str, CurrentRecord]:
    """The current record of whoever has, or had, each of these 住民票コード (a code held now wins over the
    same code kept as another person's former one); codes nobody had are absent. One statement for the
    codes held now; a second, for former codes, only when some code was not found by the first."""
    rows = await connection.fetch(
        f"SELECT {_CURRENT_COLUMNS}, p.resident_code AS requested_code FROM {_CURRENT} "
        "WHERE p.resident_code = ANY($1::text[])", resident_codes)
    found = {row["requested_code"]: current_from_row(row) for row in rows}
    if follow_former and len(found) < len(resident_codes):
        former = await connection.fetch(
            f"""SELECT {_CURRENT_COLUMNS}, h.resident_code AS requested_code
                FROM resident_code_history h JOIN {_CURRENT} ON p.id = h.person_id
                WHERE h.resident_code = ANY($1::text[])""",
            [code for code in resident_codes if code not in found])
        found.update((row["requested_code"], current_from_row(row)) for row in former)
    return found


async def version_as_of(connection: asyncpg.Connection, person_id: PersonId, day: dt.date,
                        by_receipt: bool) -> StoredVersion | None:
    """The version that stood on `day`: by event date, or by what had been received (Japan time)."""
    condition = ("(v.receive_time AT TIME ZONE 'Asia/Tokyo')::date <= $2" if by_receipt
                 else "v.event_date <= $2")
    row = await connection.fetchrow(
        f"""SELECT {VERSION_COLUMNS} FROM person_version v
            WHERE v.person_id = $1 AND {condition} ORDER BY {_ORDER_DESC} LIMIT 1""",
        person_id, day,
    )
    return version_from_row(row) if row else None


async def list_versions(
    connection: asyncpg.Connection, person_id: PersonId, offset: int, limit: int
) -> list[StoredVersion]:
    """The person's history in event order."""
    rows = await connection.fetch(
        f"""SELECT {VERSION_COLUMNS} FROM person_version v
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


# --- writes (RegisterEngine.apply_many) ------------------------------------------------------------
# A batch of notifications costs a handful of statements, whatever its size (a single notification is
# a batch of one). The caller owns the transaction.

async def find_receipts(
    connection: asyncpg.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[bytes, StoredVersion]]:
    """The stored answers to earlier notifications with these (municipality, notification id), with the
    digest of their requests (the version a notification made is its receipt)."""
    if not keys:
        return {}
    rows = await connection.fetch(
        f"""SELECT {VERSION_COLUMNS}, v.request_digest
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


async def lock_persons(connection: asyncpg.Connection, resident_codes: list[str]
                       ) -> tuple[list[Person], list[tuple[str, PersonId]]]:
    """Who has, or had, each of these 住民票コード: the persons as they are now (with the order key and state
    of their current version, the newest in event order), locked for this transaction in id order (two
    batches lock their common persons in the same order), and every (code, person id) found."""
    if not resident_codes:
        return [], []
    known = await connection.fetch(
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
    if not known:
        return [], []
    rows = await connection.fetch(
        f"""SELECT p.id, p.resident_code, p.state, p.last_version,
                   p.event_date, p.notify_time, p.notifying_municipality_code AS municipality_code, p.notification_id,
                   ARRAY(SELECT k.key FROM person_key k WHERE k.person_id = p.id AND k.current) AS keys,
                   (SELECT r.awaited_municipality FROM review_item r
                    WHERE r.person_id = p.id AND r.kind = {REVIEW_MOVE_HALF} AND r.state = {REVIEW_OPEN}
                    ORDER BY r.create_time DESC LIMIT 1) AS awaited
            FROM {_CURRENT} WHERE p.id = ANY($1::uuid[])""",
        sorted({row["person_id"] for row in known}),
    )
    persons = [Person(row["id"], row["resident_code"], row["last_version"],
                      ((row["event_date"], row["notify_time"], row["municipality_code"], row["notification_id"]),
                       RecordState(row["state"])), stored=True, keys=frozenset(bytes(k) for k in row["keys"]),
                      awaited=row["awaited"])
               for row in rows]
    return persons, [(row["code"], row["person_id"]) for row in known]


async def key_owners(connection: asyncpg.Connection, keys: list[bytes]) -> dict[bytes, PersonId]:
    """Who holds or held each of these unique keys."""
    rows = await connection.fetch("SELECT key, person_id FROM person_key WHERE key = ANY($1::bytea[])", keys)
    return {bytes(row["key"]): row["person_id"] for row in rows}


async def neighbours(connection: asyncpg.Connection, person_id: PersonId, key: OrderKey
                     ) -> tuple[StoredNeighbour | None, StoredFollower | None]:
    """The stored versions just before and just after `key` in the person's history."""
    before = await connection.fetchrow(
        f"""SELECT v.event_date, v.notify_time, v.municipality_code, v.notification_id, v.state
            FROM person_version v
            WHERE v.person_id = $1 AND ({_ORDER}) < ($2, $3, $4, $5) ORDER BY {_ORDER_DESC} LIMIT 1""",
        person_id, *key,
    )
    after = await connection.fetchrow(
        f"""SELECT v.event_date, v.notify_time, v.municipality_code, v.notification_id, v.change_kind
            FROM person_version v
            WHERE v.person_id = $1 AND ({_ORDER}) > ($2, $3, $4, $5) ORDER BY {_ORDER} LIMIT 1""",
        person_id, *key,
    )
    found = None if before is None else StoredNeighbour(tuple(before)[:4], RecordState(before["state"]))
    follower = None if after is None else StoredFollower(tuple(after)[:4], ChangeKind(after["change_kind"]))
    return found, follower


async def write(connection: asyncpg.Connection, rows: Rows, trace_parent: str | None,
                secret_paths: Sequence[str] = ()) -> dict[tuple[PersonId, int], datetime]:
    """Write `rows` (persons, then versions, then what references them); returns each version's creation
    time. `secret_paths`: the record fields the register keeps apart (`RegisterHooks.secret_paths`)."""
    await _insert_persons(connection, rows.new_persons)
    await _advance_persons(connection, rows.advanced_persons)
    await _note_last_versions(connection, rows.late_only)
    created = await _insert_versions(connection, rows.versions)
    await _insert_outbox(connection, rows.outbox, trace_parent)
    await _keep_former_codes(connection, rows.former_codes)
    await _write_keys(connection, rows.claimed_keys, rows.current_keys)
    for table in rows.kept:
        await insert_table_rows(connection, table)
    resolved_at = datetime.now(dt.UTC)
    await _resolve_reports(connection, rows.report_fixes, secret_paths, resolved_at)
    await _resolve_omissions(connection, [v.decision for v in rows.versions if v.decision.new_person], resolved_at)
    await queue_accepted(connection, rows.review)
    await _settle_moves(connection, rows.departures)
    return created


class RefusedItem(NamedTuple):
    """A notification refused for a state conflict, for the review queue: its content sealed."""

    id: uuid.UUID
    rule: str
    change: Change
    sealed: Sealed


async def queue_refused(connection: asyncpg.Connection, items: Sequence[RefusedItem]) -> None:
    """DOMAIN §C: a notification refused for a state conflict is kept for review (once per notification id:
    a resend refused again is the same item)."""
    if items:
        await connection.execute(
            f"""INSERT INTO review_item (id, kind, rule, municipality_code, notification_id, change_kind, key_id,
                    nonce, ciphertext)
                SELECT u.id, {REVIEW_REFUSED}, u.rule, u.municipality_code, u.notification_id, u.change_kind,
                       u.key_id, u.nonce, u.ciphertext
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::bytea[],
                            $8::bytea[])
                  AS u (id, rule, municipality_code, notification_id, change_kind, key_id, nonce, ciphertext)
                ON CONFLICT (municipality_code, notification_id, kind) DO NOTHING""",
            [i.id for i in items], [i.rule for i in items], [i.change.municipality_code for i in items],
            [i.change.notification_id for i in items], [int(i.change.kind) for i in items],
            [i.sealed.key_id for i in items], [i.sealed.nonce for i in items], [i.sealed.ciphertext for i in items])


async def queue_accepted(connection: asyncpg.Connection, rows: Sequence[ReviewRow]) -> None:
    """DOMAIN §B, §C: accepted records with characters to identify, and 転入 whose 転出 is awaited."""
    if rows:
        await connection.execute(
            """INSERT INTO review_item (id, kind, rule, municipality_code, notification_id, change_kind, person_id,
                   version, field_paths, awaited_municipality)
               SELECT gen_random_uuid(), u.kind, u.rule, u.municipality_code, u.notification_id, u.change_kind,
                      u.person_id, u.version, string_to_array(u.field_paths, ' '), u.awaited_municipality
               FROM unnest($1::smallint[], $2::text[], $3::text[], $4::text[], $5::smallint[], $6::uuid[],
                           $7::bigint[], $8::text[], $9::text[])
                 AS u (kind, rule, municipality_code, notification_id, change_kind, person_id, version, field_paths,
                       awaited_municipality)
               ON CONFLICT (municipality_code, notification_id, kind) DO NOTHING""",
            [r.kind for r in rows], [r.rule for r in rows],
            [r.decision.notification.change.municipality_code for r in rows],
            [r.decision.notification.change.notification_id for r in rows],
            [int(r.decision.notification.change.kind) for r in rows], [r.decision.person_id for r in rows],
            [r.decision.version for r in rows], [" ".join(r.field_paths) for r in rows],
            [r.awaited_municipality for r in rows])


async def _settle_moves(connection: asyncpg.Connection, departures: list[tuple[PersonId, str]]) -> None:
    """住基法 30-6 ①: the old municipality's 転出, arriving after the new one's 転入, completes the move."""
    if departures:
        await connection.execute(
            f"""UPDATE review_item r SET state = {REVIEW_SETTLED}, resolve_time = now(),
                    resolution_reason_code = 'MOVE_COMPLETED'
                FROM unnest($1::uuid[], $2::text[]) AS u (person_id, municipality_code)
                WHERE r.kind = {REVIEW_MOVE_HALF} AND r.state = {REVIEW_OPEN} AND r.person_id = u.person_id
                  AND r.awaited_municipality = u.municipality_code""",
            [p for p, _ in departures], [m for _, m in departures])


def _person_columns(rows: list[PersonRow]) -> list[list[object]]:
    """Columns (id, resident code, state, current version, last version, event date, record, search keys,
    change information of the current version)."""
    values = [(d.person_id, d.notification.resident_code, int(d.state), d.version, last,
               d.notification.change.event_date, record, *_search_values(d.notification.search),
               *_change_values(d.notification.change))
              for d, last, record in rows]
    return [list(column) for column in zip(*values, strict=True)]


def _change_values(change: Change) -> tuple[object, ...]:
    return (int(change.kind), change.reason, change.notify_time, change.receive_time, change.municipality_code,
            change.notification_id)


_PERSON_ROWS = """unnest($1::uuid[], $2::text[], $3::smallint[], $4::bigint[], $5::bigint[], $6::date[], $7::text[],
                         $8::text[], $9::text[], $10::int[], $11::int[], $12::int[], $13::text[], $14::text[],
                         $15::smallint[], $16::smallint[], $17::timestamptz[], $18::timestamptz[], $19::text[],
                         $20::text[])
             AS u (id, resident_code, state, current_version, last_version, event_date, record, name_key, kana_key,
                   birth_year, birth_month, birth_day, sex_code, municipality_code, change_kind, change_reason,
                   notify_time, receive_time, notifying_municipality_code, notification_id)"""


async def _insert_persons(connection: asyncpg.Connection, rows: list[PersonRow]) -> None:
    if rows:
        await connection.execute(
            f"""INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record,
                    updated_at, name_key, kana_key, birth_year, birth_month, birth_day, sex_code, municipality_code,
                    change_kind, change_reason, notify_time, receive_time, notifying_municipality_code,
                    notification_id, version_created_at)
                SELECT u.id, u.resident_code, u.state, u.current_version, u.last_version, u.event_date,
                       u.record::jsonb, now(), u.name_key, u.kana_key, u.birth_year, u.birth_month, u.birth_day,
                       u.sex_code, u.municipality_code, u.change_kind, u.change_reason, u.notify_time,
                       u.receive_time, u.notifying_municipality_code, u.notification_id, now()
                FROM {_PERSON_ROWS}""",
            *_person_columns(rows))


async def _advance_persons(connection: asyncpg.Connection, rows: list[PersonRow]) -> None:
    if rows:
        await connection.execute(
            f"""UPDATE person p SET resident_code = u.resident_code, state = u.state,
                    current_version = u.current_version, last_version = u.last_version, event_date = u.event_date,
                    record = u.record::jsonb, updated_at = now(), name_key = u.name_key, kana_key = u.kana_key,
                    birth_year = u.birth_year, birth_month = u.birth_month, birth_day = u.birth_day,
                    sex_code = u.sex_code, municipality_code = u.municipality_code, change_kind = u.change_kind,
                    change_reason = u.change_reason, notify_time = u.notify_time, receive_time = u.receive_time,
                    notifying_municipality_code = u.notifying_municipality_code,
                    notification_id = u.notification_id, version_created_at = now()
                FROM {_PERSON_ROWS}
                WHERE p.id = u.id""",
            *_person_columns(rows))


async def _note_last_versions(connection: asyncpg.Connection, rows: list[tuple[PersonId, int]]) -> None:
    if rows:
        await connection.execute(
            """UPDATE person p SET last_version = u.last_version
               FROM unnest($1::uuid[], $2::bigint[]) AS u (id, last_version) WHERE p.id = u.id""",
            [person_id for person_id, _ in rows], [last for _, last in rows])


async def _insert_versions(connection: asyncpg.Connection, rows: list[VersionRow],
                           ) -> dict[tuple[PersonId, int], datetime]:
    if not rows:
        return {}
    decisions = [decision for decision, _ in rows]
    changes = [d.notification.change for d in decisions]
    # A notification refused before and applied now (resent once what it waited for arrived) settles its
    # review item, in the same statement.
    created = await connection.fetch(
        f"""WITH u AS (
               SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::smallint[], $5::text[], $6::smallint[],
                                    $7::smallint[], $8::date[], $9::timestamptz[], $10::timestamptz[], $11::text[],
                                    $12::text[], $13::bytea[])
                 AS u (person_id, version, resident_code, state, record, change_kind, change_reason, event_date,
                       notify_time, receive_time, municipality_code, notification_id, request_digest)),
           settled AS (
               UPDATE review_item r SET state = {REVIEW_SETTLED}, resolve_time = now(),
                   resolution_reason_code = 'APPLIED_WHEN_RESENT'
               FROM u WHERE r.municipality_code = u.municipality_code AND r.notification_id = u.notification_id
                 AND r.kind = {REVIEW_REFUSED} AND r.state = {REVIEW_OPEN})
           INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind,
               change_reason, event_date, notify_time, receive_time, municipality_code, notification_id,
               request_digest)
           SELECT u.person_id, u.version, u.resident_code, u.state, u.record::jsonb, u.change_kind, u.change_reason,
                  u.event_date, u.notify_time, u.receive_time, u.municipality_code, u.notification_id,
                  u.request_digest
           FROM u
           RETURNING person_id, version, created_at""",
        [d.person_id for d in decisions], [d.version for d in decisions],
        [d.notification.resident_code for d in decisions], [int(d.state) for d in decisions],
        [record for _, record in rows], [int(c.kind) for c in changes], [c.reason for c in changes],
        [c.event_date for c in changes], [c.notify_time for c in changes], [c.receive_time for c in changes],
        [c.municipality_code for c in changes], [c.notification_id for c in changes],
        [d.notification.digest for d in decisions],
    )
    return {(row["person_id"], row["version"]): row["created_at"] for row in created}


async def _insert_outbox(connection: asyncpg.Connection, rows: list[tuple[PersonId, int, str]],
                         trace_parent: str | None) -> None:
    # Ids in the order of the rows: the relay delivers a person's changes in id order.
    if rows:
        await connection.execute(
            """INSERT INTO outbox (person_id, version, idempotency_key, trace_parent)
               SELECT u.person_id, u.version, u.idempotency_key, $4
               FROM unnest($1::uuid[], $2::bigint[], $3::text[]) WITH ORDINALITY
                 AS u (person_id, version, idempotency_key, position)
               ORDER BY u.position""",
            [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], trace_parent)


async def _keep_former_codes(connection: asyncpg.Connection, rows: list[tuple[str, PersonId]]) -> None:
    # A code already kept stays with its person.
    if rows:
        await connection.execute(
            """INSERT INTO resident_code_history (resident_code, person_id)
               SELECT * FROM unnest($1::text[], $2::uuid[])
               ON CONFLICT (resident_code) DO NOTHING""",
            [code for code, _ in rows], [person_id for _, person_id in rows])


class KeyClaimLost(Exception):
    """A unique key the batch claimed as new was claimed already (by another batch, or twice in this one):
    the batch is decided again knowing every owner (`key_owners`)."""


async def _write_keys(connection: asyncpg.Connection, claimed: list[tuple[bytes, PersonId, bool]],
                      current: list[tuple[PersonId, bytes]]) -> None:
    if claimed:
        inserted = await connection.fetchval(
            """WITH claimed AS (
                   INSERT INTO person_key (key, person_id, current)
                   SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::boolean[]) ON CONFLICT (key) DO NOTHING
                   RETURNING 1)
               SELECT count(*) FROM claimed""",
            [key for key, _, _ in claimed], [person for _, person, _ in claimed], [now for _, _, now in claimed])
        if inserted < len(claimed):
            raise KeyClaimLost
    if current:
        persons, keys = sorted({person for person, _ in current}), [key for _, key in current]
        await connection.execute(
            """UPDATE person_key SET current = (key = ANY($2::bytea[]))
               WHERE person_id = ANY($1::uuid[]) AND current <> (key = ANY($2::bytea[]))""", persons, keys)


async def insert_table_rows(connection: asyncpg.Connection, table: TableRows) -> None:
    """One statement for the rows of one of the hooks' tables."""
    names = ", ".join(name for name, _ in table.columns)
    arrays = ", ".join(f"${number}::{kind}[]" for number, (_, kind) in enumerate(table.columns, start=1))
    await connection.execute(f"INSERT INTO {table.table} ({names}) SELECT * FROM unnest({arrays})",
                             *(list(column) for column in zip(*table.records, strict=True)))


async def _resolve_reports(connection: asyncpg.Connection, fixes: list[ReportFix], secret_paths: Sequence[str],
                           resolved_at: datetime) -> None:
    """住基法 12-5: a report closes only when the addressed municipality fixes what it says. A 修正 fixes it
    when it changes a reported field to another value than the reported version had (a field kept apart
    from the record, e.g. the 個人番号, when the current record's unique keys changed); a 消除 fixes a
    report of a record that should not be there (`REPORTS_FIXED_BY_REMOVAL`). Anything else leaves it
    open. A report on a removed person is fixed by a 修正 of the removed record's history (a late one). The
    first fixing notification of a batch is the resolving one."""
    if not fixes:
        return
    await connection.execute(
        f"""WITH fix AS (
                SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::smallint[], $5::boolean[], $9::boolean[])
                    AS u (person_id, municipality_code, version, kind, keys_changed, current)),
            fixed AS (
                SELECT DISTINCT ON (m.id) m.id, fix.version
                FROM municipality_report m
                JOIN fix ON m.person_id = fix.person_id AND m.municipality_code = fix.municipality_code
                JOIN person_version reported ON reported.person_id = m.person_id AND reported.version = m.version
                JOIN person_version fixing ON fixing.person_id = fix.person_id AND fixing.version = fix.version
                JOIN person p ON p.id = fix.person_id
                WHERE m.state IN ({REPORT_AT_MUNICIPALITY_SQL}) AND (
                    (fix.kind = {int(ChangeKind.REMOVE)} AND m.reason_code = ANY($6::text[]))
                    OR (fix.kind = {int(ChangeKind.MODIFY)} AND (fix.current OR p.state = {int(RecordState.REMOVED)})
                        AND EXISTS (
                        SELECT 1 FROM unnest(m.fields) AS reported_field (path)
                        WHERE CASE WHEN reported_field.path = ANY($7::text[]) THEN fix.keys_changed
                                   ELSE reported.record #> string_to_array(substr(reported_field.path, 8), '.')
                                        IS DISTINCT FROM
                                        fixing.record #> string_to_array(substr(reported_field.path, 8), '.')
                              END)))
                ORDER BY m.id, fix.version)
            UPDATE municipality_report m
            SET state = {REPORT_RESOLVED}, outcome = {REPORT_CORRECTED}, resolve_time = $8,
                resolving_version = fixed.version
            FROM fixed WHERE m.id = fixed.id""",
        [f.person_id for f in fixes], [f.municipality_code for f in fixes], [f.version for f in fixes],
        [int(f.kind) for f in fixes], [f.keys_changed for f in fixes], list(REPORTS_FIXED_BY_REMOVAL),
        list(secret_paths), resolved_at, [f.current for f in fixes])


async def _resolve_omissions(connection: asyncpg.Connection, recorded: list[Decision], resolved_at: datetime) -> None:
    """住基法 12-5 (脱漏): the 記載 of a person reported missing, by the municipality the report went to,
    resolves the report, which names the person from then on."""
    if recorded:
        await connection.execute(
            f"""UPDATE municipality_report m
                SET person_id = u.person_id, state = {REPORT_RESOLVED}, outcome = {REPORT_CORRECTED},
                    resolve_time = $5, resolving_version = u.version
                FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[])
                     AS u (resident_code, municipality_code, person_id, version)
                WHERE m.person_id IS NULL AND m.state IN ({REPORT_AT_MUNICIPALITY_SQL})
                  AND m.resident_code = u.resident_code AND m.municipality_code = u.municipality_code""",
            [d.notification.resident_code for d in recorded],
            [d.notification.change.municipality_code for d in recorded],
            [d.person_id for d in recorded], [d.version for d in recorded], resolved_at)


def _search_values(keys: SearchKeys) -> tuple[object, ...]:
    return (keys.name_key, keys.kana_key, keys.birth_year, keys.birth_month, keys.birth_day, keys.sex_code,
            keys.municipality_code)
