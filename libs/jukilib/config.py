"""Configuration from the environment: typed reads (`Env`) and what every service process needs.

Each service reads its settings once, at start-up, into frozen dataclasses that are passed down
explicitly: the part every service has (`CommonConfig`: listen address, TLS, database, trusted peers,
logging, shutdown), read here by `load_common`, and its own, read by its `services.<name>.config`
module (identity and annex on top of the register's settings, `jukilib.register.config`): a service
reads no variable it does not use. A missing or malformed variable stops start-up with an error that
names the variable (never its value, which may be a secret).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

SERVICES = ("identity", "annex", "disclosure", "agency", "gateway")
BACKENDS = ("identity", "annex", "disclosure", "agency")

# Who may call each service (certificate common names). Backends accept only the gateway; the agency
# stand-in also accepts the relays of identity and annex, the disclosure service the registers for the
# one method reserved to them (RESERVED_METHODS). The gateway accepts any certificate issued by the
# prefecture's CA and decides per organisation.
DEFAULT_TRUSTED_PEERS: Mapping[str, frozenset[str]] = {
    "identity": frozenset({"gateway"}),
    "annex": frozenset({"gateway"}),
    "disclosure": frozenset({"gateway", "identity", "annex"}),
    "agency": frozenset({"gateway", "identity", "annex"}),
    "gateway": frozenset(),
}

RESERVED_METHODS: Mapping[str, Mapping[str, frozenset[str]]] = {
    # 住基法 30-6 ③ / 30-41 ③: before a purge, each register asks the disclosure service whom its open cases
    # are about, and may ask it nothing else; nobody else (not the gateway) may ask it that.
    "disclosure": {"/juki.disclosure.v1.DisclosureService/ListRetentionHolds": frozenset({"identity", "annex"})},
}
"""Per service: methods only the named trusted peers may call. A peer named here calls only the methods
reserved to it; every other method stays for the other trusted peers (the gateway)."""


class ConfigError(Exception):
    """A configuration variable is missing or malformed."""


class UsageError(Exception):
    """A mistake at the command line, or a setting a command cannot find (an unknown caller, a missing file
    or credential, no running suite): `juki` prints it as one line and exits 2, never with a traceback."""


class Env:
    """Typed reads of environment variables that fail naming the variable."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def text(self, name: str, default: str | None = None) -> str:
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer") from None
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds") from None
        if value <= 0:
            raise ConfigError(f"{name} must be positive")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self._environ.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}")
        return value

    def existing_file(self, name: str) -> Path:
        path = Path(self.text(name))
        if not path.is_file():
            raise ConfigError(f"{name} does not point to a readable file")
        return path

    def names(self, name: str, default: frozenset[str]) -> frozenset[str]:
        raw = self._environ.get(name)
        if raw is None:
            return default
        return frozenset(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class TlsConfig:
    """mTLS material of one process (PEM files)."""

    cert: Path
    """This process's certificate; used as server certificate and as client certificate on calls out."""
    key: Path
    """Its private key."""
    ca: Path
    """The prefecture's CA: the only issuer whose client certificates are accepted."""

    def read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()


PLAN_CACHE_MODES = ("auto", "force_generic_plan", "force_custom_plan")
# The registers' reads take arrays (`resident_code = ANY($1)`, `unnest(...)`), for which PostgreSQL's
# `auto` mode keeps planning every execution anew: measured with `juki bench lookup`, 885 µs of
# PostgreSQL CPU per lookup against 258 µs with generic plans (direct lookups 657/s → 973/s). Their
# statements avoid `$n IS NULL OR …` filters, which a generic plan cannot use an index for. The other
# services keep `auto` (the operation log's auditor queries have optional filters).
_GENERIC_PLANS = frozenset({"identity", "annex"})


def default_plan_cache_mode(service: str) -> str:
    return "force_generic_plan" if service in _GENERIC_PLANS else "auto"


@dataclass(frozen=True)
class DatabaseConfig:
    """How a service reaches PostgreSQL. Every wait is bounded."""

    url: str
    """The service's own role (JUKI_DATABASE_URL)."""
    migration_url: str | None
    """The schema owner's role; when set, migrations are applied at start-up (JUKI_MIGRATION_DATABASE_URL)."""
    pool_min: int = 1
    pool_max: int = 10
    acquire_timeout: float = 5.0
    """Seconds to wait for a free connection before answering UNAVAILABLE."""
    command_timeout: float = 10.0
    """Seconds any one statement may take."""
    plan_cache_mode: str = "auto"
    """PostgreSQL's `plan_cache_mode` for the pool's connections (JUKI_DB_PLAN_CACHE_MODE)."""


@dataclass(frozen=True)
class CommonConfig:
    """What every service process needs, whatever the service."""

    service: str
    """Which service this process is (its schema, its logs' and spans' service name)."""
    listen: str
    """host:port to listen on (JUKI_LISTEN; port 0: any free port)."""
    tls: TlsConfig
    database: DatabaseConfig
    trusted_peers: frozenset[str]
    """Certificate common names whose calls are accepted (JUKI_TRUSTED_PEERS); empty: any the CA issued."""
    reflection: bool = False
    log_level: str = "INFO"
    home: Path = Path(".juki")
    """Where spans and metrics are written when no OTLP endpoint is set (JUKI_HOME)."""
    shutdown_grace: float = 5.0
    """Seconds in-flight calls are given on stop (JUKI_SHUTDOWN_GRACE)."""
    background_stale_after: float = 30.0
    """Seconds a background job may go without progress before its health turns NOT_SERVING
    (JUKI_BACKGROUND_STALE_SECONDS, see jukilib.supervision)."""


class ServiceConfig(Protocol):
    """The configuration of any one service: its common part, and its own settings beside it."""

    @property
    def common(self) -> CommonConfig: ...


CALL_TIMEOUT_VARIABLE = "JUKI_CALL_TIMEOUT_SECONDS"
DEFAULT_CALL_TIMEOUT = 10.0
"""Seconds a call to another service may take when nothing bounds it: the call being served has no
deadline, or no call is being served (a background job). Within a call with a deadline, calls out get
what is left of it (jukilib.grpc.deadlines)."""


def call_timeout(env: Env) -> float:
    """The fallback timeout of the calls a service makes (JUKI_CALL_TIMEOUT_SECONDS)."""
    return env.seconds(CALL_TIMEOUT_VARIABLE, DEFAULT_CALL_TIMEOUT)


def load_common(service: str, env: Env) -> CommonConfig:
    """The common part of `service`'s configuration; raises ConfigError naming the variable."""
    if service not in SERVICES:
        raise ConfigError(f"unknown service; expected one of {', '.join(SERVICES)}")
    return CommonConfig(
        service=service,
        listen=env.text("JUKI_LISTEN", "127.0.0.1:0"),
        tls=TlsConfig(
            cert=env.existing_file("JUKI_TLS_CERT"),
            key=env.existing_file("JUKI_TLS_KEY"),
            ca=env.existing_file("JUKI_TLS_CA"),
        ),
        database=DatabaseConfig(
            url=env.text("JUKI_DATABASE_URL"),
            migration_url=env.optional("JUKI_MIGRATION_DATABASE_URL"),
            pool_min=env.integer("JUKI_DB_POOL_MIN", 1),
            pool_max=env.integer("JUKI_DB_POOL_MAX", 10, minimum=1),
            acquire_timeout=env.seconds("JUKI_DB_ACQUIRE_TIMEOUT", 5.0),
            command_timeout=env.seconds("JUKI_DB_COMMAND_TIMEOUT", 10.0),
            plan_cache_mode=env.choice("JUKI_DB_PLAN_CACHE_MODE", default_plan_cache_mode(service),
                                       PLAN_CACHE_MODES),
        ),
        trusted_peers=env.names("JUKI_TRUSTED_PEERS", DEFAULT_TRUSTED_PEERS[service]),
        reflection=env.flag("JUKI_REFLECTION", False),
        log_level=env.choice("JUKI_LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        home=Path(env.text("JUKI_HOME", ".juki")),
        shutdown_grace=env.seconds("JUKI_SHUTDOWN_GRACE", 5.0),
        background_stale_after=env.seconds("JUKI_BACKGROUND_STALE_SECONDS", 30.0),
    )
