"""What a register holds since a point, by notification (the reconciliation after a restore, issue 20).

A version is named by the notification that made it ((municipality, notification id), unique per register):
the agency's copy names it the same way (`rows.outbox_key`), so the two sides are compared by notification,
never by version number (a number is given again after a restore). Each version comes with the state of its
outbox row: a version the agency lacks is still to be sent (`pending`), given up (`dead`: `juki outbox retry`),
or was acknowledged and lost at the agency (`delivered`).

Order: as the modification feed (`jukilib.register.modifications`), a version's place is the transaction that
wrote it, and only transactions older than every one still running are answered, so a reader that keeps its
position misses none. The first page starts at the oldest transaction that wrote a version since the point.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from jukilib.db.pool import Database

Position = tuple[int, uuid.UUID, int]
"""(transaction, person, version) of the last version read."""


class HeldVersion(NamedTuple):
    """One version the register holds, by the notification that made it; no record, no 住民票コード."""

    person_id: uuid.UUID
    version: int
    municipality_code: str
    notification_id: str
    created_at: dt.datetime
    outbox_state: str | None
    """`pending`, `delivered` or `dead`; None: no outbox row (an initial load without forwarding)."""


_START = "SELECT min(commit_xid)::text::bigint FROM person_version WHERE created_at >= $1"
_HELD = """
SELECT v.person_id, v.version, v.municipality_code, v.notification_id, v.created_at,
       v.commit_xid::text::bigint AS xid,
       (SELECT o.state FROM outbox o
         WHERE o.idempotency_key IN ($5 || '/' || v.municipality_code || '/' || v.notification_id,
                                     $5 || '/' || v.person_id::text || '/' || v.version::text)) AS outbox_state
FROM person_version v
WHERE v.created_at >= $1 AND (v.commit_xid, v.person_id, v.version) >= ($2::text::xid8, $3::uuid, $4::bigint)
  AND v.commit_xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY v.commit_xid, v.person_id, v.version
LIMIT $6
"""


async def held_since(connection: asyncpg.Connection, register: str, since: dt.datetime, limit: int,
                     after: Position | None = None) -> tuple[list[HeldVersion], Position | None]:
    """Up to `limit` versions written at or after `since`, after `after` (None: from the first); and the
    position to read on from (None: no more now)."""
    if after is None:
        start = await connection.fetchval(_START, since)
        if start is None:
            return [], None
        rows = await connection.fetch(_HELD, since, str(start), uuid.UUID(int=0), 0, register, limit)
    else:
        xid, person, version = after
        rows = await connection.fetch(_HELD, since, str(xid), person, version + 1, register, limit)
    held = [HeldVersion(r["person_id"], r["version"], r["municipality_code"], r["notification_id"], r["created_at"],
                        r["outbox_state"]) for r in rows]
    if len(rows) < limit:
        return held, None
    last = rows[-1]
    return held, (last["xid"], last["person_id"], last["version"])


async def held_notifications(connection: asyncpg.Connection, notifications: Sequence[tuple[str, str]],
                             ) -> dict[tuple[str, str], tuple[uuid.UUID, int]]:
    """Which of (municipality, notification id) the register holds, with the version each made."""
    rows = await connection.fetch(
        """SELECT v.municipality_code, v.notification_id, v.person_id, v.version
           FROM unnest($1::text[], $2::text[]) AS n (municipality_code, notification_id)
           JOIN person_version v USING (municipality_code, notification_id)""",
        [m for m, _ in notifications], [n for _, n in notifications])
    return {(r["municipality_code"], r["notification_id"]): (r["person_id"], r["version"]) for r in rows}


async def current_codes(connection: asyncpg.Connection, person_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The current 住民票コード of persons the register holds (the code a lost change of code started from)."""
    rows = await connection.fetch("SELECT id, resident_code FROM person WHERE id = ANY($1::uuid[])", list(person_ids))
    return {r["id"]: r["resident_code"] for r in rows}


class Holdings:
    """What one register holds, by notification (`RegisterApi.holdings`): the register's side of `juki reconcile`."""

    def __init__(self, database: Database, register: str) -> None:
        self._database = database
        self._register = register

    async def since(self, since: dt.datetime, limit: int, after: Position | None = None,
                    ) -> tuple[list[HeldVersion], Position | None]:
        """A page of the versions written at or after `since` (`held_since`)."""
        async with self._database.connection() as connection:
            return await held_since(connection, self._register, since, limit, after)

    async def find(self, notifications: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[uuid.UUID, int]]:
        """Which of these notifications the register holds (`held_notifications`)."""
        async with self._database.connection() as connection:
            return await held_notifications(connection, notifications)

    async def current_codes(self, person_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        async with self._database.connection() as connection:
            return await current_codes(connection, person_ids)
