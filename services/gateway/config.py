"""The gateway's configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jukilib.config import BACKENDS, DEFAULT_CALL_TIMEOUT, CommonConfig, ConfigError, Env, call_timeout, load_common
from jukilib.operator_credential import ROLES


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway reads."""

    common: CommonConfig
    targets: Mapping[str, str]
    """host:port of every backend, by service (JUKI_IDENTITY_TARGET, JUKI_ANNEX_TARGET, JUKI_DISCLOSURE_TARGET,
    JUKI_AGENCY_TARGET; all required)."""
    operation_log_key: Path
    """Ed25519 private key (PEM) signing the operation log's checkpoints (JUKI_OPERATION_LOG_KEY, required)."""
    checkpoint_dir: Path
    """Directory of the journal of signed checkpoints kept outside the database (JUKI_CHECKPOINT_DIR,
    required): another disk or mount than the database's, which the database's owner cannot write."""
    audit_hash_key: Path
    """The key of the keyed hashes of search values in the operation log (JUKI_AUDIT_HASH_KEY, required): held
    by the gateway and the auditors, never by the database's owner."""
    operator_auth_key: Path
    """Ed25519 public key (PEM) of the prefecture's operator authentication, checking operator credentials
    (JUKI_OPERATOR_AUTH_PUBLIC_KEY, required). The gateway never holds the private key."""
    policy_file: Path | None = None
    """The policy catalogue (JUKI_POLICY_FILE; without it, the one shipped with juki)."""
    revocation_file: Path | None = None
    """Fingerprints of revoked client certificates, re-read on change (JUKI_REVOCATION_FILE)."""
    checkpoint_sink_command: str = ""
    """A command given each exported checkpoint as one JSON line on its standard input (an external sink:
    a syslog forwarder, a WORM store's client; JUKI_CHECKPOINT_SINK_COMMAND, optional)."""
    checkpoint_export_seconds: float = 1.0
    """Seconds between two exports of the chain head to the journal: the most of the log that can be
    removed unseen (JUKI_CHECKPOINT_EXPORT_SECONDS)."""
    checkpoint_every: int = 1000
    """Operation-log entries between two signed checkpoints (JUKI_CHECKPOINT_EVERY)."""
    checkpoint_seconds: float = 60.0
    """Seconds between two signed checkpoints at most (JUKI_CHECKPOINT_SECONDS)."""
    organization_rate: float = 2000.0
    """Calls per second an organisation may make through one gateway replica (burst: twice that;
    JUKI_RATE_ORGANIZATION_PER_SECOND)."""
    operator_rate: float = 20.0
    """Calls per second one operator may make through one gateway replica (burst: twice that;
    JUKI_RATE_OPERATOR_PER_SECOND)."""
    operator_credential_max_hours: float = 8.0
    """Longest lifetime of an operator credential the gateway accepts (JUKI_OPERATOR_CREDENTIAL_MAX_HOURS)."""
    operator_registry_refresh: float = 1.0
    """Seconds between reads of the operator registry by each replica (JUKI_OPERATOR_REGISTRY_REFRESH_SECONDS)."""
    usage_suspension_refresh: float = 1.0
    """Seconds between reads of the usage suspensions in force by each replica
    (JUKI_USAGE_SUSPENSION_REFRESH_SECONDS)."""
    usage_suspension_max_staleness: float = 10.0
    """Seconds a replica decides on its last read of the usage suspensions; past them, answers with records under
    a purpose a suspension can name are refused until a read succeeds (JUKI_USAGE_SUSPENSION_MAX_STALENESS_SECONDS;
    see juki_services.gateway.suspensions)."""
    usage_suspension_fail_closed: bool = True
    """Refuse as above when the suspensions cannot be read (JUKI_USAGE_SUSPENSION_FAIL_CLOSED); off only where no
    disclosure service runs, hence no case can exist (the lookup benchmark)."""
    open_case_cache_seconds: float = 5.0
    """Seconds a replica keeps the disclosure service's answer that a case is open
    (JUKI_OPEN_CASE_CACHE_SECONDS; see juki_services.gateway.open_cases)."""
    incompatible_roles: tuple[frozenset[str], ...] = (frozenset({"administrator", "auditor"}),)
    """Roles one operator may not hold together (JUKI_INCOMPATIBLE_ROLES: comma-separated sets of roles joined
    by '+', e.g. `administrator+auditor,auditor+provision_clerk`; default `administrator+auditor`)."""
    backend_timeout: float = DEFAULT_CALL_TIMEOUT
    """Seconds a forwarded call may take when its caller set no deadline (JUKI_CALL_TIMEOUT_SECONDS); a
    caller's deadline is passed on as it is (jukilib.grpc.deadlines)."""


