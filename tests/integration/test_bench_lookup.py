"""`juki bench lookup` runs from nothing and prints one JSON object with the figures issue 5 asks for
(a smoke test with tiny numbers: it proves the benchmark works and checks its answers, not any speed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KEYS = ("gateway_per_second", "direct_per_second", "ratio", "gateway_p99_ms", "batch_records_per_second")


def _bench(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jukitools.cli", "bench", "lookup", "--persons", "300", "--lookups", "200",
         "--warm-up", "20", "--concurrency", "8", "--batch-calls", "3", "--batch-size", "100",
         "--batch-concurrency", "2", "--pool", "4", "--rounds", "2"],
        capture_output=True, text=True, timeout=240, env=environment, check=False)


def test_bench_lookup_prints_one_json_object_with_the_figures_and_no_errors(tmp_path: Path) -> None:
    # The benchmark's temporary directory goes under tmp_path (to see it removed); PostgreSQL's socket then
    # needs a short runtime directory: pytest's paths can exceed the 107 bytes a socket path may have.
    runtime = Path(tempfile.mkdtemp(prefix="jr-", dir="/tmp"))
    try:
        finished = _bench({**os.environ, "TMPDIR": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime)})
    finally:
        shutil.rmtree(runtime, ignore_errors=True)

    assert finished.returncode == 0, finished.stderr[-2000:]
    lines = finished.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert all(isinstance(result[key], int | float) and result[key] > 0 for key in KEYS), result
    assert result["errors"] == 0 and result["persons"] == 300 and result["rounds"] == 2
    # Every call through the gateway (each round's warm-up included) left its operation-log row before it
    # was answered.
    assert result["operation_log_rows"] == result["expected_operation_log_rows"] == 2 * 20 + 200 + 4 + 3
    assert not list(tmp_path.glob("juki-bench-lookup-*"))  # the temporary directory is gone
