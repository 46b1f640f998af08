"""Applying notifications to a register: idempotent, ordered per person, one transaction each.

Within one transaction the engine stores the new version (a full snapshot with its change
information and the digest of the request: the version is the receipt that makes the notification
idempotent), advances the person's current record when the version is the newest in event order,
writes the outbox row that the relay forwards to the agency (30-7 / 30-42), and lets the register's
hooks store what they keep apart.

Ordering: a person's versions are ordered by (event date, notification time, municipality,
notification id). A late notification takes its place in history and does not overwrite newer
current data. It is checked against the state just before its place only: checking it against the
change after it as well can deadlock (a late 消除 and the 記載 that follows it would each wait for the
other; the ordering property test found exactly that). With the check against what precedes, a
notification is accepted as soon as everything before it has arrived, so applying a person's
notifications in any order (a CS resending what was refused) ends in the same current record and the
same history.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

import asyncpg
from opentelemetry import trace
from opentelemetry.propagate import inject

from jukilib.db.pool import Database
from jukilib.errors import AlreadyExists, FailedPrecondition, JukiError, NotFound
from jukilib.register import store
from jukilib.register.group import GroupCommit
from jukilib.register.hooks import RegisterHooks, restores_answers
from jukilib.register.model import (
    Candidate,
    ChangeKind,
    CurrentRecord,
    Notification,
    RecordState,
    SearchCriteria,
    StoredVersion,
)
from jukilib.register.reports import resolve_by_correction

tracer = trace.get_tracer(__name__)

# Retried as a whole: a concurrent first notification for the same person or the same repeat
# notification loses the race on a unique key, and on retry finds the winner's rows.
_RETRY_ON = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError)


def check_kind_against_state(kind: ChangeKind, state: RecordState | None) -> None:
    """Rules per kind of change (30-6 ①) against the person's state just before it (None: unknown)."""
    if state is None:
        if kind != ChangeKind.RECORD:
            raise FailedPrecondition(
                "a removal or correction was notified for a person not in the file", "UNKNOWN_PERSON")
        return
    if kind == ChangeKind.RECORD and state == RecordState.ACTIVE:
        raise FailedPrecondition("a record was notified for a person who is already recorded", "ALREADY_RECORDED")
    if kind == ChangeKind.REMOVE and state == RecordState.REMOVED:
        raise FailedPrecondition("a removal was notified for a person already removed", "ALREADY_REMOVED")
    if kind == ChangeKind.MODIFY and state == RecordState.REMOVED:
        raise FailedPrecondition("a correction was notified for a removed person", "PERSON_REMOVED")


def check_code_change(current_code: str, notification: Notification, *, becomes_current: bool) -> None:
    """A newest notification changes the current 住民票コード only as a change of code (with the previous
    code); one that carries a former code would otherwise put the old code back."""
    if becomes_current and notification.resident_code != current_code and not notification.previous_resident_code:
        raise FailedPrecondition("the resident code was replaced; notify with the current code",
                                 "RESIDENT_CODE_REPLACED")


def state_after(kind: ChangeKind) -> RecordState:
    # 消除 keeps the person in the file, marked removed with the reason of its change information.
    return RecordState.REMOVED if kind == ChangeKind.REMOVE else RecordState.ACTIVE


def _trace_parent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


