"""A register (identity or annex) on one schema: notifications in, records out.

Every write goes through `jukilib.register.batch` (a single notification is a batch of one; group
commit and streaming make larger ones), which decides with `jukilib.register.decide` and writes the rows
of `jukilib.register.rows`. Within one transaction it stores the new version (a full snapshot with its
change information and the digest of the request: the version is the receipt that makes the notification
idempotent), advances the person's current record when the version is the newest in event order, writes
the outbox row that the relay forwards to the agency (30-7 / 30-42) and the rows of the register's hooks.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

import asyncpg
from opentelemetry import trace

from jukilib.batching import Batcher
from jukilib.db.pool import Database
from jukilib.errors import JukiError, NotFound
from jukilib.keyring import Keyring
from jukilib.register import store
from jukilib.register.batch import Batches
from jukilib.register.hooks import RegisterHooks
from jukilib.register.model import (
    Candidate,
    CurrentRecord,
    Notification,
    SearchCriteria,
    StoredVersion,
)

tracer = trace.get_tracer(__name__)

GROUP_MAX = 128
"""Most single notifications sharing one transaction (also OpenTelemetry's default limit of links per
span: every call of a group stays linked to its batch)."""


class RegisterEngine:
    """One register (identity or annex) on one schema."""

    def __init__(self, database: Database, register: str, keyring: Keyring, hooks: RegisterHooks | None = None,
                 ) -> None:
        self.database = database
        self.register = register
        self.keyring = keyring
        """Seals what the register keeps for review (refused notifications)."""
        self.hooks = hooks or RegisterHooks()
        self._batches = Batches(database, register, self.hooks, keyring)
        # One group in the database at once: one committing while the next gathers overlaps round trips;
        # more would only contend for the same rows and connections.
        self._group: Batcher[Notification, StoredVersion] = Batcher(
            self.apply_many, span_name="register.group_commit", max_batch=GROUP_MAX, runners=1)

    # --- ingest ------------------------------------------------------------------------------------

    async def apply(self, notification: Notification) -> StoredVersion:
        """Apply `notification` once, alone; a repeat returns the stored version and changes nothing."""
        with tracer.start_as_current_span("register.apply", attributes={"juki.register": self.register}):
            (outcome,) = await self.apply_many([notification])
        if isinstance(outcome, JukiError):
            raise outcome
        return outcome

    async def apply_grouped(self, notification: Notification) -> StoredVersion:
        """What `apply` answers, sharing a transaction with concurrent callers (group commit): the path of
        ApplyNotification, where many municipalities send one notification each at the same time. An idle
        register applies a notification at once, alone; under load the next group gathers while one is in
        the database (`jukilib.batching`). A caller cancelled while its group runs may find, on resending,
        that its notification was applied: the receipt answers the resend, as for any repeat."""
        return await self._group.submit(notification)

    async def apply_many(self, notifications: Sequence[Notification], *,
                         on_locked: Callable[[], None] | None = None) -> list[StoredVersion | JukiError]:
        """Apply a batch: for each notification, in order, what `apply` would answer (the version, or the
        error it would raise), with a few set-based statements per batch (see `jukilib.register.batch`).

        `on_locked` is called as soon as the batch holds the row locks of every stored person it names
        (and at the latest when it ends): a batch started after that which names one of those persons
        waits for this one to commit, so that it sees what this one did (`StreamNotifications` starts
        its next batch then)."""
        return await self._batches.apply_many(notifications, on_locked)

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
                     reveal: bool = True, follow_former: bool = True) -> CurrentRecord:
        """By current 住民票コード, or former one with `follow_former`; with `as_of`, the record as it stood
        on that date."""
        if as_of is None:
            (found,) = await self.lookup_many([resident_code], reveal=reveal, follow_former=follow_former)
            if found is None:
                raise NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")
            return found
        async with self.database.connection() as connection:
            person_id = await store.person_of_code(connection, resident_code, follow_former)
            found = await store.current_by_id(connection, person_id) if person_id else None
            if found is None:
                raise NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")
            version = await store.version_as_of(connection, found.person_id, as_of, by_receipt)
            if version is None:
                raise NotFound("the person was not in the file on that date", "NOT_IN_FILE_ON_DATE")
            return await self._revealed(connection, CurrentRecord(found.person_id, version, version.created_at), reveal)

    async def lookup_many(self, resident_codes: Sequence[str], *, reveal: bool = True, follow_former: bool = True,
                          ) -> list[CurrentRecord | None]:
        """The current record of each code's person (by current 住民票コード, or former one with
        `follow_former`), in the order of `resident_codes`, None where nobody has (or had) the code: one
        statement for all the codes and one for what the hooks keep apart (`reveal`, e.g. every 個人番号
        decrypted in one go)."""
        async with self.database.connection() as connection:
            found = await store.current_by_codes(connection, list(dict.fromkeys(resident_codes)), follow_former)
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
