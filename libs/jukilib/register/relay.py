"""The outbox relay: forwards every applied change to the agency (30-7 / 30-42).

At least once, with an idempotency key so the agency applies each change exactly once; in order per
person (a change waits while an earlier change of the same person is undelivered, dead ones
included); exponential backoff with full jitter; dead-lettered after `max_attempts`. Safe with
several workers and replicas: rows are claimed with `FOR UPDATE SKIP LOCKED` and the claim is held
for the duration of the delivery.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import Observation
from opentelemetry.propagate import extract

from jukilib.config import RelayConfig
from jukilib.db.pool import Database
from jukilib.register import store
from jukilib.register.hooks import RegisterHooks
from jukilib.register.model import StoredVersion

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Deliver = Callable[[StoredVersion, str], Awaitable[None]]

_CLAIM = """
SELECT o.id, o.person_id, o.version, o.idempotency_key, o.attempts, o.trace_parent
FROM outbox o
WHERE o.state = 'pending' AND o.next_attempt_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM outbox earlier
      WHERE earlier.person_id = o.person_id AND earlier.id < o.id AND earlier.state <> 'delivered')
ORDER BY o.id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""


def backoff_seconds(attempts: int, config: RelayConfig) -> float:
    """Full-jitter exponential backoff for the `attempts`-th failure."""
    ceiling = min(config.max_delay, config.base_delay * (2 ** max(attempts - 1, 0)))
    return random.uniform(config.base_delay / 2, ceiling)


def _error_label(exc: BaseException) -> str:
    """A label without message text (messages could quote data)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc:{exc.code().name}"
    return type(exc).__name__


class OutboxRelay:
    """Delivers outbox rows of one register through `deliver`."""

    def __init__(self, database: Database, register: str, deliver: Deliver, config: RelayConfig,
                 hooks: RegisterHooks | None = None) -> None:
        self._database = database
        self._register = register
        self._deliver = deliver
        self._config = config
        self._hooks = hooks or RegisterHooks()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                handled = await self.run_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                logger.warning("relay pass failed",
                               extra={"register": self._register, "error_type": type(exc).__name__})
                handled = 0
            if handled == 0:
                await asyncio.sleep(self._config.poll_interval)

    async def run_once(self) -> int:
        """Claim a batch of due rows and try each once; returns how many were tried."""
        async with self._database.connection() as connection:
            # Idle polls would flood the traces with empty transactions: the claim is not traced;
            # each delivery is (outbox.deliver, linked to the request that caused the change).
            with suppress_instrumentation():
                transaction = connection.transaction()
                await transaction.start()
                rows = await connection.fetch(_CLAIM, self._config.batch_size)
            try:
                for row in rows:
                    await self._attempt(connection, row)
            except BaseException:
                await transaction.rollback()
                raise
            with suppress_instrumentation():
                await transaction.commit()
            return len(rows)

    async def _attempt(self, connection: asyncpg.Connection, row: asyncpg.Record) -> None:
        parent = trace.get_current_span(extract({"traceparent": row["trace_parent"]})) if row["trace_parent"] else None
        links = [trace.Link(parent.get_span_context())] if parent is not None else []
        with tracer.start_as_current_span("outbox.deliver", links=links,
                                          attributes={"juki.register": self._register,
                                                      "juki.outbox.attempt": row["attempts"] + 1}) as span:
            stored = await store.fetch_version(connection, row["person_id"], row["version"])
            assert stored is not None, "outbox row without its version (foreign key)"
            (version,) = await self._hooks.reveal(connection, [stored])
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # arrives as the call completes, and the relay would then outlive its service's stop.
                async with asyncio.timeout(self._config.call_timeout):
                    await self._deliver(version, row["idempotency_key"])
            except (grpc.aio.AioRpcError, OSError, TimeoutError) as exc:
                span.set_attribute("juki.outbox.error", _error_label(exc))
                await self._failed(connection, row, _error_label(exc))
                return
            await connection.execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = now(),"
                " last_error = NULL WHERE id = $1",
                row["id"],
            )

    async def _failed(self, connection: asyncpg.Connection, row: asyncpg.Record, label: str) -> None:
        attempts = row["attempts"] + 1
        if attempts >= self._config.max_attempts:
            await connection.execute(
                "UPDATE outbox SET state = 'dead', attempts = $2, last_error = $3 WHERE id = $1",
                row["id"], attempts, label,
            )
            logger.error("outbox row dead-lettered", extra={"register": self._register, "outbox_id": row["id"]})
            return
        delay = backoff_seconds(attempts, self._config)
        await connection.execute(
            "UPDATE outbox SET attempts = $2, last_error = $3,"
            " next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
            row["id"], attempts, label, delay,
        )
        logger.info("delivery failed, will retry",
                    extra={"register": self._register, "outbox_id": row["id"], "attempts": attempts, "error": label})


async def outbox_backlog(connection: asyncpg.Connection) -> tuple[int, float, int]:
    """(undelivered rows, age in seconds of the oldest, dead rows) for metrics and `juki outbox list`."""
    row = await connection.fetchrow(
        """SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age,
                  count(*) FILTER (WHERE state = 'dead') AS dead
           FROM outbox WHERE state <> 'delivered'"""
    )
    assert row is not None
    return int(row["n"]), float(row["age"]), int(row["dead"])


class BacklogGauge:
    """Outbox backlog, oldest age and dead letters as OpenTelemetry gauges (refreshed in the background;
    gauge callbacks are synchronous, the query is not)."""

    def __init__(self, database: Database, register: str, interval: float = 5.0) -> None:
        self._database = database
        self._register = register
        self._interval = interval
        self._values = (0, 0.0, 0)
        meter = metrics.get_meter(__name__)
        attributes = {"juki.register": register}
        meter.create_observable_gauge("juki.outbox.backlog", [lambda _: [Observation(self._values[0], attributes)]],
                                      unit="{change}", description="changes not yet acknowledged by the agency")
        meter.create_observable_gauge("juki.outbox.oldest_age", [lambda _: [Observation(self._values[1], attributes)]],
                                      unit="s", description="age of the oldest undelivered change")
        meter.create_observable_gauge("juki.outbox.dead", [lambda _: [Observation(self._values[2], attributes)]],
                                      unit="{change}", description="changes dead-lettered after max attempts")

    async def run(self) -> None:
        while True:
            try:
                async with self._database.connection() as connection:
                    with suppress_instrumentation():
                        self._values = await outbox_backlog(connection)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                logger.warning("outbox backlog not measured", extra={"register": self._register})
            await asyncio.sleep(self._interval)


async def dead_letters(connection: asyncpg.Connection, limit: int = 100) -> list[asyncpg.Record]:
    """Dead-lettered rows, oldest first (ids, attempts and error labels only: no personal data)."""
    return await connection.fetch(
        """SELECT id, person_id, version, attempts, last_error, created_at FROM outbox
           WHERE state = 'dead' ORDER BY id LIMIT $1""", limit)


async def retry_dead(connection: asyncpg.Connection, ids: list[int] | None) -> int:
    """Put dead-lettered rows (all, or these ids) back in the queue; returns how many."""
    result = await connection.execute(
        """UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
           WHERE state = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))""", ids)
    return int(result.split()[-1])
