"""The embedded PostgreSQL's lifetime (issue 14): the last user to leave stops it, even after an earlier
user was killed without leaving, and a `postmaster.pid` left by a power loss does not pass for a server."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from jukilib.db.embedded import EmbeddedPostgres
from jukilib.db.sizing import SIZING_VARIABLE, machine_settings

_USE_AND_HANG = """
import sys, time
from pathlib import Path
from jukilib.db.embedded import EmbeddedPostgres
EmbeddedPostgres(Path(sys.argv[1])).start()
print("started", flush=True)
time.sleep(300)
"""


@pytest.fixture
def data() -> Iterator[Path]:
    """A data directory outside pytest's temporary root: run as root, the wheel runs PostgreSQL as another
    user, who must traverse the path, and every pytest session that starts makes that root 0700 again."""
    with tempfile.TemporaryDirectory(prefix="juki-embedded-", ignore_cleanup_errors=True) as directory:
        yield Path(directory) / "pgdata"


def _servers(data_dir: Path) -> list[psutil.Process]:
    """PostgreSQL processes whose command line names `data_dir`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(data_dir) in (process.info["cmdline"] or []):
            found.append(process)
    return found


async def _answers(url: str) -> bool:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return bool(await connection.fetchval("SELECT true"))
    finally:
        await connection.close()


async def test_a_server_left_by_a_killed_user_is_stopped_by_the_next_user_to_leave(data: Path) -> None:
    killed = await asyncio.create_subprocess_exec(sys.executable, "-c", _USE_AND_HANG, str(data),
                                                  stdout=asyncio.subprocess.PIPE)
    assert killed.stdout is not None and await killed.stdout.readline() == b"started\n"
    killed.kill()
    await killed.wait()
    assert _servers(data), "the server should outlive its killed user"

    server = EmbeddedPostgres(data, delete_on_stop=True)
    assert await _answers(await asyncio.to_thread(server.start))
    await asyncio.to_thread(server.stop)
    assert not _servers(data)
    assert not data.exists()


async def test_the_server_runs_until_its_last_user_leaves(data: Path) -> None:
    first, second = EmbeddedPostgres(data, delete_on_stop=True), EmbeddedPostgres(data, delete_on_stop=True)
    url = await asyncio.to_thread(first.start)
    assert await asyncio.to_thread(second.start) == url
    await asyncio.to_thread(first.stop)
    assert await _answers(url)
    await asyncio.to_thread(second.stop)
    assert not _servers(data)


async def test_a_postmaster_pid_naming_another_process_does_not_pass_for_a_server(data: Path) -> None:
    server = EmbeddedPostgres(data)
    await asyncio.to_thread(server.start)
    lines = (data / "postmaster.pid").read_text().splitlines()
    await asyncio.to_thread(server.stop)
    # As after a power loss: the file survives, and its pid now belongs to another live process.
    (data / "postmaster.pid").write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")

    server = EmbeddedPostgres(data, delete_on_stop=True)
    assert await _answers(await asyncio.to_thread(server.start))
    await asyncio.to_thread(server.stop)
    assert not _servers(data)


async def _shown(url: str, *names: str) -> list[str]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return [await connection.fetchval(f"SHOW {name}") for name in names]
    finally:
        await connection.close()


async def test_a_new_server_is_sized_to_the_machine_from_its_first_start(
        data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIZING_VARIABLE, "machine")
    wanted = machine_settings()
    server = EmbeddedPostgres(data, delete_on_stop=True)
    url = await asyncio.to_thread(server.start)
    try:
        started = (data / "postmaster.pid").read_text().splitlines()[0]
        shown = await _shown(url, "shared_buffers", "effective_cache_size", "max_wal_size", "shared_preload_libraries")
        assert shown == [wanted["shared_buffers"], wanted["effective_cache_size"], "8GB",
                         "pg_prewarm, pg_stat_statements"]
        # Sized when created, so not restarted for it: the postmaster that answered is the first one.
        assert (data / "postmaster.pid").read_text().splitlines()[0] == started
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_server_kept_unsized_has_postgresql_stock_cache(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SIZING_VARIABLE, "off")
    server = EmbeddedPostgres(data, delete_on_stop=True)
    url = await asyncio.to_thread(server.start)
    try:
        assert await _shown(url, "shared_buffers") == ["128MB"]
    finally:
        await asyncio.to_thread(server.stop)
