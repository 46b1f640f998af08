"""`juki bench ingest`: how fast the identity service takes notifications, unary and streamed.

Everything runs from nothing in a temporary directory: an embedded PostgreSQL, the schemas and
migrations (`prepare_database`), a development PKI and keyring, and the identity service in this
process (`GrpcService` with `juki_services.identity.app.build`, configured like `juki serve`'s defaults:
a pool of `--pool` connections, `--relay-workers` relay workers forwarding to the agency stand-in, a
`juki serve agency` child process told to answer each call after `--agency-latency-ms`; with
`--relay-workers 0` there is no agency and the outbox only fills). Synthetic residents
(`jukitools.demo.fast`) are recorded (記載, 国内転入) by 前橋市: the client presents the gateway's
certificate and sends `x-juki-organization` as the gateway would (backends trust the gateway's
certificate).

Three figures, measured in one run on the same database, each path on its own residents and warmed up
first (`WARM_UP` notifications):

- `baseline_per_second`: the engine's statements for a new person issued straight from asyncpg, with
  no gRPC, validation or protobuf: one transaction per notification with the statements
  `RegisterEngine.apply` issues for a new person (receipt look-up, person look-up, insert person,
  version with its receipt, outbox row, sealed 個人番号), `--concurrency` tasks on a pool of `--pool`
  connections, in this process;
- `per_second`: ApplyNotification over gRPC, `--concurrency` calls in flight on one channel;
- `streaming_per_second`: StreamNotifications, one stream carrying `--stream-notifications` in messages
  of `--stream-chunk` notifications, timed from the first request sent to the last answer received.

The relay (住基法 30-7) works while the notifications come in, so each path also has its `relay` figures:
`forwarded_per_second`, the changes the agency acknowledged while the path was measured (by the outbox's
`delivered_at`, between the client's first and last call) per second, beside `ingested_per_second`;
their `ratio` (≥ 1: the relay keeps up); `backlog_at_end`, the changes not yet forwarded when the last
answer came; `drain_seconds`, until the last of them was. Before the gRPC paths, the relay forwards the
baseline's changes (written with their outbox rows) with nothing else running: `relay_drain_per_second`.

The gRPC client runs in a child process (as a municipality's CS would be another process), so that
this process's CPU time is the service's; `--in-process-client` puts it on the service's event loop
instead. Every answer is checked (a version, in order); any error makes the exit status 1.

Besides the figures: latencies, CPU time per notification of the service process, of the client
process and of PostgreSQL's processes (with psutil installed), row counts, the load average (other
processes on the machine skew every figure). One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import duration_pb2

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.config import (
    DEFAULT_TRUSTED_PEERS,
    CommonConfig,
    DatabaseConfig,
    TlsConfig,
    default_plan_cache_mode,
)
from jukilib.db.pool import Database
from jukilib.devcerts import ensure_dev_pki
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukilib.jsonlog import setup_logging
from jukilib.register import rows, store
from jukilib.register.config import RelayConfig
from jukilib.register.decide import NEW_PERSON, decide
from jukilib.register.model import Notification
from jukilib.register.rows import Kept
from jukitools import benchkit, runner
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident

if TYPE_CHECKING:
    from juki_services.identity.config import IdentityConfig

MUNICIPALITY = "102016"  # 前橋市
NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
WARM_UP = 500
"""Notifications sent on each path before it is measured (connections, prepared statements, caches)."""
PATHS = ("baseline", "unary", "stream")
STREAM_CHUNK = 250
"""Notifications per StreamNotifications message, as a CS sends a chunk of its backlog."""


def add_bench_ingest(bench_subparsers: Any) -> argparse.ArgumentParser:
    """`juki bench ingest` under the `bench` command's subparsers."""
    parser: argparse.ArgumentParser = bench_subparsers.add_parser(
        "ingest", help="notifications/s into the identity service: unary, streamed, and straight SQL as baseline")
    parser.add_argument("--notifications", type=int, default=20_000, help="unary ApplyNotification calls")
    parser.add_argument("--stream-notifications", type=int, default=100_000,
                        help="notifications sent on one StreamNotifications stream")
    parser.add_argument("--baseline-notifications", type=int, default=20_000,
                        help="notifications applied with straight asyncpg (the baseline)")
    parser.add_argument("--stream-chunk", type=int, default=STREAM_CHUNK,
                        help="notifications per StreamNotifications message (1 to 1,000)")
    parser.add_argument("--concurrency", type=int, default=64, help="unary calls (and baseline tasks) in flight")
    parser.add_argument("--pool", type=int, default=DatabaseConfig.pool_max, help="the service's database connections")
    parser.add_argument("--seed", type=int, default=20260401, help="seed of the synthetic residents")
    parser.add_argument("--relay-workers", type=int, default=RelayConfig.workers,
                        help="relay workers forwarding to the agency stand-in while measuring (0: no agency, the "
                             "outbox only fills)")
    parser.add_argument("--relay-batch", type=int, default=RelayConfig.batch_size,
                        help="changes a relay worker claims and sends to the agency in one call")
    parser.add_argument("--agency-latency-ms", type=int, default=10,
                        help="how long the agency stand-in takes to answer each call")
    parser.add_argument("--in-process-client", action="store_true",
                        help="run the gRPC client on the service's event loop instead of in a child process")
    parser.add_argument("--wal-archive", action="store_true",
                        help="archive and seal WAL as `juki up` does (JUKI_WAL_ARCHIVE), to measure what it costs")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints one JSON object. Exit status 1 if a notification was not applied."""
    # JSON lines with each record's fields (job, error type): what failed is visible, never a value.
    setup_logging("bench-ingest", "WARNING")
    from jukilib.register.streaming import MAX_PER_MESSAGE

    if not 1 <= args.stream_chunk <= MAX_PER_MESSAGE:
        print(f"--stream-chunk must be between 1 and {MAX_PER_MESSAGE}", file=sys.stderr)
        return 2
    result = runner.run(_bench(args))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 else 1


# --- synthetic notifications ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Workload:
    """Which residents each path gets: consecutive slices (warm-up first) of one seeded generation, less the
    residents at positions `held` (whose 住民票コード or 個人番号 the loaded register already holds) of the
    `spare` generated beyond the workload's total for them."""

    seed: int
    sizes: tuple[int, int, int]
    """Measured notifications of baseline, unary, stream."""
    spare: int = 0
    held: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.sizes) + len(self.sizes) * WARM_UP

    def generated(self) -> list[SyntheticResident]:
        return _residents(self.total + self.spare, self.seed)

    def residents(self) -> list[SyntheticResident]:
        held = set(self.held)
        return [r for index, r in enumerate(self.generated()) if index not in held][:self.total]

    def requests(self, path: str, residents: Sequence[SyntheticResident] | None = None,
                 ) -> list[identity_pb2.ApplyNotificationRequest]:
        """The requests of `path`, warm-up first."""
        position = PATHS.index(path)
        start = sum(self.sizes[:position]) + position * WARM_UP
        chosen = (residents or self.residents())[start:start + WARM_UP + self.sizes[position]]
        event = dt.date.today() - dt.timedelta(days=1)
        return [birth_notification(r, f"bench-{path}-{i}", event, NOTIFY_TIME) for i, r in enumerate(chosen)]


