"""Wiring of a register service: engine, API, servicer and relay from one declaration.

identity and annex are each a `RegisterService`; each declares its binding (contract, record, rules),
the agency method its changes go to, and is built by the same code, given the service's hooks (identity's
個人番号 at rest; annex has none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import message
from grpc import aio

from jukilib.config import DEFAULT_CALL_TIMEOUT
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.errors import TimeWindow
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts
from jukilib.keyring import Keyring
from jukilib.register.api import RegisterApi, RegisterBinding
from jukilib.register.config import RegisterConfig
from jukilib.register.engine import RegisterEngine
from jukilib.register.hooks import RegisterHooks
from jukilib.register.metrics import RegisterGauges
from jukilib.register.model import StoredVersion
from jukilib.register.relay import OutboxRelay
from jukilib.register.retention import Retention, disclosure_holds
from jukilib.supervision import Job

# (agency channel, idempotency key, version message) → delivered, or raises.
Forward = Callable[[aio.Channel, str, message.Message], Awaitable[Any]]
# (agency channel, [(idempotency key, version message)]) → all delivered in one atomic call, or raises.
ForwardBatch = Callable[[aio.Channel, Sequence[tuple[str, message.Message]]], Awaitable[Any]]


@dataclass(frozen=True)
class RegisterService:
    """A register service declared once; everything else (engine, API, relay, wiring) is shared."""

    binding: RegisterBinding
    service_name: str
    servicer: Callable[[RegisterApi, Retention], Any]
    add_servicer: Callable[[Any, aio.Server], None]
    forward: Forward
    forward_batch: ForwardBatch | None = None
    """The agency's batch method for this register's changes (AIP-233), if it has one."""
    migration_dirs: tuple[Path, ...] = ()
    """The service's own migrations (numbered from 0100), after the engine's."""

    def migrations(self) -> list[Migration]:
        return register_migrations(*self.migration_dirs)

    def api(self, config: RegisterConfig, database: Database, hooks: RegisterHooks | None = None) -> RegisterApi:
        engine = RegisterEngine(database, self.binding.register, Keyring.load(config.keyring_file), hooks)
        return RegisterApi(engine, self.binding, municipalities=gunma_municipalities(),
                           resident_code_check=CheckDigitMode(config.resident_code_check),
                           notify_window=TimeWindow(dt.timedelta(days=config.notify_time_max_age_days)),
                           report_overdue=dt.timedelta(days=config.report_overdue_days),
                           move_half_wait=dt.timedelta(seconds=config.move_half_wait))

    def build(self, config: RegisterConfig, database: Database, hooks: RegisterHooks | None = None) -> ServiceParts:
        """Everything the service runs: its servicer and `relay.workers` relay workers."""
        api = self.api(config, database, hooks)
        agency = secure_channel(config.agency_target, config.common.tls)

        async def deliver(stored: StoredVersion, key: str) -> None:
            await self.forward(agency, key, api.version_message(stored))

        async def deliver_batch(changes: Sequence[tuple[StoredVersion, str]]) -> None:
            assert self.forward_batch is not None
            await self.forward_batch(agency, [(key, api.version_message(stored)) for stored, key in changes])

        # 住基法 30-6 ③ / 30-41 ③: the purge asks the disclosure service for its open cases' subjects first.
        disclosure = secure_channel(config.disclosure_target, config.common.tls) if config.disclosure_target else None
        retention = Retention(database, disclosure_holds(disclosure, DEFAULT_CALL_TIMEOUT) if disclosure else None)
        relay = OutboxRelay(database, self.binding.register, deliver, config.relay, api.engine.hooks,
                            deliver_batch=deliver_batch if self.forward_batch else None)
        gauge = RegisterGauges(database, self.binding.register, dt.timedelta(seconds=config.move_half_wait))

        async def close_channels() -> None:
            await agency.close()
            if disclosure is not None:
                await disclosure.close()

        # 住基法 30-7 / 30-42: each relay worker is a supervised job, restarted on any failure; not essential
        # (see jukilib.supervision: a stale relay keeps its changes in the outbox, calls are still answered).
        stale = config.common.background_stale_after
        return ServiceParts(
            service_names=[self.service_name],
            register=lambda server: self.add_servicer(self.servicer(api, retention), server),
            background=[*(Job(f"relay-{n}", relay.run, stale) for n in range(1, config.relay.workers + 1)),
                        Job("outbox-gauge", gauge.run, stale + gauge.interval)],
            on_stop=[close_channels],
            collect_young_rarely=True,
        )


def register_migrations(*service_dirs: Path) -> list[Migration]:
    """The engine's migrations followed by the service's own (numbered from 0100)."""
    engine_dir = Path(str(resources.files("jukilib.register") / "migrations"))
    return load_migrations([engine_dir, *service_dirs])
