"""System calls do not wait on the operator registry (issue 15): while the gateway cannot read it, a
municipality's 30-6 notification is answered at once on the organisation status last read, and human
work is refused UNAVAILABLE (fail closed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import generate_residents
from tests.conftest import RunningSuite

REGISTRY = "gateway.operator, gateway.organization_status"
STALE_AFTER = 5.0  # the registry copy human work may be decided on
PROMPT = 3.0  # a bound on a hang (the old wait was the database's 10 s command timeout), not a benchmark


async def _lookup(suite: RunningSuite) -> grpc.StatusCode:
    """An operator's lookup of an unknown code: NOT_FOUND when admitted."""
    async with secure_channel(suite.gateway, suite.client_tls("kyoiku-iinkai")) as channel:
        try:
            await identity_pb2_grpc.IdentityServiceStub(channel).LookupResident(
                identity_pb2.LookupResidentRequest(resident_code="12345678901"),
                metadata=purpose_metadata("EDU-SCHOLARSHIP-30-15-2-2", credential=suite.credential("kyoiku-iinkai")),
                timeout=15)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _timed_notification(suite: RunningSuite, seed: int) -> tuple[grpc.StatusCode, float]:
    """(status, seconds) of a 前橋市 CS notification recording a new person."""
    resident = generate_residents(1, seed=seed, municipality_code="102016")[0]
    request = birth_notification(resident, f"outage-{uuid.uuid4()}", dt.date(2026, 4, 1),
                                 dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC))
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        started = time.monotonic()
        try:
            await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
                request, metadata=purpose_metadata("CS-NOTIFY-30-6"), timeout=15)
        except grpc.aio.AioRpcError as error:
            return error.code(), time.monotonic() - started
    return grpc.StatusCode.OK, time.monotonic() - started


async def _until_admitted_again(suite: RunningSuite) -> None:
    deadline = time.monotonic() + 15
    while await _lookup(suite) == grpc.StatusCode.UNAVAILABLE:
        assert time.monotonic() < deadline, "human work not admitted again after the registry came back"
        await asyncio.sleep(0.5)


@asynccontextmanager
async def _registry_unreadable(suite: RunningSuite) -> AsyncIterator[None]:
    owner = await asyncpg.connect(suite.owner_url("gateway"))
    await owner.execute(f"REVOKE SELECT ON {REGISTRY} FROM juki_gateway")
    try:
        yield
    finally:
        await owner.execute(f"GRANT SELECT ON {REGISTRY} TO juki_gateway")
        await owner.close()
        await _until_admitted_again(suite)


@asynccontextmanager
async def _registry_hanging(suite: RunningSuite) -> AsyncIterator[None]:
    """Every read of the registry waits (for the database's command timeout) on a lock the owner holds."""
    owner = await asyncpg.connect(suite.owner_url("gateway"))
    transaction = owner.transaction()
    await transaction.start()
    await owner.execute("LOCK TABLE gateway.operator IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        await transaction.rollback()
        await owner.close()
        await _until_admitted_again(suite)


async def test_notification_is_answered_while_the_registry_cannot_be_read_and_human_work_is_refused(
        suite: RunningSuite) -> None:
    assert await _lookup(suite) == grpc.StatusCode.NOT_FOUND
    async with _registry_unreadable(suite):
        started = time.monotonic()
        while (refused := await _lookup(suite)) == grpc.StatusCode.NOT_FOUND:  # until the copy is stale
            assert time.monotonic() - started < STALE_AFTER + 5, "human work still admitted on a stale copy"
            await asyncio.sleep(0.5)
        assert refused == grpc.StatusCode.UNAVAILABLE
        status, seconds = await _timed_notification(suite, seed=15_060)
    assert status == grpc.StatusCode.OK
    assert seconds < PROMPT, f"the notification waited {seconds:.1f}s on the registry"


async def test_notification_does_not_wait_for_a_registry_read_that_hangs(suite: RunningSuite) -> None:
    async with _registry_hanging(suite):
        await asyncio.sleep(STALE_AFTER + 1)  # the replica's copy is now too old for human work
        status, seconds = await _timed_notification(suite, seed=15_061)
    assert status == grpc.StatusCode.OK
    assert seconds < PROMPT, f"the notification waited {seconds:.1f}s on the registry"
