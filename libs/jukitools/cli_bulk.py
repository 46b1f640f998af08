"""`juki load FILE` (the initial load of an existing file into a register) and `juki bench load` (its
benchmark on synthetic Gunma-sized data in a throw-away embedded PostgreSQL).

Wired into `jukitools.cli` with `add_parsers(commands)` and `COMMANDS`. `bench` is a group: another
benchmark adds its parser to the group returned by `bench_group` (or in `add_parsers`) with
``set_defaults(bench_run=<function of the parsed arguments returning the exit status>)``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import secrets
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

from jukilib.collector import collect_young_rarely
from jukilib.config import SERVICES, CommonConfig, ConfigError, DatabaseConfig, Env, TlsConfig, UsageError
from jukitools.local import KEYRING, LocalSuite
from jukitools.runner import run

REGISTERS = ("identity", "annex")
BENCH_SEED = 20261126


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    collect_young_rarely()  # a load prepares rows by the million
    return run(coroutine)


# --- the register's API, as its service builds it ---------------------------------------------------

def register_api(register: str, owner_url: str, *, keyring_file: Path, resident_code_check: str = "warn"
                 ) -> Any:
    """The `RegisterApi` of `register` built by the service's own wiring (binding, hooks, municipalities,
    check-digit mode), on a database object that is never connected: the loader has its own connection."""
    from jukilib.db.pool import Database
    from jukilib.register.config import RegisterConfig

    unused = Path("/nonexistent")  # the loader serves nothing: no TLS material is read, no agency called
    common = CommonConfig(service=register, listen="127.0.0.1:0", tls=TlsConfig(cert=unused, key=unused, ca=unused),
                          database=DatabaseConfig(url=owner_url, migration_url=owner_url), trusted_peers=frozenset())
    config = RegisterConfig(common=common, agency_target="", keyring_file=keyring_file,
                            resident_code_check=resident_code_check)
    return importlib.import_module(f"juki_services.{register}.app").api(config, Database(common.database))


# --- progress on stderr ----------------------------------------------------------------------------

class ProgressBar:
    """A text progress bar on a terminal (redrawn at most 10 times a second); on anything else, one line
    per tenth of the file."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, label: str = "load") -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._label = label
        self._drawn = 0.0
        self._tenth = 0

    def __call__(self, progress: Any) -> None:
        fraction = progress.bytes_done / progress.bytes_total if progress.bytes_total else 1.0
        now = time.monotonic()
        if self._tty:
            if now - self._drawn < 0.1 and fraction < 1.0:
                return
            self._drawn = now
            self._stream.write("\r" + self._line(progress, fraction))
        elif int(fraction * 10) > self._tenth or fraction >= 1.0 > self._tenth / 10:
            self._tenth = int(fraction * 10)
            self._stream.write(self._line(progress, fraction) + "\n")
        self._stream.flush()

    def _line(self, progress: Any, fraction: float) -> str:
        filled = int(fraction * self.WIDTH)
        rate = progress.rows / progress.seconds if progress.seconds else 0.0
        return (f"{self._label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {fraction:4.0%} "
                f"{progress.rows:>10,} rows {progress.seconds:6.1f} s {rate:>9,.0f} rows/s")

    def close(self) -> None:
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()


# --- juki load ---------------------------------------------------------------------------------------

