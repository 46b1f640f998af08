"""`juki bench lookup`: lookups by 住民票コード through the gateway against the same lookups straight to
identity, and the batch lookup, in one run (issue 5, "Benchmarks").

Everything runs from nothing in a temporary directory: an embedded PostgreSQL, the schemas and
migrations (`prepare_database`), a development PKI, keyring, operation-log key and operator-
authentication key; `--persons` synthetic residents (`jukitools.demo.fast`) loaded into the identity
file by the initial-load fast path (`jukilib.register.load`, as `juki bench load`); then identity and
the gateway, each in its own process as `juki up` starts them (`benchkit.service_processes`: mTLS, `--pool`
database connections each; relay workers 0). The gateway routes to every backend, but its channels connect only
when used: annex, disclosure and the agency are not started and their targets are unused addresses.

The caller is an executive organ (`kyoiku-iinkai`, 教育委員会) with its demo operator `kyoiku-0001`
(a provision clerk, registered in the gateway's operator registry, credential signed with the
operator-authentication key) declaring `--purpose` (default EDU-SCHOLARSHIP-30-15-2-2: LookupResident
and BatchLookupResidents, a field mask without 個人番号). Through the gateway every call is checked
(certificate, credential, registry, purpose, rate limits, volume caps), forwarded, minimised and
written to the hash-chained operation log before it is answered. Directly, the client presents the
gateway's certificate and sends the `x-juki-*` metadata the gateway would send, the purpose's field mask
included (backends trust the gateway's certificate), so the identity service does exactly what it does
behind the gateway. The rate
limits of the gateway are raised (`--rate`) so that they do not cap the measurement, and so are the
purpose's volume caps: the gateway runs a copy of the shipped catalogue (`JUKI_POLICY_FILE` in the run's
temporary directory) in which `--purpose` allows the run's own volume (`--volume`, default: every call
the run makes, warm-ups included); the shipped catalogue is not touched.

Three phases, each run by child processes (as an organ's system would be another process) with one
channel, each warmed up first (`--warm-up` single lookups, `BATCH_WARM_UP` batches). The codes asked are a
seeded random sample of the loaded residents (`sample_codes`, drawn in the server: only as many codes as
the run asks reach the benchmark, whatever the size of the file), taken in turn: every call, warm-ups
included, asks another resident, as long as the file holds one not asked yet:

- `direct`: `--lookups` LookupResident calls to identity, `--concurrency` in flight;
- `gateway`: the same calls through the gateway;
- `batch`: `--batch-calls` BatchLookupResidents calls of `--batch-size` codes through the gateway,
  `--batch-concurrency` in flight.

The two single-lookup paths run in `--rounds` alternating rounds (direct, gateway, direct, gateway, …;
a child process per round, its calls a share of `--lookups`), and each path's figures cover all its
rounds: on a shared machine whose speed drifts during the run, the drift then weighs on both paths
alike and the ratio compares like with like.

Every answer is checked (the resident whose code was asked, the 個人番号 absent through the gateway
when the purpose's mask leaves it out); any failure counts as an error and makes the exit status 1.
CPU time per call is that of each service process and of PostgreSQL's processes (with psutil) and of
the client process; with the load average, since other processes on the machine skew every figure.
The services record their metrics as `juki up`'s do (a Prometheus endpoint each, on a free loopback
port; nothing scrapes it). One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jukilib.config import DatabaseConfig, TlsConfig
from jukilib.grpc.channels import secure_channel
from jukilib.jsonlog import setup_logging
from jukitools import benchkit, runner

ORGANIZATION, OPERATOR = "kyoiku-iinkai", "kyoiku-0001"
DEFAULT_PURPOSE = "EDU-SCHOLARSHIP-30-15-2-2"
WARM_UP = 500
BATCH_WARM_UP = 4
UNUSED_TARGET = "127.0.0.1:1"
"""Backends the gateway routes to but this benchmark never calls: its channels to them stay idle."""
PHASES = ("direct", "gateway", "batch")


def add_bench_lookup(bench_subparsers: Any) -> argparse.ArgumentParser:
    """`juki bench lookup` under the `bench` command's subparsers."""
    parser: argparse.ArgumentParser = bench_subparsers.add_parser(
        "lookup", help="lookups by 住民票コード through the gateway vs straight to identity, and the batch lookup; "
                       "prints one JSON object")
    parser.add_argument("--persons", type=int, default=20_000, help="synthetic residents loaded first")
    parser.add_argument("--lookups", type=int, default=20_000, help="measured single lookups on each path")
    parser.add_argument("--concurrency", type=int, default=64, help="single lookups in flight")
    parser.add_argument("--warm-up", type=int, default=WARM_UP, help="single lookups before each path is measured")
    parser.add_argument("--batch-calls", type=int, default=40, help="measured batch lookups")
    parser.add_argument("--batch-size", type=int, default=1000, help="codes per batch lookup (at most 1,000)")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="batch lookups in flight")
    parser.add_argument("--pool", type=int, default=DatabaseConfig.pool_max,
                        help="database connections of each service")
    parser.add_argument("--purpose", default=DEFAULT_PURPOSE,
                        help="purpose of use declared by the caller (must allow LookupResident and "
                             "BatchLookupResidents for kyoiku-iinkai's provision clerk)")
    parser.add_argument("--rate", type=float, default=1_000_000.0,
                        help="the gateway's rate limits per organisation and per operator (calls/s)")
    parser.add_argument("--volume", type=int, default=None,
                        help="the purpose's per-day volume caps in the run's catalogue copy (records; default: "
                             "every record the run asks for)")
    parser.add_argument("--seed", type=int, default=20261126, help="seed of the residents and of the codes asked")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the two single-lookup paths (each a share of --lookups)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated phases to run (for profiling one path; the figures of a phase not run "
                             "are null)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; prints one JSON object. Exit status 1 if any answer was wrong or failed."""
    # JSON lines with each record's fields (job, error type): what failed is visible, never a value.
    setup_logging("bench-lookup", "WARNING")
    if not 1 <= args.batch_size <= 1000:
        print("juki bench lookup: --batch-size must be between 1 and 1000", file=sys.stderr)
        return 2
    result = runner.run(_bench(args))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["errors"] == 0 else 1


# --- the run ---------------------------------------------------------------------------------------

async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    async with benchkit.bench_databases("juki-bench-lookup-") as (home, databases):
        owner_url = databases["identity"].migration_url
        started = time.perf_counter()
        await load_persons(home, owner_url, args.persons, args.seed, workers=1)
        await settle(owner_url)
        codes = await sample_codes(owner_url, run_draws(args), args.seed)
        load_seconds = time.perf_counter() - started
        figures = await serve_and_measure(args, home, databases, codes)
    return lookup_result(args, {**figures, "persons": args.persons, "load_seconds": round(load_seconds, 2)})


async def load_persons(home: Path, owner_url: str, persons: int, seed: int, *, workers: int,
                       progress: Any = None) -> Any:
    """Load `persons` synthetic residents (seeded) into the identity file with the initial-load fast path and
    `workers` worker processes; returns the `LoadReport`. The file is written under `home` and removed."""
    from jukilib.register.load import LoadOptions, load_file
    from jukitools.cli_bulk import register_api
    from jukitools.demo.fast import write_jsonl
    from jukitools.suite import ensure_keyring

    data = home / "identity.jsonl"
    await asyncio.to_thread(write_jsonl, data, persons, seed=seed, register="identity")
    api = register_api("identity", owner_url, keyring_file=ensure_keyring(home))
    try:
        return await load_file(owner_url, api, data, LoadOptions(mode="fast", workers=workers, progress=progress))
    finally:
        data.unlink()


PREWARMED = ("identity.person", "identity.person_resident_code_key")
"""What a lookup reads (`jukilib.register.store._CURRENT_COLUMNS`), in the order it is loaded into the cache:
the indexes last, so that they stay when the file is larger than the cache."""


async def settle(owner_url: str) -> float:
    """After a load, what a running register has and a just-loaded one has not; returns the seconds it took.
    VACUUM (ANALYZE) of the identity schema's tables, as autovacuum does within minutes of a load (hint bits
    set, the visibility map that allows index-only scans), then what lookups read loaded into PostgreSQL's
    cache (`pg_prewarm`), where hours of lookups would have put it: a load writes through a small ring of
    buffers and leaves the cache empty, and at 20,000 persons the warm-up alone fills it. So every size is
    measured warm."""
    import asyncpg

    started = time.perf_counter()
    connection = await asyncpg.connect(owner_url)
    try:
        # Every table the load filled, not only what lookups read: autovacuum would otherwise work through the
        # others (person_key, individual_number, …) while the ingest is measured, on PostgreSQL's CPU.
        tables = await connection.fetch("SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables "
                                        "WHERE schemaname = 'identity' AND tableowner = current_user")
        await connection.execute(f"VACUUM (ANALYZE) {', '.join(row['name'] for row in tables)}")
        for relation in PREWARMED:
            await connection.execute("SELECT prewarm.pg_prewarm($1::regclass)", relation)
        # The load's and the vacuum's dirty pages written now, not by a checkpoint spread over the phases
        # measured next (its CPU counts as PostgreSQL's, and every page first changed after it is written
        # whole into the WAL).
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    return round(time.perf_counter() - started, 2)


async def sample_codes(owner_url: str, count: int, seed: int) -> list[str]:
    """`count` 住民票コード of the identity file drawn at random (seeded), in random order; all of them when it
    holds no more. The rows are sampled in the server (TABLESAMPLE BERNOULLI: each row kept with the
    same probability, a little above count / persons), so that only the sample reaches this process
    whatever the size of the file."""
    import asyncpg

    connection = await asyncpg.connect(owner_url)
    try:
        persons = int(await connection.fetchval("SELECT count(*) FROM identity.person"))
        percent = min(100.0, 120.0 * count / max(persons, 1) + 0.01)
        while True:
            rows = await connection.fetch(
                "SELECT resident_code FROM identity.person TABLESAMPLE BERNOULLI ($1) REPEATABLE ($2)",
                percent, seed)
            if len(rows) >= min(count, persons) or percent >= 100.0:
                break
            percent = min(100.0, percent * 2)  # an unlucky draw: sample again, wider
    finally:
        await connection.close()
    codes = sorted(row["resident_code"] for row in rows)  # independent of the rows' order on disk
    random.Random(seed).shuffle(codes)
    return codes[:count]


def run_draws(args: argparse.Namespace) -> int:
    """Codes the run asks for on every path (single lookups of both paths and batches, warm-ups included)."""
    rounds = len(_shares(args.lookups, args.rounds))
    draws: int = run_volume(args) + args.lookups + args.warm_up * rounds
    return draws


class _Codes:
    """The codes the calls ask, in turn: each call the next code of the run's sample (from the first again
    when the run asks more codes than the file holds), so that every call asks another resident as long
    as the file has one not asked yet."""

    def __init__(self, codes: list[str]) -> None:
        if not codes:
            raise ValueError("the identity file holds no resident to look up")
        self._codes = codes
        self._next = 0

    def take(self, count: int) -> list[str]:
        taken = [self._codes[(self._next + index) % len(self._codes)] for index in range(count)]
        self._next = (self._next + count) % len(self._codes)
        return taken

    def batches(self, calls: int, size: int) -> tuple[list[str], int]:
        """The codes of `calls` batches of `size` codes (fewer when the file holds fewer: codes within a batch
        differ), one after the other, and the size of each."""
        size = min(size, len(self._codes))
        return self.take(calls * size), size


def run_volume(args: argparse.Namespace) -> int:
    """Records the run asks for through the gateway (single lookups and batches, warm-ups included)."""
    rounds = max(1, min(args.rounds, args.lookups))
    volume: int = args.lookups + args.warm_up * rounds + (args.batch_calls + BATCH_WARM_UP) * args.batch_size
    return volume


def bench_catalogue(args: argparse.Namespace, home: Path) -> Path:
    """A copy of the shipped catalogue whose `--purpose` allows the run's volume (per call: a batch; per day,
    per organisation and per operator: `--volume`), checked by loading it like the gateway does."""
    from juki_services.gateway.policy import DEFAULT_CATALOGUE, load_catalogue
    from jukilib.domain.municipalities import gunma_municipalities

    volume = args.volume if args.volume is not None else run_volume(args)
    caps = {"max_records_per_call": max(args.batch_size, 1), "max_records_per_day": volume,
            "max_records_per_operator_per_day": volume}
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    marker = f'[[purposes]]\ncode = "{args.purpose}"\n'
    start = text.find(marker)
    if start < 0:
        raise ValueError(f"purpose {args.purpose} is not in the shipped catalogue")
    end = text.find("[[purposes]]", start + len(marker))
    end = len(text) if end < 0 else end
    block = [line for line in text[start:end].splitlines() if line.split("=")[0].strip() not in caps]
    raised = "\n".join([*block[:2], *(f"{key} = {value}" for key, value in caps.items()), *block[2:]])
    path = home / "bench-purposes.toml"
    path.write_text(text[:start] + raised + "\n\n" + text[end:], encoding="utf-8")
    load_catalogue(path, gunma_municipalities())  # raises CatalogueError naming the problem
    return path


def _environments(args: argparse.Namespace, home: Path, pki: Any, databases: dict[str, Any]
                  ) -> dict[str, dict[str, str]]:
    """The JUKI_* variables of identity and of the gateway, as `juki up` sets them, plus the benchmark's
    own: no relay workers, `--pool` connections, the gateway's rate limits at `--rate`, the purpose's volume
    caps raised in a catalogue copy (`bench_catalogue`), and traces sampled as OTEL_TRACES_SAMPLER says
    (default off, as when tracing is not set up)."""
    from jukitools.suite import child_environment, free_port

    ports = {"identity": free_port(), "gateway": free_port(), "annex": 1, "disclosure": 1, "agency": 1}
    environments = {}
    for service in ("identity", "gateway"):
        environment = child_environment(service, pki, databases[service], ports, home, metrics_port=free_port())
        environment.update({
            "JUKI_REFLECTION": "false", "JUKI_RELAY_WORKERS": "0", "JUKI_DB_POOL_MAX": str(args.pool),
            "JUKI_RATE_ORGANIZATION_PER_SECOND": str(args.rate), "JUKI_RATE_OPERATOR_PER_SECOND": str(args.rate),
            "JUKI_SHUTDOWN_GRACE": "1", "JUKI_LOG_LEVEL": "warning",
            "OTEL_TRACES_SAMPLER": os.environ.get("OTEL_TRACES_SAMPLER", "always_off"),
        })
        environments[service] = environment
    # No disclosure service runs here, so no usage-suspension case can exist: the gateway decides on its empty
    # list (the cost of the production path with no suspension) instead of refusing for want of reading it.
    environments["gateway"]["JUKI_USAGE_SUSPENSION_FAIL_CLOSED"] = "false"
    environments["gateway"]["JUKI_POLICY_FILE"] = str(bench_catalogue(args, home))
    return environments


async def serve_and_measure(args: argparse.Namespace, home: Path, databases: dict[str, Any], codes: list[str]
                            ) -> dict[str, Any]:
    """The three phases against the register of `databases` as loaded, asking the codes of `codes` (a random
    sample of its residents, `sample_codes`): identity and the gateway started for them and stopped after."""
    from jukilib.devcerts import ensure_dev_pki
    from jukilib.operator_credential import issue, load_signing_key
    from jukitools.suite import ensure_operator_auth_key, register_demo_operators

    pki = await asyncio.to_thread(ensure_dev_pki, home / "pki", servers=("identity", "gateway"),
                                  clients={ORGANIZATION: ORGANIZATION})
    await register_demo_operators(databases["gateway"].url)
    credential = issue(load_signing_key(ensure_operator_auth_key(home)), OPERATOR, ORGANIZATION,
                       frozenset({"provision_clerk"}))
    probe = TlsConfig(cert=pki.servers["gateway"].cert, key=pki.servers["gateway"].key, ca=pki.ca_cert)
    environments = _environments(args, home, pki, databases)
    async with benchkit.service_processes(environments, home / "logs", probe) as services:
        client, server_pair = pki.clients[ORGANIZATION], pki.servers["gateway"]
        spec = _ClientSpec(
            phase="", gateway=services["gateway"].target, identity=services["identity"].target,
            ca=str(pki.ca_cert), client_cert=str(client.cert), client_key=str(client.key),
            gateway_cert=str(server_pair.cert), gateway_key=str(server_pair.key), purpose=args.purpose,
            fields=_purpose_fields(args.purpose),
            credential=credential, codes=[], lookups=args.lookups, warm_up=args.warm_up,
            concurrency=args.concurrency, batch_calls=args.batch_calls, batch_size=args.batch_size,
            batch_concurrency=args.batch_concurrency)
        cpu = benchkit.Cpu(home / "pgdata", {name: child.process.pid for name, child in services.items()})
        figures: dict[str, Any] = {}
        asked = _Codes(codes)
        wanted = args.phases.split(",")
        rounds: dict[str, list[dict[str, Any]]] = {phase: [] for phase in ("direct", "gateway") if phase in wanted}
        for share in _shares(args.lookups, args.rounds):
            for phase, done in rounds.items():  # each round asks the next codes of the sample
                phase_codes = asked.take(args.warm_up + share)
                done.append(await _phase(phase, replace(spec, phase=phase, lookups=share, codes=phase_codes), cpu))
        figures.update({phase: _combined(done) for phase, done in rounds.items()})
        if "batch" in wanted:
            batch_codes, size = asked.batches(BATCH_WARM_UP + args.batch_calls, args.batch_size)
            figures["batch"] = await _phase("batch", replace(spec, phase="batch", codes=batch_codes, batch_size=size),
                                            cpu)
        figures["operation_log_rows"], figures["operation_log_commits"] = await _count_log(databases["gateway"].url)
    return figures


def _purpose_fields(code: str) -> list[str] | None:
    """The field mask the gateway forwards for purpose `code` of the shipped catalogue."""
    from juki_services.gateway.policy import DEFAULT_CATALOGUE, load_catalogue
    from jukilib.domain.municipalities import gunma_municipalities

    purpose = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities()).purposes[code]
    return None if purpose.all_fields else list(purpose.fields)


