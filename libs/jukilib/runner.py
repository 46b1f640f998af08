"""Running a command's coroutine: on uvloop when it is installed (as `juki serve` does), else asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
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