def _residents(count: int, seed: int) -> list[SyntheticResident]:
    """Residents of the notifying municipality (住基法 30-6 ①: a municipality records its own residents)."""
    from jukitools.demo.fast import generate_residents

    return [dataclasses.replace(r, municipality_code=MUNICIPALITY) for r in generate_residents(count, seed=seed)]


async def _workload(args: argparse.Namespace, config: IdentityConfig) -> _Workload:
    """The run's residents. Into a loaded register (`measure_ingest`), a synthetic 住民票コード or 個人番号 drawn
    again from another seed would be refused as another person's (one code, one number, one person; 番号法
    7 ②): such residents are left out, and as many more generated (at most `spare`)."""
    from juki_services.identity import app as identity_app

    workload = _Workload(args.seed, (args.baseline_notifications, args.notifications, args.stream_notifications))
    url = config.common.database.url
    if not await _query(url, "SELECT EXISTS (SELECT 1 FROM person)"):
        return workload
    workload = dataclasses.replace(workload, spare=workload.total // 50 + 100)
    hooks = identity_app.api(config, Database(config.common.database)).engine.hooks  # never connected
    held = await _held(url, hooks, workload.generated())
    if len(held) > workload.spare:
        raise RuntimeError(f"{len(held)} generated residents are held by the register, more than the "
                           f"{workload.spare} spare")
    return dataclasses.replace(workload, held=held)


async def _held(url: str, hooks: Any, residents: list[SyntheticResident]) -> tuple[int, ...]:
    """Positions of the residents whose 住民票コード or 個人番号 (its keyed hash, as the engine checks it) the
    register holds."""
    codes = [r.resident_code for r in residents]
    keys = [hooks.unique_keys(r.individual_number) for r in residents]
    held_codes = set(await _query(url, "SELECT array_agg(resident_code) FROM person WHERE resident_code = ANY($1)",
                                  codes) or ())
    held_keys = set(await _query(url, "SELECT array_agg(key) FROM person_key WHERE key = ANY($1::bytea[])",
                                 [key for each in keys for key in each]) or ())
    return tuple(index for index, (code, each) in enumerate(zip(codes, keys, strict=True))
                 if code in held_codes or held_keys.intersection(each))


async def _query(url: str, sql: str, *args: Any) -> Any:
    """The one value `sql` answers."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


# --- the run ---------------------------------------------------------------------------------------

async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    async with benchkit.bench_databases("juki-bench-", wal_archive=args.wal_archive) as (home, databases):
        figures, total = await measure_ingest(args, home, databases)
    return ingest_result(args, figures, total)


async def measure_ingest(args: argparse.Namespace, home: Path, databases: dict[str, Any]
                         ) -> tuple[dict[str, Any], int]:
    """The three paths against the identity register of `databases` as it stands (empty, or loaded: see
    `_workload`), the agency stand-in started for them and stopped after; the figures and the
    notifications sent, warm-ups included."""
    pki = await asyncio.to_thread(ensure_dev_pki, home / "pki", servers=("identity", "gateway", "agency"),
                                  clients={})
    async with _agency(args, home, pki, databases) as agency:
        config = _config(args, home, pki, databases["identity"].url, agency.target if agency else "127.0.0.1:1")
        workload = await _workload(args, config)
        gateway = pki.servers["gateway"]
        client = _ClientSpec(target="", cert=str(gateway.cert), key=str(gateway.key), ca=str(pki.ca_cert),
                             seed=args.seed, sizes=workload.sizes, path="", concurrency=args.concurrency,
                             chunk=args.stream_chunk, spare=workload.spare, held=list(workload.held))
        services = {"agency": agency.process.pid} if agency else {}
        figures = await _measure(args, config, client, workload, benchkit.Cpu(home / "pgdata", services))
    figures["rows"] = await _count_rows(databases["identity"].url)
    return figures, workload.total


def _config(args: argparse.Namespace, home: Path, pki: Any, url: str, agency_target: str) -> IdentityConfig:
    """The identity service's configuration, like `juki serve`'s defaults with the run's pool and relay."""
    from juki_services.identity.config import IdentityConfig
    from jukitools.suite import ensure_keyring

    pair = pki.servers["identity"]
    return IdentityConfig(
        common=CommonConfig(
            service="identity", listen="127.0.0.1:0",
            tls=TlsConfig(cert=pair.cert, key=pair.key, ca=pki.ca_cert),
            database=DatabaseConfig(url=url, migration_url=None, pool_max=args.pool,
                                    plan_cache_mode=default_plan_cache_mode("identity")),
            trusted_peers=DEFAULT_TRUSTED_PEERS["identity"], home=home, shutdown_grace=1.0),
        agency_target=agency_target,
        relay=RelayConfig(workers=args.relay_workers, batch_size=args.relay_batch),
        keyring_file=ensure_keyring(home),
    )


@contextlib.asynccontextmanager
async def _agency(args: argparse.Namespace, home: Path, pki: Any, databases: dict[str, Any]
                  ) -> AsyncIterator[Any]:
    """The agency stand-in as `juki serve agency`, answering each change after `--agency-latency-ms`
    (its fault injection's delay); None with `--relay-workers 0`."""
    if args.relay_workers == 0:
        yield None
        return
    from jukitools.suite import child_environment, free_port

    environment = child_environment("agency", pki, databases["agency"], {"agency": free_port()}, home)
    environment.update({"JUKI_REFLECTION": "false", "JUKI_LOG_LEVEL": "warning", "JUKI_SHUTDOWN_GRACE": "1"})
    gateway = pki.servers["gateway"]
    tls = TlsConfig(cert=gateway.cert, key=gateway.key, ca=pki.ca_cert)
    async with benchkit.service_processes({"agency": environment}, home / "logs", tls) as children:
        agency = children["agency"]
        async with secure_channel(agency.target, tls) as channel:
            latency = duration_pb2.Duration(nanos=args.agency_latency_ms * 1_000_000)
            await agency_pb2_grpc.AgencyServiceStub(channel).SetFaultInjection(agency_pb2.SetFaultInjectionRequest(
                fault_injection=agency_pb2.FaultInjection(delay=latency)), timeout=10)
        yield agency


async def _measure(args: argparse.Namespace, config: IdentityConfig, client: _ClientSpec, workload: _Workload,
                   cpu: benchkit.Cpu) -> dict[str, Any]:
    """The three paths one after the other."""
    from juki_services.identity import app as identity_app
    from jukitools.suite import service_migrations

    figures: dict[str, Any] = {}
    database = Database(config.common.database)
    await database.connect()
    try:
        api = identity_app.api(config, database)
        notifications = [api.notification(r, MUNICIPALITY) for r in workload.requests("baseline")]
        await _baseline(database, api.engine.hooks, notifications[:WARM_UP], args.concurrency)
        started = cpu.start()
        figures["baseline"] = await _baseline(database, api.engine.hooks, notifications[WARM_UP:], args.concurrency)
        figures["baseline"]["cpu_us"] = cpu.per_notification(started, args.baseline_notifications, "bench")
    finally:
        await database.close()

    service = GrpcService(config, service_migrations("identity"), identity_app.build)
    await service.start()
    relay = _RelayWatch(config.common.database.url) if config.relay.workers else None
    try:
        await service.wait_ready(60)
        if relay is not None:
            figures["relay_drain"] = await relay.drain_alone()
        target = f"127.0.0.1:{service.port}"
        for path, count in (("unary", args.notifications), ("stream", args.stream_notifications)):
            spec = _ClientSpec(**{**asdict(client), "target": target, "path": path})
            if args.in_process_client:
                result = await _client_run(spec, cpu)
                result.pop("client_cpu")
                result["cpu_us"] = cpu.per_notification(result.pop("cpu_started"), count, "service_and_client")
            else:
                # The service's CPU is read around the whole child run (its warm-up included, hence
                # divided by warm-up + measured); the child reads its own over the measured part.
                started = cpu.start()
                result = await _client_process(spec)
                result["cpu_us"] = cpu.per_notification(started, WARM_UP + count, "service")
                result["cpu_us"]["client"] = round(result.pop("client_cpu") / count * 1e6, 1)
            if relay is not None:
                result["relay"] = await relay.beside(result, count)
            figures[path] = result
    finally:
        await service.stop(1.0)
    return figures


def ingest_result(args: argparse.Namespace, figures: dict[str, Any], total: int) -> dict[str, Any]:
    """The JSON object of a run from the figures of `measure_ingest` and its notifications."""
    from jukilib.register.streaming import MAX_BATCH

    baseline, unary, streamed = figures["baseline"], figures["unary"], figures["stream"]
    return {
        "per_second": round(unary["per_second"]),
        "baseline_per_second": round(baseline["per_second"]),
        "streaming_per_second": round(streamed["per_second"]),
        "notifications": args.notifications,
        "stream_notifications": args.stream_notifications,
        "baseline_notifications": args.baseline_notifications,
        "concurrency": args.concurrency,
        "pool_max": args.pool,
        "stream_batch_max": MAX_BATCH,
        "stream_chunk": args.stream_chunk,
        "latency_ms": {"baseline": baseline["latency_ms"], "unary": unary["latency_ms"]},
        "seconds": {"baseline": baseline["seconds"], "unary": unary["seconds"], "streaming": streamed["seconds"]},
        "cpu_us_per_notification": {"baseline": baseline["cpu_us"], "unary": unary["cpu_us"],
                                    "streaming": streamed["cpu_us"]},
        "errors": baseline["errors"] + unary["errors"] + streamed["errors"],
        "rows": figures["rows"],
        "expected_rows": total,
        **_relay_result(args, figures),
        "client": "on the service's event loop" if args.in_process_client else "a child process",
        "tracing": "not set up (no-op tracer)",
        "wal_archive": "archived and sealed" if args.wal_archive else "off",
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def _relay_result(args: argparse.Namespace, figures: dict[str, Any]) -> dict[str, Any]:
    if args.relay_workers == 0:
        return {"relay_workers": 0, "agency": "none: relay workers 0, the outbox fills and is not delivered"}
    return {
        "relay": {"unary": figures["unary"]["relay"], "streaming": figures["stream"]["relay"]},
        "relay_drain_per_second": figures["relay_drain"]["per_second"],
        "relay_workers": args.relay_workers,
        "relay_batch": args.relay_batch,
        "agency": f"stand-in (juki serve agency), {args.agency_latency_ms} ms per call",
    }


class _RelayWatch:
    """What the relay forwarded, read from the outbox (`delivered_at`)."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def _query(self, sql: str, *args: Any) -> Any:
        import asyncpg

        connection = await asyncpg.connect(self._url)
        try:
            return await connection.fetchrow(sql, *args)
        finally:
            await connection.close()

    async def _drained(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self._query("SELECT count(*) AS n FROM outbox WHERE state <> 'delivered'"))["n"]:
            if time.monotonic() > deadline:
                raise TimeoutError("the relay did not forward the backlog in time")
            await asyncio.sleep(0.05)

    async def drain_alone(self) -> dict[str, Any]:
        """The backlog the service found at start (the baseline's changes), forwarded with nothing else running."""
        await self._drained()
        row = await self._query("""SELECT count(*) AS n, extract(epoch FROM max(delivered_at) - min(delivered_at)) AS s
                                   FROM outbox WHERE state = 'delivered'""")
        seconds = float(row["s"] or 0.0)
        return {"changes": int(row["n"]), "seconds": round(seconds, 2),
                "per_second": round(row["n"] / seconds) if seconds else None}

    async def beside(self, measured: dict[str, Any], count: int) -> dict[str, Any]:
        """Forwarded per second while `measured` ingested `count` notifications, then the drain after it."""
        started, ended = measured.pop("started_at"), measured.pop("ended_at")
        window = await self._query(
            """SELECT count(*) FILTER (WHERE delivered_at >= to_timestamp($1) AND delivered_at < to_timestamp($2))
                        AS forwarded,
                      count(*) FILTER (WHERE created_at < to_timestamp($2)
                                       AND (delivered_at IS NULL OR delivered_at >= to_timestamp($2))) AS backlog
               FROM outbox""", started, ended)
        await self._drained()
        last = await self._query("SELECT extract(epoch FROM max(delivered_at)) AS t FROM outbox")
        forwarded = window["forwarded"] / (ended - started)
        ingested = count / (ended - started)
        return {"forwarded_per_second": round(forwarded), "ingested_per_second": round(ingested),
                "ratio": round(forwarded / ingested, 2), "backlog_at_end": int(window["backlog"]),
                "drain_seconds": round(max(float(last["t"]) - ended, 0.0), 2)}


async def _count_rows(url: str) -> dict[str, int]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return {table: int(await connection.fetchval(f"SELECT count(*) FROM identity.{table}"))
                for table in ("person", "person_version", "outbox", "individual_number")}
    finally:
        await connection.close()


# --- baseline: the engine's statements straight from asyncpg ----------------------------------------

async def _baseline(database: Database, hooks: Any, notifications: list[Notification],
                    concurrency: int) -> dict[str, Any]:
    async def apply_new_person(notification: Notification) -> int:
        change = notification.change
        async with database.transaction() as connection:
            await store.find_receipts(connection, [(change.municipality_code, change.notification_id)])
            await store.lock_persons(connection, [notification.resident_code])
            decision = decide(notification, None, NEW_PERSON)
            kept = hooks.rows([Kept(decision.person_id, 1, notification.secret)]) if notification.secret else []
            await store.write(connection, rows.build([decision], "identity", kept), None)
        return 0

    return await benchkit.timed(notifications, concurrency, apply_new_person)


# --- the gRPC client ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ClientSpec:
    """What a client process needs (picklable)."""

    target: str
    cert: str
    key: str
    ca: str
    seed: int
    sizes: tuple[int, int, int]
    path: str
    """`unary` or `stream`."""
    concurrency: int
    chunk: int = STREAM_CHUNK
    """Notifications per stream message."""
    spare: int = 0
    held: list[int] = dataclasses.field(default_factory=list)
    """The workload's residents left out (`_Workload`)."""


async def _client_process(spec: _ClientSpec) -> dict[str, Any]:
    """Run one path's client in a child process (`python -m jukitools.bench_ingest`, spec on stdin)."""
    return await benchkit.child_process("jukitools.bench_ingest", asdict(spec), spec.path)


def _client_main() -> int:
    """The client process: the spec as JSON on stdin, the result as JSON on stdout."""
    raw = json.load(sys.stdin)
    spec = _ClientSpec(**{**raw, "sizes": tuple(raw["sizes"])})
    print(json.dumps(runner.run(_client_run(spec, None))))
    return 0


async def _client_run(spec: _ClientSpec, cpu: benchkit.Cpu | None) -> dict[str, Any]:
    """Warm up, then measure one path. With the service in this process (`cpu` given), `cpu_started`
    is the CPU reading at the start of the measured part; else `client_cpu` is this (child) process's
    CPU time over the measured part."""
    requests = _Workload(spec.seed, spec.sizes, spec.spare, tuple(spec.held)).requests(spec.path)
    tls = TlsConfig(cert=Path(spec.cert), key=Path(spec.key), ca=Path(spec.ca))
    async with secure_channel(spec.target, tls) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        measure = _unary if spec.path == "unary" else _stream
        parameter = spec.concurrency if spec.path == "unary" else spec.chunk
        await measure(stub, requests[:WARM_UP], parameter)
        cpu_started = cpu.start() if cpu is not None else None
        started = time.process_time()
        started_at = time.time()  # wall clock, as the outbox's delivered_at (same machine)
        result = await measure(stub, requests[WARM_UP:], parameter)
        result["started_at"], result["ended_at"] = started_at, time.time()
        result["client_cpu"] = time.process_time() - started
    result["cpu_started"] = cpu_started
    return result


_METADATA = (("x-juki-organization", MUNICIPALITY),)


async def _unary(stub: Any, requests: list[identity_pb2.ApplyNotificationRequest],
                 concurrency: int) -> dict[str, Any]:
    async def apply(request: identity_pb2.ApplyNotificationRequest) -> int:
        answer = await stub.ApplyNotification(request, metadata=_METADATA, timeout=60)
        return int(answer.resident_version.version != 1)

    return await benchkit.timed(requests, concurrency, apply)


async def _stream(stub: Any, requests: list[identity_pb2.ApplyNotificationRequest], chunk: int) -> dict[str, Any]:
    messages = [identity_pb2.StreamNotificationsRequest(notifications=requests[i:i + chunk])
                for i in range(0, len(requests), chunk)]

    async def backlog() -> AsyncIterator[identity_pb2.StreamNotificationsRequest]:
        for message in messages:
            yield message

    errors = 0
    expected = 0
    started = time.perf_counter()
    async for answer in stub.StreamNotifications(backlog(), metadata=_METADATA, timeout=600):
        for outcome in answer.outcomes:
            if outcome.index != expected or outcome.WhichOneof("result") != "resident_version":
                errors += 1
            expected += 1
    seconds = time.perf_counter() - started
    errors += len(requests) - expected
    return {"per_second": len(requests) / seconds, "seconds": round(seconds, 2), "errors": errors}


if __name__ == "__main__":
    sys.exit(_client_main())
