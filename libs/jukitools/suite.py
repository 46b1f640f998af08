"""`juki up`: the whole suite on one machine, from nothing, with an SRE-readable lifecycle.

init   → development certificates, PostgreSQL (embedded unless JUKI_DATABASE_URL; with `--standby` a streaming
         hot standby beside it, see `jukitools.standby`), roles, schemas, migrations (applied here with each
         owner role; services run with their runtime roles);
start  → one child process per service on 127.0.0.1, each dying with `juki up` however it ends;
ready  → every health check SERVING, then supervised (a child that exits is started again with backoff,
         see `jukitools.suite_supervisor`), demo data loaded, then `.juki/databases.json` (the services'
         database URLs, 0600) and, last, `.juki/endpoints.json` written (see `jukitools.local`);
stop   → on Ctrl-C or SIGTERM: supervision ended first (no restart races the stop), SIGTERM to every
         child, SIGKILL after a grace period, database stopped (the primary, then the standby).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from juki_services.gateway.chain import ensure_signing_key
from juki_services.gateway.search_log import ensure_audit_hash_key
from jukilib.config import SERVICES, TlsConfig, UsageError
from jukilib.db import migrations as migrations_mod
from jukilib.db.bootstrap import ServiceDatabase, bootstrap, owner_role, runtime_role
from jukilib.db.embedded import EmbeddedPostgres
from jukilib.devcerts import DevPki, ensure_dev_pki
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.keyring import Keyring
from jukitools.backup import (
    BackupSettings,
    archiving_wanted,
    enable_archiving,
    seal_archived,
    seal_periodically,
)
from jukitools.client import Endpoints
from jukitools.local import AUDIT_HASH_KEY, CHECKPOINT_DIR, DATABASES, ENDPOINTS, write_private_json
from jukitools.standby import REPLICATION_ROLE
from jukitools.suite_supervisor import STATUS_FILE, Supervisor

logger = logging.getLogger(__name__)

SAMPLE_CALLERS = {
    "maebashi-cs": "102016",          # 前橋市 CS: submits 30-6 / 30-41 notifications
    "kyoiku-iinkai": "kyoiku-iinkai",  # 教育委員会: an executive organ receiving provisions (30-15 ②)
    "kikaku-bu": "kikaku-bu",          # a department of the governor (transfer, 30-15 ①; 30-44-6; ⑤)
    "disclosure-desk": "disclosure-desk",
    "auditor": "audit-office",
    "admin-office": "admin-office",   # the prefecture's Juki-net administrators (operator registry)
    "shichoson-ka": "shichoson-ka",   # 総務部市町村課: the governor's own Juki-net affairs (upkeep, 12-5, retention)
    "sre": "sre",                     # 24-hour monitoring (SREs): health, metrics, the operation log's status
}
# Demo operators registered by `juki up` (and the tests): sample caller → (operator id, roles). Operator
# ids are opaque staff ids, never names. Municipality CSs are systems and have none.
DEMO_OPERATORS = {
    "kyoiku-iinkai": ("kyoiku-0001", frozenset({"provision_clerk"})),
    "kikaku-bu": ("kikaku-0001", frozenset({"provision_clerk"})),
    "disclosure-desk": ("kaiji-0001", frozenset({"disclosure_clerk"})),
    "auditor": ("kansa-0001", frozenset({"auditor"})),
    "admin-office": ("admin-0001", frozenset({"administrator"})),
    "shichoson-ka": ("shichoson-0001", frozenset({"provision_clerk", "report_clerk", "retention_clerk"})),
    "sre": ("sre-0001", frozenset({"sre"})),
}
SEAL_INTERVAL = 5.0
"""Seconds between two sealings of the archived WAL (the server archives at least every archive_timeout)."""
START_ORDER = ("agency", "identity", "annex", "disclosure", "gateway")


def all_callers() -> dict[str, str]:
    """Sample callers plus one CS certificate per municipality of the prefecture (`cs-<code>`)."""
    callers = dict(SAMPLE_CALLERS)
    callers.update({f"cs-{m.code6}": m.code6 for m in gunma_municipalities()})
    return callers


def dev_pki(home: Path, force: bool = False) -> DevPki:
    return ensure_dev_pki(home / "pki", servers=SERVICES, clients=all_callers(), force=force)


def role_passwords(home: Path) -> dict[str, str]:
    """Per-role database passwords, generated once and kept in `.juki/db-credentials.json` (0600)."""
    path = home / "db-credentials.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    for service in SERVICES:
        for role in (runtime_role(service), owner_role(service)):
            stored.setdefault(role, secrets.token_urlsafe(24))
    stored.setdefault(REPLICATION_ROLE, secrets.token_urlsafe(24))  # the standby's (jukitools.standby)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2))
    return stored


def ensure_keyring(home: Path) -> Path:
    """The development keyring for 個人番号 at rest (`.juki/keyring.json`, 0600), created once."""
    path = home / "keyring.json"
    if not path.exists():
        Keyring.generate().save(path)
    return path


def ensure_operator_auth_key(home: Path) -> Path:
    """The development operator-authentication key (`.juki/operator-auth.key`, 0600; public key beside it
    as `operator-auth.pub`, which is all the gateway gets), created once."""
    return ensure_signing_key(home / "operator-auth.key")


async def register_demo_operators(url: str) -> list[str]:
    """Register the demo operators in the gateway's registry (directly: this is the bootstrap, before any
    administrator exists to use the admin API), each in the operation log; operators already there are left
    as they are."""
    from juki_services.gateway.maintenance import bootstrap_operator

    registered = []
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SET search_path TO gateway")
        for caller, (operator_id, roles) in DEMO_OPERATORS.items():
            if await bootstrap_operator(connection, operator_id, organization=SAMPLE_CALLERS[caller], roles=roles):
                registered.append(operator_id)
    finally:
        await connection.close()
    return registered


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port of 127.0.0.1 nothing listens on, for a child to listen on, never the same twice here. Drawn below
    the kernel's range of ephemeral ports: a port from that range, probed free, can be taken as the source port
    of any outgoing connection on the machine before the child binds it (CI saw a service exit at start-up,
    its metrics port taken so)."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    for _ in range(200):
        port = random.randrange(max(1024, low - 16384), low)
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:  # a crowded machine: any free port
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_migrations(service: str) -> list[migrations_mod.Migration]:
    app = importlib.import_module(f"juki_services.{service}.app")
    found: list[migrations_mod.Migration] = app.migrations()
    return found


async def prepare_database(admin_url: str, passwords: dict[str, str], database: str = "juki"
                           ) -> dict[str, ServiceDatabase]:
    """Roles, schemas and every service's migrations."""
    urls = await bootstrap(admin_url, SERVICES, passwords, database)
    for service, target in urls.items():
        connection = await asyncpg.connect(target.migration_url)
        try:
            await migrations_mod.apply(connection, service, service_migrations(service), target.runtime_role)
        finally:
            await connection.close()
    return urls