async def _load(args: argparse.Namespace) -> int:
    import asyncpg

    from jukilib.register.load import BulkLoadError, LoadOptions, load_file
    from jukitools.maintenance_log import logged_action

    env = Env()
    suite = LocalSuite.of(getattr(args, "home", None))  # `juki --home`; absent when wired into another parser
    owner_url = suite.owner_url(args.register)
    api = register_api(args.register, owner_url, keyring_file=suite.file("JUKI_KEYRING_FILE", KEYRING),
                       resident_code_check=env.choice("JUKI_RESIDENT_CODE_CHECK", "warn", ("off", "warn", "reject")))
    path: Path = args.file
    bar = None if args.no_progress else ProgressBar(label=args.register)
    options = LoadOptions(mode=args.mode, skip_invalid=args.skip_invalid, forward=args.forward,
                          file_format=args.format, id_prefix=args.id_prefix, workers=args.workers, progress=bar)
    # A maintenance action: its intent and outcome are in the operation log (issue 19).
    size = await asyncio.to_thread(lambda: path.stat().st_size if path.is_file() else None)
    async with logged_action(suite, "load", register=args.register, mode=args.mode, forward=args.forward,
                             file_bytes=size) as outcome:
        try:
            report = await load_file(owner_url, api, path, options)
        except BulkLoadError as error:
            if bar is not None:
                bar.close()
            print(f"juki load: {error}", file=sys.stderr)
            _print_problems(error.problems, error.invalid_rows)
            outcome.detail.update(result="refused", invalid_rows=error.invalid_rows)
            return 1
        except (OSError, asyncpg.PostgresError) as error:
            if bar is not None:
                bar.close()
            # PostgreSQL's messages may quote values (a key's detail): name the error only. Nothing was written.
            code = getattr(error, "sqlstate", None)
            print(f"juki load: database error {type(error).__name__}{f' (SQLSTATE {code})' if code else ''}; "
                  "nothing was loaded", file=sys.stderr)
            outcome.detail.update(result="nothing loaded", error=type(error).__name__)
            return 1
        outcome.detail.update(result="loaded", persons=report.persons, skipped=report.skipped)
    if bar is not None:
        bar.close()
    if report.skipped:
        print(f"juki load: {report.skipped} invalid row(s) skipped:", file=sys.stderr)
        _print_problems(report.problems, report.skipped)
    mode = "fast (keys and indexes rebuilt)" if report.fast else "into the indexed tables"
    print(f"{args.register}: loaded {report.persons} person(s) in {report.seconds:.1f} s, {mode}"
          f"{f', {report.skipped} invalid row(s) skipped' if report.skipped else ''}"
          f"{', outbox rows written' if args.forward else ''}")
    if report.resident_code_warnings:
        print(f"juki load: {report.resident_code_warnings} 住民票コード accepted although the UNVERIFIED check digit "
              "did not match (JUKI_RESIDENT_CODE_CHECK=warn)", file=sys.stderr)
    return 0


def _print_problems(problems: list[Any], total: int) -> None:
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    shown = len({problem.line for problem in problems})
    if total > shown:
        print(f"  ... {total - shown} more invalid row(s)", file=sys.stderr)


# --- juki bench load ---------------------------------------------------------------------------------

async def _bench_load(args: argparse.Namespace) -> int:
    from jukilib.db.bootstrap import owner_role, runtime_role
    from jukilib.db.embedded import EmbeddedPostgres
    from jukilib.keyring import Keyring
    from jukilib.register.load import LoadOptions, load_file, worker_count
    from jukitools.demo.fast import write_jsonl
    from jukitools.suite import prepare_database

    with tempfile.TemporaryDirectory(prefix="juki-bench-load-") as directory:
        home = Path(directory)
        data = home / f"{args.register}.jsonl"
        started = time.perf_counter()
        await asyncio.to_thread(write_jsonl, data, args.persons, seed=args.seed, register=args.register)
        generate_seconds = time.perf_counter() - started
        file_bytes = data.stat().st_size
        keyring = home / "keyring.json"
        Keyring.generate().save(keyring)
        server = EmbeddedPostgres(home / "pgdata", delete_on_stop=True)
        admin_url = await asyncio.to_thread(server.start)
        try:
            passwords = {role(service): secrets.token_urlsafe(18) for service in SERVICES
                         for role in (runtime_role, owner_role)}
            urls = await prepare_database(admin_url, passwords, database="juki_bench")
            owner_url = urls[args.register].migration_url
            api = register_api(args.register, owner_url, keyring_file=keyring)
            bar = None if args.no_progress else ProgressBar(label=f"bench load {args.register}")
            workers = worker_count(data, args.workers)
            report = await load_file(owner_url, api, data, LoadOptions(mode="fast", workers=workers, progress=bar))
            if bar is not None:
                bar.close()
        finally:
            await asyncio.to_thread(server.stop)
    print(json.dumps({
        "persons": report.persons,
        "seconds": round(report.seconds, 2),
        "persons_per_second": round(report.persons / report.seconds) if report.seconds else None,
        "generate_seconds": round(generate_seconds, 2),
        "stream_seconds": round(report.stream_seconds, 2),
        "index_seconds": round(report.index_seconds, 2),
        "prepare_cpu_seconds": round(report.prepare_cpu_seconds, 2),
        "database_seconds": round(report.database_seconds, 2),
        "workers": workers,
        "register": args.register,
        "fast_mode": report.fast,
        "file_bytes": file_bytes,
    }))
    return 0


