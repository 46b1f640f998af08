"""The outbox relay: forwards every applied change to the agency (住基法 30-7 / 30-42).

At least once, with an idempotency key so the agency applies each change exactly once; in order per
person; sent again after a jittered exponential backoff and dead-lettered after `retry.attempts` failures
(`RelayConfig.retry`, a `jukilib.retry.RetryPolicy`).

A relay worker repeats one *pass*:

1. **claim** (one statement, committed at once): up to `batch_size` due rows, oldest first, at most one per
   person: a row is due only when no earlier row of its person is undelivered (dead ones included), so a
   person's changes leave one after the other while different persons' leave together. The claim is a
   lease (`claimed_until`, migration 0006) stamped with the pass's `claim_token`, not a row lock: no
   transaction and no connection is held while the agency is called. Rows whose lease has passed (their
   worker died mid-delivery) are claimable again;
2. **deliver**, with no connection held: one batch call (`deliver_batch`, the agency's
   `BatchRecord…Changes`, atomic) when the register has one, else one call per change, all at once. When
   the agency refuses a batch for a reason other than being unavailable, its changes are sent one by one,
   so that a change it refuses fails alone and never holds back another person's;
3. **record** the outcomes: delivered rows (whoever holds the lease: the agency has them), failed rows
   (only by the holder of the lease) with their next attempt or as dead letters.

A pass that found a full batch is followed at once by the next (a backlog drains at full speed); after a
smaller one the worker waits `poll_interval` (0.2 s by default), so that under a steady trickle of
notifications the changes leave in batches rather than a claim and an agency call for every few.

Several workers, in one process or several replicas, run passes side by side: that is the parallelism
across persons. A worker that crashes between 2 and 3 leaves rows that another takes over after the lease
(`lease`, longer than `call_timeout`); the agency's idempotency key turns the second delivery into a
duplicate it does not apply again.

A pass is the relay's progress (`Heartbeat.beat`, see `jukilib.supervision`): it proves the relay reaches
its database and the agency was asked. The agency refusing or failing shows elsewhere: on
`juki.outbox.oldest_age` and `juki.outbox.dead`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagate import extract

from jukilib.db.pool import DATABASE_BUSY, Database
from jukilib.errors import Unavailable
from jukilib.register import metrics as register_metrics
from jukilib.register import store
from jukilib.register.config import RelayConfig
from jukilib.register.hooks import RegisterHooks
from jukilib.register.model import StoredVersion
from jukilib.supervision import Heartbeat, error_label

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Deliver = Callable[[StoredVersion, str], Awaitable[None]]
"""Sends one change (version, idempotency key) to the agency; raises when it was not acknowledged."""
DeliverBatch = Callable[[Sequence[tuple[StoredVersion, str]]], Awaitable[None]]
"""Sends changes to the agency in one atomic call; raises when they were not all acknowledged."""

DELIVERY_ERRORS = (grpc.aio.AioRpcError, OSError, TimeoutError)
"""What a delivery may fail with; anything else is a fault of the relay (its supervisor restarts it)."""
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED})
"""Codes for which a failed batch is retried as a batch: the agency could not take it, whatever it held."""
MAX_LINKS = 128
"""OpenTelemetry's default limit of links per span: a larger batch links to its first changes."""

CLAIM = f"""
WITH due AS (
    SELECT o.id FROM outbox o
    WHERE o.state = 'pending' AND o.next_attempt_at <= now()
      AND (o.claimed_until IS NULL OR o.claimed_until <= now())
      AND NOT EXISTS (
          SELECT 1 FROM outbox earlier
          WHERE earlier.person_id = o.person_id AND earlier.id < o.id AND earlier.state <> 'delivered'
          OFFSET 0)
    ORDER BY o.id
    LIMIT $1
    FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE outbox o SET claimed_until = now() + make_interval(secs => $2), claim_token = $3
    FROM due WHERE o.id = due.id
    RETURNING o.id, o.person_id, o.version, o.idempotency_key, o.attempts, o.trace_parent)
SELECT {store.VERSION_COLUMNS}, c.id AS outbox_id, c.idempotency_key, c.attempts, c.trace_parent
FROM claimed c JOIN person_version v ON v.person_id = c.person_id AND v.version = c.version
ORDER BY c.id
"""

# The claim's cost must not grow with the backlog, whatever the planner's statistics say:
# - taken while the outbox was small or mostly pending, they made it read the pending index as a bitmap: every
#   entry, live, claimed or dead, and a sort of every pending row before the LIMIT (in `juki bench sizes` a claim
#   took 17,000 blocks and the relay fell to 47 changes/s beside 1,346 ingested). These settings, for the claim's
#   transaction only, leave the ordered walk of the pending index, stopped at the batch;
# - after a quiet spell they say nothing is undelivered (autovacuum analyses the outbox after a tenth of it
#   changed), and it checked each candidate against a scan of every undelivered change instead of looking up the
#   candidate's own: 606,000 index entries for a claim of 10 out of 60,000 pending. OFFSET 0 keeps that check a
#   lookup per candidate (PostgreSQL does not turn such a subquery into a join).
ORDERED_WALK = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off"