def _shares(total: int, rounds: int) -> list[int]:
    """`total` calls in `rounds` near-equal shares (fewer rounds than calls)."""
    rounds = max(1, min(rounds, total))
    return [total // rounds + (1 if index < total % rounds else 0) for index in range(rounds)]


def _combined(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One path's figures over its rounds: calls per second of all its calls, percentiles of all its
    latencies, CPU per call weighted by the calls of each round."""
    calls = sum(r["calls"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    cpu: dict[str, float] = {}
    for r in rounds:
        for key, value in r["cpu_us"].items():
            cpu[key] = cpu.get(key, 0.0) + value * r["calls"] / calls
    return {"per_second": calls / seconds, "seconds": round(seconds, 2), "errors": sum(r["errors"] for r in rounds),
            "latency_ms": benchkit.latency([x for r in rounds for x in r["samples"]]),
            "cpu_us": {key: round(value, 1) for key, value in cpu.items()}, "rounds": len(rounds)}


async def _phase(phase: str, spec: _ClientSpec, cpu: benchkit.Cpu) -> dict[str, Any]:
    warm, count = (BATCH_WARM_UP, spec.batch_calls) if phase == "batch" else (spec.warm_up, spec.lookups)
    started = cpu.start()
    result = await _client_process(spec)
    # The services' CPU is read around the whole child run (warm-up included, hence divided by warm-up +
    # measured calls); the child reads its own over the measured part.
    result["cpu_us"] = cpu.per_notification(started, warm + count, "bench")
    result["cpu_us"]["services"] = round(result["cpu_us"].get("identity", 0) + result["cpu_us"].get("gateway", 0), 1)
    result["cpu_us"]["client"] = round(result.pop("client_cpu") / count * 1e6, 1)
    result["calls"] = count
    return result


async def _count_log(url: str) -> tuple[int, int]:
    """Operation-log rows of the benchmark's caller, and the transactions that wrote them (each group
    commit of the log writer is one transaction: rows / commits is the mean batch)."""
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT xmin::text) AS commits FROM operation_log"
            " WHERE organization = $1", ORGANIZATION)
    finally:
        await connection.close()
    assert row is not None  # an aggregate always answers one row
    return int(row["rows"]), int(row["commits"])


_NOT_RUN: dict[str, Any] = {"per_second": 0.0, "seconds": None, "errors": 0, "latency_ms": {}, "cpu_us": {}}


def lookup_result(args: argparse.Namespace, figures: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of a run from the figures of `serve_and_measure` with `persons` and `load_seconds`."""
    direct, gateway, batch = (figures.get(phase, _NOT_RUN) for phase in PHASES)
    # The gateway and batch phases go through the gateway: one log row per call, warm-up included.
    expected_log = ((args.warm_up * gateway.get("rounds", 0) + args.lookups if "gateway" in figures else 0)
                    + (BATCH_WARM_UP + args.batch_calls if "batch" in figures else 0))
    return {
        "gateway_per_second": round(gateway["per_second"]) if "gateway" in figures else None,
        "direct_per_second": round(direct["per_second"]) if "direct" in figures else None,
        "ratio": round(gateway["per_second"] / direct["per_second"], 3) if direct["per_second"] else None,
        "gateway_p99_ms": gateway["latency_ms"].get("p99"),
        "batch_records_per_second": round(batch["per_second"] * args.batch_size) if "batch" in figures else None,
        "latency_ms": {"direct": direct["latency_ms"], "gateway": gateway["latency_ms"],
                       "batch": batch["latency_ms"]},
        "seconds": {"direct": direct["seconds"], "gateway": gateway["seconds"], "batch": batch["seconds"],
                    "load": figures["load_seconds"]},
        "cpu_us_per_call": {"direct": direct["cpu_us"], "gateway": gateway["cpu_us"], "batch": batch["cpu_us"]},
        "errors": direct["errors"] + gateway["errors"] + batch["errors"],
        "lookups": args.lookups,
        "rounds": direct.get("rounds") or gateway.get("rounds"),
        "batch_calls": args.batch_calls,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "batch_concurrency": args.batch_concurrency,
        "warm_up_calls": {"single": args.warm_up, "batch": BATCH_WARM_UP},
        "persons": figures["persons"],
        "operation_log_rows": figures["operation_log_rows"],
        "expected_operation_log_rows": expected_log,
        "operation_log_commits": figures["operation_log_commits"],
        "purpose": args.purpose,
        "purpose_volume_cap_per_day": args.volume if args.volume is not None else run_volume(args),
        "pool_max": args.pool,
        "gateway_rate_limit_per_second": args.rate,
        "services": "identity and gateway each in its own process (`juki serve`); annex, disclosure, agency "
                    "not started",
        "client": "a child process per phase, one channel",
        "traces_sampler": os.environ.get("OTEL_TRACES_SAMPLER", "always_off"),
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


# --- the client --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ClientSpec:
    """What a client process needs (JSON on its stdin)."""

    phase: str
    gateway: str
    identity: str
    ca: str
    client_cert: str
    client_key: str
    gateway_cert: str
    gateway_key: str
    purpose: str
    fields: list[str] | None
    """The purpose's field mask as the gateway forwards it (None: every field)."""
    credential: str
    codes: list[str]
    """The codes asked, in order, warm-up first (for a batch phase, `batch_size` per call)."""
    lookups: int
    warm_up: int
    concurrency: int
    batch_calls: int
    batch_size: int
    batch_concurrency: int


async def _client_process(spec: _ClientSpec) -> dict[str, Any]:
    """Run one phase's client in a child process (`python -m jukitools.bench_lookup`, spec on stdin)."""
    return await benchkit.child_process("jukitools.bench_lookup", asdict(spec), spec.phase)


def _client_main() -> int:
    """The client process: the spec as JSON on stdin, the result as JSON on stdout."""
    spec = _ClientSpec(**json.load(sys.stdin))
    print(json.dumps(runner.run(_client_run(spec))))
    return 0


async def _client_run(spec: _ClientSpec) -> dict[str, Any]:
    """Warm up, then measure one phase; `client_cpu` is this process's CPU time over the measured part."""
    from juki.identity.v1 import identity_pb2, identity_pb2_grpc
    from jukilib import caller
    from jukitools.client import purpose_metadata

    if spec.phase == "direct":
        target = spec.identity
        tls = TlsConfig(cert=Path(spec.gateway_cert), key=Path(spec.gateway_key), ca=Path(spec.ca))
        metadata = caller.Caller(organization=ORGANIZATION, operator=OPERATOR, purpose=spec.purpose,
                                 fields=None if spec.fields is None else tuple(spec.fields)).to_metadata()
    else:
        target = spec.gateway
        tls = TlsConfig(cert=Path(spec.client_cert), key=Path(spec.client_key), ca=Path(spec.ca))
        metadata = purpose_metadata(spec.purpose, credential=spec.credential)
    number_hidden = spec.phase != "direct"  # the default purpose's mask leaves 個人番号 out
    async with secure_channel(target, tls) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)

        async def lookup(code: str) -> int:
            answer = await stub.LookupResident(identity_pb2.LookupResidentRequest(resident_code=code),
                                               metadata=metadata, timeout=60)
            wrong = answer.record.resident_code != code or (number_hidden and answer.record.individual_number)
            return 1 if wrong else 0

        async def batch(codes: list[str]) -> int:
            answer = await stub.BatchLookupResidents(identity_pb2.BatchLookupResidentsRequest(resident_codes=codes),
                                                     metadata=metadata, timeout=120)
            if len(answer.results) != len(codes):
                return 1
            return int(any(not result.HasField("resident") or result.resident.record.resident_code != code
                           for result, code in zip(answer.results, codes, strict=True)))

        if spec.phase == "batch":
            batches = [spec.codes[start:start + spec.batch_size]
                       for start in range(0, len(spec.codes), spec.batch_size)]
            await benchkit.timed(batches[:BATCH_WARM_UP], spec.batch_concurrency, batch)
            started = time.process_time()
            result = await benchkit.timed(batches[BATCH_WARM_UP:], spec.batch_concurrency, batch)
        else:
            await benchkit.timed(spec.codes[:spec.warm_up], spec.concurrency, lookup)
            started = time.process_time()
            result = await benchkit.timed(spec.codes[spec.warm_up:], spec.concurrency, lookup, keep_samples=True)
        result["client_cpu"] = time.process_time() - started
    return result


if __name__ == "__main__":
    sys.exit(_client_main())
