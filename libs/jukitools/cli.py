"""The `juki` command: run the suite, run one service, prepare databases and certificates, call it.

Commands find their settings through `jukitools.local` (the environment, else the suite in `--home`);
a user's mistake is a `UsageError`, printed here as one line with exit 2, a server that does not answer
one line with exit 1: never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from jukilib.config import SERVICES, ConfigError, Env, TlsConfig, UsageError
from jukitools import cli_purposes
from jukitools.clihelp import Parser
from jukitools.local import HEALTH_CALLER, OPERATION_LOG_PUBLIC_KEY, LocalSuite, home_of
from jukitools.runner import Unreachable, connected, run

logger = logging.getLogger("juki")
REGISTERS = ("identity", "annex")


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    return run(coroutine)


# --- juki serve <service> ------------------------------------------------------------------------

async def _serve(service: str) -> int:
    from jukilib.grpc.server import GrpcService, serve_forever
    from jukilib.jsonlog import setup_logging
    from jukilib.telemetry import setup_metrics, setup_tracing, shutdown_tracing

    # Each service reads its own settings (services/<service>/config.py), failing naming the variable.
    config = importlib.import_module(f"juki_services.{service}.config").load()
    setup_logging(service, config.common.log_level)
    setup_tracing(service, config.common.home)
    setup_metrics(service, config.common.home)
    app = importlib.import_module(f"juki_services.{service}.app")
    try:
        return await serve_forever(GrpcService(config, app.migrations(), app.build))
    finally:
        shutdown_tracing()


# --- juki migrate / db-bootstrap -----------------------------------------------------------------

async def _migrate(service: str, home: str | None) -> int:
    from jukilib.db import migrations as migrations_mod
    from jukilib.db.bootstrap import runtime_role
    from jukitools.suite import service_migrations

    url = LocalSuite.of(home).owner_url(service)
    async with connected(url) as connection:
        applied = await migrations_mod.apply(connection, service, service_migrations(service), runtime_role(service))
    print(f"{service}: {len(applied)} migration(s) applied: {', '.join(applied) or '-'}")
    return 0


async def _db_bootstrap() -> int:
    from jukilib.db.bootstrap import bootstrap, owner_role, runtime_role

    env = Env()
    passwords = {}
    for service in SERVICES:
        passwords[runtime_role(service)] = env.text(f"JUKI_{service.upper()}_DB_PASSWORD")
        passwords[owner_role(service)] = env.text(f"JUKI_{service.upper()}_OWNER_DB_PASSWORD")
    await bootstrap(env.text("JUKI_ADMIN_DATABASE_URL"), SERVICES, passwords,
                    env.text("JUKI_DATABASE_NAME", "juki"))
    print("database, schemas and roles ready")
    return 0


# --- juki up -------------------------------------------------------------------------------------

async def _up(home: Path, residents: int, annex: int) -> int:
    from jukitools.demo.load import load_demo_residents
    from jukitools.suite import Suite, dev_pki, prepare_database, register_demo_operators, role_passwords

    suite = Suite(home)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print("juki: creating development certificates ...", flush=True)
        pki = dev_pki(home)
        print("juki: starting PostgreSQL and applying migrations ...", flush=True)
        admin_url = await asyncio.to_thread(suite.start_database)
        urls = await prepare_database(admin_url, role_passwords(home))
        await register_demo_operators(urls["gateway"].url)
        ports = suite.start_children(pki, urls)
        print("juki: waiting for every service to be SERVING ...", flush=True)
        await suite.wait_serving(pki, timeout=60)
        suite.start_supervising(pki)
        endpoints = suite.endpoints(pki, ports)
        print(f"juki: loading {residents} synthetic residents through the gateway ...", flush=True)
        await load_demo_residents(endpoints, residents, annex)
        # Last: a command that finds endpoints.json finds the suite ready, demo data included.
        path = suite.write_endpoints(endpoints, urls)
        _print_welcome(path, endpoints.gateway)
        await stop.wait()
        print("\njuki: stopping ...", flush=True)
        return 0
    finally:
        await suite.stop_supervising()  # before the children are stopped: no restart races the stop
        await asyncio.to_thread(suite.stop)
        print("juki: stopped", flush=True)


def _print_welcome(path: Path, gateway: str) -> None:
    print(f"""
