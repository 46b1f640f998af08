"""Test harness: one real PostgreSQL per session (embedded unless JUKI_TEST_DATABASE_URL is set), a
development PKI, spans in memory, JSON log lines captured, and the whole suite of real gRPC servers
on 127.0.0.1:0 with mTLS and the real interceptor chain."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import logging
import os
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from juki_services.agency.config import AgencyConfig
from juki_services.disclosure.config import DisclosureConfig
from juki_services.gateway.chain import ensure_signing_key
from juki_services.gateway.config import GatewayConfig
from juki_services.gateway.search_log import ensure_audit_hash_key
from jukilib.config import (
    DEFAULT_TRUSTED_PEERS,
    SERVICES,
    CommonConfig,
    DatabaseConfig,
    TlsConfig,
    default_plan_cache_mode,
)
from jukilib.db.bootstrap import ServiceDatabase
from jukilib.db.embedded import EmbeddedPostgres
from jukilib.db.sizing import SIZING_VARIABLE

# The tests' many short-lived servers keep PostgreSQL's stock settings (no 6 GB cache each, short shutdown
# checkpoints); `test_embedded_postgres` proves the sizing on a server of its own. Child processes inherit it.
os.environ.setdefault(SIZING_VARIABLE, "off")
from jukilib.devcerts import DevPki, ensure_dev_pki, issue_untrusted_client
from jukilib.errors import STATUS_DETAILS_KEY
from jukilib.grpc.server import GrpcService
from jukilib.jsonlog import JsonFormatter
from jukilib.operator_credential import issue, load_signing_key
from jukilib.register.config import RegisterConfig, RelayConfig
from jukilib.retry import RetryPolicy
from jukilib.telemetry import setup_tracing
from jukitools.suite import (
    DEMO_OPERATORS,
    SAMPLE_CALLERS,
    all_callers,
    ensure_keyring,
    ensure_operator_auth_key,
    free_port,
    prepare_database,
    register_demo_operators,
    service_migrations,
)

TEST_PASSWORD = "juki-test-password"
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("juki-home")


@pytest.fixture(scope="session")
def admin_url(home: Path) -> Iterator[str]:
    """A superuser URL: JUKI_TEST_DATABASE_URL, or an embedded server for this session."""
    external = os.environ.get("JUKI_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(home / "pgdata", delete_on_stop=True)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pki(home: Path) -> DevPki:
    return ensure_dev_pki(home / "pki", servers=SERVICES, clients=all_callers())


@pytest.fixture(scope="session")
def span_exporter(home: Path) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_tracing("test", home, exporter=exporter)
    return exporter


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """Every metric the in-process suite records (one meter provider for the session)."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


class LogCapture(logging.Handler):
    """Keeps every formatted JSON log line of the session."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(autouse=True)
async def no_unobserved_task_exception() -> AsyncIterator[None]:
    """A test fails when asynchronous code raised and nothing observed it (a task's exception never
    retrieved, a callback that raised), as asyncpg's own `_testbase` does: otherwise a background failure
    passes silently."""
    loop = asyncio.get_running_loop()
    unobserved: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unobserved.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    if unobserved:
        pytest.fail("unobserved exceptions in asynchronous code: " + "; ".join(
            f"{context.get('message')}: {context.get('exception')!r}" for context in unobserved))


@pytest.fixture(scope="session")
def log_lines() -> Iterator[list[str]]:
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield capture.lines
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)


def all_passwords() -> dict[str, str]:
    return {f"juki_{s}{suffix}": TEST_PASSWORD for s in SERVICES for suffix in ("", "_owner")}


async def fresh_database(admin_url: str) -> dict[str, ServiceDatabase]:
    """A new database with every schema, role grant and migration applied."""
    name = f"juki_test_{os.getpid()}_{next(_database_numbers)}"
    return await prepare_database(admin_url, all_passwords(), database=name)


def common_config(service: str, pki: DevPki, database: ServiceDatabase, home: Path,
                  listen: str = "127.0.0.1:0") -> CommonConfig:
    pair = pki.servers[service]
    return CommonConfig(
        service=service,
        listen=listen,
        tls=TlsConfig(cert=pair.cert, key=pair.key, ca=pki.ca_cert),
        database=DatabaseConfig(url=database.url, migration_url=None, pool_max=5,
                                plan_cache_mode=default_plan_cache_mode(service)),
        trusted_peers=DEFAULT_TRUSTED_PEERS[service],
        home=home,
        shutdown_grace=1.0,
    )


TEST_MOVE_HALF_WAIT = 3.0
"""Seconds a lone 転入 waits for its 転出 before the review queue lists it (production: days)."""
TEST_RELAY = RelayConfig(retry=RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.2), poll_interval=0.05,
                         call_timeout=2.0)


def service_config(service: str, pki: DevPki, database: ServiceDatabase, home: Path,
                   targets: dict[str, str], listen: str = "127.0.0.1:0") -> Any:
    """`service`'s own configuration (services/<service>/config.py) for a test: `targets` are the
    services it calls, by name."""
    common = common_config(service, pki, database, home, listen)
    if service in ("identity", "annex"):
        return RegisterConfig(common=common, agency_target=targets.get("agency", "127.0.0.1:1"), relay=TEST_RELAY,
                              keyring_file=ensure_keyring(home), move_half_wait=TEST_MOVE_HALF_WAIT,
                              disclosure_target=targets.get("disclosure", ""))
    if service == "gateway":
        revoked = home / "revoked-certificates.txt"
        revoked.touch()
        return GatewayConfig(
            common=common, targets=targets, operation_log_key=ensure_signing_key(home / "operation-log.key"),
            checkpoint_dir=home / "checkpoints", audit_hash_key=ensure_audit_hash_key(home / "audit-hash.key"),
            operator_auth_key=ensure_operator_auth_key(home).with_suffix(".pub"),
            revocation_file=revoked,
            checkpoint_every=20)
    if service == "disclosure":
        return DisclosureConfig(common=common, gateway_target=targets["gateway"], keyring_file=ensure_keyring(home),
                                poll_interval=0.2)
    assert service == "agency"
    return AgencyConfig(common=common, gateway_target=targets.get("gateway"))


def with_common(config: Any, **changes: Any) -> Any:
    """`config` with its common part changed (`listen`, `database`, `reflection`, ...)."""
    return dataclasses.replace(config, common=dataclasses.replace(config.common, **changes))


def issue_credential(home: Path, operator_id: str, organization: str, roles: frozenset[str], *,
                     now: dt.datetime | None = None, lifetime: dt.timedelta = dt.timedelta(hours=1)) -> str:
    """An operator credential signed with the test home's operator-authentication key."""
    key = load_signing_key(ensure_operator_auth_key(home))
    return issue(key, operator_id, organization, roles, now=now, lifetime=lifetime)


