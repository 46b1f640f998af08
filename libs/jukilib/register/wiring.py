"""Wiring of a register service: engine, API, servicer and relay from one binding.

identity and annex are built by this same function; each passes its binding, its servicer and the
agency method its changes go to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import message
from grpc import aio

from jukilib.config import ServiceConfig
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts
from jukilib.register.api import RegisterApi, RegisterBinding
from jukilib.register.engine import RegisterEngine
from jukilib.register.model import StoredVersion
from jukilib.register.relay import OutboxRelay

# (agency channel, idempotency key, version message) → delivered, or raises.
Forward = Callable[[aio.Channel, str, message.Message], Awaitable[Any]]


def register_service_parts(
    config: ServiceConfig,
    database: Database,
    binding: RegisterBinding,
    *,
    service_name: str,
    add_servicer: Callable[[RegisterApi, aio.Server], None],
    forward: Forward,
) -> ServiceParts:
    """Everything a register service runs: its servicer and `relay.workers` relay workers."""
    api = RegisterApi(RegisterEngine(database, binding.register), binding)
    agency = secure_channel(config.targets["agency"], config.tls)

    async def deliver(stored: StoredVersion, key: str) -> None:
        await forward(agency, key, api.version_message(stored))

    relay = OutboxRelay(database, binding.register, deliver, config.relay)

    async def close_agency_channel() -> None:
        await agency.close()

    return ServiceParts(
        service_names=[service_name],
        register=lambda server: add_servicer(api, server),
        background=[relay.run for _ in range(config.relay.workers)],
        on_stop=[close_agency_channel],
    )


def register_migrations(*service_dirs: Path) -> list[Migration]:
    """The engine's migrations followed by the service's own (numbered from 0100)."""
    engine_dir = Path(str(resources.files("jukilib.register") / "migrations"))
    return load_migrations([engine_dir, *service_dirs])