juki is up. Gateway: {gateway} (mTLS; endpoints and certificates in {path})

Human work needs an operator credential: log in first (stands for the palm-vein log-in), e.g.
  .venv/bin/juki operators login kyoiku-0001     # demo operators: kyoiku-0001 kikaku-0001 kaiji-0001
                                                 # kansa-0001 (auditor) admin-0001 (administrator)
Try, in another terminal:
  .venv/bin/juki call lookup --as kyoiku-iinkai --operator kyoiku-0001 --demo-resident 0 \\
      --purpose EDU-SCHOLARSHIP-30-15-2-2
  .venv/bin/juki call notify --as maebashi-cs                # a system: no operator
  .venv/bin/juki call lookup --as kyoiku-iinkai --operator kyoiku-0001   # no purpose: PERMISSION_DENIED
  .venv/bin/juki operators login kansa-0001 && .venv/bin/juki call oplog --as auditor --operator kansa-0001
  .venv/bin/juki operators login admin-0001 && .venv/bin/juki operators list --operator admin-0001
Traces: {path.parent / 'traces'}   Logs: {path.parent / 'logs'}
Press Ctrl-C to stop everything.""", flush=True)


# --- juki keys -----------------------------------------------------------------------------------

async def _keys(args: argparse.Namespace) -> int:
    """`juki keys new` / `juki keys rotate [--hmac]` (jukitools.cli_keys)."""
    from jukitools import cli_keys

    return await cli_keys.run(args.home, args.action, hmac=args.hmac)


# --- juki outbox ---------------------------------------------------------------------------------

async def _outbox(args: argparse.Namespace) -> int:
    """`juki outbox list [--register R]` (both registers without it) / `juki outbox retry --register R [ID …]`,
    as the register's runtime role: the relay's own grants are all this needs."""

    from jukilib.register.relay import dead_letters, outbox_backlog, retry_dead

    if args.action == "retry" and not args.register:
        raise UsageError("outbox retry needs --register identity or --register annex")
    for label, url, schema in _outbox_targets(LocalSuite.of(args.home), args.register):
        async with connected(url, schema) as connection:
            if args.action == "retry":
                count = await retry_dead(connection, list(args.ids) or None)
                print(f"{label}: {count} dead-lettered change(s) queued again")
                continue
            backlog, age, dead = await outbox_backlog(connection)
            print(f"{label}: undelivered: {backlog}  oldest: {age:.1f}s  dead: {dead}")
            for row in await dead_letters(connection):
                since = f"{row['created_at']:%Y-%m-%d %H:%M}"
                print(f"  dead {row['id']}: person {row['person_id']} version {row['version']}"
                      f" attempts {row['attempts']} last error {row['last_error']} since {since}")
    return 0


def _outbox_targets(suite: LocalSuite, register: str | None) -> list[tuple[str, str, str | None]]:
    """(label, URL, schema) of each register asked for. An explicit JUKI_DATABASE_URL is one register's
    role: alone, it is that register (the role's own search path); the suite's cover both."""
    if register:
        return [(register, suite.database_url(register), register)]
    if suite.has_explicit("JUKI_DATABASE_URL"):
        return [("JUKI_DATABASE_URL", suite.database_url("identity"), None)]
    return [(name, suite.database_url(name), name) for name in REGISTERS]


# --- juki audit ----------------------------------------------------------------------------------

async def _audit(args: argparse.Namespace) -> int:
    """`juki audit verify`: exit 0 on an intact operation log, 1 naming the first bad sequence number. Both
    actions read as the gateway's runtime role; verify checks checkpoints with the log's public key."""

    from juki_services.gateway.chain import load_public_key, verify

    suite = LocalSuite.of(args.home)
    url = suite.database_url("gateway")
    if args.action == "report":
        return await _audit_report(url, args.days)
    public_key = load_public_key(suite.file("JUKI_OPERATION_LOG_PUBLIC_KEY", OPERATION_LOG_PUBLIC_KEY,
                                            args.public_key))
    async with connected(url, "gateway") as connection:
        verdict = await verify(connection, public_key)
    if verdict.ok:
        print(f"operation log intact: {verdict.records} record(s), {verdict.checkpoints} signed checkpoint(s)")
        return 0
    print(f"operation log broken at sequence {verdict.first_bad_sequence}: {verdict.problem}", file=sys.stderr)
    return 1


async def _audit_report(url: str, days: int) -> int:
    """`juki audit report`: the misuse review of the last `days` days, printable; every time in Japan time
    (JST), calls of systems (no operator) apart from the operators' work."""
    import datetime as dt

    from google.protobuf.timestamp_pb2 import Timestamp

    from juki_services.gateway.oplog import Review, misuse_report
    from jukilib.domain.dates import JAPAN

    japan = JAPAN

    def jst(time: dt.datetime | Timestamp, form: str = "%Y-%m-%d %H:%M") -> str:
        moment = time.ToDatetime(dt.UTC) if isinstance(time, Timestamp) else time
        return f"{moment.astimezone(japan):{form}} JST"

    end = dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=days)
    async with connected(url, "gateway") as connection:
        report = await misuse_report(connection, review := Review(start, end, 8, 19, 3, 10))
    print(f"Misuse review, {jst(start)} to {jst(end)}")
    print("\nBusiest operator-hours")
    for v in report.volumes[:20]:
        print(f"  {jst(v.hour, '%Y-%m-%d %H:00')}  {v.organization}/{v.operator}  "
              f"{v.calls} calls, {v.residents} residents")
    print(f"\nOff-hours calls of operators (before {review.office_start:02d}:00, from {review.office_end:02d}:00,"
          f" Saturdays and Sundays): {len(report.off_hours)}")
    for e in report.off_hours[:20]:
        print(f"  #{e.sequence} {jst(e.time)} {e.organization}/{e.operator} {e.method}")
    print(f"\nResidents looked up by many operators: {len(report.residents_of_interest)}")
    for r in report.residents_of_interest[:20]:
        print(f"  {r.resident_code}: {r.operators} operators, {r.calls} calls")
    print(f"\nSearches with many candidates: {len(report.broad_searches)}")
    for e in report.broad_searches[:20]:
        print(f"  #{e.sequence} {jst(e.time)} {e.organization}/{e.operator or '-'} {len(e.resident_codes)} candidates")
    print(f"\nDenied attempts: {len(report.denied)}")
    for e in report.denied[:20]:
        print(f"  #{e.sequence} {jst(e.time)} {e.organization}/{e.operator or '-'} {e.method} {e.reason}")
    system_calls = sum(s.calls for s in report.system_calls)
    print(f"\nCalls of systems (no operator; never volumes or off-hours use): {system_calls}")
    for s in report.system_calls[:20]:
        print(f"  {s.organization} {s.method}  {s.calls} calls, {s.residents} residents, "
              f"{jst(s.first_time)} to {jst(s.last_time)}")
    return 0


