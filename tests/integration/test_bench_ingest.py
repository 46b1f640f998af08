"""`juki bench ingest` runs from nothing with its relay forwarding to the agency stand-in and prints the
relay's figures beside ingest's (a smoke test with tiny numbers: it proves the benchmark works, not any
speed)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.bench_runs import run_bench


def test_bench_ingest_reports_what_the_relay_forwarded_beside_what_was_ingested(tmp_path: Path) -> None:
    finished = run_bench(tmp_path, [
        "ingest", "--notifications", "100", "--stream-notifications", "500", "--baseline-notifications", "100",
        "--concurrency", "8", "--pool", "4", "--relay-workers", "2", "--relay-batch", "100",
        "--agency-latency-ms", "5"], timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads(finished.stdout)
    assert result["errors"] == 0 and result["rows"]["outbox"] == result["expected_rows"]
    for path in ("unary", "streaming"):
        relay = result["relay"][path]
        # how much is forwarded while a tiny ingest runs is timing, not asserted; that all of it is forwarded
        # is: the benchmark waits until the outbox holds nothing undelivered, and fails otherwise
        assert relay["ingested_per_second"] > 0 and relay["forwarded_per_second"] >= 0 and relay["ratio"] >= 0
        assert relay["backlog_at_end"] >= 0 and relay["drain_seconds"] >= 0
    assert result["relay_drain_per_second"] > 0
    assert result["agency"] == "stand-in (juki serve agency), 5 ms per call"
