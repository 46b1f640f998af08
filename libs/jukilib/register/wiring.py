"""Wiring of a register service: engine, API, servicer and relay from one declaration.

identity and annex are each a `RegisterService`; each declares its contract, record, rules and the
agency method its changes go to, and is built by the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import message
from grpc import aio

from jukilib.config import ServiceConfig
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts
from jukilib.register.api import RecordValidator, RegisterApi, RegisterBinding
from jukilib.register.engine import RegisterEngine
from jukilib.register.model import StoredVersion
from jukilib.register.relay import OutboxRelay

# (agency channel, idempotency key, version message) → delivered, or raises.
Forward = Callable[[aio.Channel, str, message.Message], Awaitable[Any]]


@dataclass(frozen=True)
class RegisterService:
    """A register service declared once: contract, record messages, field rules, agency method.

    identity and annex are each one of these; everything else (engine, API, relay, wiring) is shared.
    """

    register: str
    """`identity` or `annex`: names the register in outbox keys and traces."""
    collection: str
    """Resource collection id, e.g. `residents`."""
    service_name: str
    record_type: type[message.Message]
    resource_type: type[message.Message]
    version_type: type[message.Message]
    validate_record: RecordValidator
    servicer: Callable[[RegisterApi], Any]
    add_servicer: Callable[[Any, aio.Server], None]
    forward: Forward

    def binding(self, config: ServiceConfig) -> RegisterBinding:
        return RegisterBinding(
            register=self.register,
            collection=self.collection,
            record_type=self.record_type,
            resource_type=self.resource_type,
            version_type=self.version_type,
            validate_record=self.validate_record,
            municipalities=gunma_municipalities(),
            resident_code_check=CheckDigitMode(config.resident_code_check),
        )

    def migrations(self) -> list[Migration]:
        return register_migrations()

    def build(self, config: ServiceConfig, database: Database) -> ServiceParts:
        """Everything the service runs: its servicer and `relay.workers` relay workers."""
        api = RegisterApi(RegisterEngine(database, self.register), self.binding(config))
        agency = secure_channel(config.targets["agency"], config.tls)

        async def deliver(stored: StoredVersion, key: str) -> None:
            await self.forward(agency, key, api.version_message(stored))

        relay = OutboxRelay(database, self.register, deliver, config.relay)

        async def close_agency_channel() -> None:
            await agency.close()

        return ServiceParts(
            service_names=[self.service_name],
            register=lambda server: self.add_servicer(self.servicer(api), server),
            background=[relay.run for _ in range(config.relay.workers)],
            on_stop=[close_agency_channel],
        )


def register_migrations(*service_dirs: Path) -> list[Migration]:
    """The engine's migrations followed by the service's own (numbered from 0100)."""
    engine_dir = Path(str(resources.files("jukilib.register") / "migrations"))
    return load_migrations([engine_dir, *service_dirs])