# --- argument parsing --------------------------------------------------------------------------------

def add_parsers(commands: Any) -> None:
    """Add `load` and the `bench` group (with `bench load`) to the `juki` sub-commands."""
    from jukilib.register.load import FORMATS, MODES

    load = commands.add_parser(
        "load", help="initial load of an existing file (CSV or JSON lines) into a register, with COPY, as its "
                     "owner role (JUKI_MIGRATION_DATABASE_URL; identity: JUKI_KEYRING_FILE; else the local suite's)")
    load.add_argument("file", type=Path, help="JSON lines (record fields as in the register's proto JSON) or CSV")
    load.add_argument("--register", choices=REGISTERS, default="identity", help="the register loaded")
    load.add_argument("--format", choices=FORMATS, help="default: from the file name (.csv is CSV)")
    load.add_argument("--mode", choices=MODES, default="auto",
                      help="fast: empty register only, indexes rebuilt after the load; indexed: never drop "
                           "indexes; auto (default): fast when the register is empty")
    load.add_argument("--skip-invalid", action="store_true",
                      help="load the valid rows and report the invalid ones (default: any invalid row stops the "
                           "load and nothing is written)")
    load.add_argument("--forward", action="store_true",
                      help="also write outbox rows, so that the relay sends every loaded person to the agency")
    load.add_argument("--id-prefix", default="load-",
                      help="notification id of a row without one: this prefix and the line number")
    load.add_argument("--workers", type=int, help="processes preparing rows (default: one per core for large files)")
    load.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bench = bench_group(commands)
    bench_load = bench.add_parser(
        "load", help="initial load of synthetic Gunma-sized data into a fresh embedded PostgreSQL; prints one JSON "
                     "object (persons, seconds, persons_per_second, generate_seconds, ...)")
    bench_load.add_argument("--persons", type=int, default=1_900_000, help="synthetic residents loaded")
    bench_load.add_argument("--register", choices=REGISTERS, default="identity", help="the register loaded")
    bench_load.add_argument("--seed", type=int, default=BENCH_SEED, help="seed of the synthetic residents")
    bench_load.add_argument("--workers", type=int, help="processes preparing rows (default: one per core)")
    bench_load.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bench_load.set_defaults(bench_run=lambda args: _run(_bench_load(args)))


_BENCH_GROUPS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
"""The `juki bench` group of each parser, forgotten with the parser (a table keyed by `id(commands)` gave a
new parser the freed one's group when it got the same id)."""


def bench_group(commands: Any) -> Any:
    """The sub-commands of `juki bench` (created once per parser)."""
    if commands not in _BENCH_GROUPS:
        bench = commands.add_parser("bench", help="benchmarks of the suite")
        _BENCH_GROUPS[commands] = bench.add_subparsers(dest="bench_action", required=True, metavar="BENCHMARK")
    return _BENCH_GROUPS[commands]


def _load_command(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"load: no such file: {args.file}")
    try:
        return _run(_load(args))
    except ConfigError as error:
        print(f"juki load: configuration error: {error}", file=sys.stderr)
        return 2


def _bench_command(args: argparse.Namespace) -> int:
    run: Callable[[argparse.Namespace], int] = args.bench_run
    return run(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "load": _load_command,
    "bench": _bench_command,
}
