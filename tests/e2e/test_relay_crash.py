"""Crash test: the register service is killed with SIGKILL while its relay is busy forwarding to a
slow agency; after a restart the agency holds every change exactly once (identity and annex)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from google.protobuf import duration_pb2

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2_grpc
from juki.identity.v1 import identity_pb2_grpc
from juki_services.agency import app as agency_app
from jukilib import caller
from jukilib.config import TlsConfig
from jukilib.devcerts import DevPki
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukitools.client import health_status
from jukitools.suite import ensure_keyring, free_port, service_migrations
from tests.conftest import eventually, fresh_database, service_config
from tests.integration.registers import MAEBASHI, REGISTERS, new_person

CHANGES = 60


def _start(register: str, port: int, pki: DevPki, url: str, agency: str, home: Path) -> subprocess.Popen[bytes]:
    pair = pki.servers[register]
    env = {**os.environ, "JUKI_LISTEN": f"127.0.0.1:{port}", "JUKI_DATABASE_URL": url,
           "JUKI_TLS_CERT": str(pair.cert), "JUKI_TLS_KEY": str(pair.key), "JUKI_TLS_CA": str(pki.ca_cert),
           "JUKI_AGENCY_TARGET": agency, "JUKI_HOME": str(home), "JUKI_KEYRING_FILE": str(ensure_keyring(home)),
           "JUKI_RELAY_BASE_DELAY": "0.05", "JUKI_RELAY_MAX_DELAY": "0.2", "JUKI_RELAY_WORKERS": "2"}
    return subprocess.Popen([sys.executable, "-m", "jukitools.cli", "serve", register], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _serving(port: int, pki: DevPki) -> bool:
    pair = pki.servers["gateway"]
    return await health_status(f"127.0.0.1:{port}", TlsConfig(pair.cert, pair.key, pki.ca_cert)) == "SERVING"


@pytest.mark.parametrize("register_name", ["identity", "annex"])
async def test_relay_survives_sigkill_and_the_agency_holds_every_change_once(
        register_name: str, admin_url: str, pki: DevPki, home: Path) -> None:
    register = REGISTERS[register_name]
    databases = await fresh_database(admin_url)
    agency = GrpcService(service_config("agency", pki, databases["agency"], home, {}), service_migrations("agency"),
                         agency_app.build)
    await agency.start()
    await agency.wait_ready(30)
    agency_target = f"127.0.0.1:{agency.port}"
    port = free_port()
    process = _start(register_name, port, pki, databases[register_name].url, agency_target, home)
    agency_db = await asyncpg.connect(databases["agency"].url)
    try:
        await eventually(lambda: _serving(port, pki), timeout=30)
        gateway_tls = service_config("gateway", pki, databases["gateway"], home, {}).common.tls
        async with secure_channel(agency_target, gateway_tls) as channel:
            await agency_pb2_grpc.AgencyServiceStub(channel).SetFaultInjection(agency_pb2.SetFaultInjectionRequest(
                fault_injection=agency_pb2.FaultInjection(delay=duration_pb2.Duration(nanos=40_000_000))))
        stub_type = identity_pb2_grpc.IdentityServiceStub if register_name == "identity" else \
            annex_pb2_grpc.AnnexServiceStub
        async with secure_channel(f"127.0.0.1:{port}", gateway_tls) as channel:
            stub = stub_type(channel)
            for index in range(CHANGES):
                await stub.ApplyNotification(register.request(new_person(), f"crash-{index}"),
                                             metadata=((caller.ORGANIZATION_KEY, MAEBASHI),), timeout=10)

        async def some_received() -> bool:
            return await agency_db.fetchval("SELECT count(*) FROM received_change") >= 5

        await eventually(some_received, timeout=30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        received_at_crash = await agency_db.fetchval("SELECT count(*) FROM received_change")
        assert received_at_crash < CHANGES, "the relay was not busy when it was killed"

        process = _start(register_name, port, pki, databases[register_name].url, agency_target, home)

        async def all_received() -> bool:
            return await agency_db.fetchval("SELECT count(*) FROM received_change") == CHANGES

        await eventually(all_received, timeout=60)
        service_db = await asyncpg.connect(databases[register_name].url)

        async def all_delivered() -> bool:
            # The relay marks a change delivered after the agency's answer: on a slow machine, a moment later.
            return await service_db.fetchval("SELECT count(*) FROM outbox WHERE state <> 'delivered'") == 0

        try:
            await eventually(all_delivered, timeout=30)
            await asyncio.sleep(0.5)  # anything still in flight would show up as an extra row
            keys = {r["idempotency_key"] for r in await service_db.fetch("SELECT idempotency_key FROM outbox")}
            states = await service_db.fetchval("SELECT count(*) FROM outbox WHERE state <> 'delivered'")
        finally:
            await service_db.close()
        received = [r["idempotency_key"] for r in await agency_db.fetch("SELECT idempotency_key FROM received_change")]
        assert sorted(received) == sorted(keys) and len(received) == CHANGES and states == 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        await agency_db.close()
        await agency.stop(0.1)