# --- juki health ---------------------------------------------------------------------------------

async def _health(args: argparse.Namespace) -> int:
    from jukitools.client import health_status

    target, tls = _health_settings(args)
    status = await health_status(target, tls, args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def _health_settings(args: argparse.Namespace) -> tuple[str, TlsConfig]:
    """What is given; what is not, from the running suite: its gateway, the administrators' terminal's
    certificate."""
    given = {"--tls-ca": args.tls_ca, "--cert": args.cert, "--key": args.key}
    for option, value in given.items():
        if value and not Path(value).is_file():
            raise UsageError(f"no such file: {value} ({option})")
    if args.target and all(given.values()):
        return args.target, TlsConfig(cert=Path(args.cert), key=Path(args.key), ca=Path(args.tls_ca))
    endpoints = LocalSuite.of(args.home).endpoints()
    sample = endpoints.tls_for(HEALTH_CALLER)
    return args.target or endpoints.gateway, TlsConfig(
        cert=Path(args.cert) if args.cert else sample.cert, key=Path(args.key) if args.key else sample.key,
        ca=Path(args.tls_ca) if args.tls_ca else sample.ca)


# --- argument parsing ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from jukitools import bench_ingest, bench_lookup, calls, cli_bulk, cli_cases, cli_operators, cli_retention

    parser = Parser(prog="juki", description="juki: Gunma's Juki-net prefectural server")
    parser.add_argument("--home", default=None,
                        help="the local suite's directory (default: JUKI_HOME, else .juki of the current directory)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the whole suite on an embedded PostgreSQL with demo data")
    up.add_argument("--residents", type=int, default=300, help="synthetic residents notified as demo data")
    up.add_argument("--annex-residents", type=int, default=60,
                    help="of them, residents with an annex record (some of them 国外転出者)")
    serve = commands.add_parser("serve", help="run one service (configured from JUKI_* variables)")
    serve.add_argument("service", choices=SERVICES, help="the service to run")
    migrate = commands.add_parser("migrate", help="apply a service's migrations (JUKI_MIGRATION_DATABASE_URL, "
                                                                    "else the local suite's owner role)")
    migrate.add_argument("service", choices=SERVICES, help="the service whose schema to migrate")
    commands.add_parser("db-bootstrap", help="create the database, schemas and roles (JUKI_ADMIN_DATABASE_URL)")
    certs = commands.add_parser("dev-certs", help="create development CA and certificates under .juki/pki")
    certs.add_argument("--force", action="store_true", help="issue everything again")
    health = commands.add_parser("health", help="exit 0 when a service reports SERVING (default: the local "
                                                "suite's gateway, as the administrators' terminal)")
    health.add_argument("--target", default="", help="host:port to ask (default: the local suite's gateway)")
    health.add_argument("--tls-ca", default="", help="CA certificate (PEM) (default: the local suite's CA)")
    health.add_argument("--cert", default="", help="client certificate (PEM) (default: the local suite's "
                                                   f"{HEALTH_CALLER} certificate)")
    health.add_argument("--key", default="", help="the client certificate's key (PEM) (default: as --cert)")
    health.add_argument("--service", default="", help="a service name of grpc.health.v1 (default: the server "
                                                       "as a whole)")
    outbox = commands.add_parser("outbox", help="the relay's outbox of a register (its runtime role: "
                                                "JUKI_DATABASE_URL, else the local suite's)")
    outbox.add_argument("action", choices=("list", "retry"), help="list: backlog, oldest age and dead letters; "
                        "retry: queue dead letters again")
    outbox.add_argument("--register", choices=REGISTERS, default=None,
                        help="list: default both registers; retry: required")
    outbox.add_argument("ids", nargs="*", type=int, help="outbox ids to retry (default: every dead one)")
    audit = commands.add_parser("audit", help="verify the operation log's hash chain and signed checkpoints")
    audit.add_argument("action", choices=("verify", "report"), help="verify: check the hash chain and the signed "
                       "checkpoints (exit 1 naming the first bad sequence); report: print the misuse review")
    audit.add_argument("--days", type=int, default=7, help="report: the period reviewed, in days up to now "
                                                            "(default: %(default)s)")
    audit.add_argument("--public-key", default="",
                       help="PEM (default: JUKI_OPERATION_LOG_PUBLIC_KEY, else .juki/operation-log.pub)")
    cli_retention.add_parser(commands)
    keys = commands.add_parser("keys", help="keys for what the suite seals at rest: 個人番号, refused "
                               "notifications, written notices (JUKI_KEYRING_FILE, else .juki/keyring.json)")
    keys.add_argument("action", choices=("new", "rotate"), help="new: add a data key and make it active; "
                      "rotate: re-encrypt every 個人番号, refused notification and written notice under the active "
                      "key, online, then retire the other data keys")
    keys.add_argument("--hmac", action="store_true", help="rotate: rotate the HMAC key of the 個人番号's lookup "
                      "hash instead (new key, re-hash every 個人番号 online, retire the old key); resumes if "
                      "interrupted")
    calls.add_call_parser(commands)
    cli_operators.add_parser(commands)
    cli_cases.add_parser(commands)
    cli_purposes.add_parser(commands)
    cli_bulk.add_parsers(commands)
    ingest = bench_ingest.add_bench_ingest(cli_bulk.bench_group(commands))
    ingest.set_defaults(bench_run=bench_ingest.run)
    lookup = bench_lookup.add_bench_lookup(cli_bulk.bench_group(commands))
    lookup.set_defaults(bench_run=bench_lookup.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; mistakes and unreachable servers end in one line on stderr (exit 2 and 1)."""
    import asyncpg

    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as error:
        print(f"juki: configuration error: {error}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"juki: {error}", file=sys.stderr)
        return 2
    except Unreachable as error:
        print(f"juki: {error}", file=sys.stderr)
        return 1
    except asyncpg.PostgresError as error:
        # PostgreSQL's messages may quote values: name the error only (a wrong role or database, mostly).
        print(f"juki: database error {type(error).__name__} (SQLSTATE {error.sqlstate}); is the database URL "
              "the right service's role?", file=sys.stderr)
        return 1


def _dev_certs(args: argparse.Namespace) -> int:
    from juki_services.gateway.chain import ensure_signing_key
    from jukitools.suite import dev_pki, ensure_keyring, ensure_operator_auth_key

    home = home_of(args.home)
    pki = dev_pki(home, force=args.force)
    keyring = ensure_keyring(home)
    log_key = ensure_signing_key(home / "operation-log.key")
    operator_key = ensure_operator_auth_key(home)
    print(f"development certificates in {pki.ca_cert.parent}; keyring for 個人番号 at rest: {keyring};"
          f" operation-log signing key: {log_key}; operator-authentication key: {operator_key}"
          f" (the gateway gets only {operator_key.with_suffix('.pub')})")
    return 0


def _call(args: argparse.Namespace) -> int:
    from jukitools import calls

    return _run(calls.run_call(args, LocalSuite.of(args.home).running_home()))


def _cases(args: argparse.Namespace) -> int:
    from jukitools import cli_cases

    return _run(cli_cases.run(args, LocalSuite.of(args.home).running_home()))


def _up_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    home = home_of(args.home)
    home.mkdir(parents=True, exist_ok=True)
    return _run(_up(home, args.residents, args.annex_residents))


def _retention(args: argparse.Namespace) -> int:
    from jukitools import cli_retention

    return _run(cli_retention.run(args, LocalSuite.of(args.home).running_home()))


def _operators(args: argparse.Namespace) -> int:
    from jukitools import cli_operators

    return cli_operators.command(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": lambda args: _run(_serve(args.service)),
    "up": _up_command,
    "migrate": lambda args: _run(_migrate(args.service, args.home)),
    "db-bootstrap": lambda args: _run(_db_bootstrap()),
    "dev-certs": _dev_certs,
    "health": lambda args: _run(_health(args)),
    "call": _call,
    "cases": _cases,
    "keys": lambda args: _run(_keys(args)),
    "outbox": lambda args: _run(_outbox(args)),
    "retention": _retention,
    "audit": lambda args: _run(_audit(args)),
    "operators": _operators,
    "purposes": cli_purposes.command,
}


def _dispatch(args: argparse.Namespace) -> int:
    from jukitools import cli_bulk

    return {**COMMANDS, **cli_bulk.COMMANDS}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
