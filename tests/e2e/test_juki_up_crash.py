"""`juki up` after a crash (issue 14): Ctrl-C still stops everything it started.

Kills a running `juki up` with SIGKILL, checks what is left, starts it again on the same home, presses
Ctrl-C and proves that neither PostgreSQL nor any `juki serve` of that home is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from tests.e2e.test_juki_up import _juki, _postgres_processes

UP_WITHIN_SECONDS = 150


def _services(home: Path) -> list[psutil.Process]:
    """`juki serve` processes of `home`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "jukitools.cli" not in cmdline or "serve" not in cmdline:
            continue
        try:
            if process.environ().get("JUKI_HOME") == str(home):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _up(home: Path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
    env["JUKI_HOME"] = str(home)
    return subprocess.Popen(_juki("up", "--residents", "20", "--annex-residents", "5"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_until_up(home: Path, process: subprocess.Popen[bytes], stale: os.stat_result | None = None) -> None:
    """Until `process` writes `endpoints.json` (a new one, not `stale` left by a killed run)."""
    path = home / "endpoints.json"
    deadline = time.monotonic() + UP_WITHIN_SECONDS
    while not path.exists() or (stale is not None and path.stat().st_mtime_ns == stale.st_mtime_ns):
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"juki up exited early with {process.returncode}: {output[-3000:]}")
        assert time.monotonic() < deadline, f"juki up not up within {UP_WITHIN_SECONDS}s"
        time.sleep(0.5)


def _wait_gone(find: Callable[[], list[psutil.Process]], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@contextlib.contextmanager
def juki_home(prefix: str) -> Iterator[Path]:
    """A home for `juki up` outside pytest's temporary root, which each starting pytest session makes 0700
    again (run as root, PostgreSQL runs as another user, who must traverse the path); whatever a failure
    left running there is stopped at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as directory:
        home = Path(directory) / "juki-home"
        try:
            yield home
        finally:
            left = _services(home) + _postgres_processes(home)
            for process in left:
                process.send_signal(signal.SIGINT)
            psutil.wait_procs(left, timeout=10)


def test_ctrl_c_after_a_killed_juki_up_stops_everything_it_started() -> None:
    with juki_home("juki-crash-") as home:
        _kill_start_again_and_stop(home)


def _kill_start_again_and_stop(home: Path) -> None:
    crashed = _up(home)
    try:
        _wait_until_up(home, crashed)
        assert len(_services(home)) == 5
    finally:
        crashed.kill()
        crashed.communicate(timeout=30)
    # The services die with their parent; PostgreSQL outlives it (the next `juki up` takes it over).
    assert not _wait_gone(lambda: _services(home), 30), "juki serve left running after kill -9 of juki up"
    assert _postgres_processes(home)

    stale = (home / "endpoints.json").stat()
    again = _up(home)
    try:
        _wait_until_up(home, again, stale)
        assert len(_services(home)) == 5
    finally:
        again.send_signal(signal.SIGINT)
        output, _ = again.communicate(timeout=90)
    assert again.returncode == 0, output.decode(errors="replace")[-2000:]
    assert not _wait_gone(lambda: _services(home), 5), "juki serve left running"
    assert not _wait_gone(lambda: _postgres_processes(home), 5), "the embedded PostgreSQL is still running"
