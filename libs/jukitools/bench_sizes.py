"""`juki bench sizes`: the cost of each operation as the file grows (issue 22), from one command.

For each size of `--sizes` (persons), from nothing in its own temporary directory (`benchkit.bench_databases`):

1. the initial load of that many synthetic residents into the identity file, with the fast path and one
   worker process per core (`bench_lookup.load_persons`), timed;
2. the disk it takes: the identity schema's relations (tables, indexes, TOAST), the database
   (`pg_database_size`) and the embedded cluster's data directory (WAL included), per million persons;
3. `juki bench lookup`'s phases (direct, gateway, batch) against that file, on a random sample of its codes
   drawn in the server (`bench_lookup.sample_codes`: only the codes the run asks reach this process);
4. `juki bench ingest`'s paths (baseline, unary, streamed, with the relay forwarding to the agency stand-in)
   against the same file, on new persons whose 住民票コード and 個人番号 it does not hold yet.

The phases are those of the two commands, with their defaults except the counts given here; each keeps its
full JSON object (`lookup`, `ingest`). Beside them, per size: CPU µs per operation of every process on its
path (client, gateway, identity, agency stand-in, PostgreSQL), the rates, the load's seconds and the disk per
million persons, and, for every size after the first, the ratio of each of these to the first size's.
One JSON object on stdout; the same figures as a markdown table on stderr (and in `--table FILE`). Exit
status 1 if any answer was wrong. No per-person data is held here beyond the sample and the new persons.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jukilib.jsonlog import setup_logging
from jukitools import bench_ingest, bench_lookup, benchkit, runner

DEFAULT_SIZES = "20000,2000000,14000000"
MB = 1_000_000
COMPARED = ("cpu_us_per_operation", "rates", "load", "disk", "cache", "wal")
"""The parts of a size's figures compared with the first size's."""
OPERATIONS = (
    ("lookup_gateway", "single lookup (gateway path)"),
    ("lookup_direct", "single lookup (direct)"),
    ("batch_lookup", "batch lookup of {batch_size:,}"),
    ("notification_unary", "unary notification"),
    ("notification_stream", "streamed notification"),
)
RATES = (
    ("lookups_per_second_gateway", "lookups/s (gateway path)"),
    ("lookups_per_second_direct", "lookups/s (direct)"),
    ("batch_records_per_second", "batch lookup records/s"),
    ("notifications_per_second_unary", "notifications/s (unary)"),
    ("notifications_per_second_stream", "notifications/s (streamed)"),
    ("relay_forwarded_per_second_unary", "relay forwarded/s (during unary)"),
    ("relay_forwarded_per_second_stream", "relay forwarded/s (during streamed)"),
)
LOAD_AND_DISK = (
    ("load", "seconds", "initial load, seconds"),
    ("load", "persons_per_second", "initial load, persons/s"),
    ("disk", "identity_mb_per_million_persons", "disk, identity schema, MB per million persons"),
    ("disk", "database_mb_per_million_persons", "disk, database, MB per million persons"),
    ("disk", "cluster_mb_per_million_persons", "disk, cluster (WAL included), MB per million persons"),
    ("cache", "lookup_hit_percent", "PostgreSQL cache hits during the lookups, %"),
    ("cache", "ingest_hit_percent", "PostgreSQL cache hits during the ingest, %"),
    ("wal", "kb_per_version", "WAL written during the ingest, kB per version recorded"),
    ("wal", "full_page_images_per_version", "full-page images in that WAL, per version recorded"),
)


def add_bench_sizes(bench_subparsers: Any) -> argparse.ArgumentParser:
    """`juki bench sizes` under the `bench` command's subparsers."""
    parser: argparse.ArgumentParser = bench_subparsers.add_parser(
        "sizes", help="bench lookup and bench ingest on files of several sizes, CPU per operation of every process "
                      "side by side with disk per million persons; prints one JSON object, a table on stderr")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated persons loaded, one run per size")
    parser.add_argument("--lookups", type=int, default=20_000, help="measured single lookups on each path")
    parser.add_argument("--batch-calls", type=int, default=40, help="measured batch lookups of 1,000 codes")
    parser.add_argument("--notifications", type=int, default=10_000,
                        help="unary ApplyNotification calls (and baseline notifications)")
    parser.add_argument("--stream-notifications", type=int, default=50_000,
                        help="notifications sent on one StreamNotifications stream")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes of the initial load (default: one per core)")
    parser.add_argument("--seed", type=int, default=20261126,
                        help="seed of the loaded residents and of the codes asked (the new persons: seed + 1)")
    parser.add_argument("--table", type=Path, help="also write the markdown table to this file")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run every size; prints one JSON object, and the table on stderr. Exit status 1 if any answer failed."""
    setup_logging("bench-sizes", "WARNING")
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        print("juki bench sizes: --sizes must be positive numbers of persons, comma-separated", file=sys.stderr)
        return 2
    result = runner.run(_bench(args, sizes))
    print(json.dumps(result, ensure_ascii=False))
    table = markdown_table(result)
    print(table, file=sys.stderr)
    if args.table is not None:
        args.table.write_text(table + "\n", encoding="utf-8")
    return 0 if result["errors"] == 0 else 1


async def _bench(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    by_size = {str(persons): await _one_size(args, persons) for persons in sizes}
    first = by_size[str(sizes[0])]
    return {
        "sizes": sizes,
        "by_size": by_size,
        "ratios": {key: ratios(first, figures) for key, figures in by_size.items() if key != str(sizes[0])},
        "errors": sum(figures["errors"] for figures in by_size.values()),
        "lookups": args.lookups, "batch_calls": args.batch_calls, "notifications": args.notifications,
        "stream_notifications": args.stream_notifications, "load_workers": args.workers, "seed": args.seed,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


async def _one_size(args: argparse.Namespace, persons: int) -> dict[str, Any]:
    """Load, measure the disk, look up, ingest: one size, on its own embedded PostgreSQL."""
    from jukitools.cli_bulk import ProgressBar

    lookup_args = _parsed(bench_lookup.add_bench_lookup, [
        "--persons", str(persons), "--lookups", str(args.lookups), "--batch-calls", str(args.batch_calls),
        "--seed", str(args.seed)])
    ingest_args = _parsed(bench_ingest.add_bench_ingest, [
        "--notifications", str(args.notifications), "--baseline-notifications", str(args.notifications),
        "--stream-notifications", str(args.stream_notifications), "--seed", str(args.seed + 1)])
    async with benchkit.bench_databases("juki-bench-sizes-") as (home, databases):
        owner_url = databases["identity"].migration_url
        bar = ProgressBar(label=f"bench sizes: load {persons:,}")
        report = await bench_lookup.load_persons(home, owner_url, persons, args.seed, workers=args.workers,
                                                 progress=bar)
        bar.close()
        vacuum_seconds = await bench_lookup.settle(owner_url)
        disk = await _disk(owner_url, home / "pgdata", persons)
        codes = await bench_lookup.sample_codes(owner_url, bench_lookup.run_draws(lookup_args), args.seed)
        before_lookups, profiled = await _blocks(owner_url), await _profile_start(owner_url)
        figures = await bench_lookup.serve_and_measure(lookup_args, home, databases, codes)
        profile = {"lookups": await _profile(owner_url, profiled)}
        before_ingest, wal_before = await _blocks(owner_url), await _wal(owner_url)
        profiled = await _profile_start(owner_url)
        lookup = bench_lookup.lookup_result(
            lookup_args, {**figures, "persons": persons, "load_seconds": round(report.seconds, 2)})
        ingest = bench_ingest.ingest_result(ingest_args, *await bench_ingest.measure_ingest(ingest_args, home,
                                                                                            databases))
        profile["ingest"] = await _profile(owner_url, profiled)
        after, wal_after = await _blocks(owner_url), await _wal(owner_url)
    cache = {"lookup_hit_percent": _hit_percent(before_lookups, before_ingest),
             "ingest_hit_percent": _hit_percent(before_ingest, after)}
    load = {"seconds": round(report.seconds, 2), "index_seconds": round(report.index_seconds, 2),
            "vacuum_seconds": vacuum_seconds,
            "persons_per_second": round(report.persons / report.seconds) if report.seconds else None}
    return {"persons": persons, **summary(lookup, ingest), "load": load, "disk": disk, "cache": cache,
            "wal": _wal_per_version(wal_before, wal_after), "profile": profile,
            "errors": lookup["errors"] + ingest["errors"], "lookup": lookup, "ingest": ingest}


async def _blocks(url: str) -> tuple[int, int]:
    """The database's blocks found in PostgreSQL's cache and read from outside it (the operating system's
    cache or the disk: a read costs the server CPU a hit does not), so far."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await connection.close()
    assert row is not None  # the database connected to is in the view
    return int(row["blks_hit"]), int(row["blks_read"])


