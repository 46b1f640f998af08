"""Wiring of the identity service: the register engine with the identity file's record and rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from google.protobuf import message
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki_services.identity.config import IdentityConfig
from juki_services.identity.numbers import IndividualNumbers
from juki_services.identity.rules import validate_identity_record
from juki_services.identity.servicer import IdentityServicer
from jukilib.db.pool import Database
from jukilib.grpc import tracing
from jukilib.grpc.server import ServiceParts
from jukilib.keyring import Keyring
from jukilib.register.api import RegisterApi, RegisterBinding
from jukilib.register.wiring import RegisterService


async def forward_to_agency(channel: aio.Channel, key: str, version: message.Message) -> Any:
    """住基法 30-7: the governor notifies the agency of every applied change."""
    request = agency_pb2.RecordIdentityChangeRequest(idempotency_key=key)
    request.resident_version.CopyFrom(cast(identity_pb2.ResidentVersion, version))
    with tracing.outgoing("/juki.agency.v1.AgencyService/RecordIdentityChange") as metadata:
        return await agency_pb2_grpc.AgencyServiceStub(channel).RecordIdentityChange(request, metadata=metadata)


async def forward_batch_to_agency(channel: aio.Channel, changes: Sequence[tuple[str, message.Message]]) -> Any:
    """住基法 30-7, many changes in one call (the agency records all of them or none)."""
    request = agency_pb2.BatchRecordIdentityChangesRequest()
    for key, version in changes:
        request.requests.add(idempotency_key=key).resident_version.CopyFrom(cast(identity_pb2.ResidentVersion, version))
    with tracing.outgoing("/juki.agency.v1.AgencyService/BatchRecordIdentityChanges") as metadata:
        return await agency_pb2_grpc.AgencyServiceStub(channel).BatchRecordIdentityChanges(request, metadata=metadata)


def individual_numbers(config: IdentityConfig, database: Database) -> IndividualNumbers:
    """個人番号 hooks, with the keyring for 個人番号 at rest."""
    return IndividualNumbers(database, Keyring.load(config.keyring_file))


REGISTER = RegisterService(
    binding=RegisterBinding(
        register="identity",
        collection="residents",
        record_type=identity_pb2.IdentityRecord,
        resource_type=identity_pb2.Resident,
        version_type=identity_pb2.ResidentVersion,
        validate_record=validate_identity_record,
        municipality_field="address_municipality_code",
    ),
    service_name=identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    servicer=IdentityServicer,
    add_servicer=identity_pb2_grpc.add_IdentityServiceServicer_to_server,
    forward=forward_to_agency,
    forward_batch=forward_batch_to_agency,
    migration_dirs=(Path(__file__).parent / "migrations",),
)
migrations = REGISTER.migrations


def api(config: IdentityConfig, database: Database) -> RegisterApi:
    """The register's API as the service serves it (also for the initial load and benchmarks)."""
    return REGISTER.api(config, database, individual_numbers(config, database))


def build(config: IdentityConfig, database: Database) -> ServiceParts:
    return REGISTER.build(config, database, individual_numbers(config, database))
