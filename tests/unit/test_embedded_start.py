"""Starting the embedded server survives `pg_ctl` itself being ended by a signal, and nothing else."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jukilib.db.embedded import EmbeddedPostgres


class FlakyServer:
    """The wheel's server class whose `pg_ctl start` fails the first `failures` times with `returncode`."""

    def __init__(self, failures: int, returncode: int) -> None:
        self.failures = failures
        self.returncode = returncode
        self.attempts = 0

    def __call__(self, data_dir: Path, cleanup_mode: Any = None) -> FlakyServer:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise subprocess.CalledProcessError(self.returncode, ["pg_ctl", "start"])
        return self


def test_pg_ctl_ended_by_a_signal_is_started_again(tmp_path: Path) -> None:
    wheel = FlakyServer(failures=1, returncode=-signal.SIGSEGV)
    assert EmbeddedPostgres(tmp_path / "pgdata")._start_wheel(wheel) is wheel
    assert wheel.attempts == 2


def test_pg_ctl_failing_with_an_exit_code_is_not_retried(tmp_path: Path) -> None:
    wheel = FlakyServer(failures=1, returncode=1)
    with pytest.raises(subprocess.CalledProcessError):
        EmbeddedPostgres(tmp_path / "pgdata")._start_wheel(wheel)
    assert wheel.attempts == 1


def test_a_second_signal_is_reported_not_retried_for_ever(tmp_path: Path) -> None:
    wheel = FlakyServer(failures=2, returncode=-signal.SIGSEGV)
    with pytest.raises(subprocess.CalledProcessError):
        EmbeddedPostgres(tmp_path / "pgdata")._start_wheel(wheel)
    assert wheel.attempts == 2