_DELIVERED = """
UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = now(), last_error = NULL,
                  claimed_until = NULL, claim_token = NULL
WHERE id = ANY($1::bigint[]) AND state = 'pending'
"""

_FAILED = """
UPDATE outbox o SET attempts = f.attempts, last_error = f.label,
                    state = CASE WHEN f.dead THEN 'dead' ELSE o.state END,
                    next_attempt_at = CASE WHEN f.dead THEN o.next_attempt_at
                                           ELSE now() + make_interval(secs => f.delay) END,
                    claimed_until = NULL, claim_token = NULL
FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::float8[], $5::boolean[])
     AS f (id, attempts, label, delay, dead)
WHERE o.id = f.id AND o.claim_token = $6 AND o.state = 'pending'
"""

_RELEASE = "UPDATE outbox SET claimed_until = NULL, claim_token = NULL WHERE claim_token = $1 AND state = 'pending'"


@dataclass(frozen=True)
class Claimed:
    """One outbox row claimed by a pass, with its version ready to send."""

    outbox_id: int
    key: str
    attempts: int
    trace_parent: str | None
    version: StoredVersion


class OutboxRelay:
    """Delivers outbox rows of one register through `deliver` (one change) or `deliver_batch` (many)."""

    def __init__(self, database: Database, register: str, deliver: Deliver, config: RelayConfig,
                 hooks: RegisterHooks | None = None, *, deliver_batch: DeliverBatch | None = None) -> None:
        self._database = database
        self._register = register
        self._deliver = deliver
        self._deliver_batch = deliver_batch
        self._config = config
        self._hooks = hooks or RegisterHooks()

    async def run(self, heartbeat: Heartbeat | None = None) -> None:
        """Deliver until cancelled; a failure ends the run (its supervisor starts it again)."""
        heartbeat = heartbeat or Heartbeat()
        while True:
            try:
                handled = await self.run_once()
            except Unavailable as busy:
                if busy.reason != DATABASE_BUSY:
                    raise
                # A pool busy with notifications is back-pressure, not a fault: the relay waits its turn
                # (a restart would back off further and further while the backlog grows). No beat: a
                # pool busy for long still shows as a relay without progress.
                continue
            heartbeat.beat()
            if handled < self._config.batch_size:
                # Less than a batch was due: the relay keeps up. Waiting for the next poll lets the changes
                # notified meanwhile leave together, in fewer claims and agency calls than a pass each.
                with heartbeat.idle():
                    await asyncio.sleep(self._config.poll_interval)

    async def run_once(self) -> int:
        """One pass: claim due rows, deliver them, record the outcomes; returns how many were tried."""
        token = uuid.uuid4()
        claimed = await self._claim(token)
        if not claimed:
            return 0
        try:
            outcomes = await self._deliver_traced(claimed)
        except asyncio.CancelledError:
            await self._release(token)
            raise
        await self._record_when_free(claimed, outcomes, token)
        return len(claimed)

    async def _record_when_free(self, claimed: list[Claimed], outcomes: list[BaseException | None],
                                token: uuid.UUID) -> None:
        """Record the outcomes of a delivery, waiting for a connection as long as the pool is only busy:
        unrecorded, acknowledged changes would be sent again when their lease ends."""
        while True:
            try:
                async with self._database.connection() as connection:
                    await self._record(connection, claimed, outcomes, token)
                return
            except Unavailable as busy:
                if busy.reason != DATABASE_BUSY:
                    raise

    async def _release(self, token: uuid.UUID) -> None:
        """The service stops mid-delivery: give the claimed changes back at once rather than after the lease
        (the agency may have them already; its idempotency key makes the next delivery a duplicate). A
        crash or a failure gives nothing back: its changes wait for the lease, as their state is unknown."""
        try:
            async with asyncio.timeout(1.0), self._database.connection() as connection:
                await connection.execute(_RELEASE, token)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, Unavailable):
            logger.warning("claimed changes not given back; they wait for their lease",
                           extra={"register": self._register})

    async def _claim(self, token: uuid.UUID) -> list[Claimed]:
        async with self._database.connection() as connection:
            # Idle polls would flood the traces with empty statements: the claim is not traced; each
            # delivery is (outbox.deliver, linked to the requests that caused the changes).
            with suppress_instrumentation():
                async with connection.transaction():
                    await connection.execute(ORDERED_WALK)
                    rows = await connection.fetch(CLAIM, self._config.batch_size, self._config.lease, token)
            if not rows:
                return []
            versions = await self._hooks.reveal(connection, [store.version_from_row(row) for row in rows])
        return [Claimed(row["outbox_id"], row["idempotency_key"], row["attempts"], row["trace_parent"], version)
                for row, version in zip(rows, versions, strict=True)]

    async def _deliver_traced(self, claimed: list[Claimed]) -> list[BaseException | None]:
        parents = [trace.get_current_span(extract({"traceparent": traceparent})).get_span_context()
                   for traceparent in [c.trace_parent for c in claimed if c.trace_parent][:MAX_LINKS]]
        links = [trace.Link(parent) for parent in parents if parent.is_valid]
        with tracer.start_as_current_span("outbox.deliver", links=links, attributes={
                "juki.register": self._register, "juki.outbox.batch_size": len(claimed)}) as span:
            started = time.perf_counter()
            outcomes = await self._deliver_all(claimed)
            register_metrics.delivered(self._register, outcomes, time.perf_counter() - started)
            failed = [error_label(o) for o in outcomes if o is not None]
            if failed:
                span.set_attribute("juki.outbox.error", failed[0])
                span.set_attribute("juki.outbox.failed", len(failed))
        return outcomes

    async def _deliver_all(self, claimed: list[Claimed]) -> list[BaseException | None]:
        """Each change's outcome: None when the agency acknowledged it."""
        if self._deliver_batch is None or len(claimed) == 1:
            return await self._one_by_one(claimed)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # arrives as the call completes, and the relay would then outlive its service's stop.
            async with asyncio.timeout(self._config.call_timeout):
                await self._deliver_batch([(c.version, c.key) for c in claimed])
        except DELIVERY_ERRORS as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in TRANSIENT:
                return await self._one_by_one(claimed)  # isolate the change the agency refuses
            return [exc] * len(claimed)
        return [None] * len(claimed)

    async def _one_by_one(self, claimed: list[Claimed]) -> list[BaseException | None]:
        async def deliver(change: Claimed) -> BaseException | None:
            try:
                async with asyncio.timeout(self._config.call_timeout):
                    await self._deliver(change.version, change.key)
            except DELIVERY_ERRORS as exc:
                return exc
            return None

        return list(await asyncio.gather(*(deliver(change) for change in claimed)))

    async def _record(self, connection: asyncpg.Connection, claimed: list[Claimed],
                      outcomes: list[BaseException | None], token: uuid.UUID) -> None:
        delivered = [c.outbox_id for c, outcome in zip(claimed, outcomes, strict=True) if outcome is None]
        failed = [(c, outcome) for c, outcome in zip(claimed, outcomes, strict=True) if outcome is not None]
        if delivered:
            await connection.execute(_DELIVERED, delivered)
        if failed:
            await self._failed(connection, failed, token)

    async def _failed(self, connection: asyncpg.Connection, failed: list[tuple[Claimed, BaseException]],
                      token: uuid.UUID) -> None:
        attempts = [c.attempts + 1 for c, _ in failed]
        policy = self._config.retry
        dead = [policy.gives_up_after(n) for n in attempts]
        labels = [error_label(exc) for _, exc in failed]
        await connection.execute(_FAILED, [c.outbox_id for c, _ in failed], attempts, labels,
                                 [policy.delay(n) for n in attempts], dead, token)
        for (change, _), is_dead in zip(failed, dead, strict=True):
            if is_dead:
                logger.error("outbox row dead-lettered",
                             extra={"register": self._register, "outbox_id": change.outbox_id})
        logger.info("delivery failed, will retry",
                    extra={"register": self._register, "changes": len(failed) - sum(dead), "error": labels[0],
                           "outbox_ids": [c.outbox_id for c, _ in failed][:20]})


async def outbox_backlog(connection: asyncpg.Connection) -> tuple[int, float, int]:
    """(undelivered rows, age in seconds of the oldest, dead rows) for metrics and `juki outbox list`."""
    row = await connection.fetchrow(
        """SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age,
                  count(*) FILTER (WHERE state = 'dead') AS dead
           FROM outbox WHERE state <> 'delivered'"""
    )
    assert row is not None
    return int(row["n"]), float(row["age"]), int(row["dead"])


async def dead_letters(connection: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    """Dead-lettered rows, oldest first (ids, attempts and error labels only: no personal data)."""
    return await connection.fetch(
        """SELECT id, person_id, version, attempts, last_error, created_at FROM outbox
           WHERE state = 'dead' ORDER BY id LIMIT $1""", limit)


async def retry_dead(connection: asyncpg.Connection, ids: list[int] | None) -> int:
    """Put dead-lettered rows (all, or these ids) back in the queue; returns how many."""
    result = await connection.execute(
        """UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL,
                             claimed_until = NULL, claim_token = NULL
           WHERE state = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))""", ids)
    return int(result.split()[-1])
