"""`juki bench restore`: the restoration duty's timings at a given size (issue 20; 住基法 30-6 ④, 30-41 ④).

A fresh home with the embedded PostgreSQL started as `juki up` starts it (WAL archiving on), `--persons`
synthetic residents loaded into the identity file (`juki load`'s fast path), then the maintenance commands
an operator runs, each as its own `juki` process and timed on the wall clock: `juki backup` (full),
`juki backup verify`, the database stopped, `juki restore --latest`. One JSON object on stdout; the
home is removed after unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from juki_services.gateway.chain import ensure_signing_key
from jukilib.register.load import LoadOptions, load_file, worker_count
from jukitools.cli_bulk import register_api
from jukitools.demo.fast import write_jsonl
from jukitools.local import DATABASES, write_private_json
from jukitools.suite import Suite, ensure_keyring, prepare_database, role_passwords

BENCH_SEED = 20
TIMEOUT = 3600.0


def add_bench_restore(bench: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = bench.add_parser(
        "restore", help="backup, backup verify and restore timed at a size (issue 20)")
    parser.add_argument("--persons", type=int, default=1_900_000, help="synthetic residents in the identity file")
    parser.add_argument("--seed", type=int, default=BENCH_SEED, help="seed of the synthetic residents")
    parser.add_argument("--directory", type=Path, default=None,
                        help="where the bench's home is made (default: the system's temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the home (its path is in the output)")
    return parser


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_bench(args))


def _juki(home: Path, *arguments: str) -> float:
    """One `juki` command on `home` as an operator runs it; its wall seconds (it must succeed)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "jukitools.cli", "--home", str(home), *arguments],
                            env=environment, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"juki {' '.join(arguments)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return round(time.perf_counter() - started, 2)


async def _load(home: Path, owner_url: str, persons: int, seed: int) -> float:
    data = home / "identity.jsonl"
    await asyncio.to_thread(write_jsonl, data, persons, seed=seed, register="identity")
    api = register_api("identity", owner_url, keyring_file=ensure_keyring(home))
    report = await load_file(owner_url, api, data, LoadOptions(mode="fast", workers=worker_count(data, None)))
    data.unlink()
    return round(report.seconds, 2)


async def _database_bytes(admin_url: str) -> int:
    connection = await asyncpg.connect(admin_url)
    try:
        return int(await connection.fetchval("SELECT pg_database_size('juki')"))
    finally:
        await connection.close()


async def _bench(args: argparse.Namespace) -> int:
    home = Path(tempfile.mkdtemp(prefix="juki-bench-restore-", dir=args.directory))
    figures: dict[str, Any] = {"persons": args.persons, "home": str(home) if args.keep else None}
    suite = Suite(home)
    try:
        admin_url = await asyncio.to_thread(suite.start_database)
        try:
            urls = await prepare_database(admin_url, role_passwords(home))
            ensure_signing_key(home / "operation-log.key")  # the restore signs its record with it
            write_private_json(home / DATABASES, {service: {"url": db.url, "migration_url": db.migration_url}
                                                  for service, db in urls.items()})
            figures["load_seconds"] = await _load(home, urls["identity"].migration_url, args.persons, args.seed)
            figures["database_bytes"] = await _database_bytes(admin_url)
            figures["backup_seconds"] = await asyncio.to_thread(_juki, home, "backup")
        finally:
            await asyncio.to_thread(suite.stop)
        figures["sealed_bytes"] = sum(path.stat().st_size for path in (home / "backups").rglob("*") if path.is_file())
        figures["verify_seconds"] = await asyncio.to_thread(_juki, home, "backup", "verify")
        figures["restore_seconds"] = await asyncio.to_thread(_juki, home, "restore", "--latest")
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(figures))
    return 0
