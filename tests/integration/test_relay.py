"""The outbox relay, for both registers: at least once with idempotency keys, in order per person,
backoff, dead letters and retry, several workers at once without double delivery."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from juki.register.v1 import register_pb2 as rpb
from jukilib.config import RelayConfig
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.register.api import RegisterApi
from jukilib.register.model import StoredVersion
from jukilib.register.relay import OutboxRelay, dead_letters, outbox_backlog, retry_dead
from tests.conftest import eventually
from tests.integration.registers import Register, apply, new_person, open_register

FAST = RelayConfig(base_delay=0.01, max_delay=0.02, poll_interval=0.01, max_attempts=3, call_timeout=2.0)


class Unavailable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


@pytest.fixture(params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi, Database]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, database, _):
        yield chosen, api, database


async def _changes(reg: Register, api: RegisterApi, persons: int, per_person: int) -> None:
    for _ in range(persons):
        person = new_person()
        await apply(api, reg.request(person, f"{person.code}-0"))
        for step in range(1, per_person):
            person.address = f"群馬県前橋市大手町{step}丁目1番1号"
            await apply(api, reg.request(person, f"{person.code}-{step}", kind=rpb.CHANGE_KIND_MODIFY,
                                         reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY))


async def _run(relays: list[OutboxRelay], until: object, timeout: float = 20.0) -> None:
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        await eventually(until, timeout=timeout)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_several_workers_deliver_each_change_once_in_order_per_person(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=6, per_person=4)
    delivered: dict[str, list[int]] = defaultdict(list)
    keys: list[str] = []

    async def deliver(version: StoredVersion, key: str) -> None:
        await asyncio.sleep(random.uniform(0, 0.01))
        if random.random() < 0.3:
            raise Unavailable()
        delivered[str(version.person_id)].append(version.version)
        keys.append(key)

    relays = [OutboxRelay(database, reg.name, deliver, dataclasses.replace(FAST, max_attempts=50, batch_size=3),
                          api.engine.hooks) for _ in range(4)]

    async def all_delivered() -> bool:
        async with database.connection() as connection:
            return (await outbox_backlog(connection))[0] == 0

    await _run(relays, all_delivered)
    assert len(keys) == len(set(keys)) == 24
    assert all(versions == sorted(versions) for versions in delivered.values())


async def test_failing_change_is_dead_lettered_and_blocks_only_its_person_until_retried(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=2, per_person=2)
    async with database.connection() as connection:
        rows = await connection.fetch("SELECT person_id, version FROM outbox ORDER BY id")
    broken = rows[0]["person_id"]
    failing = True
    delivered: list[tuple[str, int]] = []

    async def deliver(version: StoredVersion, key: str) -> None:
        if version.person_id == broken and failing:
            raise Unavailable()
        delivered.append((str(version.person_id), version.version))

    relay = OutboxRelay(database, reg.name, deliver, FAST, api.engine.hooks)

    async def settled() -> bool:
        async with database.connection() as connection:
            backlog, _, dead = await outbox_backlog(connection)
            return dead == 1 and backlog == 2

    await _run([relay], settled)
    assert [person for person, _ in delivered] == [str(rows[2]["person_id"])] * 2  # the other person went on
    async with database.connection() as connection:
        (dead,) = await dead_letters(connection)
        assert (dead["person_id"], dead["version"], dead["attempts"], dead["last_error"]) == (
            broken, 1, 3, "grpc:UNAVAILABLE")
        failing = False
        assert await retry_dead(connection, None) == 1

    async def caught_up() -> bool:
        async with database.connection() as connection:
            return (await outbox_backlog(connection))[0] == 0

    await _run([relay], caught_up)
    assert [v for p, v in delivered if p == str(broken)] == [1, 2]


async def test_runtime_role_cannot_delete_outbox_rows(register: tuple[Register, RegisterApi, Database]) -> None:
    _, _, database = register
    async with database.connection() as connection:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM outbox")
