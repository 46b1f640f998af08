"""Wiring of the agency stand-in."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki_services.agency.config import AgencyConfig
from juki_services.agency.servicer import AgencyServicer
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts

SERVICE_NAME = agency_pb2.DESCRIPTOR.services_by_name["AgencyService"].full_name


def migrations() -> list[Migration]:
    return load_migrations([Path(__file__).parent / "migrations"])


def build(config: AgencyConfig, database: Database) -> ServiceParts:
    gateway = secure_channel(config.gateway_target, config.common.tls) if config.gateway_target else None
    servicer = AgencyServicer(database, gateway, call_timeout=config.call_timeout)

    def register(server: aio.Server) -> None:
        agency_pb2_grpc.add_AgencyServiceServicer_to_server(servicer, server)

    async def close_gateway_channel() -> None:
        if gateway is not None:
            await gateway.close()

    return ServiceParts(service_names=[SERVICE_NAME], register=register, on_stop=[close_gateway_channel])