@dataclass
class RunningSuite:
    """Every service, running in this process on its own port."""

    pki: DevPki
    databases: dict[str, ServiceDatabase]
    services: dict[str, GrpcService] = field(default_factory=dict)
    home: Path | None = None

    def credential(self, caller: str) -> str:
        """A fresh credential of the demo operator working behind `caller`'s certificate ('' for systems)."""
        if caller not in DEMO_OPERATORS:
            return ""
        assert self.home is not None
        operator_id, roles = DEMO_OPERATORS[caller]
        return issue_credential(self.home, operator_id, SAMPLE_CALLERS[caller], roles)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.services[service].port}"

    @property
    def gateway(self) -> str:
        return self.address("gateway")

    def client_tls(self, caller: str) -> TlsConfig:
        pair = self.pki.clients[caller]
        return TlsConfig(cert=pair.cert, key=pair.key, ca=self.pki.ca_cert)

    def server_tls(self, service: str) -> TlsConfig:
        pair = self.pki.servers[service]
        return TlsConfig(cert=pair.cert, key=pair.key, ca=self.pki.ca_cert)

    def database_url(self, service: str) -> str:
        return self.databases[service].url

    def owner_url(self, service: str) -> str:
        return self.databases[service].migration_url


async def start_suite(pki: DevPki, databases: dict[str, ServiceDatabase], home: Path) -> RunningSuite:
    import importlib

    suite = RunningSuite(pki, databases, home=home)
    await register_demo_operators(databases["gateway"].url)
    targets = {service: f"127.0.0.1:{free_port()}" for service in SERVICES}
    for service in ("agency", "identity", "annex", "disclosure", "gateway"):
        wanted = {"gateway": ("identity", "annex", "disclosure", "agency"),
                  "identity": ("agency", "disclosure"), "annex": ("agency", "disclosure"), "agency": ("gateway",),
                  "disclosure": ("gateway",)}.get(service, ())
        config = service_config(service, pki, databases[service], home, {k: targets[k] for k in wanted},
                                listen=targets[service])
        app = importlib.import_module(f"juki_services.{service}.app")
        running = GrpcService(config, service_migrations(service), app.build)
        await running.start()
        await running.wait_ready(30)
        suite.services[service] = running
    return suite


@pytest.fixture(scope="session")
async def suite(admin_url: str, pki: DevPki, home: Path, span_exporter: InMemorySpanExporter,
                log_lines: list[str], metric_reader: InMemoryMetricReader) -> AsyncIterator[RunningSuite]:
    running = await start_suite(pki, await fresh_database(admin_url), home)
    try:
        yield running
    finally:
        for service in reversed(list(running.services)):
            await running.services[service].stop(0.5)


@pytest.fixture(scope="session")
def untrusted_client(home: Path) -> TlsConfig:
    pair = issue_untrusted_client(home / "pki", "intruder", "102016")
    return TlsConfig(cert=pair.cert, key=pair.key, ca=home / "pki" / "ca.crt")


async def eventually(check: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll an async predicate until it holds (the relay and span export are asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()  # type: ignore[operator]
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            # Named by where it was awaited: CI's summary line is often all there is to read.
            waiter = traceback.extract_stack(limit=2)[0]
            raise AssertionError(f"condition of {Path(waiter.filename).name}:{waiter.lineno} not reached "
                                 f"in {timeout:g} s")
        await asyncio.sleep(interval)


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a refusal names (its `BadRequest` detail), in its order."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                bad_request = error_details_pb2.BadRequest()
                if detail.Unpack(bad_request):
                    return [v.field for v in bad_request.field_violations]
    return []
