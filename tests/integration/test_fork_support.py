"""gRPC's fork support is off in every juki process, whatever imports grpc first.

The initial load forks its workers from a process whose gRPC threads may be running (`juki bench lookup`,
the tests). With gRPC's fork support on, gRPC runs its own handlers around such a fork, and they crash the
child ("Check failed: next_worker->initialized_cv"): the load fails with BrokenProcessPool. jukilib turns the
support off before grpc is imported, so every package of juki's imports jukilib before its modules import
grpc. Each case runs in a fresh interpreter: the setting is read once, when grpc is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_FORK_UNDER_A_RUNNING_SERVER = """
import asyncio, concurrent.futures, multiprocessing
from grpc import aio

def double(value):
    return 2 * value

async def main():
    server = aio.server()
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        assert list(pool.map(double, range(4))) == [0, 2, 4, 6]
    await server.stop(None)

asyncio.run(main())
"""


def _fork_handler_lines(first_import: str) -> list[str]:
    """The lines gRPC's fork handlers log when a process that imported `first_import` first forks workers
    while its gRPC server runs (nothing set in the environment beforehand)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("GRPC_")}
    environment["GRPC_VERBOSITY"] = "INFO"
    result = subprocess.run([sys.executable, "-c", f"import {first_import}\n{_FORK_UNDER_A_RUNNING_SERVER}"],
                            env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if "fork_posix" in line]


@pytest.mark.parametrize("first_import", ["jukilib", "juki_services", "jukitools", "tests"])
def test_a_juki_process_forks_without_grpcs_fork_handlers(first_import: str) -> None:
    assert _fork_handler_lines(first_import) == []


def test_grpc_imported_first_runs_its_fork_handlers_which_is_what_the_others_prevent() -> None:
    # The control: without jukilib first, gRPC's handlers run around the same fork (and can crash the child).
    assert _fork_handler_lines("grpc") != []