def load(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read from the environment (os.environ by default); raises ConfigError naming the variable."""
    env = Env(environ)
    policy = env.optional("JUKI_POLICY_FILE")
    revoked = env.optional("JUKI_REVOCATION_FILE")
    return GatewayConfig(
        common=load_common("gateway", env),
        targets={name: env.text(f"JUKI_{name.upper()}_TARGET") for name in BACKENDS},
        operation_log_key=env.existing_file("JUKI_OPERATION_LOG_KEY"),
        operator_auth_key=env.existing_file("JUKI_OPERATOR_AUTH_PUBLIC_KEY"),
        checkpoint_dir=Path(env.text("JUKI_CHECKPOINT_DIR")),
        audit_hash_key=env.existing_file("JUKI_AUDIT_HASH_KEY"),
        checkpoint_sink_command=env.optional("JUKI_CHECKPOINT_SINK_COMMAND") or "",
        checkpoint_export_seconds=env.seconds("JUKI_CHECKPOINT_EXPORT_SECONDS", 1.0),
        policy_file=Path(policy) if policy else None,
        revocation_file=Path(revoked) if revoked else None,
        checkpoint_every=env.integer("JUKI_CHECKPOINT_EVERY", 1000, minimum=1),
        checkpoint_seconds=env.seconds("JUKI_CHECKPOINT_SECONDS", 60.0),
        organization_rate=env.seconds("JUKI_RATE_ORGANIZATION_PER_SECOND", 2000.0),
        operator_rate=env.seconds("JUKI_RATE_OPERATOR_PER_SECOND", 20.0),
        operator_credential_max_hours=env.seconds("JUKI_OPERATOR_CREDENTIAL_MAX_HOURS", 8.0),
        operator_registry_refresh=env.seconds("JUKI_OPERATOR_REGISTRY_REFRESH_SECONDS", 1.0),
        usage_suspension_refresh=env.seconds("JUKI_USAGE_SUSPENSION_REFRESH_SECONDS", 1.0),
        usage_suspension_max_staleness=env.seconds("JUKI_USAGE_SUSPENSION_MAX_STALENESS_SECONDS", 10.0),
        usage_suspension_fail_closed=env.flag("JUKI_USAGE_SUSPENSION_FAIL_CLOSED", True),
        open_case_cache_seconds=env.seconds("JUKI_OPEN_CASE_CACHE_SECONDS", 5.0),
        incompatible_roles=_incompatible_roles(env.text("JUKI_INCOMPATIBLE_ROLES", "administrator+auditor")),
        backend_timeout=call_timeout(env),
    )


def _incompatible_roles(text: str) -> tuple[frozenset[str], ...]:
    rules = tuple(frozenset(role.strip() for role in rule.split("+")) for rule in text.split(",") if rule.strip())
    for rule in rules:
        if len(rule) < 2 or not rule <= set(ROLES):
            raise ConfigError(f"JUKI_INCOMPATIBLE_ROLES: each rule joins two or more of {', '.join(ROLES)} with '+'")
    return rules
