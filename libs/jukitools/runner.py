"""Running a command's coroutine: on uvloop when it is installed (as `juki serve` does), else asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

T = TypeVar("T")


class Unreachable(Exception):
    """A server a command needs does not answer: `juki` prints it as one line and exits 1."""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: T = uvloop.run(coroutine)
    return result


def _hosts(url: str) -> str:
    """The host part of `url` without its credentials: `host:port`, a list of them (a primary and its standby),
    or the Unix socket directories of the query."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        socket = [value for key, _, value in (pair.partition("=") for pair in parts.query.split("&")) if key == "host"]
        hosts = socket[0] if socket else "localhost"
    return hosts


@asynccontextmanager
async def connected(url: str, schema: str | None = None) -> AsyncIterator[asyncpg.Connection]:
    """One connection for a command, on `schema` when given, always closed; Unreachable (naming the host,
    never the URL, which holds a password) when the server does not answer."""
    try:
        connection = await asyncpg.connect(url)
    except OSError as error:  # refused, unknown host, timed out
        raise Unreachable(f"the database at {_hosts(url)} cannot be reached "
                          f"({error.strerror or type(error).__name__}); is the suite running?") from None
    try:
        if schema is not None:
            await connection.execute(f"SET search_path TO {schema}")
        yield connection
    finally:
        await connection.close()
