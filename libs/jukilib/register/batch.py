"""Applying a batch of notifications in one transaction (`RegisterEngine.apply_many`).

Each notification of a batch gets the answer `RegisterEngine.apply` would give it: the same
idempotency (the version as receipt, with its request digest), the same ordering and rules, the same
rows (version, outbox, former codes, the hooks' rows, resolved 12-5 reports). What changes is the cost: the batch
reads what it needs with a few set-based statements, decides every notification in memory, then
writes everything with one statement per table.

1. receipts of the whole batch (one `unnest` join): repeats are answered from them;
2. the persons of every 住民票コード the batch names, current or former, locked `FOR UPDATE` in id order;
3. those persons with the order key and state of their newest version (their current version);
4. in memory, in order-key order: locate the person (the 住民票コード chain), place the notification —
   after the newest version (the common case: a new person, or a change newer than everything
   stored), or else among the stored versions with `store.neighbours` (late notifications only) —,
   check the kind against the state just before it, and record what to write. Several
   notifications of one person follow each other in order-key order, each seeing the ones before;
5. bulk writes: new persons, advanced persons, late-only persons, versions (receipts with their
   digests), outbox rows (in apply order), former codes, the hooks' rows (`after_apply_many`),
   resolved reports.

A notification refused by a rule (FAILED_PRECONDITION) or by its receipt (ALREADY_EXISTS) is
answered with its error and changes nothing; the rest of the batch is applied. The same
notification id twice in one batch splits the batch there (the second part then finds the first's
receipt, as a repeat would). A lost race (unique violation, serialization failure, deadlock: a
concurrent batch or `apply` took the same person, code or notification id first) retries the whole
batch, which then sees the winner's rows. If the database refuses the batch for another reason, its
notifications are applied one by one with `apply`, so that one notification's failure never becomes
another's; if the database is unreachable, every notification gets that error.

The batch is applied in order-key order (event date, notification time, municipality, id), not in
the order of the request: what it gives is what applying its notifications one by one in that order
gives. For one person this means notifications that, sent one by one in a shuffled order, would have
been refused until their predecessors arrived are accepted; between persons it decides, as arrival
order does for `apply`, which of two notifications claiming the same 住民票コード comes first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
import orjson
from opentelemetry import trace

from jukilib.errors import AlreadyExists, FailedPrecondition, JukiError, log_unexpected, translate
from jukilib.register import store
from jukilib.register.engine import _RETRY_ON, _trace_parent, check_code_change, check_kind_against_state, state_after
from jukilib.register.hooks import Applied, restores_answers
from jukilib.register.model import ChangeKind, Notification, OrderKey, RecordState, StoredVersion

if TYPE_CHECKING:
    from jukilib.register.engine import RegisterEngine

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

ATTEMPTS = 5
Outcome = StoredVersion | JukiError
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                asyncpg.OperatorInterventionError, asyncpg.InsufficientResourcesError)


async def apply_many(engine: RegisterEngine, notifications: Sequence[Notification],
                     on_locked: Callable[[], None] | None = None) -> list[Outcome]:
    """Apply `notifications`; one outcome per notification, in the same order. `on_locked` is called
    once the (last) transaction holds the locks of every stored person the batch names, before it
    decides anything, and in any case before returning or raising (see `RegisterEngine.apply_many`)."""
    outcomes: list[Outcome | None] = [None] * len(notifications)
    try:
        with tracer.start_as_current_span("register.apply_many", attributes={
                "juki.register": engine.register, "juki.batch.size": len(notifications)}):
            chunks = _chunks(notifications)
            for number, chunk in enumerate(chunks):
                locked = on_locked if number == len(chunks) - 1 else None
                for position, outcome in await _apply_chunk(engine, [(i, notifications[i]) for i in chunk], locked):
                    outcomes[position] = outcome
    finally:
        if on_locked is not None:
            on_locked()
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def _chunks(notifications: Sequence[Notification]) -> list[list[int]]:
    """Consecutive runs of positions in which no (municipality, notification id) repeats."""
    chunks: list[list[int]] = []
    current: list[int] = []
    seen: set[tuple[str, str]] = set()
    for position, notification in enumerate(notifications):
        key = (notification.change.municipality_code, notification.change.notification_id)
        if key in seen:
            chunks.append(current)
            current, seen = [], set()
        current.append(position)
        seen.add(key)
    if current:
        chunks.append(current)
    return chunks


async def _apply_chunk(engine: RegisterEngine, items: list[tuple[int, Notification]],
                       on_locked: Callable[[], None] | None) -> list[tuple[int, Outcome]]:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            async with engine.database.transaction() as connection:
                return await _Batch(engine, connection, on_locked).run(items)
        except _RETRY_ON:
            if attempt == ATTEMPTS:
                logger.warning("batch kept losing races, applying one by one",
                               extra={"register": engine.register, "size": len(items)})
                break
            await asyncio.sleep(0.01 * attempt)
        except JukiError as error:  # no connection free, service stopping: the same answer for every item
            return [(position, error) for position, _ in items]
        except _UNAVAILABLE as exc:  # the database is unreachable or refusing work: one by one would not help
            log_unexpected("register.apply_many", exc)
            unavailable = translate(exc)
            return [(position, unavailable) for position, _ in items]
        except Exception as exc:
            # A notification the batch statements could not take (the database refused a value): one by
            # one, that notification gets its own error and the others are applied.
            log_unexpected("register.apply_many", exc)
            break
    return await _one_by_one(engine, items)


async def _one_by_one(engine: RegisterEngine, items: list[tuple[int, Notification]]) -> list[tuple[int, Outcome]]:
    outcomes: list[tuple[int, Outcome]] = []
    for position, notification in items:
        try:
            outcomes.append((position, await engine.apply(notification)))
        except JukiError as error:
            outcomes.append((position, error))
        except Exception as exc:
            log_unexpected("register.apply", exc)
            outcomes.append((position, translate(exc)))
    return outcomes


@dataclass
class _Person:
    """A person as the batch sees it: locked in the database, or new in this batch."""

    id: uuid.UUID
    resident_code: str
    last_version: int
    newest_key: OrderKey | None
    newest_state: RecordState | None
    stored: bool
    current: tuple[Notification, int, RecordState] | None = None
    """The notification, version and state that became current in this batch."""
    late: bool = False
    versions: list[tuple[OrderKey, RecordState]] = field(default_factory=list)
    """What this batch applied to the person, in apply order."""


@dataclass(frozen=True)
class _Placed:
    position: int
    notification: Notification
    person_id: uuid.UUID
    version: int
    state: RecordState
    becomes_current: bool


class _Batch:
    """One attempt at one batch, in one transaction."""

    def __init__(self, engine: RegisterEngine, connection: asyncpg.Connection,
                 on_locked: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._connection = connection
        self._on_locked = on_locked
        self._persons: dict[uuid.UUID, _Person] = {}
        self._current_codes: dict[str, uuid.UUID] = {}
        self._former_codes: dict[str, uuid.UUID] = {}
        self._new_former_codes: list[tuple[str, uuid.UUID]] = []
        self._new_persons: list[uuid.UUID] = []
        self._placed: list[_Placed] = []

    async def run(self, items: list[tuple[int, Notification]]) -> list[tuple[int, Outcome]]:
        outcomes: list[tuple[int, Outcome]] = []
        keys = [(n.change.municipality_code, n.change.notification_id) for _, n in items]
        receipts = await store.find_receipts(self._connection, keys)
        pending: list[tuple[int, Notification]] = []
        repeats: list[tuple[int, Notification, StoredVersion]] = []
        for (position, notification), key in zip(items, keys, strict=True):
            earlier = receipts.get(key)
            if earlier is None:
                pending.append((position, notification))
            elif earlier[0] != notification.digest:
                outcomes.append((position, AlreadyExists(
                    "this notification id was already used for a notification with different content",
                    "NOTIFICATION_ID_REUSED")))
            else:
                repeats.append((position, notification, earlier[1]))
        await self._load_persons(pending)
        if self._on_locked is not None:
            self._on_locked()
        pending.sort(key=lambda item: (item[1].change.order_key, item[0]))
        for position, notification in pending:
            try:
                await self._place(position, notification)
            except FailedPrecondition as refused:
                outcomes.append((position, refused))
        applied = await self._write()
        outcomes.extend(await self._answers(applied, repeats))
        return outcomes

    # --- reading ---------------------------------------------------------------------------------

    async def _load_persons(self, pending: list[tuple[int, Notification]]) -> None:
        codes: dict[str, None] = {}
        for _, notification in pending:
            codes[notification.resident_code] = None
            if notification.previous_resident_code:
                codes[notification.previous_resident_code] = None
        known = await store.lock_persons_of_codes(self._connection, list(codes))
        rows = await store.persons_with_newest_key(self._connection, sorted({row["person_id"] for row in known}))
        for row in rows:
            self._persons[row["id"]] = _Person(
                id=row["id"], resident_code=row["resident_code"], last_version=row["last_version"],
                newest_key=store.newest_key_of(row), newest_state=RecordState(row["state"]), stored=True)
            self._current_codes[row["resident_code"]] = row["id"]
        for row in known:
            # A code that is no longer the person's current one (a concurrent change) is a former one.
            person = self._persons.get(row["person_id"])
            if person is not None and row["code"] != person.resident_code:
                self._former_codes.setdefault(row["code"], person.id)

    def _owner(self, resident_code: str) -> uuid.UUID | None:
        """`store.person_of_code` as this batch has changed things so far."""
        return self._current_codes.get(resident_code) or self._former_codes.get(resident_code)

    def _locate(self, notification: Notification) -> _Person | None:
        """The person the notification is about; checks the 住民票コード chain (as `_locked_person`)."""
        previous = notification.previous_resident_code
        person_id = self._owner(previous or notification.resident_code)
        if person_id is None:
            if previous:
                raise FailedPrecondition("no person has the previous resident code", "UNKNOWN_PREVIOUS_RESIDENT_CODE")
            return None
        if previous:
            holder = self._owner(notification.resident_code)
            if holder is not None and holder != person_id:
                raise FailedPrecondition("the new resident code belongs to another person", "RESIDENT_CODE_IN_USE")
        return self._persons[person_id]

    async def _neighbour_states(self, person: _Person, key: OrderKey) -> tuple[RecordState | None, bool]:
        """(state just before `key`, whether nothing comes after it) among the stored versions and
        those of this batch: `store.neighbours` with the batch's own versions merged in."""
        before_key: OrderKey | None = None
        before_state: RecordState | None = None
        after = False
        if person.stored:
            before, later = await store.neighbours(self._connection, person.id, key)
            if before is not None:
                before_key, before_state = before.change.order_key, before.state
            after = later is not None
        for version_key, state in person.versions:
            if version_key < key and (before_key is None or version_key > before_key):
                before_key, before_state = version_key, state
            elif version_key > key:
                after = True
        return before_state, not after

    # --- deciding --------------------------------------------------------------------------------

    async def _place(self, position: int, notification: Notification) -> None:
        change = notification.change
        person = self._locate(notification)
        key = change.order_key
        if person is None:
            before, current = None, True
        elif person.newest_key is not None and key > person.newest_key:
            before, current = person.newest_state, True
        else:  # late: somewhere among the person's versions
            before, current = await self._neighbour_states(person, key)
        check_kind_against_state(change.kind, before)
        if person is not None:
            check_code_change(person.resident_code, notification, becomes_current=current)
        state = state_after(change.kind)
        if person is None:
            person = _Person(id=uuid.uuid4(), resident_code=notification.resident_code, last_version=0,
                             newest_key=None, newest_state=None, stored=False)
            self._persons[person.id] = person
            self._current_codes[person.resident_code] = person.id
            self._new_persons.append(person.id)
        version = person.last_version + 1
        person.last_version = version
        if current:
            if person.resident_code != notification.resident_code:
                self._keep_former_code(person.resident_code, person.id)
                if self._current_codes.get(person.resident_code) == person.id:
                    del self._current_codes[person.resident_code]
                self._current_codes[notification.resident_code] = person.id
                person.resident_code = notification.resident_code
            person.newest_key, person.newest_state = key, state
            person.current = (notification, version, state)
        else:
            # A late notification (older in event order) is kept in history only.
            person.late = True
            if person.resident_code != notification.resident_code:
                self._keep_former_code(notification.resident_code, person.id)
        person.versions.append((key, state))
        self._placed.append(_Placed(position, notification, person.id, version, state, current))

    def _keep_former_code(self, resident_code: str, person_id: uuid.UUID) -> None:
        """As `store.keep_former_code`: a code already kept stays with its person."""
        if resident_code in self._former_codes:
            return
        self._former_codes[resident_code] = person_id
        self._new_former_codes.append((resident_code, person_id))

    # --- writing ---------------------------------------------------------------------------------

    async def _write(self) -> list[Applied]:
        connection, register = self._connection, self._engine.register
        if not self._placed:
            return []
        # Each record as JSON once (with orjson, as the pool's jsonb encoder): for its version, and for the
        # person when it becomes current. PostgreSQL parses it into jsonb, so only the values matter.
        records = {id(p.notification): orjson.dumps(p.notification.record).decode() for p in self._placed}
        new_rows: list[store.PersonRow] = []
        current_rows: list[store.PersonRow] = []
        late_rows: list[tuple[uuid.UUID, int]] = []
        for person in self._persons.values():
            if person.current is not None:
                notification, version, state = person.current
                row = (person.id, int(state), version, person.last_version, notification, records[id(notification)])
                (current_rows if person.stored else new_rows).append(row)
            elif person.late:
                late_rows.append((person.id, person.last_version))
        await store.insert_persons(connection, new_rows)
        await store.make_current_many(connection, current_rows)
        await store.note_version_numbers(connection, late_rows)
        created = await store.insert_versions(
            connection, [(p.person_id, p.version, int(p.state), p.notification, records[id(p.notification)])
                         for p in self._placed])
        await store.insert_outbox_rows(
            connection, [(p.person_id, p.version, f"{register}/{p.person_id}/{p.version}") for p in self._placed],
            _trace_parent())
        await store.keep_former_codes(connection, self._new_former_codes)
        applied = [
            Applied(StoredVersion(p.person_id, p.version, p.notification.resident_code, p.state,
                                  p.notification.record, p.notification.change, created[(p.person_id, p.version)]),
                    p.notification.secret, p.becomes_current)
            for p in self._placed
        ]
        await self._engine.hooks.after_apply_many(connection, applied)
        # 住基法 12-5: a municipality's correcting notification resolves its open reports on the person.
        corrections: dict[tuple[uuid.UUID, str], int] = {}
        for p in self._placed:
            if p.notification.change.kind == ChangeKind.MODIFY:
                corrections.setdefault((p.person_id, p.notification.change.municipality_code), p.version)
        await store.resolve_reports_by_corrections(
            connection, [(person, municipality, version) for (person, municipality), version in corrections.items()],
            dt.datetime.now(dt.UTC))
        return applied

    async def _answers(self, applied: list[Applied],
                       repeats: list[tuple[int, Notification, StoredVersion]]) -> list[tuple[int, Outcome]]:
        """The stored versions as answers (with what the hooks keep apart put back)."""
        positions = [p.position for p in self._placed] + [position for position, _, _ in repeats]
        versions = [a.stored for a in applied] + [stored for _, _, stored in repeats]
        secrets = [a.secret for a in applied] + [n.secret for _, n, _ in repeats]
        hooks = self._engine.hooks
        if restores_answers(hooks):
            # A repeat has the digest of the first request, hence the same secret.
            answers = [v._replace(record=hooks.restore(v.record, secret))
                       for v, secret in zip(versions, secrets, strict=True)]
        else:
            answers = await hooks.reveal(self._connection, versions)
        return list(zip(positions, answers, strict=True))
