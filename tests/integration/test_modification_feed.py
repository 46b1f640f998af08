"""The registers' feed of 修正 versions (ListModifications), for both registers on a real PostgreSQL: what the
disclosure service follows to tell organs of every correction of a value they received (住基法 30-35)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from juki.register.v1 import register_pb2 as rpb
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.errors import InvalidArgument
from jukilib.register.api import RegisterApi
from tests.integration.registers import Register, apply, new_person, open_register

CLERICAL = rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION


@pytest.fixture(scope="module", params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi, Database]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, database, _):
        yield chosen, api, database


async def _drain(api: RegisterApi, token: str) -> tuple[list[Any], str]:
    """Every entry after `token`, read in pages of 2, and the token to resume from."""
    entries: list[Any] = []
    while True:
        page, next_token = await api.modifications.list(2, token)
        entries.extend(page)
        if not next_token:
            return entries, token
        token = next_token


async def test_the_feed_lists_each_correction_once_with_the_fields_it_changed_and_no_value(
        register: tuple[Register, RegisterApi, Database]) -> None:
    reg, api, _ = register
    _, start = await _drain(api, "")
    person = new_person(name="誤記　太郎")
    recorded = await apply(api, reg.request(person, "feed-1"))
    person.name = "上野　太郎"
    fixed = await apply(api, reg.request(person, "feed-2", kind=rpb.CHANGE_KIND_MODIFY, reason=CLERICAL))

    entries, resume = await _drain(api, start)
    (entry,) = entries  # the 記載 is no 修正
    person_name = recorded.name.rsplit("/versions/", 1)[0]
    assert entry.name == fixed.name and entry.person == person_name
    assert (entry.version, entry.previous_version) == (2, 1) and entry.reason == CLERICAL
    assert list(entry.field_paths) == ["record.full_name"]
    wire = entry.SerializeToString()
    assert "誤記".encode() not in wire and person.name.encode() not in wire  # never a value
    # The person's 住民票コード (every one it had in the file), for the follow-up to find the provisions by.
    assert list(entry.resident_codes) == [person.code]
    # A reader resuming from where it stood gets nothing twice.
    assert (await _drain(api, resume))[0] == []


async def test_a_correction_committed_after_an_older_transaction_waits_for_it(
        register: tuple[Register, RegisterApi, Database]) -> None:
    # A version's place is its transaction: while an older transaction runs, a newer 修正 is held back, so a reader
    # that moved past the newer one could never miss a 修正 the older transaction commits.
    reg, api, database = register
    _, start = await _drain(api, "")
    person = new_person()
    await apply(api, reg.request(person, "feed-3"))
    async with database.connection() as connection:
        older: asyncpg.transaction.Transaction = connection.transaction()
        await older.start()
        await connection.fetchval("SELECT pg_current_xact_id()::text")
        person.sex = "2"
        await apply(api, reg.request(person, "feed-4", kind=rpb.CHANGE_KIND_MODIFY, reason=CLERICAL))
        assert (await _drain(api, start))[0] == []
        await older.rollback()
    (entry,) = (await _drain(api, start))[0]
    assert list(entry.field_paths) == ["record.sex_code"]


async def test_a_forged_page_token_is_refused_naming_the_field(
        register: tuple[Register, RegisterApi, Database]) -> None:
    _, api, _ = register
    with pytest.raises(InvalidArgument) as refused:
        await api.modifications.list(10, "eyJ4aWQiOiJ4In0=")
    assert [v.field for v in refused.value.violations] == ["page_token"]