@dataclass
class Child:
    service: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(prctl: Callable[..., Any], parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux); exits now if it already has."""
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def spawn(service: str, env: dict[str, str], log_dir: Path) -> Child:
    """`juki serve <service>` as a child in its own session, configured by `env` (whose JUKI_LISTEN names
    its port), its output appended to `log_dir/<service>.log`. On Linux the child gets SIGTERM when the
    thread that spawned it ends (call this from the main thread), so a killed `juki up` leaves no service
    behind holding the database."""
    # Its own session keeps a terminal's Ctrl-C from reaching the children: `juki up` stops them in order.
    # PR_SET_PDEATHSIG covers what that cannot: `juki up` killed (kill -9, OOM) before it stops them. The
    # preexec_fn takes no lock another thread could hold at the fork (a resolved C call, getppid, _exit).
    die_with_parent = (functools.partial(_die_with_parent, ctypes.CDLL(None).prctl, os.getpid())
                       if sys.platform == "linux" else None)
    with (log_dir / f"{service}.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "jukitools.cli", "serve", service], env=env, stdout=log,
                                   stderr=log, start_new_session=True,
                                   preexec_fn=die_with_parent)  # noqa: PLW1509 (see above)
    return Child(service, int(env["JUKI_LISTEN"].rpartition(":")[2]), process)


async def wait_serving(children: list[Child], tls: TlsConfig, timeout: float, log_dir: Path) -> None:
    """Until every child's health check answers SERVING (asked with `tls`); raises when one exits or
    `timeout` seconds pass."""
    from jukitools.client import health_status

    deadline = time.monotonic() + timeout
    for child in children:
        while (status := await health_status(child.target, tls)) != "SERVING":
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.service} exited with code {child.process.returncode}; "
                                   f"see {log_dir / (child.service + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.service} not SERVING within {timeout:.0f}s (last: {status})")
            await asyncio.sleep(0.3)


def stop_children(children: list[Child], grace: float) -> None:
    """SIGTERM every child, SIGKILL what is left after `grace` seconds."""
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def _health_tls(pki: DevPki) -> TlsConfig:
    """How `juki up` asks its children's health: as the gateway, a peer every service admits."""
    return TlsConfig(cert=pki.servers["gateway"].cert, key=pki.servers["gateway"].key, ca=pki.ca_cert)


