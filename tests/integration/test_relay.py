"""The outbox relay, for both registers: at least once with idempotency keys, in order per person,
backoff, dead letters and retry, several workers at once without double delivery, leases taken over
after a worker died, no lock held while the agency is called, batches and the change a batch refuses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import grpc
import pytest

from juki.register.v1 import register_pb2 as rpb
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.register.api import RegisterApi
from jukilib.register.config import RelayConfig
from jukilib.register.model import StoredVersion
from jukilib.register.relay import CLAIM, ORDERED_WALK, OutboxRelay, dead_letters, outbox_backlog, retry_dead
from jukilib.retry import RetryPolicy
from tests.conftest import eventually
from tests.integration.registers import Register, apply, new_person, open_register

FAST = RelayConfig(retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02), poll_interval=0.01, call_timeout=2.0)


class Unavailable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class Refused(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(), "refused")


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

    patient = dataclasses.replace(FAST, retry=RetryPolicy(attempts=50, base_delay=0.01, max_delay=0.02), batch_size=3)
    relays = [OutboxRelay(database, reg.name, deliver, patient, api.engine.hooks) for _ in range(4)]

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


async def test_changes_of_a_worker_that_died_mid_delivery_are_taken_over_after_its_lease(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=3, per_person=1)
    config = dataclasses.replace(FAST, lease=0.5)

    async def dies(version: StoredVersion, key: str) -> None:
        raise RuntimeError("the worker's process is gone")  # not a delivery error: the pass ends mid-delivery

    with pytest.raises(RuntimeError):
        await OutboxRelay(database, reg.name, dies, config, api.engine.hooks).run_once()
    keys: list[str] = []

    async def deliver(version: StoredVersion, key: str) -> None:
        keys.append(key)

    survivor = OutboxRelay(database, reg.name, deliver, config, api.engine.hooks)
    assert await survivor.run_once() == 0  # still leased to the dead worker
    await asyncio.sleep(0.6)
    assert await survivor.run_once() == 3 and len(set(keys)) == 3


async def test_no_transaction_or_row_lock_is_held_while_the_agency_is_called(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=2, per_person=1)
    checked: list[int] = []
    one_at_a_time = asyncio.Lock()  # the relay sends the two changes at once; their checks must not meet

    async def deliver(version: StoredVersion, key: str) -> None:
        async with one_at_a_time, database.transaction() as connection:
            # Would fail with LockNotAvailableError if the relay held the claimed rows locked.
            checked.append(len(await connection.fetch("SELECT id FROM outbox FOR UPDATE NOWAIT")))
            assert not await connection.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND usename = current_user
                     AND state LIKE 'idle in transaction%'""")

    assert await OutboxRelay(database, reg.name, deliver, FAST, api.engine.hooks).run_once() == 2
    assert checked == [2, 2]


async def test_a_change_the_agency_refuses_in_a_batch_fails_alone(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=3, per_person=1)
    async with database.connection() as connection:
        refused = (await connection.fetch("SELECT person_id FROM outbox ORDER BY id"))[1]["person_id"]
    batches: list[int] = []
    singles: list[str] = []

    async def deliver_batch(changes: Sequence[tuple[StoredVersion, str]]) -> None:
        batches.append(len(changes))
        if any(version.person_id == refused for version, _ in changes):
            raise Refused()

    async def deliver(version: StoredVersion, key: str) -> None:
        if version.person_id == refused:
            raise Refused()
        singles.append(key)

    relay = OutboxRelay(database, reg.name, deliver, FAST, api.engine.hooks, deliver_batch=deliver_batch)
    assert await relay.run_once() == 3
    assert batches == [3] and len(singles) == 2
    async with database.connection() as connection:
        states = dict(await connection.fetch("SELECT person_id, state FROM outbox"))
    assert states.pop(refused) == "pending" and set(states.values()) == {"delivered"}


async def test_a_batch_the_agency_cannot_take_is_retried_as_a_batch(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=3, per_person=1)
    batches: list[int] = []

    async def deliver_batch(changes: Sequence[tuple[StoredVersion, str]]) -> None:
        batches.append(len(changes))
        if len(batches) == 1:
            raise Unavailable()

    async def deliver(version: StoredVersion, key: str) -> None:
        raise AssertionError("an unavailable agency is not asked change by change")

    relay = OutboxRelay(database, reg.name, deliver, FAST, api.engine.hooks, deliver_batch=deliver_batch)
    assert await relay.run_once() == 3
    await asyncio.sleep(0.05)  # FAST backoff
    assert await relay.run_once() == 3
    assert batches == [3, 3]
    async with database.connection() as connection:
        assert (await outbox_backlog(connection))[0] == 0


