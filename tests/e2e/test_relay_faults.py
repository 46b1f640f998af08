"""Fault test of the relay to the agency (住基法 30-7): while municipalities keep notifying, the register's
pool is exhausted, the agency fails, then is slow while the relay's connection is terminated (superuser
`pg_terminate_backend`) as it records the deliveries the agency acknowledged, twice: those changes are
delivered again by whoever takes over their lease, and the agency's idempotency key keeps one copy. With
no restart of the service, every change reaches the agency stand-in exactly once and in order per person;
the relay's health entry turned NOT_SERVING while it could make no progress and SERVING again after, the
service's own stayed SERVING, and every failure was logged by type, without personal data. The same holds
across a restart of PostgreSQL itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import grpc
from google.protobuf import duration_pb2

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from juki_services.agency import app as agency_app
from juki_services.identity import app as identity_app
from juki_services.identity.config import IdentityConfig
from jukilib import caller
from jukilib.db.embedded import EmbeddedPostgres
from jukilib.devcerts import DevPki
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukilib.register.config import RelayConfig
from jukilib.retry import RetryPolicy
from jukitools.client import health_status
from jukitools.suite import service_migrations
from tests.conftest import eventually, fresh_database, service_config
from tests.integration.registers import MAEBASHI, REGISTERS, Person, new_person

PERSONS, CHANGES_PER_PERSON = 12, 4
RELAY_HEALTH = "juki.background.relay-1"


def _identity_config(pki: DevPki, databases: dict[str, Any], home: Path, agency: str) -> IdentityConfig:
    config = service_config("identity", pki, databases["identity"], home, {"agency": agency})
    # Small bounds so that the faults bite within seconds: a short acquire timeout (the pool "busy"), a
    # lease of 2 s (a dead worker's changes are taken over soon), no dead letters (the faults must not
    # exhaust the attempts), a 1 s progress bound for the health entries.
    common = config.common
    return dataclasses.replace(
        config,
        common=dataclasses.replace(common, background_stale_after=1.0, database=dataclasses.replace(
            common.database, pool_max=4, acquire_timeout=0.5, command_timeout=3.0)),
        relay=RelayConfig(workers=2, batch_size=5, retry=RetryPolicy(attempts=None, base_delay=0.05, max_delay=0.3),
                          poll_interval=0.05, call_timeout=1.5, lease=2.0))


@contextlib.asynccontextmanager
async def _services(pki: DevPki, home: Path, admin_url: str) -> AsyncIterator[tuple[GrpcService, GrpcService, Any]]:
    databases = await fresh_database(admin_url)
    agency = GrpcService(service_config("agency", pki, databases["agency"], home, {}), service_migrations("agency"),
                         agency_app.build)
    await agency.start()
    await agency.wait_ready(30)
    identity = GrpcService(_identity_config(pki, databases, home, f"127.0.0.1:{agency.port}"),
                           service_migrations("identity"), identity_app.build)
    await identity.start()
    try:
        await identity.wait_ready(30)
        yield agency, identity, databases
    finally:
        await identity.stop(0.5)
        await agency.stop(0.5)


class Faults:
    """The world failing: the register's pool, its database connections, the agency."""

    def __init__(self, admin_url: str, identity: GrpcService, agency: agency_pb2_grpc.AgencyServiceStub,
                 database_url: str) -> None:
        self._admin_url = admin_url
        self._identity = identity
        self._agency = agency
        self._database = urlparse(database_url).path.lstrip("/")

    async def exhaust_pool(self, seconds: float) -> None:
        """Hold every connection of the register's pool for `seconds` (a burst of slow calls)."""
        async with contextlib.AsyncExitStack() as held:
            for _ in range(self._identity.common.database.pool_max):
                await held.enter_async_context(self._identity.database.connection())
            await asyncio.sleep(seconds)

    async def agency(self, *, fail_next_calls: int = 0, delay_ms: int = 0) -> None:
        faults = agency_pb2.FaultInjection(fail_next_calls=fail_next_calls,
                                           delay=duration_pb2.Duration(nanos=delay_ms * 1_000_000))
        await self._agency.SetFaultInjection(agency_pb2.SetFaultInjectionRequest(fault_injection=faults), timeout=5)

    async def terminate_backends(self, connection: asyncpg.Connection) -> int:
        """Terminate every backend of the register's runtime role (the relay's among them)."""
        return len(await connection.fetch(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE usename = 'juki_identity' AND datname = $1""", self._database))

    async def kill_relay_recording(self) -> int:
        """As superuser: hold the changes out for delivery until the relay, back from the agency, waits to
        record their outcome on its connection; then terminate that connection (and every other of the
        register's)."""
        url = urlparse(self._admin_url)._replace(path=f"/{self._database}").geturl()
        connection = await asyncpg.connect(url)
        try:
            async with connection.transaction():
                # Row locks on the changes out for delivery: the relay's update of them waits, ingest goes on.
                out = await connection.fetch("""SELECT id FROM identity.outbox
                                                 WHERE state = 'pending' AND claimed_until > now() FOR UPDATE""")
                assert out, "no change out for delivery"

                async def relay_waits() -> bool:
                    await connection.execute("SELECT pg_stat_clear_snapshot()")  # a fresh view in this transaction
                    # Recording the outcome: delivered, or failed when the agency still refuses after step 2
                    # (how many of its failing calls are left depends on the relay's jittered backoff).
                    return bool(await connection.fetchval(
                        """SELECT count(*) FROM pg_stat_activity WHERE usename = 'juki_identity' AND datname = $1
                           AND wait_event_type = 'Lock' AND query ~ 'UPDATE outbox (o )?SET (state|attempts)'""",
                        self._database))

                await eventually(relay_waits, timeout=10, interval=0.02)
                return await self.terminate_backends(connection)
        finally:
            await connection.close()


async def _notify(stub: identity_pb2_grpc.IdentityServiceStub, persons: list[Person], steps: range) -> None:
    """The persons' changes of `steps`, in order, paced so that the faults hit mid-flow; each notification
    is sent again until answered (ingest is idempotent by notification id), as a municipality's CS would."""
    register = REGISTERS["identity"]
    for step in steps:
        for person in persons:
            person.address = f"群馬県前橋市大手町{step + 1}丁目1番1号"
            request = register.request(person, f"{person.code}-{step}") if step == 0 else register.request(
                person, f"{person.code}-{step}", kind=rpb.CHANGE_KIND_MODIFY,
                reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY)
            while True:
                try:
                    await stub.ApplyNotification(request, metadata=((caller.ORGANIZATION_KEY, MAEBASHI),), timeout=5)
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.03)


async def test_every_change_reaches_the_agency_once_in_order_through_faults_without_a_restart(
        admin_url: str, pki: DevPki, home: Path, log_lines: list[str]) -> None:
    persons = [new_person() for _ in range(PERSONS)]
    first_log_line = len(log_lines)
    async with _services(pki, home, admin_url) as (agency, identity, databases):
        target = f"127.0.0.1:{identity.port}"
        tls = service_config("gateway", pki, databases["gateway"], home, {}).common.tls
        async with secure_channel(f"127.0.0.1:{agency.port}", tls) as agency_channel, \
                secure_channel(target, tls) as channel:
            faults = Faults(admin_url, identity, agency_pb2_grpc.AgencyServiceStub(agency_channel),
                            databases["identity"].url)
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            notifying = asyncio.create_task(_notify(stub, persons, range(2)))
            await _outbox_has(databases["identity"].url, "count(*) >= 5")

            # 1. The pool busy for 5 s: the relay can make no progress, and says so (after 1 s without
            # progress; the rest is room for a loaded CI machine).
            exhausting = asyncio.create_task(faults.exhaust_pool(5.0))
            await eventually(lambda: _status(target, tls, RELAY_HEALTH, "NOT_SERVING"), timeout=5)
            assert await health_status(target, tls) == "SERVING"  # calls are still answered
            await exhausting
            await eventually(lambda: _status(target, tls, RELAY_HEALTH, "SERVING"), timeout=10)

            # 2. The agency fails its next calls.
            await faults.agency(fail_next_calls=6)
            await asyncio.sleep(0.5)

            # 3. The agency slow; the register's connections terminated while changes are out for delivery.
            await asyncio.wait_for(notifying, 60)
            await faults.agency(delay_ms=400)
            notifying = asyncio.create_task(_notify(stub, persons, range(2, CHANGES_PER_PERSON)))
            for _ in range(2):
                await _outbox_has(databases["identity"].url, "count(*) FILTER (WHERE claimed_until > now()) > 0")
                assert await faults.kill_relay_recording() > 0
            await faults.agency()
            await asyncio.wait_for(notifying, 60)

            await _outbox_has(databases["identity"].url,
                              f"count(*) FILTER (WHERE state = 'delivered') = {PERSONS * CHANGES_PER_PERSON}", 60)
            assert not identity.failed.is_set()
            await eventually(lambda: _status(target, tls, RELAY_HEALTH, "SERVING"), timeout=10)
        await asyncio.sleep(0.5)  # a delivery still in flight would show up as a duplicate row
        await _agency_holds_each_change_once_in_order(databases, persons)
    _failures_logged_without_personal_data(log_lines[first_log_line:], persons)


async def test_every_change_reaches_the_agency_once_in_order_across_a_restart_of_postgresql(
        pki: DevPki, home: Path) -> None:
    """PostgreSQL itself restarted (every connection dropped, the server away for a while) as changes are
    out for delivery: the relay and the agency stand-in find the database again by themselves. On a
    server of its own: the session's is shared by every other test."""
    persons = [new_person() for _ in range(PERSONS)]
    with tempfile.TemporaryDirectory(prefix="juki-pg-restart-", ignore_cleanup_errors=True) as directory:
        server = EmbeddedPostgres(Path(directory) / "pgdata", delete_on_stop=True)
        admin_url = await asyncio.to_thread(server.start)
        try:
            async with _services(pki, home, admin_url) as (agency, identity, databases):
                tls = service_config("gateway", pki, databases["gateway"], home, {}).common.tls
                async with secure_channel(f"127.0.0.1:{agency.port}", tls) as agency_channel, \
                        secure_channel(f"127.0.0.1:{identity.port}", tls) as channel:
                    faults = Faults(admin_url, identity, agency_pb2_grpc.AgencyServiceStub(agency_channel),
                                    databases["identity"].url)
                    stub = identity_pb2_grpc.IdentityServiceStub(channel)
                    await faults.agency(delay_ms=300)  # deliveries are in flight when the server goes
                    notifying = asyncio.create_task(_notify(stub, persons, range(CHANGES_PER_PERSON)))
                    await _outbox_has(databases["identity"].url, "count(*) FILTER (WHERE claimed_until > now()) > 0")
                    await asyncio.to_thread(server.restart)
                    await faults.agency()
                    await asyncio.wait_for(notifying, 90)
                    await _outbox_has(databases["identity"].url, "count(*) FILTER (WHERE state = 'delivered') = "
                                      f"{PERSONS * CHANGES_PER_PERSON}", 60)
                    assert not identity.failed.is_set() and not agency.failed.is_set()
                await asyncio.sleep(0.5)  # a delivery still in flight would show up as a duplicate row
                await _agency_holds_each_change_once_in_order(databases, persons)
        finally:
            await asyncio.to_thread(server.stop)


async def _agency_holds_each_change_once_in_order(databases: dict[str, Any], persons: list[Person]) -> None:
    identity = await asyncpg.connect(databases["identity"].url)
    agency = await asyncpg.connect(databases["agency"].url)
    try:
        keys = {r["idempotency_key"] for r in await identity.fetch("SELECT idempotency_key FROM outbox")}
        received = await agency.fetch(
            "SELECT idempotency_key, resident_code, version, received_at FROM received_change ORDER BY received_at")
    finally:
        await identity.close()
        await agency.close()
    assert len(keys) == PERSONS * CHANGES_PER_PERSON
    assert sorted(r["idempotency_key"] for r in received) == sorted(keys)  # each exactly once
    for person in persons:
        versions = [r["version"] for r in received if r["resident_code"] == person.code]
        assert versions == list(range(1, CHANGES_PER_PERSON + 1)), "a person's changes arrived out of order"
    by_person: dict[str, list[Any]] = {}
    for row in received:
        by_person.setdefault(row["resident_code"], []).append(row["received_at"])
    assert all(times == sorted(set(times)) for times in by_person.values())


def _failures_logged_without_personal_data(lines: list[str], persons: list[Person]) -> None:
    records = [json.loads(line) for line in lines]
    failures = [r for r in records if r.get("message") == "background job failed; restarting it"]
    assert failures and {r["job"] for r in failures} <= {"relay-1", "relay-2", "outbox-gauge"}
    assert all(r["error_type"] for r in failures)
    relay_failures = {r["error_type"] for r in failures if r["job"].startswith("relay")}
    # The relay's connection was killed as it recorded what the agency had acknowledged: a failure, restarted.
    assert "ConnectionDoesNotExistError:08003" in relay_failures
    # The pool was busy: back-pressure, not a failure. The relay waited for a connection (and showed no
    # progress meanwhile, "stale" below) instead of restarting with ever longer back-off.
    assert "Unavailable:DATABASE_BUSY" not in relay_failures
    assert any(r.get("message") == "background job stale" and r.get("job", "").startswith("relay") for r in records)
    for person in persons:
        assert not [line for line in lines if person.code in line or person.number in line]


async def _outbox_has(url: str, condition: str, timeout: float = 20) -> None:
    connection = await asyncpg.connect(url)
    try:
        async def holds() -> bool:
            return bool(await connection.fetchval(f"SELECT {condition} FROM outbox"))

        await eventually(holds, timeout=timeout, interval=0.02)
    finally:
        await connection.close()


async def _status(target: str, tls: Any, service: str, expected: str) -> bool:
    return await health_status(target, tls, service) == expected
