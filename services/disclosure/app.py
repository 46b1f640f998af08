"""Wiring of the disclosure service."""

from __future__ import annotations

from pathlib import Path

from grpc import aio

from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from jukilib.config import ServiceConfig
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.grpc.server import ServiceParts
from services.disclosure.servicer import DisclosureServicer

SERVICE_NAME = disclosure_pb2.DESCRIPTOR.services_by_name["DisclosureService"].full_name


def migrations() -> list[Migration]:
    return load_migrations([Path(__file__).parent / "migrations"])


def build(config: ServiceConfig, database: Database) -> ServiceParts:
    servicer = DisclosureServicer(database, config.disclosure_target_days)

    def register(server: aio.Server) -> None:
        disclosure_pb2_grpc.add_DisclosureServiceServicer_to_server(servicer, server)

    return ServiceParts(service_names=[SERVICE_NAME], register=register)
