"""Retention (both registers): a purge removes only what a configured rule allows — superseded
versions and removed persons past their period, never shorter than 150 years — never a current version,
anything the agency has not acknowledged, nor a version a 12-5 report names, and records what it did."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from juki.register.v1 import register_pb2 as rpb
from jukilib.devcerts import DevPki
from jukilib.register.api import RegisterApi
from jukilib.register.reports import NewReport
from jukilib.register.retention import RetentionRules, purge
from tests.integration.registers import Register, apply, new_person, open_register


@pytest.fixture(params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi, str]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, _, urls):
        yield chosen, api, urls.migration_url


async def _owner(url: str, schema: str) -> asyncpg.Connection:
    connection = await asyncpg.connect(url)
    await connection.execute(f"SET search_path TO {schema}")
    return connection


async def _received_long_ago(owner: asyncpg.Connection) -> None:
    """Every version as if received 151 years ago: past the 150-year period."""
    await owner.execute("UPDATE person_version SET receive_time = receive_time - interval '151 years'")


@pytest.mark.parametrize("years", [0.0, -1.0, 149.9, float("nan")])
def test_no_rule_purges_sooner_than_150_years(years: float) -> None:
    # 令34 keeps the municipal copy 150 years; the prefecture's own article is UNVERIFIED: the stricter.
    for rules in ({"superseded_years": years}, {"removed_years": years}):
        with pytest.raises(ValueError, match="at least 150 years"):
            RetentionRules(**rules)


async def test_purge_keeps_what_a_12_5_report_names(register: tuple[Register, RegisterApi, str]) -> None:
    reg, api, owner_url = register
    reported, gone = new_person(), new_person()
    await apply(api, reg.request(reported, "r-1"))
    await api.reports.create(NewReport(reported.code, rpb.REPORT_SOURCE_PREFECTURE_FINDING, "ITEM_MISMATCH",
                                       ["record.address"], "", None))
    await apply(api, reg.request(reported, "r-2", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_MINOR_CORRECTION))
    await apply(api, reg.request(gone, "r-3"))
    await api.reports.create(NewReport(gone.code, rpb.REPORT_SOURCE_PREFECTURE_FINDING, "DUPLICATE_RECORD",
                                       ["record.resident_code"], "", None))
    await apply(api, reg.request(gone, "r-4", kind=rpb.CHANGE_KIND_REMOVE, reason=rpb.CHANGE_REASON_DEATH))
    owner = await _owner(owner_url, reg.name)
    try:
        await owner.execute("UPDATE outbox SET state = 'delivered'")
        await _received_long_ago(owner)
        result = await purge(owner, RetentionRules(), dry_run=False)
        assert (result.versions, result.persons) == (0, 0)  # evidence of the reports, kept with them
        assert await owner.fetchval("SELECT count(*) FROM person_version") == 4
    finally:
        await owner.close()


async def test_purge_keeps_everything_under_the_default_rules(register: tuple[Register, RegisterApi, str]) -> None:
    reg, api, owner_url = register
    person = new_person()
    await apply(api, reg.request(person, "keep-1"))
    await apply(api, reg.request(person, "keep-2", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_MINOR_CORRECTION))
    owner = await _owner(owner_url, reg.name)
    try:
        result = await purge(owner, RetentionRules(), dry_run=False)
        assert (result.versions, result.persons) == (0, 0)
        assert await owner.fetchval("SELECT count(*) FROM person_version") == 2
    finally:
        await owner.close()


async def test_purge_removes_only_delivered_superseded_versions_and_removed_persons(
        register: tuple[Register, RegisterApi, str]) -> None:
    reg, api, owner_url = register
    living, gone = new_person(), new_person()
    await apply(api, reg.request(living, "p-1"))
    await apply(api, reg.request(living, "p-2", kind=rpb.CHANGE_KIND_MODIFY, reason=rpb.CHANGE_REASON_MINOR_CORRECTION))
    await apply(api, reg.request(gone, "p-3"))
    await apply(api, reg.request(gone, "p-4", kind=rpb.CHANGE_KIND_REMOVE, reason=rpb.CHANGE_REASON_DEATH))
    owner = await _owner(owner_url, reg.name)
    try:
        await _received_long_ago(owner)
        rules = RetentionRules()
        undelivered = await purge(owner, rules, dry_run=False)
        assert (undelivered.versions, undelivered.persons) == (0, 0)  # the agency has nothing yet
        await owner.execute("UPDATE outbox SET state = 'delivered'")
        dry = await purge(owner, rules, dry_run=True)
        assert (dry.versions, dry.persons) == (2, 1) and await owner.fetchval("SELECT count(*) FROM person") == 2
        done = await purge(owner, rules, dry_run=False)
        assert (done.versions, done.persons) == (2, 1)
        remaining = await owner.fetch("SELECT resident_code, version FROM person_version")
        assert [(r["resident_code"], r["version"]) for r in remaining] == [(living.code, 2)]
        runs = await owner.fetch("SELECT dry_run, versions_purged, persons_purged FROM retention_run ORDER BY id")
        assert [tuple(r) for r in runs] == [(False, 0, 0), (True, 2, 1), (False, 2, 1)]
    finally:
        await owner.close()
    assert (await api.lookup(reg.lookup(living.code))).version == 2
