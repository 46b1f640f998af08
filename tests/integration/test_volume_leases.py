"""The daily volume caps are spent in leases (issue 18 made caps mandatory on every provision): a replica goes
to the shared counter once per lease, not once per call, and still no replica, nor all of them together,
lets more records out in a day than the purpose allows; what a replica holds unspent is given back on a
graceful stop."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from juki_services.gateway.policy import Purpose
from juki_services.gateway.volume import VolumeCounter, lease_size
from jukilib.config import DatabaseConfig
from jukilib.db.pool import Database
from jukilib.errors import ResourceExhausted
from tests.conftest import fresh_database

NOW = dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.UTC)
CAP = 100
PURPOSE = Purpose(code="TEST-LEASED", legal_basis="住基法30-15②(2)", affair="test", recipients=frozenset({"x"}),
                  methods=frozenset(), fields=(), valid_from=dt.date(2015, 6, 1), max_records_per_day=CAP)


@pytest.fixture
async def replicas(admin_url: str) -> AsyncIterator[tuple[str, list[VolumeCounter]]]:
    """Two gateway replicas' counters on one fresh gateway database."""
    url = (await fresh_database(admin_url))["gateway"].url
    databases = [Database(DatabaseConfig(url=url, migration_url=None)) for _ in range(2)]
    for database in databases:
        await database.connect()
    try:
        yield url, [VolumeCounter(database) for database in databases]
    finally:
        for database in databases:
            await database.close()


async def _counted(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        counted: int = await connection.fetchval("SELECT coalesce(sum(records), 0) FROM volume_counter")
    finally:
        await connection.close()
    return counted


async def test_replicas_spending_leases_never_let_out_more_than_the_cap(
        replicas: tuple[str, list[VolumeCounter]]) -> None:
    url, counters = replicas
    allowed, refused = 0, set()
    turn = 0
    while len(refused) < len(counters):
        counter = counters[turn % len(counters)]
        turn += 1
        try:
            await counter.reserve(PURPOSE, "kyoiku-iinkai", "kyoiku-0001", 1, NOW)
            allowed += 1
        except ResourceExhausted as exhausted:
            assert exhausted.reason == "VOLUME_CAP_PER_DAY"
            refused.add(id(counter))
    assert allowed == CAP  # every record of the day's allowance, and not one more
    assert await _counted(url) == CAP
    transactions = sum(counter.database_reservations for counter in counters)
    assert transactions <= CAP // lease_size(CAP) + 2 * len(counters)  # one per lease, not one per call


async def test_a_call_larger_than_a_lease_takes_what_it_needs(replicas: tuple[str, list[VolumeCounter]]) -> None:
    url, (counter, _) = replicas
    await counter.reserve(PURPOSE, "kyoiku-iinkai", "", 37, NOW)
    assert await _counted(url) == 37
    with pytest.raises(ResourceExhausted):
        await counter.reserve(PURPOSE, "kyoiku-iinkai", "", CAP - 36, NOW)  # refused whole: nothing counted
    assert await _counted(url) == 37


async def test_unspent_leases_are_given_back_on_a_graceful_stop(replicas: tuple[str, list[VolumeCounter]]) -> None:
    url, (counter, other) = replicas
    await counter.reserve(PURPOSE, "kyoiku-iinkai", "", 1, NOW)
    assert await _counted(url) == lease_size(CAP)  # the whole lease is counted while held
    await counter.give_back()
    assert await _counted(url) == 1
    for _ in range(CAP - 1):  # the other replica may now use everything else of the day
        await other.reserve(PURPOSE, "kyoiku-iinkai", "", 1, NOW)
    assert await _counted(url) == CAP
