"""`juki bench sizes` runs bench lookup and bench ingest on files of two sizes from one command and prints the
per-operation CPU of every process side by side (a smoke test with tiny numbers: it proves the benchmark
works and checks its answers, not any speed)."""

from __future__ import annotations

import json
from pathlib import Path

from jukilib.devcerts import DevPki
from jukitools.bench_ingest import _config, _workload, add_bench_ingest
from jukitools.bench_lookup import load_persons
from jukitools.bench_sizes import _parsed
from tests.conftest import fresh_database
from tests.integration.bench_runs import run_bench

PROCESSES = {
    "lookup_gateway": {"client", "gateway", "identity", "postgres"},
    "lookup_direct": {"client", "identity", "postgres"},
    "batch_lookup": {"client", "gateway", "identity", "postgres"},
    "notification_unary": {"client", "identity", "agency", "postgres"},
    "notification_stream": {"client", "identity", "agency", "postgres"},
}


def test_bench_sizes_prints_every_process_cpu_per_operation_for_each_size_with_ratios(tmp_path: Path) -> None:
    finished = run_bench(tmp_path, [
        "sizes", "--sizes", "2000,5000", "--lookups", "200", "--batch-calls", "2", "--notifications", "100",
        "--stream-notifications", "200", "--table", str(tmp_path / "table.md")], timeout=600)

    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads(finished.stdout)
    assert result["sizes"] == [2000, 5000] and result["errors"] == 0
    for size in ("2000", "5000"):
        figures = result["by_size"][size]
        assert figures["persons"] == int(size) and figures["errors"] == 0
        assert figures["lookup"]["persons"] == int(size)
        cpu = figures["cpu_us_per_operation"]
        assert {operation: set(processes) for operation, processes in cpu.items()} == PROCESSES
        # The relay forwards in the background: in a phase of 100 notifications it may not have run yet, so its
        # process's CPU and rates are figures (>= 0), and every other is positive.
        assert all(value > 0 for processes in cpu.values() for process, value in processes.items()
                   if process != "agency"), cpu
        assert all(value is not None and value >= 0 for processes in cpu.values() for value in processes.values())
        rates = figures["rates"]
        assert all(rate > 0 for name, rate in rates.items() if not name.startswith("relay_")), rates
        assert all(rate is not None and rate >= 0 for rate in rates.values()), rates
        assert figures["load"]["seconds"] > 0 and figures["load"]["persons_per_second"] > 0
        disk = figures["disk"]
        assert all(disk[f"{part}_mb_per_million_persons"] > 0 for part in ("identity", "database", "cluster"))
        # where PostgreSQL's time went in each phase: its statements, with no value of any call
        for phase, statement in (("lookups", "SELECT p.id AS person_id"), ("ingest", "INSERT INTO person")):
            profile = figures["profile"][phase]
            assert profile["statements"] and all(s["calls"] > 0 for s in profile["statements"])
            assert any(statement in s["query"] for s in profile["statements"]), profile["statements"]
        # the new persons of the ingest were recorded beside the loaded ones
        assert figures["ingest"]["rows"]["person"] == int(size) + figures["ingest"]["expected_rows"]
    ratios = result["ratios"]["5000"]
    assert ratios["cpu_us_per_operation"]["lookup_gateway"]["postgres"] > 0 and ratios["load"]["seconds"] > 0
    assert ratios["disk"]["identity_mb_per_million_persons"] > 0
    table = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert table in finished.stderr and "| streamed notification: agency CPU µs |" in table
    assert "PostgreSQL during the ingest, 5,000 persons: statements by total time" in table
    assert not list(tmp_path.glob("juki-bench-sizes-*"))  # the temporary directories are gone


async def test_new_persons_whose_code_the_loaded_file_holds_are_left_out_of_the_ingest(
        admin_url: str, home: Path, pki: DevPki) -> None:
    databases = await fresh_database(admin_url)
    await load_persons(home, databases["identity"].migration_url, 100, 5, workers=0)
    # the same seed draws the same 住民票コード first: the 100 loaded are held, the workload takes others
    args = _parsed(add_bench_ingest, ["--seed", "5", "--notifications", "10", "--stream-notifications", "10",
                                      "--baseline-notifications", "10"])
    config = _config(args, home, pki, databases["identity"].url, "127.0.0.1:1")
    workload = await _workload(args, config)
    assert workload.held == tuple(range(100)) and workload.spare >= 100
    loaded = {r.resident_code for r in workload.generated()[:100]}
    assert len(workload.residents()) == workload.total
    assert not loaded.intersection(r.resident_code for r in workload.residents())
