"""Applying notifications in one transaction per batch (`RegisterEngine.apply_many`); a single
notification is a batch of one.

1. receipts of the whole batch (one `unnest` join): a repeat is answered with the version it made, and
   the same id with other content is refused (ALREADY_EXISTS);
2. the persons of every 住民票コード the batch names, current or former, locked `FOR UPDATE` in id order,
   with the order key and state of their newest version;
3. in memory, in order-key order, each notification decided by `jukilib.register.decide` (a late one
   first reads the stored versions next to its place); several notifications of one person follow each
   other, each seeing the ones before (`Ledger`);
4. the rows of the decisions (`jukilib.register.rows`) written with one statement per table.

A notification refused by a rule (FAILED_PRECONDITION) is answered with its error and changes nothing in
the file; it is kept, sealed, in the review queue (`jukilib.register.review`), and the rest of the batch
is applied. The same notification id twice in one batch splits the batch there
(the second part then finds the first's receipt, as a repeat would). A lost race (unique violation,
serialization failure, deadlock: a concurrent batch took the same person, code or notification id
first) retries the whole batch, which then sees the winner's rows. If the database refuses the batch
for another reason, its notifications are applied as batches of one, so that one notification's failure
never becomes another's; if the database is unreachable, every notification gets that error.

The batch is applied in order-key order (event date, notification time, municipality, id), not in the
order of the request: what it gives is what applying its notifications one by one in that order gives.
For one person this means notifications that, sent one by one in a shuffled order, would have been
refused until their predecessors arrived are accepted; between persons it decides, as arrival order
does for single notifications, which of two notifications claiming the same 住民票コード comes first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg
from opentelemetry import trace
from opentelemetry.propagate import inject

from jukilib.db.pool import Database
from jukilib.errors import AlreadyExists, FailedPrecondition, JukiError, log_unexpected, translate
from jukilib.keyring import Keyring
from jukilib.register import metrics as register_metrics
from jukilib.register import rows, store
from jukilib.register.decide import NEW_PERSON, Decision, Ledger, decide, needs_history, place
from jukilib.register.hooks import RegisterHooks
from jukilib.register.model import Notification, PersonId, StoredVersion
from jukilib.register.review import refused_item
from jukilib.register.store import RefusedItem
from jukilib.retry import RetryPolicy, retry

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

BATCH_RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.1)
"""A batch that lost a race is tried again whole; after that, as batches of one."""
Outcome = StoredVersion | JukiError
Item = tuple[int, Notification]
"""A notification with its position in the request."""
VersionKey = tuple[PersonId, int]
# Retried as a whole: a concurrent first notification for the same person or the same repeat
# notification loses the race on a unique key, and on retry finds the winner's rows.
RETRY_ON = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError,
            # A connection asyncpg found in a state it cannot use (seen when the pool was exhausted and jobs
            # holding connections were cancelled): the batch is run again on another connection.
            asyncpg.InternalClientError)
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                asyncpg.OperatorInterventionError, asyncpg.InsufficientResourcesError, asyncpg.InternalClientError)


class Batches:
    """Applies batches of notifications to one register."""

    def __init__(self, database: Database, register: str, hooks: RegisterHooks, keyring: Keyring) -> None:
        self.database = database
        self.register = register
        self.hooks = hooks
        self.keyring = keyring
        """Seals the content of refused notifications kept for review."""

    async def apply_many(self, notifications: Sequence[Notification],
                         on_locked: Callable[[], None] | None = None) -> list[Outcome]:
        """One outcome per notification, in the same order. `on_locked` is called once the (last)
        transaction holds the locks of every stored person the batch names, before it decides anything,
        and in any case before returning or raising (see `RegisterEngine.apply_many`)."""
        outcomes: list[Outcome | None] = [None] * len(notifications)
        try:
            with tracer.start_as_current_span("register.apply_many", attributes={
                    "juki.register": self.register, "juki.batch.size": len(notifications)}):
                chunks = _chunks(notifications)
                for number, chunk in enumerate(chunks):
                    locked = on_locked if number == len(chunks) - 1 else None
                    items = [(i, notifications[i]) for i in chunk]
                    for position, outcome in await self._apply_chunk(items, locked):
                        outcomes[position] = outcome
        finally:
            if on_locked is not None:
                on_locked()
        assert all(outcome is not None for outcome in outcomes)
        register_metrics.decided(self.register, notifications, outcomes)
        return outcomes  # type: ignore[return-value]

    async def _apply_chunk(self, items: list[Item], on_locked: Callable[[], None] | None,
                           ) -> list[tuple[int, Outcome]]:
        try:
            return await self._attempts(items, on_locked)
        except JukiError as error:  # no connection free, service stopping: the same answer for every item
            return [(position, error) for position, _ in items]
        except _UNAVAILABLE as exc:  # the database is unreachable or refusing work: one by one would not help
            log_unexpected("register.apply_many", exc)
            unavailable = translate(exc)
            return [(position, unavailable) for position, _ in items]
        except Exception as exc:
            log_unexpected("register.apply_many", exc)
            if len(items) == 1:
                return [(items[0][0], translate(exc))]
        # A notification the batch statements could not take (the database refused a value, or the batch
        # kept losing races): as batches of one, that notification gets its own error, the others are applied.
        outcomes: list[tuple[int, Outcome]] = []
        for item in items:
            outcomes.extend(await self._apply_chunk([item], None))
        return outcomes

    async def _attempts(self, items: list[Item], on_locked: Callable[[], None] | None) -> list[tuple[int, Outcome]]:
        look_up_keys = False

        def before_retry(_: int, error: BaseException) -> None:
            nonlocal look_up_keys
            # A lost key claim: decided again knowing who holds every key (the common case never asks).
            look_up_keys = look_up_keys or isinstance(error, store.KeyClaimLost)

        async def attempt() -> list[tuple[int, Outcome]]:
            async with self.database.transaction() as connection:
                return await self._run(connection, items, on_locked, look_up_keys)

        return await retry(attempt, retry_on=(*RETRY_ON, store.KeyClaimLost), policy=BATCH_RETRY,
                           on_retry=before_retry)

    async def _run(self, connection: asyncpg.Connection, items: list[Item],
                   on_locked: Callable[[], None] | None, look_up_keys: bool) -> list[tuple[int, Outcome]]:
        """One attempt at one chunk, in one transaction."""
        keys = [(n.change.municipality_code, n.change.notification_id) for _, n in items]
        receipts = await store.find_receipts(connection, keys)
        outcomes: list[tuple[int, Outcome]] = []
        pending: list[Item] = []
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
        persons, codes = await store.lock_persons(connection, _codes(pending))
        unique = [key for _, notification in pending for key in notification.unique_keys]
        ledger = Ledger(persons, codes, await store.key_owners(connection, unique) if look_up_keys else None)
        if on_locked is not None:
            on_locked()
        pending.sort(key=lambda item: (item[1].change.order_key, item[0]))
        decided: list[tuple[int, Decision]] = []
        refused: list[RefusedItem] = []
        for position, notification in pending:
            try:
                decided.append((position, await self._decide(connection, ledger, notification)))
            except FailedPrecondition as error:
                outcomes.append((position, error))
                refused.append(refused_item(self.keyring, notification, error.reason,
                                            self.hooks.restore(notification.record, notification.secret)))
        created = await self._write(connection, [decision for _, decision in decided])
        await store.queue_refused(connection, refused)
        for position, decision in decided:
            outcomes.append((position, self._answer(decision, created)))
        # A repeat has the digest of the first request, hence the same secret.
        outcomes.extend((position, stored._replace(record=self.hooks.restore(stored.record, notification.secret)))
                        for position, notification, stored in repeats)
        return outcomes

    async def _decide(self, connection: asyncpg.Connection, ledger: Ledger, notification: Notification) -> Decision:
        person = ledger.locate(notification)
        key, rule = notification.change.order_key, self.hooks.unique_key
        if person is None:
            decision = decide(notification, None, NEW_PERSON, notification.person_id, rule=rule,
                              owners=ledger.key_owners)
        else:
            stored = await store.neighbours(connection, person.id, key) if needs_history(person, key) else None
            decision = decide(notification, person, place(person, key, stored), rule=rule,
                              owners=ledger.key_owners)
        ledger.record(decision)
        return decision

    async def _write(self, connection: asyncpg.Connection, decisions: list[Decision]) -> dict[VersionKey, datetime]:
        if not decisions:
            return {}
        kept = self.hooks.rows([rows.Kept(d.person_id, d.version, d.notification.secret)
                                for d in decisions if d.notification.secret])
        return await store.write(connection, rows.build(decisions, self.register, kept), _trace_parent(),
                                 self.hooks.secret_paths)

    def _answer(self, decision: Decision, created: dict[VersionKey, datetime]) -> StoredVersion:
        n = decision.notification
        return StoredVersion(decision.person_id, decision.version, n.resident_code, decision.state,
                             self.hooks.restore(n.record, n.secret), n.change,
                             created[(decision.person_id, decision.version)])


def _codes(pending: list[Item]) -> list[str]:
    codes: dict[str, None] = {}
    for _, notification in pending:
        codes[notification.resident_code] = None
        if notification.previous_resident_code:
            codes[notification.previous_resident_code] = None
    return list(codes)


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


def _trace_parent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")
