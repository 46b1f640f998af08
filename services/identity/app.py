"""Wiring of the identity service: the register engine with the identity file's record and rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from google.protobuf import message
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki_services.identity.numbers import IndividualNumbers
from juki_services.identity.rules import validate_identity_record
from juki_services.identity.servicer import IdentityServicer
from jukilib.config import ConfigError, ServiceConfig
from jukilib.db.pool import Database
from jukilib.grpc import tracing
from jukilib.keyring import Keyring
from jukilib.register.api import RegisterBinding
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


def individual_numbers(config: ServiceConfig, database: Database) -> IndividualNumbers:
    """個人番号 hooks; the keyring is required (JUKI_KEYRING_FILE)."""
    if config.keyring_file is None:
        raise ConfigError("JUKI_KEYRING_FILE is required by the identity service")
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
    hooks=individual_numbers,
    migration_dirs=(Path(__file__).parent / "migrations",),
)
migrations = REGISTER.migrations
build = REGISTER.build