class RegisterEngine:
    """One register (identity or annex) on one schema."""

    def __init__(self, database: Database, register: str, hooks: RegisterHooks | None = None) -> None:
        self.database = database
        self.register = register
        self.hooks = hooks or RegisterHooks()
        self._group = GroupCommit(self.apply_many)

    # --- ingest ------------------------------------------------------------------------------------

    async def apply(self, notification: Notification) -> StoredVersion:
        """Apply `notification` once; a repeat returns the stored version and changes nothing."""
        with tracer.start_as_current_span("register.apply", attributes={"juki.register": self.register}):
            return await self.database.run_in_transaction(
                lambda connection: self._apply(connection, notification), retry_on=_RETRY_ON
            )

    async def _apply(self, connection: asyncpg.Connection, notification: Notification) -> StoredVersion:
        change = notification.change
        earlier = await store.find_receipt(connection, change.municipality_code, change.notification_id)
        if earlier is not None:
            return await self._same_answer(connection, notification, *earlier)
        person = await self._locked_person(connection, notification)
        before, after = (await store.neighbours(connection, person["id"], change.order_key)
                         if person is not None else (None, None))
        check_kind_against_state(change.kind, before.state if before else None)
        if person is not None:
            check_code_change(person["resident_code"], notification, becomes_current=after is None)
        state = state_after(change.kind)
        person_id = person["id"] if person is not None else uuid.uuid4()
        version = person["last_version"] + 1 if person is not None else 1
        await self._advance(connection, person, notification, person_id=person_id, version=version, state=state,
                            current=after is None)
        created_at = await store.insert_version(connection, person_id, version, state, notification)
        key = f"{self.register}/{person_id}/{version}"
        await store.insert_outbox(connection, person_id, version, key, _trace_parent())
        stored = StoredVersion(person_id, version, notification.resident_code, state, notification.record,
                               change, created_at)
        await self.hooks.after_apply(connection, stored, notification.secret, becomes_current=after is None)
        # 住基法 12-5: the municipality's correcting notification resolves its open reports.
        await resolve_by_correction(connection, stored)
        return await self._answer(connection, stored, notification.secret)

    async def apply_grouped(self, notification: Notification) -> StoredVersion:
        """What `apply` answers, sharing a transaction with concurrent callers (`GroupCommit`): the path
        of ApplyNotification, where many municipalities send one notification each at the same time."""
        return await self._group.apply(notification)

    async def apply_many(self, notifications: Sequence[Notification], *,
                         on_locked: Callable[[], None] | None = None) -> list[StoredVersion | JukiError]:
        """Apply a batch: for each notification, in order, what `apply` would answer (the version, or the
        error it would raise), with a few set-based statements per batch (see `jukilib.register.batch`).

        `on_locked` is called as soon as the batch holds the row locks of every stored person it names
        (and at the latest when it ends): a batch started after that which names one of those persons
        waits for this one to commit, so that it sees what this one did (`StreamNotifications` starts
        its next batch then)."""
        from jukilib.register import batch  # batch builds on this module

        return await batch.apply_many(self, notifications, on_locked)

    async def _locked_person(self, connection: asyncpg.Connection,
                             notification: Notification) -> asyncpg.Record | None:
        """The person the notification is about, locked; checks the 住民票コード chain."""
        previous = notification.previous_resident_code
        person_id = await store.person_of_code(connection, previous or notification.resident_code)
        if person_id is None:
            if previous:
                raise FailedPrecondition("no person has the previous resident code", "UNKNOWN_PREVIOUS_RESIDENT_CODE")
            return None
        if previous:
            holder = await store.person_of_code(connection, notification.resident_code)
            if holder is not None and holder != person_id:
                raise FailedPrecondition("the new resident code belongs to another person", "RESIDENT_CODE_IN_USE")
        return await store.lock_person(connection, person_id)

    @staticmethod
    async def _advance(connection: asyncpg.Connection, person: asyncpg.Record | None, notification: Notification,
                       *, person_id: uuid.UUID, version: int, state: RecordState, current: bool) -> None:
        if person is None:
            await store.insert_person(connection, person_id, state, notification)
            return
        if current:
            await store.make_current(connection, person_id, version, state, notification)
            if person["resident_code"] != notification.resident_code:
                await store.keep_former_code(connection, person_id, person["resident_code"])
            return
        # A late notification (older in event order) is kept in history only.
        await store.note_version_number(connection, person_id, version)
        if person["resident_code"] != notification.resident_code:
            await store.keep_former_code(connection, person_id, notification.resident_code)

    async def _same_answer(self, connection: asyncpg.Connection, notification: Notification, digest: bytes,
                           stored: StoredVersion) -> StoredVersion:
        if digest != notification.digest:
            raise AlreadyExists(
                "this notification id was already used for a notification with different content",
                "NOTIFICATION_ID_REUSED",
            )
        # Same digest, same request: the secret stored with that version is this notification's.
        return await self._answer(connection, stored, notification.secret)

    async def _answer(self, connection: asyncpg.Connection, stored: StoredVersion, secret: object) -> StoredVersion:
        """The version with what the hooks keep apart put back: from the notification when the hooks can
        (`restore`, no round trip), else read back (`reveal`)."""
        if restores_answers(self.hooks):
            return stored._replace(record=self.hooks.restore(stored.record, secret))
        (revealed,) = await self.hooks.reveal(connection, [stored])
        return revealed

    # --- reads -------------------------------------------------------------------------------------

    # Every read takes `reveal`: False when the caller's purpose may not receive what the hooks keep
    # apart (RegisterHooks.secret_paths), which is then never read nor decrypted.

    async def _reveal(self, connection: asyncpg.Connection, versions: list[StoredVersion], reveal: bool,
                      ) -> list[StoredVersion]:
        return await self.hooks.reveal(connection, versions) if reveal and versions else versions

    async def _revealed(self, connection: asyncpg.Connection, found: CurrentRecord, reveal: bool) -> CurrentRecord:
        (version,) = await self._reveal(connection, [found.current], reveal)
        return found._replace(current=version)

    async def get(self, person_id: uuid.UUID, *, reveal: bool = True) -> CurrentRecord:
        async with self.database.connection() as connection:
            found = await store.current_by_id(connection, person_id)
            if found is None:
                raise NotFound("no such person in the file", "PERSON_NOT_FOUND")
            return await self._revealed(connection, found, reveal)

    async def lookup(self, resident_code: str, as_of: dt.date | None = None, by_receipt: bool = False, *,
                     reveal: bool = True) -> CurrentRecord:
        """By current or former 住民票コード; with `as_of`, the record as it stood on that date."""
        if as_of is None:
            (found,) = await self.lookup_many([resident_code], reveal=reveal)
            if found is None:
                raise NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")
            return found
        async with self.database.connection() as connection:
            person_id = await store.person_of_code(connection, resident_code)
            found = await store.current_by_id(connection, person_id) if person_id else None
            if found is None:
                raise NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")
            version = await store.version_as_of(connection, found.person_id, as_of, by_receipt)
            if version is None:
                raise NotFound("the person was not in the file on that date", "NOT_IN_FILE_ON_DATE")
            return await self._revealed(connection, CurrentRecord(found.person_id, version, version.created_at), reveal)

    async def lookup_many(self, resident_codes: Sequence[str], *, reveal: bool = True) -> list[CurrentRecord | None]:
        """The current record of each code's person (by current or former 住民票コード), in the order of
        `resident_codes`, None where nobody has or had the code: one statement for all the codes and one
        for what the hooks keep apart (`reveal`, e.g. every 個人番号 decrypted in one go)."""
        async with self.database.connection() as connection:
            found = await store.current_by_codes(connection, list(dict.fromkeys(resident_codes)))
            persons = list({record.person_id: record for record in found.values()}.values())
            revealed = await self._reveal(connection, [person.current for person in persons], reveal)
        complete = {person.person_id: CurrentRecord(person.person_id, version, person.updated_at)
                    for person, version in zip(persons, revealed, strict=True)}
        return [complete[found[code].person_id] if code in found else None for code in resident_codes]

    async def versions(self, person_id: uuid.UUID, offset: int, limit: int, *, reveal: bool = True,
                       ) -> list[StoredVersion]:
        """The person's history in event order."""
        async with self.database.connection() as connection:
            if await store.current_by_id(connection, person_id) is None:
                raise NotFound("no such person in the file", "PERSON_NOT_FOUND")
            versions = await store.list_versions(connection, person_id, offset, limit)
            return await self._reveal(connection, versions, reveal)

    async def search(self, criteria: SearchCriteria, *, reveal: bool = True) -> list[Candidate]:
        """Candidates of the 4-item search, at most `criteria.limit`."""
        async with self.database.connection() as connection:
            rows = await store.search(connection, criteria)
            matched = {row["id"]: row for row in rows}
            persons = await store.current_by_ids(connection, [row["id"] for row in rows])
            versions = await self._reveal(connection, [p.current for p in persons], reveal)
        candidates = []
        for person, version in zip(persons, versions, strict=True):
            row = matched[person.person_id]
            hits = (("full_name", row["name_matched"]), ("full_name_kana", row["kana_matched"]), ("birth_date", True),
                    ("sex_code", criteria.sex_code), ("municipality_code", criteria.municipality_code))
            fields = [name for name, hit in hits if hit]
            candidates.append(Candidate(person._replace(current=version), tuple(fields)))
        return candidates
