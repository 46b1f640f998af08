"""Running a command's coroutine: on uvloop when it is installed (as `juki serve` does), else asyncio,
with the garbage collector set as every juki process has it (`collect_young_rarely`)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Net allocations of tracked objects (containers) that start a young-generation collection; Python's
default is 700."""


def collect_young_rarely() -> None:
    """Start a young-generation collection after `YOUNG_COLLECTION_THRESHOLD` allocations, not 700.

    Garbage is freed by reference counting; the collector is only for reference cycles, which juki's
    code rarely makes. With the default, a batch of 1,000 records (about 20,000 live objects while its
    answer is built) starts dozens of collections, each walking and promoting the batch's objects:
    identity spent 9 % of its CPU in the collector under `juki bench lookup` batches, and `apply_many`
    17-21 µs of its 76-91 µs per notification (658 collections over 30,000 notifications, none at
    50,000). Every process sets it at start (`run`, `benchkit.run_loop`); the older generations keep
    their thresholds.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    collect_young_rarely()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: T = uvloop.run(coroutine)
    return result


@asynccontextmanager
async def connected(url: str, schema: str | None = None) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a command, on `schema` when given, always closed."""
    connection = await asyncpg.connect(url)
    try:
        if schema is not None:
            await connection.execute(f"SET search_path TO {schema}")
        yield connection
    finally:
        await connection.close()