async def test_a_relay_stopped_mid_delivery_gives_its_changes_back_at_once(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, database = register
    await _changes(reg, api, persons=2, per_person=1)
    calling = asyncio.Event()

    async def hangs(version: StoredVersion, key: str) -> None:
        calling.set()
        await asyncio.sleep(3600)

    relay = OutboxRelay(database, reg.name, hangs, dataclasses.replace(FAST, lease=3600), api.engine.hooks)
    stopping = asyncio.create_task(relay.run_once())
    await calling.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    async with database.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM outbox WHERE claimed_until IS NOT NULL") == 0


@pytest.mark.parametrize("name", ["identity", "annex"])
async def test_claiming_changes_for_delivery_adds_no_index_entries(name: str, admin_url: str, pki: DevPki,
                                                                 home: Path) -> None:
    """住基法 30-7 / 30-42: every change is forwarded, and the relay's claim of it (its lease, in no index) is an
    update in place on the outbox's page (HOT), which leaves half of each page free for it (register
    migration 0019): no new index entries per claim, none left dead in the index of pending changes."""
    async with open_register(name, admin_url, pki, home) as (reg, api, database, service_database):
        await _changes(reg, api, persons=120, per_person=2)  # a few full pages of outbox rows
        delivered: list[str] = []

        async def deliver(version: StoredVersion, key: str) -> None:
            delivered.append(key)

        async def all_delivered() -> bool:
            async with database.connection() as connection:
                return (await outbox_backlog(connection))[0] == 0

        await _run([OutboxRelay(database, reg.name, deliver, dataclasses.replace(FAST, batch_size=20),
                                api.engine.hooks)], all_delivered)
        await database.close()  # the relay's connections end, and flush their statistics as they do
        connection = await asyncpg.connect(service_database.url)
        try:
            updates, hot = await connection.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'outbox'::regclass")
        finally:
            await connection.close()
    assert len(delivered) == len(set(delivered)) == 240
    # Each change: claimed (HOT), then marked delivered (its state leaves the partial indexes: a new version).
    assert updates >= 2 * len(delivered)
    assert hot >= 0.9 * len(delivered), (hot, updates)


_SYNTHETIC_CHANGES = """INSERT INTO outbox (person_id, version, idempotency_key)
                        SELECT gen_random_uuid(), 1, 'synthetic/' || n FROM generate_series($1::int, $2::int) AS n"""


@pytest.mark.parametrize("name", ["identity", "annex"])
async def test_the_claim_reads_a_batch_of_a_large_backlog_whatever_the_statistics(name: str, admin_url: str,
                                                                                  pki: DevPki, home: Path) -> None:
    """住基法 30-7 / 30-42: the relay drains a backlog only if a claim costs the same whatever the backlog. After a
    quiet spell the planner's statistics say nothing is undelivered (autovacuum analyses after a tenth of the
    table changed), and it checked each candidate's earlier undelivered changes with a scan of every
    undelivered change: 600,000 index entries for a claim of 10 out of 60,000 pending. The claim looks up each
    candidate's own earlier changes, and walks the pending ones in id order."""
    async with open_register(name, admin_url, pki, home) as (_, _, _, service_database):
        # Synthetic changes of persons not in the register: the superuser's session skips the foreign keys.
        admin = await asyncpg.connect(admin_url, database=urlparse(service_database.url).path.lstrip("/"),
                                      server_settings={"search_path": service_database.schema,
                                                       "session_replication_role": "replica"})
        try:
            await admin.execute("ALTER TABLE outbox SET (autovacuum_enabled = false)")
            await admin.execute(_SYNTHETIC_CHANGES, 1, 2_000)
            await admin.execute("UPDATE outbox SET state = 'delivered'")
            await admin.execute("ANALYZE outbox")  # the statistics of a quiet outbox: nothing pending
            await admin.execute(_SYNTHETIC_CHANGES, 2_001, 62_000)  # then a backlog
            async with admin.transaction():  # the relay's claim, as `OutboxRelay` runs it
                await admin.execute(ORDERED_WALK)
                plan = await admin.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {CLAIM}", 10, 30.0,
                                            uuid.uuid4())
            claimed = await admin.fetchval("SELECT count(*) FROM outbox WHERE claim_token IS NOT NULL")
        finally:
            await admin.close()
    top = json.loads(plan)[0]["Plan"]
    blocks = top["Shared Hit Blocks"] + top["Shared Read Blocks"]
    assert claimed == 10
    assert blocks < 500, blocks  # ~150; the scan of every undelivered change: ~606,000