async def _wal(url: str) -> tuple[int, int, int]:
    """(WAL bytes, full-page images, versions recorded) so far. A write that is the first to change a page
    since the last checkpoint puts the whole 8 kB page in the WAL: the more distinct pages the writes of an
    interval touch (random keys in large indexes), the more WAL each write costs the server."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        wal = await connection.fetchrow("SELECT wal_bytes, wal_fpi FROM pg_stat_wal")
        versions = await connection.fetchval("SELECT count(*) FROM identity.person_version")
    finally:
        await connection.close()
    assert wal is not None  # the view has one row
    return int(wal["wal_bytes"]), int(wal["wal_fpi"]), int(versions)


def _wal_per_version(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float | None]:
    versions = after[2] - before[2]
    if versions <= 0:
        return {"kb_per_version": None, "full_page_images_per_version": None}
    return {"kb_per_version": round((after[0] - before[0]) / 1024 / versions, 2),
            "full_page_images_per_version": round((after[1] - before[1]) / versions, 2)}


PROFILED = 8
"""Statements listed per phase: those that took the server the most time."""
_STATEMENTS = """
SELECT calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied, shared_blks_written,
       wal_fpi, wal_bytes, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM prewarm.pg_stat_statements(true)
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND calls > 0
ORDER BY total_exec_time DESC LIMIT $1
"""
_IO = """
SELECT backend_type, sum(reads) AS reads, sum(writes) AS writes, sum(evictions) AS evictions
FROM pg_stat_io GROUP BY backend_type
"""


async def _profile_start(url: str) -> dict[str, dict[str, int]]:
    """Start a phase's profile: the statement statistics reset, and the server's I/O so far (`_profile`)."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SELECT prewarm.pg_stat_statements_reset()")
        return await _io(connection)
    finally:
        await connection.close()


