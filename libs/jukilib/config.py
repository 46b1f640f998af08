"""Configuration from the environment, in one place.

Every setting of every juki process is read here, once, at start-up, into frozen dataclasses that
are passed down explicitly. A missing or malformed variable stops start-up with an error that names
the variable (never its value, which may be a secret).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jukilib.retry import RetryPolicy

SERVICES = ("identity", "annex", "disclosure", "agency", "gateway")
BACKENDS = ("identity", "annex", "disclosure", "agency")

# Who may call each service (certificate common names). Backends accept only the gateway; the agency
# stand-in also accepts the relays of identity and annex. The gateway accepts any certificate issued
# by the prefecture's CA and decides per organisation.
DEFAULT_TRUSTED_PEERS: Mapping[str, frozenset[str]] = {
    "identity": frozenset({"gateway"}),
    "annex": frozenset({"gateway"}),
    "disclosure": frozenset({"gateway"}),
    "agency": frozenset({"gateway", "identity", "annex"}),
    "gateway": frozenset(),
}


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


RELAY_RETRY = RetryPolicy(attempts=12, base_delay=0.5, max_delay=60.0)


@dataclass(frozen=True)
class RelayConfig:
    """The outbox relay that forwards applied changes to the agency (30-7, 30-42)."""

    workers: int = 4
    """Relay workers per process (JUKI_RELAY_WORKERS), each with one batch out to the agency at a time: the
    parallelism across persons (`juki bench ingest`: see docs/performance.md)."""
    batch_size: int = 500
    """Changes a worker claims and sends in one call (JUKI_RELAY_BATCH_SIZE, at most the agency's 1,000)."""
    retry: RetryPolicy = RELAY_RETRY
    """When a change the agency did not acknowledge is sent again (JUKI_RELAY_BASE_DELAY, JUKI_RELAY_MAX_DELAY);
    after `attempts` failed deliveries (JUKI_RELAY_MAX_ATTEMPTS) it is dead-lettered for `juki outbox retry`."""
    poll_interval: float = 0.2
    call_timeout: float = 5.0
    lease: float = 30.0
    """Seconds a worker holds the changes it claimed (JUKI_RELAY_LEASE_SECONDS); a crashed worker's changes are
    taken over after it. Longer than `call_timeout`, so that a live worker finishes before anyone takes over."""


@dataclass(frozen=True)
class ServiceConfig:
    """Everything one service process needs."""

    service: str
    listen: str
    tls: TlsConfig
    database: DatabaseConfig
    trusted_peers: frozenset[str]
    reflection: bool = False
    log_level: str = "INFO"
    home: Path = Path(".juki")
    targets: Mapping[str, str] = field(default_factory=dict)
    """host:port of the services this one calls (gateway: every backend; identity, annex: agency)."""
    policy_file: Path | None = None
    relay: RelayConfig = field(default_factory=RelayConfig)
    resident_code_check: str = "warn"
    """住民票コード check digit: off | warn | reject. The formula (告示436号) is UNVERIFIED, so warn."""
    notify_time_max_age_days: int = 3650
    """How old a notification's stated notification time may be (JUKI_NOTIFY_TIME_MAX_AGE_DAYS): a CS resends
    a backlog after an outage, never a notification of decades ago (the initial load has its own path)."""
    disclosure_receipt_max_age_days: int = 365
    """How old a disclosure or correction request's stated receipt time may be
    (JUKI_DISCLOSURE_RECEIPT_MAX_AGE_DAYS): a case is entered when it arrives, well within its 30 days."""
    disclosure_target_days: int = 14
    disclosure_poll_interval: float = 30.0
    """Seconds between the disclosure service's checks of its 12-5 reports (JUKI_DISCLOSURE_POLL_SECONDS)."""
    shutdown_grace: float = 5.0
    background_stale_after: float = 30.0
    """Seconds a background job may go without progress before its health turns NOT_SERVING
    (JUKI_BACKGROUND_STALE_SECONDS, see jukilib.supervision)."""
    keyring_file: Path | None = None
    """Keys for 個人番号 at rest (identity only; JUKI_KEYRING_FILE, see jukilib.keyring)."""
    operation_log_key: Path | None = None
    """Ed25519 private key (PEM) signing the operation log's checkpoints (gateway; JUKI_OPERATION_LOG_KEY)."""
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    revocation_file: Path | None = None
    """Fingerprints of revoked client certificates, re-read on change (gateway; JUKI_REVOCATION_FILE)."""
    organization_rate: float = 2000.0
    """Calls per second an organisation may make through one gateway replica (burst: twice that)."""
    operator_rate: float = 20.0
    """Calls per second one operator may make through one gateway replica (burst: twice that)."""
    operator_auth_key: Path | None = None
    """Ed25519 public key (PEM) of the prefecture's operator authentication, checking operator
    credentials (gateway; JUKI_OPERATOR_AUTH_PUBLIC_KEY). The gateway never holds the private key."""
    operator_credential_max_hours: float = 8.0
    """Longest lifetime of an operator credential the gateway accepts (JUKI_OPERATOR_CREDENTIAL_MAX_HOURS)."""
    operator_registry_refresh: float = 1.0
    """Seconds between reads of the operator registry by each replica (JUKI_OPERATOR_REGISTRY_REFRESH_SECONDS)."""


def _targets(env: Env, service: str) -> dict[str, str]:
    # The disclosure service reads records and makes 12-5 reports through the gateway.
    wanted = {"gateway": BACKENDS, "identity": ("agency",), "annex": ("agency",), "disclosure": ("gateway",)
              }.get(service, ())
    targets = {name: env.text(f"JUKI_{name.upper()}_TARGET") for name in wanted}
    # The agency stand-in sends its error reports (30-8) through the gateway when it knows where it is.
    if service == "agency" and (gateway := env.optional("JUKI_GATEWAY_TARGET")):
        targets["gateway"] = gateway
    return targets


def load_service_config(service: str, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read the configuration of `service` from the environment; raises ConfigError naming the variable."""
    if service not in SERVICES:
        raise ConfigError(f"unknown service; expected one of {', '.join(SERVICES)}")
    env = Env(environ)
    policy = env.optional("JUKI_POLICY_FILE")
    return ServiceConfig(
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
        targets=_targets(env, service),
        policy_file=Path(policy) if policy else None,
        relay=RelayConfig(
            workers=env.integer("JUKI_RELAY_WORKERS", RelayConfig.workers, minimum=0),
            batch_size=min(env.integer("JUKI_RELAY_BATCH_SIZE", RelayConfig.batch_size, minimum=1), 1000),
            retry=RetryPolicy(attempts=env.integer("JUKI_RELAY_MAX_ATTEMPTS", 12, minimum=1),
                              base_delay=env.seconds("JUKI_RELAY_BASE_DELAY", 0.5),
                              max_delay=env.seconds("JUKI_RELAY_MAX_DELAY", 60.0)),
            lease=env.seconds("JUKI_RELAY_LEASE_SECONDS", 30.0),
        ),
        resident_code_check=env.choice("JUKI_RESIDENT_CODE_CHECK", "warn", ("off", "warn", "reject")),
        notify_time_max_age_days=env.integer("JUKI_NOTIFY_TIME_MAX_AGE_DAYS", 3650, minimum=1),
        disclosure_receipt_max_age_days=env.integer("JUKI_DISCLOSURE_RECEIPT_MAX_AGE_DAYS", 365, minimum=1),
        disclosure_target_days=env.integer("JUKI_DISCLOSURE_TARGET_DAYS", 14, minimum=1),
        disclosure_poll_interval=env.seconds("JUKI_DISCLOSURE_POLL_SECONDS", 30.0),
        shutdown_grace=env.seconds("JUKI_SHUTDOWN_GRACE", 5.0),
        background_stale_after=env.seconds("JUKI_BACKGROUND_STALE_SECONDS", 30.0),
        keyring_file=env.existing_file("JUKI_KEYRING_FILE") if service == "identity" else None,
        operation_log_key=env.existing_file("JUKI_OPERATION_LOG_KEY") if service == "gateway" else None,
        checkpoint_every=env.integer("JUKI_CHECKPOINT_EVERY", 1000, minimum=1),
        checkpoint_seconds=env.seconds("JUKI_CHECKPOINT_SECONDS", 60.0),
        revocation_file=Path(revoked) if (revoked := env.optional("JUKI_REVOCATION_FILE")) else None,
        organization_rate=env.seconds("JUKI_RATE_ORGANIZATION_PER_SECOND", 2000.0),
        operator_rate=env.seconds("JUKI_RATE_OPERATOR_PER_SECOND", 20.0),
        operator_auth_key=env.existing_file("JUKI_OPERATOR_AUTH_PUBLIC_KEY") if service == "gateway" else None,
        operator_credential_max_hours=env.seconds("JUKI_OPERATOR_CREDENTIAL_MAX_HOURS", 8.0),
        operator_registry_refresh=env.seconds("JUKI_OPERATOR_REGISTRY_REFRESH_SECONDS", 1.0),
    )
