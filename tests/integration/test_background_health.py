"""A service's background jobs are visible in its health: each job has its entry, and a stale essential job
(the gateway's operation-log writer) turns the whole service NOT_SERVING until it makes progress again."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from juki_services.agency import app as agency_app
from juki_services.agency.config import AgencyConfig
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.grpc.server import GrpcService, ServiceParts
from jukilib.supervision import Heartbeat, Job
from jukitools.client import health_status
from jukitools.suite import service_migrations
from tests.conftest import eventually, fresh_database, service_config


async def test_a_stale_essential_job_turns_the_service_not_serving_and_back(
        admin_url: str, pki: DevPki, home: Path) -> None:
    free = asyncio.Event()
    free.set()

    async def writer(heartbeat: Heartbeat) -> None:
        while True:
            await free.wait()  # cleared: a write that does not finish
            heartbeat.beat()
            await asyncio.sleep(0.01)

    def build(config: AgencyConfig, database: Database) -> ServiceParts:
        parts = agency_app.build(config, database)
        return dataclasses.replace(parts, background=[Job("writer", writer, 0.3, essential=True)])

    databases = await fresh_database(admin_url)
    config = service_config("agency", pki, databases["agency"], home, {})
    service = GrpcService(config, service_migrations("agency"), build)
    await service.start()
    tls = service_config("gateway", pki, databases["gateway"], home, {}).common.tls
    target = f"127.0.0.1:{service.port}"

    async def status(name: str, expected: str) -> bool:
        return await health_status(target, tls, name) == expected

    try:
        await service.wait_ready(30)
        await eventually(lambda: status("juki.background.writer", "SERVING"))
        assert await status("", "SERVING")
        free.clear()
        await eventually(lambda: status("", "NOT_SERVING"), timeout=5)
        assert await status("juki.background.writer", "NOT_SERVING")
        assert await status("juki.agency.v1.AgencyService", "NOT_SERVING")
        free.set()
        await eventually(lambda: status("", "SERVING"), timeout=5)
        assert await status("juki.background.writer", "SERVING")
    finally:
        await service.stop(0.1)
    assert await status("", "UNREACHABLE")
