"""Applying notifications to a register: idempotent, ordered per person, one transaction each.

Within one transaction the engine stores the new version (a full snapshot with its change
information), advances the person's current record, records the receipt that makes the notification
idempotent, and writes the outbox row that the relay forwards to the agency (30-7 / 30-42).
"""

from __future__ import annotations

import uuid

import asyncpg
from opentelemetry import trace
from opentelemetry.propagate import inject

from jukilib.db.pool import Database
from jukilib.errors import AlreadyExists, FailedPrecondition, NotFound
from jukilib.register import store
from jukilib.register.model import ChangeKind, CurrentRecord, Notification, RecordState, StoredVersion

tracer = trace.get_tracer(__name__)

# Retried as a whole: a concurrent first notification for the same person or the same repeat
# notification loses the race on a unique key, and on retry finds the winner's rows.
_RETRY_ON = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError)


def check_kind_against_state(kind: ChangeKind, person: asyncpg.Record | None) -> None:
    """Rules per kind of change (30-6 ①): what can be recorded, removed or corrected."""
    if person is None:
        if kind != ChangeKind.RECORD:
            raise FailedPrecondition(
                "a removal or correction was notified for a person not in the file", "UNKNOWN_PERSON"
            )
        return
    state = RecordState(person["state"])
    if kind == ChangeKind.RECORD and state == RecordState.ACTIVE:
        raise FailedPrecondition("a record was notified for a person who is already recorded", "ALREADY_RECORDED")
    if kind == ChangeKind.REMOVE and state == RecordState.REMOVED:
        raise FailedPrecondition("a removal was notified for a person already removed", "ALREADY_REMOVED")
    if kind == ChangeKind.MODIFY and state == RecordState.REMOVED:
        raise FailedPrecondition("a correction was notified for a removed person", "PERSON_REMOVED")


def _trace_parent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


class RegisterEngine:
    """One register (identity or annex) on one schema."""

    def __init__(self, database: Database, register: str) -> None:
        self._database = database
        self.register = register

    async def apply(self, notification: Notification) -> StoredVersion:
        """Apply `notification` once; a repeat returns the stored version and changes nothing."""
        with tracer.start_as_current_span("register.apply", attributes={"juki.register": self.register}):
            return await self._database.run_in_transaction(
                lambda connection: self._apply(connection, notification), retry_on=_RETRY_ON
            )

    async def _apply(self, connection: asyncpg.Connection, notification: Notification) -> StoredVersion:
        change = notification.change
        earlier = await store.find_receipt(connection, change.municipality_code, change.notification_id)
        if earlier is not None:
            return self._same_answer(notification, *earlier)
        person = await store.lock_person(connection, notification.resident_code)
        check_kind_against_state(change.kind, person)
        state = RecordState.REMOVED if change.kind == ChangeKind.REMOVE else RecordState.ACTIVE
        if person is None:
            person_id, version = uuid.uuid4(), 1
            await store.insert_person(connection, person_id, state, notification)
        else:
            person_id, version = person["id"], person["last_version"] + 1
        created_at = await store.insert_version(connection, person_id, version, state, notification)
        if person is not None:
            # A late notification (older event date) is kept in history but does not overwrite
            # newer current data.
            newer = change.event_date >= person["event_date"]
            await store.advance_person(connection, person_id, version, state, notification, becomes_current=newer)
        await store.insert_receipt(connection, notification, person_id, version)
        key = f"{self.register}/{person_id}/{version}"
        await store.insert_outbox(connection, person_id, version, key, _trace_parent())
        return StoredVersion(person_id, version, notification.resident_code, state, notification.record,
                             change, created_at)

    @staticmethod
    def _same_answer(notification: Notification, digest: bytes, stored: StoredVersion) -> StoredVersion:
        if digest != notification.digest:
            raise AlreadyExists(
                "this notification id was already used for a notification with different content",
                "NOTIFICATION_ID_REUSED",
            )
        return stored

    async def get(self, person_id: uuid.UUID) -> CurrentRecord:
        async with self._database.connection() as connection:
            found = await store.current_by_id(connection, person_id)
        if found is None:
            raise NotFound("no such person in the file", "PERSON_NOT_FOUND")
        return found

    async def lookup(self, resident_code: str) -> CurrentRecord:
        async with self._database.connection() as connection:
            found = await store.current_by_resident_code(connection, resident_code)
        if found is None:
            raise NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")
        return found

    async def versions(self, person_id: uuid.UUID, after_version: int, limit: int) -> list[StoredVersion]:
        async with self._database.connection() as connection:
            if await store.current_by_id(connection, person_id) is None:
                raise NotFound("no such person in the file", "PERSON_NOT_FOUND")
            return await store.list_versions(connection, person_id, after_version, limit)