def child_environment(service: str, pki: DevPki, db: ServiceDatabase, ports: dict[str, int],
                      home: Path, *, metrics_port: int = 0) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
    pair = pki.servers[service]
    if metrics_port:  # Prometheus's /metrics, on the loopback only (endpoints.json, "metrics")
        env["JUKI_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
    env.update({
        "JUKI_LISTEN": f"127.0.0.1:{ports[service]}",
        "JUKI_DATABASE_URL": db.url,
        "JUKI_TLS_CERT": str(pair.cert), "JUKI_TLS_KEY": str(pair.key), "JUKI_TLS_CA": str(pki.ca_cert),
        "JUKI_HOME": str(home),
        "JUKI_REFLECTION": "true",
    })
    if service in ("identity", "annex", "disclosure"):
        # Development: one keyring for the registers and the disclosure service, so that one `juki keys`
        # command rotates every key of the suite. In production each service has its own keyring file.
        env["JUKI_KEYRING_FILE"] = str(ensure_keyring(home))
    if service == "gateway":
        env["JUKI_OPERATION_LOG_KEY"] = str(ensure_signing_key(home / "operation-log.key"))
        # Development: the journal of checkpoints beside the suite's files. In production another disk,
        # which the database's owner cannot write (README, "The operation log").
        env["JUKI_CHECKPOINT_DIR"] = str(home / CHECKPOINT_DIR)
        env["JUKI_AUDIT_HASH_KEY"] = str(ensure_audit_hash_key(home / AUDIT_HASH_KEY))
        env["JUKI_OPERATOR_AUTH_PUBLIC_KEY"] = str(ensure_operator_auth_key(home).with_suffix(".pub"))
    for name, port in ports.items():
        env[f"JUKI_{name.upper()}_TARGET"] = f"127.0.0.1:{port}"
    return env


class Suite:
    """The running suite: database, children, endpoints."""

    def __init__(self, home: Path, *, standby: bool = False, synchronous: bool = False) -> None:
        self.home = home.resolve()
        self.standby = standby
        self.synchronous = synchronous
        self.embedded: EmbeddedPostgres | None = None
        self.children: list[Child] = []
        self.environments: dict[str, dict[str, str]] = {}
        self.admin_url = ""
        self.supervisor: Supervisor | None = None
        self.archive: BackupSettings | None = None
        self._sealing: asyncio.Task[None] | None = None
        self.metrics_ports: dict[str, int] = {}

    def start_database(self) -> str:
        from jukitools import standby

        external = os.environ.get("JUKI_DATABASE_URL", "").strip()
        if external and self.standby:
            raise UsageError("--standby runs a standby of the embedded PostgreSQL; an external one (JUKI_DATABASE_URL) "
                             "has the prefecture's own replication: list both hosts in the URL (README)")
        if external:
            self.admin_url = external
        else:
            # A home that ever had a standby keeps its sockets outside the data directories (jukitools.standby).
            replicated = self.standby or standby.Replication.load(self.home) is not None
            self.embedded = EmbeddedPostgres(standby.primary_dir(self.home), socket_outside=replicated)
            self.admin_url = self.embedded.start()
            if archiving_wanted():
                self._archive_wal(self.embedded)
            if self.standby:
                self.admin_url = self._start_standby(self.embedded)
            else:
                standby.without_standby(self.home, self.embedded)
        return self.admin_url

    def _start_standby(self, embedded: EmbeddedPostgres) -> str:
        """The standby running and streaming (synchronous when asked); returns the superuser URL listing both
        servers, which every service URL derived from it lists too."""
        from jukitools import standby

        state = standby.Replication.load(self.home) or standby.Replication()
        state.synchronous = self.synchronous
        standby.prepare_primary(embedded)
        replica, how = standby.start_standby(self.home, state, role_passwords(self.home)[REPLICATION_ROLE])
        logger.info("standby streaming", extra={"data_dir": replica.name, "how": how})
        return standby.suite_url(self.admin_url, [standby.socket_dir(self.home / state.primary),
                                                  standby.socket_dir(replica)])

    def _archive_wal(self, embedded: EmbeddedPostgres) -> None:
        """Continuous WAL archiving into the backup directory (restarts the server the first time only:
        `archive_mode` takes effect at start)."""
        settings = BackupSettings.of(self.home)
        enable_archiving(embedded, settings)
        self.archive = settings

    def start_sealing(self, interval: float = SEAL_INTERVAL) -> None:
        """Seal the archived WAL into the backup directory every `interval` seconds while the suite runs."""
        settings = self.archive
        if settings is None:
            return

        self._sealing = asyncio.get_running_loop().create_task(seal_periodically(settings, interval))

    async def stop_sealing(self) -> None:
        if self._sealing is not None:
            self._sealing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sealing

    def start_children(self, pki: DevPki, urls: dict[str, ServiceDatabase]) -> dict[str, int]:
        ports = {service: free_port() for service in SERVICES}
        self.metrics_ports = {service: free_port() for service in SERVICES}
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for service in START_ORDER:
            self.environments[service] = child_environment(service, pki, urls[service], ports, self.home,
                                                           metrics_port=self.metrics_ports[service])
            self.children.append(spawn(service, self.environments[service], logs))
        return ports

    async def wait_serving(self, pki: DevPki, timeout: float) -> None:
        await wait_serving(self.children, _health_tls(pki), timeout, self.home / "logs")

    def start_supervising(self, pki: DevPki) -> Supervisor:
        """Restart every child that exits from now on (call from the main thread's running loop)."""
        from jukitools.client import health_status

        tls = _health_tls(pki)

        async def health(child: Child) -> str:
            return await health_status(child.target, tls)

        self.supervisor = Supervisor(self.home, self.children, self.environments, spawn=spawn, health=health)
        self.supervisor.start()
        return self.supervisor

    async def stop_supervising(self) -> None:
        """No child is started again after this returns."""
        if self.supervisor is not None:
            await self.supervisor.stop()

    def _stop_replicated(self) -> None:
        """Both servers, whichever is the primary now (a failover may have swapped them): the primary first,
        whose fast shutdown sends its last WAL to the standby."""
        from jukitools import standby

        state = standby.Replication.load(self.home)
        if state is None:
            return
        for directory in (state.primary, state.standby):
            try:
                standby.stop_server(self.home / directory)
            except (OSError, RuntimeError) as error:
                logger.error("stopping a server failed", extra={"data_dir": directory, "error": str(error)})

    def endpoints(self, pki: DevPki, ports: dict[str, int]) -> Endpoints:
        """The running suite's endpoints: `localhost` (every dev certificate names it; the servers listen on
        127.0.0.1, which a client resolving localhost tries too) and the certificates' absolute paths."""
        return Endpoints(
            gateway=f"localhost:{ports['gateway']}",
            services={service: f"localhost:{port}" for service, port in ports.items()},
            ca_cert=pki.ca_cert.resolve(),
            client_certs={name: {"cert": str(p.cert.resolve()), "key": str(p.key.resolve())}
                          for name, p in pki.clients.items()},
            metrics={service: f"127.0.0.1:{port}" for service, port in self.metrics_ports.items()},
        )

    def write_endpoints(self, endpoints: Endpoints, databases: dict[str, ServiceDatabase]) -> Path:
        """`.juki/databases.json` (each service's runtime and owner URL, 0600), then `.juki/endpoints.json`,
        each atomically; endpoints.json last, as the sign that the suite is ready (`jukitools.local`)."""
        write_private_json(self.home / DATABASES, {
            service: {"url": db.url, "migration_url": db.migration_url} for service, db in databases.items()})
        path = self.home / ENDPOINTS
        temporary = path.with_suffix(".tmp")
        temporary.write_text(endpoints.to_json(), encoding="utf-8")
        temporary.replace(path)
        return path

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every child, SIGKILL what is left after `grace`, then stop the database."""
        (self.home / ENDPOINTS).unlink(missing_ok=True)
        (self.home / DATABASES).unlink(missing_ok=True)
        (self.home / STATUS_FILE).unlink(missing_ok=True)
        stop_children(self.children, grace)
        self.children.clear()
        if self.embedded is not None:
            self.embedded.stop()  # a clean stop archives the last segment into the spool
            self.embedded = None
        if self.standby:
            self._stop_replicated()
        if self.archive is not None:
            try:
                seal_archived(self.archive)
            except (OSError, ValueError) as error:  # the spool keeps it; the next start or backup seals it
                logger.error("sealing archived WAL failed", extra={"error": str(error)})
