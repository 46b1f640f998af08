"""Wiring of the identity service: the register engine with the identity file's record and rules."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import message
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.config import ServiceConfig
from jukilib.db.migrations import Migration
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.server import ServiceParts
from jukilib.register.api import RegisterApi, RegisterBinding
from jukilib.register.wiring import register_migrations, register_service_parts
from services.identity.rules import validate_identity_record
from services.identity.servicer import IdentityServicer

SERVICE_NAME = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name


def migrations() -> list[Migration]:
    return register_migrations()


def binding(config: ServiceConfig) -> RegisterBinding:
    return RegisterBinding(
        register="identity",
        collection="residents",
        record_type=identity_pb2.IdentityRecord,
        resource_type=identity_pb2.Resident,
        version_type=identity_pb2.ResidentVersion,
        validate_record=validate_identity_record,
        municipalities=gunma_municipalities(),
        resident_code_check=CheckDigitMode(config.resident_code_check),
    )


async def forward_to_agency(channel: aio.Channel, key: str, version: message.Message) -> Any:
    """住基法 30-7: the governor notifies the agency of every applied change."""
    request = agency_pb2.RecordIdentityChangeRequest(idempotency_key=key)
    request.resident_version.CopyFrom(cast(identity_pb2.ResidentVersion, version))
    return await agency_pb2_grpc.AgencyServiceStub(channel).RecordIdentityChange(request)


def build(config: ServiceConfig, database: Database) -> ServiceParts:
    def add_servicer(api: RegisterApi, server: aio.Server) -> None:
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(IdentityServicer(api), server)

    return register_service_parts(config, database, binding(config), service_name=SERVICE_NAME,
                                  add_servicer=add_servicer, forward=forward_to_agency)