async def _io(connection: Any) -> dict[str, dict[str, int]]:
    rows = await connection.fetch(_IO)
    checkpoints = await connection.fetchrow("SELECT num_timed + num_requested AS done, buffers_written "
                                            "FROM pg_stat_checkpointer")
    return {**{row["backend_type"]: {key: int(row[key] or 0) for key in ("reads", "writes", "evictions")}
               for row in rows},
            "checkpointer": {"checkpoints": int(checkpoints["done"]), "writes": int(checkpoints["buffers_written"])}}


async def _profile(url: str, started: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Where the server's time went in a phase, from `pg_stat_statements` (the statements that took the most,
    each with its time, blocks and WAL per call; parameters are placeholders, no value is shown) and the
    blocks each kind of server process read, wrote and evicted (`pg_stat_io`), with the checkpoints made."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        statements = await connection.fetch(_STATEMENTS, PROFILED)
        io = await _io(connection)
    finally:
        await connection.close()
    by_process = {process: {key: value - started.get(process, {}).get(key, 0) for key, value in counts.items()}
                  for process, counts in io.items()}
    return {"statements": [_per_call(row) for row in statements],
            "io": {process: counts for process, counts in by_process.items() if any(counts.values())}}


def _per_call(row: Any) -> dict[str, Any]:
    calls = row["calls"]
    return {"query": row["query"][:200], "calls": calls, "total_ms": round(row["total_exec_time"], 1),
            "us_per_call": round(1000 * row["total_exec_time"] / calls, 1),
            "rows_per_call": round(row["rows"] / calls, 2),
            **{f"{name}_per_call": round(row[f"shared_blks_{name}"] / calls, 2)
               for name in ("hit", "read", "dirtied", "written")},
            "fpi_per_call": round(row["wal_fpi"] / calls, 2), "wal_bytes_per_call": round(row["wal_bytes"] / calls)}


def _hit_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    hits, reads = after[0] - before[0], after[1] - before[1]
    return round(100 * hits / (hits + reads), 2) if hits + reads else None


def _parsed(add: Callable[[Any], argparse.ArgumentParser], argv: list[str]) -> argparse.Namespace:
    """Another `juki bench` command's arguments: its defaults, but for `argv`."""
    return add(argparse.ArgumentParser().add_subparsers()).parse_args(argv)


def summary(lookup: dict[str, Any], ingest: dict[str, Any]) -> dict[str, Any]:
    """CPU µs per operation of each process on its path, and the rates, from the two commands' objects. In
    `juki bench ingest` the identity service runs in the benchmark's own process (`service`)."""
    calls, notifications = lookup["cpu_us_per_call"], ingest["cpu_us_per_notification"]

    def of_lookup(cpu: dict[str, float], *processes: str) -> dict[str, float | None]:
        return {process: cpu.get(process) for process in ("client", *processes, "postgres")}

    def of_ingest(cpu: dict[str, float]) -> dict[str, float | None]:
        return {"client": cpu.get("client"), "identity": cpu.get("service"), "agency": cpu.get("agency"),
                "postgres": cpu.get("postgres")}

    relay = ingest.get("relay", {})
    return {
        "cpu_us_per_operation": {
            "lookup_gateway": of_lookup(calls["gateway"], "gateway", "identity"),
            "lookup_direct": of_lookup(calls["direct"], "identity"),
            "batch_lookup": of_lookup(calls["batch"], "gateway", "identity"),
            "notification_unary": of_ingest(notifications["unary"]),
            "notification_stream": of_ingest(notifications["streaming"]),
        },
        "rates": {
            "lookups_per_second_gateway": lookup["gateway_per_second"],
            "lookups_per_second_direct": lookup["direct_per_second"],
            "batch_records_per_second": lookup["batch_records_per_second"],
            "notifications_per_second_unary": ingest["per_second"],
            "notifications_per_second_stream": ingest["streaming_per_second"],
            "relay_forwarded_per_second_unary": relay.get("unary", {}).get("forwarded_per_second"),
            "relay_forwarded_per_second_stream": relay.get("streaming", {}).get("forwarded_per_second"),
        },
    }


