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
from jukitools.local import HEALTH_CALLER, LocalSuite, home_of
from jukitools.runner import Unreachable, connected, run

logger = logging.getLogger("juki")
REGISTERS = ("identity", "annex")


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    return run(coroutine)


# --- juki serve <service> ------------------------------------------------------------------------

async def _serve(service: str) -> int:
    from jukilib.grpc.server import GrpcService, serve_forever
    from jukilib.jsonlog import log_loop_exception, setup_logging
    from jukilib.telemetry import setup_metrics, setup_tracing, shutdown_tracing

    # Each service reads its own settings (services/<service>/config.py), failing naming the variable.
    config = importlib.import_module(f"juki_services.{service}.config").load()
    setup_logging(service, config.common.log_level, native=True)  # every line of the service's log is JSON
    asyncio.get_running_loop().set_exception_handler(log_loop_exception)
    setup_tracing(service, config.common.home)
    # The Prometheus endpoint (JUKI_METRICS_ADDRESS, e.g. 127.0.0.1:9464; unset: none).
    setup_metrics(service, config.common.home, address=Env().text("JUKI_METRICS_ADDRESS", ""))
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

async def _up(home: Path, residents: int, annex: int, *, standby: bool = False, synchronous: bool = False) -> int:
    from jukitools.demo.load import load_demo_residents
    from jukitools.suite import Suite, dev_pki, prepare_database, register_demo_operators, role_passwords

    suite = Suite(home, standby=standby, synchronous=synchronous)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print("juki: creating development certificates ...", flush=True)
        pki = dev_pki(home)
        print("juki: starting PostgreSQL" + (" and its standby" if standby else "") + " and applying migrations ...",
              flush=True)
        admin_url = await asyncio.to_thread(suite.start_database)
        urls = await prepare_database(admin_url, role_passwords(home))
        await register_demo_operators(urls["gateway"].url)
        ports = suite.start_children(pki, urls)
        print("juki: waiting for every service to be SERVING ...", flush=True)
        await suite.wait_serving(pki, timeout=60)
        suite.start_supervising(pki)
        suite.start_sealing()
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
        await suite.stop_sealing()
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
    from jukitools.maintenance_log import logged_action

    if args.action == "retry" and not args.register:
        raise UsageError("outbox retry needs --register identity or --register annex")
    suite = LocalSuite.of(args.home)
    for label, url, schema in _outbox_targets(suite, args.register):
        async with connected(url, schema) as connection:
            if args.action == "retry":  # a maintenance action: in the operation log first (issue 19)
                async with logged_action(suite, "outbox-retry", register=args.register,
                                         ids=list(args.ids)) as outcome:
                    count = await retry_dead(connection, list(args.ids) or None)
                    outcome.detail["queued_again"] = count
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
    from jukitools import (
        bench_ingest,
        bench_lookup,
        bench_reconcile,
        bench_restore,
        bench_sizes,
        calls,
        cli_audit,
        cli_backup,
        cli_bulk,
        cli_cases,
        cli_operators,
        cli_oversight,
        cli_reconcile,
        cli_retention,
        cli_standby,
        cli_status,
    )

    parser = Parser(prog="juki", description="juki: Gunma's Juki-net prefectural server")
    parser.add_argument("--home", default=None,
                        help="the local suite's directory (default: JUKI_HOME, else .juki of the current directory)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the whole suite on an embedded PostgreSQL with demo data")
    up.add_argument("--residents", type=int, default=300, help="synthetic residents notified as demo data")
    up.add_argument("--annex-residents", type=int, default=60,
                    help="of them, residents with an annex record (some of them 国外転出者)")
    up.add_argument("--standby", action="store_true",
                    help="also run a streaming-replication hot standby of the embedded PostgreSQL "
                         "(.juki/pgdata-standby)")
    up.add_argument("--synchronous", action="store_true",
                    help="with --standby: a commit waits until the standby has it (synchronous_standby_names)")
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
    cli_audit.add_parser(commands)
    cli_oversight.add_parsers(commands)
    cli_retention.add_parser(commands)
    cli_backup.add_parsers(commands)
    cli_reconcile.add_parser(commands)
    cli_standby.add_parsers(commands)
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
    cli_status.add_parser(commands)
    cli_bulk.add_parsers(commands)
    for add, bench_run in ((bench_ingest.add_bench_ingest, bench_ingest.run),
                           (bench_lookup.add_bench_lookup, bench_lookup.run),
                           (bench_restore.add_bench_restore, bench_restore.run),
                           (bench_reconcile.add_bench_reconcile, bench_reconcile.run),
                           (bench_sizes.add_bench_sizes, bench_sizes.run)):
        add(cli_bulk.bench_group(commands)).set_defaults(bench_run=bench_run)
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
    from juki_services.gateway.search_log import ensure_audit_hash_key
    from jukitools.local import AUDIT_HASH_KEY
    from jukitools.suite import dev_pki, ensure_keyring, ensure_operator_auth_key

    home = home_of(args.home)
    pki = dev_pki(home, force=args.force)
    keyring = ensure_keyring(home)
    log_key = ensure_signing_key(home / "operation-log.key")
    audit_key = ensure_audit_hash_key(home / AUDIT_HASH_KEY)
    operator_key = ensure_operator_auth_key(home)
    print(f"development certificates in {pki.ca_cert.parent}; keyring for 個人番号 at rest: {keyring};"
          f" operation-log signing key: {log_key}; audit hash key: {audit_key};"
          f" operator-authentication key: {operator_key}"
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
    if args.synchronous and not args.standby:
        raise UsageError("--synchronous needs --standby")
    return _run(_up(home, args.residents, args.annex_residents, standby=args.standby, synchronous=args.synchronous))


def _retention(args: argparse.Namespace) -> int:
    from jukitools import cli_retention

    return _run(cli_retention.run(args, LocalSuite.of(args.home).running_home()))


def _audit(args: argparse.Namespace) -> int:
    from jukitools import cli_audit

    return _run(cli_audit.run(args))


def _backup() -> Any:
    from jukitools import cli_backup

    return cli_backup


def _reconcile() -> Any:
    from jukitools import cli_reconcile

    return cli_reconcile


def _standby() -> Any:
    from jukitools import cli_standby

    return cli_standby


def _oversight() -> Any:
    from jukitools import cli_oversight

    return cli_oversight


def _status(args: argparse.Namespace) -> int:
    from jukitools import cli_status

    try:
        return _run(cli_status.run(args, LocalSuite.of(args.home)))
    except KeyboardInterrupt:  # the end of --watch
        return 0


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
    "backup": lambda args: _run(_backup().backup_command(args)),
    "restore": lambda args: _run(_backup().restore_command(args)),
    "reconcile": lambda args: _run(_reconcile().reconcile_command(args)),
    "failover": lambda args: _run(_standby().failover_command(args)),
    "rejoin": lambda args: _run(_standby().rejoin_command(args)),
    "audit": _audit,
    "incident": lambda args: _run(_oversight().incident_command(args)),
    "pia": lambda args: _run(_oversight().pia_command(args)),
    "operators": _operators,
    "purposes": cli_purposes.command,
    "status": _status,
}


def _dispatch(args: argparse.Namespace) -> int:
    from jukitools import cli_bulk

    return {**COMMANDS, **cli_bulk.COMMANDS}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
