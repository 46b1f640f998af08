"""One asyncpg pool per service, created inside the running loop, with every wait bounded.

Store functions take a connection; the service method owns the transaction through
`Database.transaction()` or `Database.run_in_transaction()` (which retries serialization failures
and deadlocks as `TRANSACTION_RETRY` says, then answers ABORTED).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import asyncpg
import orjson

from jukilib.config import DatabaseConfig
from jukilib.errors import Aborted, Unavailable
from jukilib.retry import RetryPolicy, retry

logger = logging.getLogger(__name__)

T = TypeVar("T")
Isolation = Literal["read_committed", "repeatable_read", "serializable"]
RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)
TRANSACTION_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.1)
"""A transaction that lost a race to another is run again at once, almost: the other has committed or
rolled back within milliseconds; a third loss answers ABORTED (the caller may resend)."""
CONNECT_RETRY = RetryPolicy(attempts=None, base_delay=0.2, max_delay=2.0, jitter=0.0)
"""Reaching PostgreSQL at start-up: tried until `connect`'s `wait_seconds` have passed."""
DATABASE_BUSY = "DATABASE_BUSY"
"""Reason of the Unavailable raised when no pooled connection is free within `acquire_timeout`."""


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init_connection(connection: asyncpg.Connection) -> None:
    # orjson: the same JSON values both ways as the json module (PostgreSQL parses jsonb, so spacing and
    # escaping do not matter), at a fraction of the CPU; a batch lookup decodes 1,000 snapshots.
    for json_type in ("json", "jsonb"):
        await connection.set_type_codec(json_type, encoder=_json_text, decoder=orjson.loads, schema="pg_catalog")


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Stores leave no session state behind (no SET, LISTEN or temp tables outside a transaction),
    so the pool's reset query on release is skipped: it costs a round trip per checkout
    (PERFORMANCE.md: 7,400 → 13,900 lookups/s)."""


class Database:
    """The service's pool. `connect` waits (bounded) until PostgreSQL is reachable."""

    def __init__(self, config: DatabaseConfig) -> None:
        self._config = config
        self._pool: asyncpg.Pool | None = None
        self._waiting = 0
        """Tasks waiting in `connection` for a pooled connection (the runtime metrics read it)."""

    @property
    def ready(self) -> bool:
        return self._pool is not None

    async def connect(self, *, wait_seconds: float = 60.0) -> None:
        """Create the pool, trying again (`CONNECT_RETRY`) for up to `wait_seconds` while the server is
        unreachable."""

        def waiting(failures: int, error: BaseException) -> None:
            logger.warning("database not reachable yet, retrying", extra={"error_type": type(error).__name__})

        self._pool = await retry(self._create_pool, retry_on=(OSError, asyncpg.PostgresError, TimeoutError,
                                                               asyncpg.TargetServerAttributeNotMatched),
                                 policy=CONNECT_RETRY, within=wait_seconds, on_retry=waiting)

    async def _create_pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            self._config.url,
            min_size=self._config.pool_min,
            max_size=self._config.pool_max,
            command_timeout=self._config.command_timeout,
            init=_init_connection,
            reset=_no_reset,
            server_settings={"plan_cache_mode": self._config.plan_cache_mode},
            timeout=self._config.acquire_timeout,
        )
        return pool

    async def close(self, timeout: float = 5.0) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except TimeoutError:
            pool.terminate()

    def spare_connections(self) -> int:
        """Connections a task could take now without waiting (0 while not connected)."""
        if self._pool is None:
            return 0
        in_use = self._pool.get_size() - self._pool.get_idle_size()
        return self._pool.get_max_size() - in_use

    def usage(self) -> tuple[int, int]:
        """(connections in use, tasks waiting for one): the pool's metrics (`jukilib.instruments`)."""
        if self._pool is None:
            return 0, self._waiting
        return self._pool.get_size() - self._pool.get_idle_size(), self._waiting

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for this task only, waiting at most `acquire_timeout` for one."""
        pool = self._pool  # the one to give the connection back to, even if the service closes it meanwhile
        if pool is None:
            raise Unavailable("the service is starting or stopping", "NOT_READY")
        self._waiting += 1
        try:
            connection = await pool.acquire(timeout=self._config.acquire_timeout)
        except TimeoutError:
            raise Unavailable("no database connection free in time", DATABASE_BUSY) from None
        finally:
            self._waiting -= 1
        try:
            yield connection
        finally:
            await pool.release(connection)

    @asynccontextmanager
    async def transaction(self, isolation: Isolation = "read_committed") -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as connection, connection.transaction(isolation=isolation):
            yield connection

    async def run_in_transaction(
        self,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        isolation: Isolation = "read_committed",
        retry_on: tuple[type[BaseException], ...] = RETRYABLE,
        policy: RetryPolicy = TRANSACTION_RETRY,
    ) -> T:
        """Run `work` in one transaction, running the whole transaction again on `retry_on` as `policy`
        says; ABORTED once its tries are spent."""

        async def once() -> T:
            async with self.transaction(isolation) as connection:
                return await work(connection)

        try:
            return await retry(once, retry_on=retry_on, policy=policy)
        except retry_on:
            raise Aborted("concurrent update, retry", "CONCURRENT_UPDATE") from None
