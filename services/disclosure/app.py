"""Wiring of the disclosure service."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from grpc import aio

from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from juki_services.disclosure.config import DisclosureConfig
from juki_services.disclosure.desk import Desk
from juki_services.disclosure.monitor import DeadlineGauge, ModificationFollower, ReportFollower
from juki_services.disclosure.organ_notices import OrganNotices
from juki_services.disclosure.records import Records
from juki_services.disclosure.servicer import DisclosureServicer
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.errors import TimeWindow
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts
from jukilib.keyring import Keyring
from jukilib.supervision import Job

SERVICE_NAME = disclosure_pb2.DESCRIPTOR.services_by_name["DisclosureService"].full_name


def migrations() -> list[Migration]:
    return load_migrations([Path(__file__).parent / "migrations"])


def build(config: DisclosureConfig, database: Database) -> ServiceParts:
    # Records are read through the gateway with this service's own certificate (organisation
    # `disclosure`), never from the registers' tables: the gateway checks the purpose and logs each call.
    gateway = secure_channel(config.gateway_target, config.common.tls)
    records = Records(gateway, call_timeout=config.call_timeout)
    desk = Desk(database, records, config.target_days,
                keyring=Keyring.load(config.keyring_file),
                receipt_window=TimeWindow(dt.timedelta(days=config.receipt_max_age_days)), office=config.office)
    organ_notices = OrganNotices(database, records, desk)
    servicer = DisclosureServicer(desk, organ_notices)
    gauge = DeadlineGauge(database, desk)
    follower = ReportFollower(desk, config.poll_interval)
    modifications = ModificationFollower(organ_notices, config.poll_interval)

    def register(server: aio.Server) -> None:
        disclosure_pb2_grpc.add_DisclosureServiceServicer_to_server(servicer, server)

    async def close_gateway_channel() -> None:
        await gateway.close()

    stale = config.common.background_stale_after
    jobs = [Job("deadline-gauge", gauge.run, stale + gauge.interval),
            Job("report-follower", follower.run, stale + config.poll_interval),
            Job("modification-follower", modifications.run, stale + modifications.longest_wait)]
    return ServiceParts(service_names=[SERVICE_NAME], register=register, background=jobs,
                        on_stop=[close_gateway_channel])
