"""`juki bench …` run as a subprocess, as an operator runs it, its temporary directories under the test's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def run_bench(tmp_path: Path, arguments: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`juki bench <arguments>` with TMPDIR `tmp_path` (to see its temporary directory removed); PostgreSQL's
    socket then needs a short runtime directory: pytest's paths can exceed the 107 bytes a socket path may have."""
    runtime = Path(tempfile.mkdtemp(prefix="jr-", dir="/tmp"))
    try:
        return subprocess.run(
            [sys.executable, "-m", "jukitools.cli", "bench", *arguments], capture_output=True, text=True,
            timeout=timeout, check=False, env={**os.environ, "TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)})
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