async def _disk(owner_url: str, data_directory: Path, persons: int) -> dict[str, Any]:
    """Bytes of the identity schema's relations, of the database and of the data directory, and MB (10⁶ bytes)
    of each per million persons."""
    import asyncio

    import asyncpg

    connection = await asyncpg.connect(owner_url)
    try:
        identity = await connection.fetchval(
            """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'identity' AND c.relkind IN ('r', 'm')""")
        database = await connection.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await connection.close()
    cluster = await asyncio.to_thread(_directory_bytes, data_directory)
    sizes = {"identity": int(identity), "database": int(database), "cluster": cluster}
    return {**{f"{name}_bytes": value for name, value in sizes.items()},
            **{f"{name}_mb_per_million_persons": round(value / MB / (persons / 1e6), 1)
               for name, value in sizes.items()}}


def _directory_bytes(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except FileNotFoundError:  # a temporary file PostgreSQL removed meanwhile
                continue
    return total


def ratios(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`other`'s figures over `first`'s (two sizes), leaf by leaf, for the compared parts."""
    return {key: _ratio(first[key], other[key]) for key in COMPARED}


def _ratio(first: Any, other: Any) -> Any:
    """None where either figure is missing or the first is 0."""
    if isinstance(first, dict):
        return {key: _ratio(value, other.get(key) if isinstance(other, dict) else None) for key, value in first.items()}
    if isinstance(first, int | float) and isinstance(other, int | float) and first:
        return round(other / first, 3)
    return None


# --- the table ---------------------------------------------------------------------------------------

def markdown_table(result: dict[str, Any]) -> str:
    """Rows: CPU µs per operation of each process, the rates, the load and the disk; columns: the sizes,
    each after the first with its ratio to the first."""
    sizes = [str(size) for size in result["sizes"]]
    by_size, first = result["by_size"], sizes[0]
    batch_size = by_size[first]["lookup"]["batch_size"]
    lines = ["| per operation | " + " | ".join(f"{int(size):,} persons" for size in sizes) + " |",
             "|---|" + "---|" * len(sizes)]

    def row(label: str, *path: str) -> None:
        cells = [_cell(_at(by_size[size], path), None if size == first else _at(result["ratios"][size], path))
                 for size in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for operation, label in OPERATIONS:
        for process in by_size[first]["cpu_us_per_operation"][operation]:
            row(f"{label.format(batch_size=batch_size)}: {process} CPU µs", "cpu_us_per_operation", operation, process)
    for key, label in RATES:
        row(label, "rates", key)
    for part, key, label in LOAD_AND_DISK:
        row(label, part, key)
    profiles = [_profile_table(int(size), phase, by_size[size].get("profile", {}).get(phase))
                for size in sizes for phase in ("lookups", "ingest")]
    return "\n".join(lines + [line for profile in profiles for line in profile])


def _profile_table(persons: int, phase: str, profile: dict[str, Any] | None) -> list[str]:
    """The statements that took the server the most time in one phase, per call, and its processes' I/O."""
    if not profile:
        return []
    lines = ["", f"PostgreSQL during the {phase}, {persons:,} persons: statements by total time",
             "", "| statement | calls | µs/call | blocks hit/call | read/call | dirtied/call | full-page images/call |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| `{s['query'][:90]}` | {s['calls']:,} | {s['us_per_call']:,.1f} | {s['hit_per_call']:,.2f} | "
              f"{s['read_per_call']:,.2f} | {s['dirtied_per_call']:,.2f} | {s['fpi_per_call']:,.2f} |"
              for s in profile["statements"]]
    io = ", ".join(f"{process} {counts}" for process, counts in profile["io"].items())
    return [*lines, "", f"Blocks read, written, evicted by process: {io or 'none'}"]


def _at(figures: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        figures = figures[key]
    return figures


def _cell(value: Any, ratio: Any) -> str:
    if value is None:
        return "—"
    text = f"{value:,.1f}" if isinstance(value, float) and value < 100 else f"{value:,.0f}"
    return text if ratio is None else f"{text} ({ratio:.2f} ×)"
