"""`juki bench reconcile [--changes N]`: how long `juki reconcile` takes when the register lost N changes that
the agency holds (issue 20: the timings for Gunma's size).

Everything runs from nothing in a temporary directory: an embedded PostgreSQL with every schema, a development
PKI and keyring, and the agency stand-in as `juki serve agency`. The identity register's database is copied
while still empty (`CREATE DATABASE … TEMPLATE`: the backup restored to T); then N synthetic residents are
recorded (記載 by 前橋市, through the register's write path) and delivered to the agency by the relay's own code
(`OutboxRelay` passes, the agency's batch method); the agency keeps its copy in the first database, which the
restore does not touch (the real agency is another system). `reconcile` then runs against the copy, as
`juki reconcile` does, twice: comparing only, then with --apply (compare and apply again); a last comparison
checks that nothing is lost any more. One JSON object on stdout; exit 1 if a change was not applied.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg

from jukilib.config import SERVICES, TlsConfig
from jukilib.jsonlog import setup_logging
from jukitools import benchkit, runner

MUNICIPALITY = "102016"  # 前橋市


def add_bench_reconcile(bench_subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = bench_subparsers.add_parser(
        "reconcile", help="juki reconcile's time when the identity register lost N changes the agency holds")
    parser.add_argument("--changes", type=int, default=20_000, help="changes the register lost (記載 of new persons)")
    parser.add_argument("--seed", type=int, default=20261207, help="seed of the synthetic residents")
    parser.add_argument("--persons", type=int, default=0,
                        help="residents already in the file before the restore point (`juki load`'s fast path): "
                             "the size of the register reconciled, e.g. 1900000 for Gunma")
    return parser


def run(args: argparse.Namespace) -> int:
    setup_logging("bench-reconcile", "WARNING")
    result = runner.run(_bench(args))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["applied"] == result["changes"] and result["lost_after"] == 0 else 1


@contextlib.asynccontextmanager
async def _databases(persons: int, seed: int) -> AsyncIterator[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """A home, every service's database with `persons` residents in the identity file, and the same database
    copied then (the restore's)."""
    import secrets

    from jukilib.db.bootstrap import owner_role, runtime_role
    from jukilib.db.embedded import EmbeddedPostgres
    from jukitools.suite import prepare_database

    with tempfile.TemporaryDirectory(prefix="juki-bench-reconcile-") as directory:
        home = Path(directory)
        server = EmbeddedPostgres(home / "pgdata", delete_on_stop=True)
        admin_url = await asyncio.to_thread(server.start)
        try:
            passwords = {role(s): secrets.token_urlsafe(24) for s in SERVICES for role in (runtime_role, owner_role)}
            databases = await prepare_database(admin_url, passwords, database="juki_bench")
            if persons:
                await _load_base(home, databases["identity"].migration_url, persons, seed)
            connection = await asyncpg.connect(admin_url)
            try:
                await connection.execute('CREATE DATABASE "juki_bench_restored" TEMPLATE "juki_bench"')
                for service in SERVICES:  # per-database settings are not copied with the database
                    for role in (runtime_role(service), owner_role(service)):
                        await connection.execute(
                            f'ALTER ROLE {role} IN DATABASE "juki_bench_restored" SET search_path = {service}')
            finally:
                await connection.close()
            restored = {service: urlparse(db.url)._replace(path="/juki_bench_restored").geturl()
                        for service, db in databases.items()}
            yield home, databases, restored
        finally:
            await asyncio.to_thread(server.stop)


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from jukilib.devcerts import ensure_dev_pki
    from jukitools.suite import ensure_keyring

    async with _databases(args.persons, args.seed + 1) as (home, databases, restored):
        pki = await asyncio.to_thread(ensure_dev_pki, home / "pki", servers=("identity", "gateway", "agency"),
                                      clients={})
        keyring = ensure_keyring(home)
        identity = TlsConfig(cert=pki.servers["identity"].cert, key=pki.servers["identity"].key, ca=pki.ca_cert)
        async with _agency(home, pki, databases) as target:
            since = dt.datetime.now(dt.UTC)
            started = time.monotonic()
            recorded = await _record_and_deliver(args, databases["identity"].url, keyring, target, identity)
            prepared = time.monotonic() - started
            suite = _suite(home, restored, target, identity, keyring)
            figures = {"persons": args.persons, "changes": recorded, "prepare_seconds": round(prepared, 1)}
            figures.update(await _reconcile_timed(suite, since))
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    figures["cpus"] = os.cpu_count()
    return figures


async def _reconcile_timed(suite: Any, since: dt.datetime) -> dict[str, Any]:
    from jukitools.cli_reconcile import reconcile

    started = time.monotonic()
    compared = await reconcile(suite, "identity", since, apply=False)
    compare_seconds = time.monotonic() - started
    started = time.monotonic()
    applied = await reconcile(suite, "identity", since, apply=True)
    apply_seconds = time.monotonic() - started
    after = await reconcile(suite, "identity", since, apply=False)
    return {"lost_found": len(compared.lost), "compare_seconds": round(compare_seconds, 2),
            "compare_and_apply_seconds": round(apply_seconds, 2), "applied": applied.applied,
            "refused": dict(applied.refused),
            "applied_per_second": round(applied.applied / apply_seconds, 1) if apply_seconds else None,
            "lost_after": len(after.lost)}


def _suite(home: Path, restored: dict[str, str], target: str, tls: TlsConfig, keyring: Path) -> Any:
    from jukitools.local import LocalSuite

    return LocalSuite(home, {
        "JUKI_DATABASE_URL": restored["identity"], "JUKI_OPERATION_LOG_DATABASE_URL": restored["gateway"],
        "JUKI_AGENCY_TARGET": target, "JUKI_TLS_CERT": str(tls.cert), "JUKI_TLS_KEY": str(tls.key),
        "JUKI_TLS_CA": str(tls.ca), "JUKI_KEYRING_FILE": str(keyring)})


@contextlib.asynccontextmanager
async def _agency(home: Path, pki: Any, databases: dict[str, Any]) -> AsyncIterator[str]:
    """The agency stand-in as `juki serve agency`; yields its address."""
    from jukitools.suite import child_environment, free_port

    environment = child_environment("agency", pki, databases["agency"], {"agency": free_port()}, home)
    environment.update({"JUKI_REFLECTION": "false", "JUKI_LOG_LEVEL": "warning", "JUKI_SHUTDOWN_GRACE": "1"})
    gateway = pki.servers["gateway"]
    tls = TlsConfig(cert=gateway.cert, key=gateway.key, ca=pki.ca_cert)
    async with benchkit.service_processes({"agency": environment}, home / "logs", tls) as children:
        yield str(children["agency"].target)


async def _load_base(home: Path, owner_url: str, persons: int, seed: int) -> None:
    """The file as it was before the restore point: `persons` residents by the initial load."""
    from jukilib.register.load import LoadOptions, load_file, worker_count
    from jukitools.cli_bulk import register_api
    from jukitools.demo.fast import write_jsonl
    from jukitools.suite import ensure_keyring

    data = home / "base.jsonl"
    await asyncio.to_thread(write_jsonl, data, persons, seed=seed, register="identity")
    api = register_api("identity", owner_url, keyring_file=ensure_keyring(home))
    await load_file(owner_url, api, data, LoadOptions(mode="fast", workers=worker_count(data, None)))
    data.unlink()


async def _record_and_deliver(args: argparse.Namespace, url: str, keyring: Path, target: str,
                              tls: TlsConfig) -> int:
    """N residents recorded through the register's write path, then forwarded by the relay's code; how many
    were recorded (with --persons, a synthetic code or number drawn again from another seed is refused as
    held by a person of the base file: a handful in 1.9 M, left out)."""
    from juki_services.identity.app import REGISTER
    from jukilib.grpc.channels import secure_channel
    from jukilib.register.config import RelayConfig
    from jukilib.register.model import StoredVersion
    from jukilib.register.relay import OutboxRelay
    from jukitools.bench_ingest import NOTIFY_TIME
    from jukitools.cli_bulk import register_api
    from jukitools.demo.fast import generate_residents
    from jukitools.demo.notifications import birth_notification

    api = register_api("identity", url, keyring_file=keyring)
    await api.engine.database.connect()
    event = dt.date.today() - dt.timedelta(days=1)
    try:
        # 住基法 30-6 ①: a municipality records its own residents.
        recorded = 0
        residents = [dataclasses.replace(r, municipality_code=MUNICIPALITY)
                     for r in generate_residents(args.changes, seed=args.seed)]
        for start in range(0, len(residents), 1000):
            chunk = [api.notification(birth_notification(r, f"reconcile-{start + i}", event, NOTIFY_TIME),
                                      MUNICIPALITY)
                     for i, r in enumerate(residents[start:start + 1000])]
            outcomes = await api.engine.apply_many(chunk)
            stored = sum(isinstance(o, StoredVersion) for o in outcomes)
            assert args.persons or stored == len(chunk), "a synthetic resident was refused"
            recorded += stored
        async with secure_channel(target, tls) as channel:
            async def deliver(stored: StoredVersion, key: str) -> None:
                await REGISTER.forward(channel, key, api.version_message(stored))

            async def deliver_batch(changes: Sequence[tuple[StoredVersion, str]]) -> None:
                assert REGISTER.forward_batch is not None
                await REGISTER.forward_batch(channel, [(key, api.version_message(s)) for s, key in changes])

            relay = OutboxRelay(api.engine.database, "identity", deliver, RelayConfig(workers=1, batch_size=1000),
                                api.engine.hooks, deliver_batch=deliver_batch)
            while await relay.run_once():
                pass
    finally:
        await api.engine.database.close()
    return recorded
