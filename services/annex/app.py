"""Wiring of the annex service: the register engine with the annex file's record and rules."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import message
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from jukilib.config import ServiceConfig
from jukilib.db.migrations import Migration
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.server import ServiceParts
from jukilib.register.api import RegisterApi, RegisterBinding
from jukilib.register.wiring import register_migrations, register_service_parts
from services.annex.rules import validate_annex_record
from services.annex.servicer import AnnexServicer

SERVICE_NAME = annex_pb2.DESCRIPTOR.services_by_name["AnnexService"].full_name


def migrations() -> list[Migration]:
    return register_migrations()


def binding(config: ServiceConfig) -> RegisterBinding:
    return RegisterBinding(
        register="annex",
        collection="annexResidents",
        record_type=annex_pb2.AnnexRecord,
        resource_type=annex_pb2.AnnexResident,
        version_type=annex_pb2.AnnexResidentVersion,
        validate_record=validate_annex_record,
        municipalities=gunma_municipalities(),
        resident_code_check=CheckDigitMode(config.resident_code_check),
    )


async def forward_to_agency(channel: aio.Channel, key: str, version: message.Message) -> Any:
    """住基法 30-42: the governor notifies the agency's annex server of every applied change."""
    request = agency_pb2.RecordAnnexChangeRequest(idempotency_key=key)
    request.annex_resident_version.CopyFrom(cast(annex_pb2.AnnexResidentVersion, version))
    return await agency_pb2_grpc.AgencyServiceStub(channel).RecordAnnexChange(request)


def build(config: ServiceConfig, database: Database) -> ServiceParts:
    def add_servicer(api: RegisterApi, server: aio.Server) -> None:
        annex_pb2_grpc.add_AnnexServiceServicer_to_server(AnnexServicer(api), server)

    return register_service_parts(config, database, binding(config), service_name=SERVICE_NAME,
                                  add_servicer=add_servicer, forward=forward_to_agency)
