"""The register's review queue (DOMAIN §C: a conflict goes to manual review, then possibly to a 12-5 report).

What the register could not settle by itself, for the prefecture's desk:
- a notification refused for a state conflict (unknown person, already recorded, out of jurisdiction, a
  half-arrived move, a 住民票コード or 個人番号 another person holds): kept with its content sealed under the
  register's keyring, as the 個人番号 are (`refused_item`, written by `jukilib.register.batch`);
- a record accepted with characters the register cannot identify, for 文字同定 (DOMAIN §B);
- a 転入 recorded while the old municipality still held the person (`decide.is_move_in`), listed once it has
  waited longer than `RegisterConfig.move_half_wait` for the old municipality's 転出.
The register settles an item itself when the refused notification is applied on a resend, or the 転出 half
arrives (`jukilib.register.store`); the desk dismisses one with a reason, or turns it into a 12-5 report.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import orjson
from google.protobuf import json_format

from juki.register.v1 import register_pb2 as pb
from jukilib import paging
from jukilib.db.pool import Database
from jukilib.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from jukilib.keyring import Keyring, Sealed
from jukilib.register.model import REVIEW_MOVE_HALF, REVIEW_OPEN, Notification, Record
from jukilib.register.reports import MunicipalityReports, NewReport
from jukilib.register.store import RefusedItem
from jukilib.register.validation import REASON_CODE

_COLUMNS = """id, kind, state, rule, municipality_code, notification_id, change_kind, person_id, version,
    awaited_municipality, field_paths, create_time, resolve_time, resolution_reason_code, report_id"""


def _associated(item_id: uuid.UUID) -> bytes:
    """Binds a sealed content to its item: it cannot be moved to another row and opened there."""
    return b"review_item/" + item_id.bytes


def refused_item(keyring: Keyring, notification: Notification, rule: str, record: Record) -> RefusedItem:
    """A refused notification for the queue: `record` is the record as notified (the hooks' secrets back)."""
    item_id = uuid.uuid4()
    change = notification.change
    content = {"record": record, "previous_resident_code": notification.previous_resident_code or "",
               "change": {"kind": int(change.kind), "reason": change.reason,
                          "event_date": change.event_date.isoformat(), "notify_time": change.notify_time.isoformat(),
                          "receive_time": change.receive_time.isoformat(),
                          "municipality_code": change.municipality_code, "notification_id": change.notification_id}}
    sealed = keyring.seal(orjson.dumps(content).decode(), _associated(item_id))
    return RefusedItem(item_id, rule, change, sealed)


def review_item_id(name: str) -> uuid.UUID:
    prefix = "reviewItems/"
    try:
        if not name.startswith(prefix):
            raise ValueError
        return uuid.UUID(name[len(prefix):])
    except ValueError:
        raise InvalidArgument([FieldViolation("name", "must be of the form reviewItems/{id}")]) from None


class ReviewQueue:
    """The review queue of one register."""

    def __init__(self, database: Database, keyring: Keyring, reports: MunicipalityReports,
                 move_half_wait: dt.timedelta) -> None:
        self._database = database
        self._keyring = keyring
        self._reports = reports
        self.move_half_wait = move_half_wait
        """A lone 転入 is listed only after waiting this long for its 転出 (`RegisterConfig.move_half_wait`)."""

    async def list(self, state: int, kind: int, size: int, token: str) -> tuple[list[asyncpg.Record], str]:
        limit = paging.page_size(size)
        position = paging.decode_token(token, keys=("offset",))
        offset = paging.int_at(position, "offset") if position else 0
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM review_item
                    WHERE ($1::smallint = 0 OR state = $1) AND ($2::smallint = 0 OR kind = $2) AND {_listed(5)}
                    ORDER BY create_time, id OFFSET $3 LIMIT $4""",
                state, kind, offset, limit + 1, self.move_half_wait)
        token = paging.encode_token({"offset": offset + limit}) if len(rows) > limit else ""
        return list(rows[:limit]), token

    async def get(self, name: str) -> tuple[asyncpg.Record, dict[str, Any] | None]:
        """The item, and the refused notification's content unsealed (None for an accepted record)."""
        async with self._database.connection() as connection:
            row = await self._find(connection, review_item_id(name))
            sealed = await connection.fetchrow(
                "SELECT key_id, nonce, ciphertext FROM review_item WHERE id = $1 AND ciphertext IS NOT NULL", row["id"])
        if sealed is None:
            return row, None
        content = self._keyring.open(Sealed(sealed["key_id"], bytes(sealed["nonce"]), bytes(sealed["ciphertext"])),
                                     _associated(row["id"]))
        return row, orjson.loads(content)

    async def dismiss(self, name: str, reason_code: str) -> asyncpg.Record:
        identifier = review_item_id(name)
        if not REASON_CODE.match(reason_code):
            raise InvalidArgument([FieldViolation("reason_code", "must be an UPPER_SNAKE_CASE code of at most 64 "
                                                                 "characters saying why nothing is to be done")])
        async with self._database.transaction() as connection:
            await self._open(connection, identifier)
            return await self._resolve(connection, identifier, int(pb.REVIEW_ITEM_STATE_DISMISSED), reason_code, None)

    async def report(self, name: str, new: NewReport) -> asyncpg.Record:
        """住基法 12-5: the desk reports what it found to the municipality; the report's origin is the item."""
        identifier = review_item_id(name)
        async with self._database.transaction() as connection:
            await self._open(connection, identifier)
        report = await self._reports.create(new)
        async with self._database.transaction() as connection:
            await self._open(connection, identifier)
            return await self._resolve(connection, identifier, int(pb.REVIEW_ITEM_STATE_REPORTED), None, report["id"])

    async def _find(self, connection: asyncpg.Connection, identifier: uuid.UUID, *, lock: bool = False,
                    ) -> asyncpg.Record:
        row = await connection.fetchrow(
            f"SELECT {_COLUMNS} FROM review_item WHERE id = $1 AND {_listed(2)} {'FOR UPDATE' if lock else ''}",
            identifier, self.move_half_wait)
        if row is None:
            raise NotFound("no such review item", "REVIEW_ITEM_NOT_FOUND")
        found: asyncpg.Record = row
        return found

    async def _open(self, connection: asyncpg.Connection, identifier: uuid.UUID) -> None:
        row = await self._find(connection, identifier, lock=True)
        if row["state"] != REVIEW_OPEN:
            raise FailedPrecondition("the review item is already resolved", "REVIEW_ITEM_RESOLVED")

    @staticmethod
    async def _resolve(connection: asyncpg.Connection, identifier: uuid.UUID, state: int, reason_code: str | None,
                       report_id: uuid.UUID | None) -> asyncpg.Record:
        row = await connection.fetchrow(
            f"""UPDATE review_item SET state = $2, resolve_time = now(), resolution_reason_code = $3, report_id = $4
                WHERE id = $1 RETURNING {_COLUMNS}""", identifier, state, reason_code, report_id)
        assert row is not None
        resolved: asyncpg.Record = row
        return resolved


def _listed(wait: int) -> str:
    """A lone 転入 is not an item before its wait (parameter `$wait`) is over: its 転出 usually follows within it."""
    return f"(kind <> {REVIEW_MOVE_HALF} OR state <> {REVIEW_OPEN} OR create_time <= now() - ${wait}::interval)"


def review_message(row: asyncpg.Record, collection: str, content: dict[str, Any] | None = None,
                   record_type: Any = None) -> pb.ReviewItem:
    """A `juki.register.v1.ReviewItem`; with `content`, the refused notification (GetReviewItem only)."""
    item = pb.ReviewItem(
        name=f"reviewItems/{row['id']}", kind=row["kind"], state=row["state"], rule=row["rule"],
        municipality_code=row["municipality_code"], notification_id=row["notification_id"],
        awaited_municipality_code=row["awaited_municipality"] or "", field_paths=row["field_paths"],
        resolution_reason_code=row["resolution_reason_code"] or "")
    if row["person_id"] is not None:
        item.version = f"{collection}/{row['person_id']}/versions/{row['version']}"
    if row["report_id"] is not None:
        item.municipality_report = f"municipalityReports/{row['report_id']}"
    item.create_time.FromDatetime(row["create_time"])
    if row["resolve_time"] is not None:
        item.resolve_time.FromDatetime(row["resolve_time"])
    if content is not None:
        _fill_content(item, content, record_type)
    return item


def _fill_content(item: pb.ReviewItem, content: dict[str, Any], record_type: Any) -> None:
    item.record.Pack(json_format.ParseDict(content["record"], record_type(), ignore_unknown_fields=True))
    change = content["change"]
    event = dt.date.fromisoformat(change["event_date"])
    item.change.kind, item.change.reason = change["kind"], change["reason"]
    item.change.event_date.year, item.change.event_date.month, item.change.event_date.day = (
        event.year, event.month, event.day)
    item.change.notify_time.FromDatetime(dt.datetime.fromisoformat(change["notify_time"]))
    item.change.receive_time.FromDatetime(dt.datetime.fromisoformat(change["receive_time"]))
    item.change.municipality_code = change["municipality_code"]
    item.change.notification_id = change["notification_id"]
    item.previous_resident_code = content["previous_resident_code"]


async def rotate(connection: asyncpg.Connection, keyring: Keyring, batch: int = 1000) -> int:
    """Re-seal every refused notification not under the active key, in batches (`juki keys rotate`, as the
    schema owner; the register keeps opening items under either key meanwhile). Returns the count."""
    total = 0
    while True:
        async with connection.transaction():
            rows = await connection.fetch(
                """SELECT id, key_id, nonce, ciphertext FROM review_item
                   WHERE ciphertext IS NOT NULL AND key_id <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED""",
                keyring.active, batch)
            for row in rows:
                associated = _associated(row["id"])
                content = keyring.open(Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"])), associated)
                sealed = keyring.seal(content, associated)
                await connection.execute(
                    "UPDATE review_item SET key_id = $2, nonce = $3, ciphertext = $4 WHERE id = $1",
                    row["id"], sealed.key_id, sealed.nonce, sealed.ciphertext)
        total += len(rows)
        if len(rows) < batch:
            return total
