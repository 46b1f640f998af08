"""`juki bench lookup` runs from nothing and prints one JSON object with the figures issue 5 asks for
(a smoke test with tiny numbers: it proves the benchmark works and checks its answers, not any speed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.bench_runs import run_bench

KEYS = ("gateway_per_second", "direct_per_second", "ratio", "gateway_p99_ms", "batch_records_per_second")


def test_bench_lookup_prints_one_json_object_with_the_figures_and_no_errors(tmp_path: Path) -> None:
    finished = run_bench(tmp_path, [
        "lookup", "--persons", "300", "--lookups", "200", "--warm-up", "20", "--concurrency", "8",
        "--batch-calls", "3", "--batch-size", "100", "--batch-concurrency", "2", "--pool", "4", "--rounds", "2"],
        timeout=240)

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
