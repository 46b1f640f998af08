"""The settings of a register service (identity, annex): where the agency is, the outbox relay, the
checks on incoming notifications, the keyring that seals what it keeps for review. Read from the
environment by `load_register`, on top of the common part (`jukilib.config.load_common`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jukilib.config import CommonConfig, ConfigError, Env, load_common
from jukilib.retry import RetryPolicy

RELAY_JITTER = 1.0
"""Full jitter: a change the agency refused waits anywhere up to its ceiling, so that after an outage the
backlog comes back spread out, and most of it soon (half jitter made the mean wait half again longer)."""
RELAY_RETRY = RetryPolicy(attempts=12, base_delay=0.5, max_delay=60.0, jitter=RELAY_JITTER)
MAX_AGENCY_BATCH = 1000
"""Changes the agency takes in one batch call."""


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
    """Seconds a worker waits after a pass that found less than a full batch: the most a change waits before it
    leaves (one pass per change of the same person, which leave in order)."""
    call_timeout: float = 5.0
    lease: float = 30.0
    """Seconds a worker holds the changes it claimed (JUKI_RELAY_LEASE_SECONDS); a crashed worker's changes are
    taken over after it. Longer than `call_timeout`, so that a live worker finishes before anyone takes over."""


@dataclass(frozen=True)
class RegisterConfig:
    """Everything a register service reads."""

    common: CommonConfig
    agency_target: str
    keyring_file: Path
    """Keys for what the register keeps sealed at rest (JUKI_KEYRING_FILE, required; see jukilib.keyring): the
    content of refused notifications in the review queue, and identity's 個人番号."""
    """host:port of the agency the relay forwards every applied change to (JUKI_AGENCY_TARGET)."""
    relay: RelayConfig = RelayConfig()
    disclosure_target: str = ""
    """host:port of the disclosure service, asked for the subjects of open cases before a retention purge
    (JUKI_DISCLOSURE_TARGET). Optional for everything else the register does: without it every purge is
    refused (FAILED_PRECONDITION), never run without the holds."""
    resident_code_check: str = "warn"
    """住民票コード check digit: off | warn | reject. The formula (告示436号) is UNVERIFIED, so warn."""
    notify_time_max_age_days: int = 3650
    """How old a notification's stated notification time may be (JUKI_NOTIFY_TIME_MAX_AGE_DAYS): a CS resends
    a backlog after an outage, never a notification of decades ago (the initial load has its own path)."""
    report_overdue_days: int = 30
    """A 12-5 report still open this many days after it was made is overdue (JUKI_REPORT_OVERDUE_DAYS): the
    prefecture's desk follows it up. 12-5 sets no period; 30 days mirrors the disclosure deadline (30-33)."""
    move_half_wait: float = 3 * 86400.0
    """Seconds a 転入 recorded while the old municipality still held the person waits for that municipality's
    転出 before it is listed in the review queue (JUKI_MOVE_HALF_WAIT). 住基法 30-6 ① has each municipality
    notify "without delay"; three days covers a weekend and a CS resending a backlog."""


R = TypeVar("R", bound=RegisterConfig)


def load_relay(env: Env) -> RelayConfig:
    base_delay = env.seconds("JUKI_RELAY_BASE_DELAY", RELAY_RETRY.base_delay)
    max_delay = env.seconds("JUKI_RELAY_MAX_DELAY", RELAY_RETRY.max_delay)
    if max_delay < base_delay:
        raise ConfigError("JUKI_RELAY_MAX_DELAY must not be less than JUKI_RELAY_BASE_DELAY")
    return RelayConfig(
        workers=env.integer("JUKI_RELAY_WORKERS", RelayConfig.workers, minimum=0),
        batch_size=min(env.integer("JUKI_RELAY_BATCH_SIZE", RelayConfig.batch_size, minimum=1), MAX_AGENCY_BATCH),
        retry=RetryPolicy(attempts=env.integer("JUKI_RELAY_MAX_ATTEMPTS", 12, minimum=1),
                          base_delay=base_delay, max_delay=max_delay, jitter=RELAY_JITTER),
        lease=env.seconds("JUKI_RELAY_LEASE_SECONDS", RelayConfig.lease),
    )


def load_register(service: str, env: Env, config_type: type[R], **own: Any) -> R:
    """The settings of register `service` as `config_type`: RegisterConfig, or a subclass holding the
    service's `own` settings beside them. Raises ConfigError naming the variable."""
    return config_type(
        common=load_common(service, env),
        agency_target=env.text("JUKI_AGENCY_TARGET"),
        keyring_file=env.existing_file("JUKI_KEYRING_FILE"),
        relay=load_relay(env),
        disclosure_target=env.text("JUKI_DISCLOSURE_TARGET", ""),
        resident_code_check=env.choice("JUKI_RESIDENT_CODE_CHECK", "warn", ("off", "warn", "reject")),
        notify_time_max_age_days=env.integer("JUKI_NOTIFY_TIME_MAX_AGE_DAYS", 3650, minimum=1),
        report_overdue_days=env.integer("JUKI_REPORT_OVERDUE_DAYS", 30, minimum=1),
        move_half_wait=env.seconds("JUKI_MOVE_HALF_WAIT", RegisterConfig.move_half_wait),
        **own,
    )
