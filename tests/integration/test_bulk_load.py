"""`juki load`: the initial bulk load of an existing file into a register, on a real PostgreSQL.

A loaded person is what a 記載 would have stored (found by lookup and by the 4-item search, 個人番号
encrypted apart and found by its keyed hash), a bad row stops the load naming line and field and
leaves nothing behind, fast mode drops and rebuilds keys and indexes only on an empty register, and
the register keeps working afterwards (a later 修正 is version 2).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import gc
import io
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from juki.register.v1 import register_pb2 as rpb
from juki_services.identity.numbers import IndividualNumbers
from jukilib.db.bootstrap import ServiceDatabase
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.domain.codes import CheckDigitMode, check_resident_code, is_valid_individual_number
from jukilib.errors import AlreadyExists
from jukilib.register.api import RegisterApi
from jukilib.register.load import (
    LOAD_DIGEST,
    BulkLoadError,
    FastModeRefused,
    LoadOptions,
    LoadReport,
    RowProblem,
    load_file,
)
from jukilib.register.load import workers as load_workers
from jukilib.register.rows import outbox_key
from jukitools import cli_bulk
from jukitools.demo.fast import FastResidents
from tests.conftest import fresh_database, service_config
from tests.integration.registers import MAEBASHI, REGISTERS, Person, apply, individual_number, new_person

TAKASAKI = "102024"


@dataclass
class Loaded:
    """A fresh database with the API of one register and the owner URL the loader uses."""

    api: RegisterApi
    owner_url: str
    databases: dict[str, ServiceDatabase]

    async def load(self, path: Path, **options: Any) -> LoadReport:
        return await load_file(self.owner_url, self.api, path, LoadOptions(**options))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.owner_url)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    async def count(self, table: str) -> int:
        return int((await self.fetch(f"SELECT count(*) AS n FROM {table}"))[0]["n"])

    @property
    def numbers(self) -> IndividualNumbers:
        hooks = self.api.engine.hooks
        assert isinstance(hooks, IndividualNumbers)
        return hooks


async def _register(register: str, admin_url: str, pki: DevPki, home: Path) -> AsyncIterator[Loaded]:
    databases = await fresh_database(admin_url)
    config = service_config(register, pki, databases[register], home, {"agency": "127.0.0.1:1"})
    database = Database(config.common.database)
    await database.connect()
    try:
        yield Loaded(REGISTERS[register].api(config, database), databases[register].migration_url, databases)
    finally:
        await database.close()


@pytest.fixture
async def identity(admin_url: str, pki: DevPki, home: Path) -> AsyncIterator[Loaded]:
    async for loaded in _register("identity", admin_url, pki, home):
        yield loaded


@pytest.fixture
async def annex(admin_url: str, pki: DevPki, home: Path) -> AsyncIterator[Loaded]:
    async for loaded in _register("annex", admin_url, pki, home):
        yield loaded


def _identity_row(person: Person, municipality: str = MAEBASHI, **extra: Any) -> dict[str, Any]:
    year, month, day = person.birth
    return {"resident_code": person.code, "individual_number": person.number, "full_name": person.name,
            "full_name_kana": person.kana, "kana_confirmed": True,
            "birth_date": {"precision": "DATE_PRECISION_DAY", "year": year, "month": month, "day": day,
                           "original_text": f"{year}-{month:02d}-{day:02d}"},
            "sex_code": person.sex, "address": person.address, "address_municipality_code": municipality, **extra}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


async def _lookup(loaded: Loaded, code: str) -> Any:
    return await loaded.api.lookup(REGISTERS[loaded.api.binding.register].lookup(code))


async def _search(loaded: Loaded, query: rpb.SearchQuery) -> tuple[list[tuple[Any, tuple[str, ...]]], bool]:
    return await loaded.api.search(query)


_KEY_QUERY = """
SELECT 'index' AS kind, tablename AS table_name, indexname AS name, indexdef AS definition
FROM pg_indexes WHERE schemaname = current_schema()
UNION ALL
SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid) || CASE WHEN convalidated
       THEN '' ELSE ' (not validated)' END
FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
ORDER BY 1, 2, 3"""


async def _keys_and_indexes(loaded: Loaded) -> list[tuple[str, ...]]:
    return [tuple(row) for row in await loaded.fetch(_KEY_QUERY)]


# --- identity, JSON lines --------------------------------------------------------------------------

async def test_jsonl_load_is_found_by_lookup_search_and_its_individual_number(identity: Loaded,
                                                                              tmp_path: Path) -> None:
    before = await _keys_and_indexes(identity)
    people = [new_person(name="赤城　花子", kana="アカギ　ハナコ", birth=(1984, 2, 29), sex="2"),
              new_person(name="妙義　一郎", kana="ミョウギ　イチロウ", birth=(1950, 1, 1)),
              new_person()]
    rows = [_identity_row(people[0]),
            _identity_row(people[1], TAKASAKI, event_date="2019-04-01", notification_id="tk-000123",
                          change_reason="CHANGE_REASON_MOVE_IN_FROM_ABROAD"),
            _identity_row(people[2], change_reason=3)]
    path = _write_jsonl(tmp_path / "identity.jsonl", rows)

    report = await identity.load(path)

    assert report.persons == 3 and report.fast and report.skipped == 0 and not report.problems
    assert await _keys_and_indexes(identity) == before, "keys and indexes rebuilt exactly as they were"
    first = await _lookup(identity, people[0].code)
    assert first.record.individual_number == people[0].number
    assert (first.record.full_name, first.record.birth_date.day, first.version) == ("赤城　花子", 29, 1)
    assert first.change.kind == rpb.CHANGE_KIND_RECORD and first.change.reason == rpb.CHANGE_REASON_REISSUE
    assert first.change.notification_id == "load-1" and first.change.municipality_code == MAEBASHI
    loaded_at = first.change.receive_time.ToDatetime(dt.UTC)
    assert first.change.notify_time.ToDatetime(dt.UTC) == loaded_at
    today = loaded_at.astimezone(dt.timezone(dt.timedelta(hours=9))).date()
    assert (first.change.event_date.year, first.change.event_date.month, first.change.event_date.day) == (
        today.year, today.month, today.day)
    second = await _lookup(identity, people[1].code)
    assert second.change.notification_id == "tk-000123" and second.change.municipality_code == TAKASAKI
    assert second.change.reason == rpb.CHANGE_REASON_MOVE_IN_FROM_ABROAD
    assert (second.change.event_date.year, second.change.event_date.month) == (2019, 4)
    third = await _lookup(identity, people[2].code)
    assert third.change.reason == rpb.CHANGE_REASON_BIRTH

    found, _ = await _search(identity, rpb.SearchQuery(
        full_name="赤城 花子", birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_YEAR, year=1984)))
    assert [resource.name for resource, _ in found] == [first.name]
    by_kana, _ = await _search(identity, rpb.SearchQuery(
        full_name_kana="ミョウギ　イチロウ", municipality_code=TAKASAKI,
        birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_DAY, year=1950, month=1, day=1)))
    assert [resource.name for resource, _ in by_kana] == [second.name]

    # 個人番号: only in its own table, encrypted; found through the keyed hash.
    for person in people:
        for table in ("person", "person_version"):
            leaks = await identity.fetch(
                f"SELECT count(*) AS n FROM {table} WHERE record::text LIKE $1 OR record ? 'individual_number'",
                f"%{person.number}%")
            assert leaks[0]["n"] == 0
        person_id = await identity.numbers.person_of(person.number)
        resource = await _lookup(identity, person.code)
        assert resource.name == f"residents/{person_id}"
    sealed = await identity.fetch("SELECT ciphertext FROM individual_number")
    assert len(sealed) == 3 and all(people[0].number.encode() not in bytes(row["ciphertext"]) for row in sealed)

    # What a 記載 stores besides: each version the receipt of its id, no outbox row (the agency holds the file).
    receipts = await identity.fetch("SELECT notification_id, request_digest FROM person_version "
                                    "ORDER BY notification_id")
    assert [(r["notification_id"], bytes(r["request_digest"])) for r in receipts] == [
        ("load-1", LOAD_DIGEST), ("load-3", LOAD_DIGEST), ("tk-000123", LOAD_DIGEST)]
    assert await identity.count("outbox") == 0
    assert await identity.count("person_version") == 3
    assert not await identity.fetch("SELECT 1 FROM pg_class WHERE relname = 'juki_bulk_load_staging'")


async def test_a_loaded_person_takes_later_notifications(identity: Loaded, tmp_path: Path) -> None:
    reg = REGISTERS["identity"]
    person = new_person()
    await identity.load(_write_jsonl(tmp_path / "one.jsonl", [_identity_row(person, event_date="2020-01-01")]))

    person.address = "群馬県前橋市新しい町2丁目2番2号"
    modified = await apply(identity.api, reg.request(
        person, "cs-modify-1", kind=rpb.CHANGE_KIND_MODIFY,
        reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY, event=dt.date(2026, 1, 15)))

    assert modified.version == 2
    current = await _lookup(identity, person.code)
    assert current.version == 2 and current.record.address == person.address
    assert current.record.individual_number == person.number
    versions: list[Any] = (await identity.api.list_versions(current.name, 0, ""))[0]
    assert [v.version for v in versions] == [1, 2]
    # The load's notification id is taken: the same id again is refused, not applied a second time.
    with pytest.raises(AlreadyExists) as reused:
        await apply(identity.api, reg.request(person, "load-1", kind=rpb.CHANGE_KIND_MODIFY,
                                              reason=rpb.CHANGE_REASON_MINOR_CORRECTION,
                                              event=dt.date(2026, 2, 1)))
    assert reused.value.reason == "NOTIFICATION_ID_REUSED"


# --- bad rows --------------------------------------------------------------------------------------

async def test_an_invalid_row_stops_the_load_naming_line_and_field_and_nothing_is_written(
        identity: Loaded, tmp_path: Path) -> None:
    before = await _keys_and_indexes(identity)
    good, bad = new_person(), new_person()
    wrong_digit = bad.number[:-1] + str((int(bad.number[-1]) + 1) % 10)
    path = _write_jsonl(tmp_path / "bad.jsonl", [
        _identity_row(good), _identity_row(new_person()),
        _identity_row(bad) | {"individual_number": wrong_digit},
        _identity_row(new_person()) | {"sex_code": "7", "event_date": "2026-02-30"},
    ])

    with pytest.raises(BulkLoadError) as refused:
        await identity.load(path)

    assert refused.value.invalid_rows == 2
    assert [(p.line, p.field) for p in refused.value.problems] == [
        (3, "individual_number"), (4, "event_date"), (4, "sex_code")]
    text = str(refused.value) + " ".join(str(p) for p in refused.value.problems)
    assert wrong_digit not in text and bad.code not in text, "values are never reported"
    for table in ("person", "person_version", "individual_number"):
        assert await identity.count(table) == 0
    assert await _keys_and_indexes(identity) == before, "the dropped keys and indexes came back with the rollback"

    report = await identity.load(path, skip_invalid=True)
    assert (report.persons, report.skipped) == (2, 2)
    assert {p.line for p in report.problems} == {3, 4}


async def test_a_worker_that_dies_fails_the_load_once_and_nothing_is_written(
        identity: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = await _keys_and_indexes(identity)
    path = tmp_path / "generated.jsonl"
    path.write_text("".join(FastResidents(seed=11).jsonl_blocks(3_000, block=1_000)), encoding="utf-8")
    prepare = load_workers.ChunkPreparer.prepare

    def dies_after_the_first_chunk(self: load_workers.ChunkPreparer, task: load_workers.Task) -> Any:
        if task.index >= 1:
            os._exit(3)  # as a worker killed by the kernel (out of memory) ends
        return prepare(self, task)

    monkeypatch.setattr(load_workers.ChunkPreparer, "prepare", dies_after_the_first_chunk)  # inherited by the fork

    with pytest.raises(BrokenProcessPool):
        await identity.load(path, workers=2, chunk_bytes=64 << 10)

    # The chunks still in preparation failed alike. Collected now, while this test's loop runs, a future whose
    # error nobody retrieved is reported to the autouse `no_unobserved_task_exception`, which fails the test:
    # the load reports its failure once, not once per chunk.
    gc.collect()
    await asyncio.sleep(0.1)
    for table in ("person", "person_version", "individual_number", "person_key"):
        assert await identity.count(table) == 0
    assert await _keys_and_indexes(identity) == before, "the dropped keys and indexes came back with the rollback"


async def test_repeated_codes_and_malformed_rows_are_reported_by_line(identity: Loaded, tmp_path: Path) -> None:
    first = new_person()
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([
        json.dumps(_identity_row(first), ensure_ascii=False),
        "",
        "{not json",
        json.dumps(_identity_row(new_person()) | {"colour": "blue"}, ensure_ascii=False),
        json.dumps(_identity_row(new_person()) | {"birth_date": {"precision": "DATE_PRECISION_DAY", "year": "x"}},
                   ensure_ascii=False),
        json.dumps(_identity_row(first) | {"notification_id": "again"}, ensure_ascii=False),
    ]) + "\n", encoding="utf-8")

    with pytest.raises(BulkLoadError) as refused:
        await identity.load(path)

    assert [(p.line, p.field) for p in refused.value.problems] == [
        (3, "row"), (4, "colour"), (5, "birth_date"), (6, "resident_code"), (6, "individual_number")]
    assert await identity.count("person") == 0



@pytest.mark.parametrize("workers", [0, 1])
async def test_a_fast_load_repeating_a_resident_code_fails_naming_the_line_and_leaves_nothing(
        identity: Loaded, tmp_path: Path, workers: int) -> None:
    """Fast mode remembers no values per row: the rebuilt unique key finds the repetition, a second pass over
    the file its line (across chunks: one row per chunk here)."""
    before = await _keys_and_indexes(identity)
    first = new_person()
    again = dataclasses.replace(new_person(), code=first.code)
    path = _write_jsonl(tmp_path / "repeated.jsonl", [
        _identity_row(first), _identity_row(new_person()), _identity_row(again), _identity_row(new_person())])

    with pytest.raises(BulkLoadError) as refused:
        await identity.load(path, mode="fast", workers=workers, chunk_bytes=64)

    assert [(p.line, p.field, p.description) for p in refused.value.problems] == [
        (3, "resident_code", "appears on an earlier line")]
    assert refused.value.invalid_rows == 1
    text = str(refused.value) + " ".join(str(p) for p in refused.value.problems)
    assert first.code not in text, "values are never reported"
    for table in ("person", "person_version", "person_key", "individual_number"):
        assert await identity.count(table) == 0
    assert await _keys_and_indexes(identity) == before, "the dropped keys and indexes came back with the rollback"


async def test_change_information_is_checked_by_type_and_presence(identity: Loaded, tmp_path: Path) -> None:
    """The loader remembers the outcome of each (event date, reason); true is not the reason 1 and null is
    not an absent item, although Python finds them equal."""
    path = _write_jsonl(tmp_path / "change.jsonl", [
        _identity_row(new_person()) | {"change_reason": 1},
        _identity_row(new_person()) | {"change_reason": True},
        _identity_row(new_person()),
        _identity_row(new_person()) | {"event_date": None},
        _identity_row(new_person()) | {"change_reason": None, "event_date": "2020-01-02"},
        _identity_row(new_person()) | {"event_date": "2020-01-02"},
    ])

    with pytest.raises(BulkLoadError) as refused:
        await identity.load(path)

    assert [(p.line, p.field) for p in refused.value.problems] == [
        (2, "change_reason"), (4, "event_date"), (5, "change_reason")]

# --- fast mode only on an empty register ------------------------------------------------------------

async def test_fast_mode_refuses_a_register_that_has_persons(identity: Loaded, tmp_path: Path) -> None:
    reg = REGISTERS["identity"]
    notified = new_person()
    await apply(identity.api, reg.request(notified, "cs-record-1"))
    before = await _keys_and_indexes(identity)
    newcomer = new_person()
    path = _write_jsonl(tmp_path / "more.jsonl", [_identity_row(newcomer)])

    with pytest.raises(FastModeRefused):
        await identity.load(path, mode="fast")
    assert await identity.count("person") == 1

    report = await identity.load(path)  # auto: into the indexed tables
    assert not report.fast and report.persons == 1
    assert await _keys_and_indexes(identity) == before
    assert (await _lookup(identity, newcomer.code)).record.individual_number == newcomer.number

    again = _write_jsonl(tmp_path / "again.jsonl", [_identity_row(new_person()), _identity_row(notified)])
    with pytest.raises(BulkLoadError) as refused:
        await identity.load(again, id_prefix="second-load-")
    assert [(p.line, p.field) for p in refused.value.problems] == [(2, "resident_code"), (2, "individual_number")]
    # 番号法 7 ②: a number the register holds is nobody else's, whatever the 住民票コード.
    impostor = new_person()
    impostor.number = notified.number
    with pytest.raises(BulkLoadError) as taken:
        await identity.load(_write_jsonl(tmp_path / "taken.jsonl", [_identity_row(impostor)]), id_prefix="taken-")
    assert [(p.line, p.field) for p in taken.value.problems] == [(1, "individual_number")]
    with pytest.raises(BulkLoadError) as reused:
        await identity.load(_write_jsonl(tmp_path / "ids.jsonl", [_identity_row(new_person())]))
    assert [(p.line, p.field) for p in reused.value.problems] == [(1, "notification_id")]  # load-1, 前橋 again
    assert await identity.count("person") == 2


async def test_forward_writes_the_outbox_rows_of_the_relay(identity: Loaded, tmp_path: Path) -> None:
    people = [new_person(), new_person()]
    report = await identity.load(_write_jsonl(tmp_path / "fwd.jsonl", [_identity_row(p) for p in people]),
                                 forward=True)
    assert report.persons == 2
    rows = await identity.fetch("SELECT o.idempotency_key, o.state, o.person_id, o.version, v.municipality_code,"
                                " v.notification_id FROM outbox o JOIN person_version v"
                                " ON v.person_id = o.person_id AND v.version = o.version")
    assert sorted(r["idempotency_key"] for r in rows) == sorted(
        outbox_key("identity", r["municipality_code"], r["notification_id"]) for r in rows)
    assert {(r["state"], r["version"]) for r in rows} == {("pending", 1)}


# --- CSV --------------------------------------------------------------------------------------------

async def test_csv_load_with_partial_dates_of_birth(identity: Loaded, tmp_path: Path) -> None:
    before = await _keys_and_indexes(identity)
    people = [new_person(name="榛名　髙子", kana="ハルナ　タカコ"), new_person(), new_person(), new_person()]
    births = ["1971-07-07", "1944-03", "1920", "unknown"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["resident_code", "individual_number", "full_name", "full_name_kana", "kana_confirmed",
                     "birth_date", "birth_date_original_text", "sex_code", "address", "address_municipality_code",
                     "event_date", "notification_id"])
    for index, (person, birth) in enumerate(zip(people, births, strict=True)):
        writer.writerow([person.code, person.number, person.name, person.kana, "true", birth,
                         "昭和46年7月7日" if index == 0 else "", "2", person.address, MAEBASHI,
                         "2024-05-01" if index == 1 else "", f"csv-{index}" if index else ""])
    path = tmp_path / "identity.csv"
    path.write_text("\ufeff" + out.getvalue(), encoding="utf-8")  # with the BOM spreadsheets write

    report = await identity.load(path)

    assert report.persons == 4 and report.fast
    assert await _keys_and_indexes(identity) == before
    first = await _lookup(identity, people[0].code)
    birth = first.record.birth_date
    assert (birth.precision, birth.year, birth.month, birth.day, birth.original_text) == (
        rpb.DATE_PRECISION_DAY, 1971, 7, 7, "昭和46年7月7日")
    assert first.change.notification_id == "load-2", "line 2: the header is line 1"
    partial = [(await _lookup(identity, p.code)).record.birth_date for p in people[1:]]
    assert [(b.precision, b.year, b.month) for b in partial] == [
        (rpb.DATE_PRECISION_MONTH, 1944, 3), (rpb.DATE_PRECISION_YEAR, 1920, 0), (rpb.DATE_PRECISION_UNKNOWN, 0, 0)]
    found, _ = await _search(identity, rpb.SearchQuery(  # another spacing, the common form of 髙
        full_name="榛名 高子", birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_YEAR, year=1971)))
    assert [resource.record.resident_code for resource, _ in found] == [people[0].code]
    # A year-only date of birth is a candidate for any day of that year, as in the RPC path.
    wide, _ = await _search(identity, rpb.SearchQuery(
        full_name=people[2].name, sex_code="2",
        birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_DAY, year=1920, month=8, day=15)))
    assert people[2].code in {resource.record.resident_code for resource, _ in wide}
    assert await identity.numbers.person_of(people[3].number) is not None


async def test_csv_with_an_unknown_column_is_refused_before_anything(identity: Loaded, tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("resident_code,favourite_colour\n12345678901,blue\n", encoding="utf-8")
    with pytest.raises(BulkLoadError) as refused:
        await identity.load(path)
    assert "favourite_colour" in str(refused.value) and "12345678901" not in str(refused.value)


async def test_annex_csv_load(annex: Loaded, tmp_path: Path) -> None:
    abroad, home_person = new_person(), new_person()
    path = tmp_path / "annex.csv"
    path.write_text(
        "resident_code,full_name,full_name_kana,birth_date,sex_code,address,overseas_emigrant,address_date,"
        "domicile_municipality_code\n"
        f"{abroad.code},{abroad.name},{abroad.kana},1990-10-10,1,,true,2025-12-01,{TAKASAKI}\n"
        f"{home_person.code},{home_person.name},{home_person.kana},1988-01-02,2,{home_person.address},,,{MAEBASHI}\n",
        encoding="utf-8")

    report = await annex.load(path)

    assert report.persons == 2
    moved = await _lookup(annex, abroad.code)
    assert moved.record.overseas_emigrant and moved.record.address_date.year == 2025
    assert moved.change.municipality_code == TAKASAKI, "the 本籍地 municipality keeps (and notified) the 附票"
    assert (await _lookup(annex, home_person.code)).record.address == home_person.address


# --- the generator, the file format and the command ----------------------------------------------------

async def test_generated_residents_load_and_are_valid(identity: Loaded, tmp_path: Path) -> None:
    generator = FastResidents(seed=7)
    text = "".join(generator.jsonl_blocks(3_000, block=1_000))
    rows = [json.loads(line) for line in text.splitlines()]
    assert len({row["resident_code"] for row in rows}) == len({row["individual_number"] for row in rows}) == 3_000
    assert all(is_valid_individual_number(row["individual_number"]) for row in rows)
    assert all(check_resident_code(row["resident_code"], CheckDigitMode.REJECT).ok for row in rows)
    assert text == "".join(FastResidents(seed=7).jsonl_blocks(3_000, block=1_000)), "seeded"
    path = tmp_path / "generated.jsonl"
    path.write_text(text, encoding="utf-8")

    report = await identity.load(path, workers=2, chunk_bytes=64 << 10)  # several chunks, worker processes

    assert report.persons == 3_000 and report.resident_code_warnings == 0
    assert await identity.count("individual_number") == 3_000
    sample = rows[1_234]
    resource = await _lookup(identity, sample["resident_code"])
    assert resource.record.individual_number == sample["individual_number"]
    assert resource.change.notification_id == "load-1235"


async def test_juki_load_command(identity: Loaded, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str], admin_url: str) -> None:
    import argparse

    from jukitools.suite import ensure_keyring

    people = [new_person(), new_person()]
    path = _write_jsonl(tmp_path / "cli.jsonl", [_identity_row(p) for p in people]
                        + [_identity_row(new_person()) | {"individual_number": individual_number(1)[:-1] + "x"}])
    monkeypatch.setenv("JUKI_MIGRATION_DATABASE_URL", identity.owner_url)
    monkeypatch.setenv("JUKI_KEYRING_FILE", str(ensure_keyring(home)))
    log_url = (await fresh_database(admin_url))["gateway"].url  # the load is logged there first (issue 19)
    monkeypatch.setenv("JUKI_OPERATION_LOG_DATABASE_URL", log_url)
    parser = argparse.ArgumentParser(prog="juki")
    cli_bulk.add_parsers(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:  # a command runs its own event loop: off this one
        args = parser.parse_args(list(argv))
        return cli_bulk.COMMANDS[args.command](args)

    assert await asyncio.to_thread(run, "load", str(path), "--no-progress") == 1
    assert "line 3: individual_number" in capsys.readouterr().err

    assert await asyncio.to_thread(run, "load", str(path), "--skip-invalid") == 0
    out, err = capsys.readouterr()
    assert "loaded 2 person(s)" in out and "1 invalid row(s) skipped" in out
    assert "line 3: individual_number" in err and "100%" in err, "problems and the progress bar on stderr"
    assert await identity.count("person") == 2
    connection = await asyncpg.connect(log_url)
    try:
        logged = [(r["reason"], json.loads(r["detail"]).get("result")) for r in await connection.fetch(
            "SELECT reason, detail FROM operation_log WHERE method = 'maintenance/load' ORDER BY sequence")]
    finally:
        await connection.close()
    assert logged == [("started", None), ("done", "refused"), ("started", None), ("done", "loaded")]
    bench = parser.parse_args(["bench", "load", "--persons", "10"])
    assert bench.bench_action == "load" and callable(bench.bench_run)


def test_problems_name_line_and_field() -> None:
    assert str(RowProblem(7, "sex_code", "is not a code of the sex code table")) == (
        "line 7: sex_code: is not a code of the sex code table")


def test_stored_records_are_what_the_rpc_path_stores() -> None:
    """`record_dict` (fast path) is `MessageToDict(preserving_proto_field_name=True)`, and a row already in
    that form is taken as is."""
    from google.protobuf import json_format

    from juki.annex.v1 import annex_pb2
    from juki.identity.v1 import identity_pb2
    from jukilib.register.load import record_dict

    rows: list[tuple[Any, dict[str, Any], bool]] = [
        (identity_pb2.IdentityRecord, {"resident_code": "1", "kana_confirmed": True,
                                       "birth_date": {"precision": "DATE_PRECISION_UNKNOWN"}}, True),
        (identity_pb2.IdentityRecord, {"birth_date": {"precision": 9, "year": 1}}, False),
        (identity_pb2.IdentityRecord, {"birth_date": {}}, True),
        (identity_pb2.IdentityRecord, {"full_name": "", "kana_confirmed": False}, False),
        (identity_pb2.IdentityRecord, {"kana_confirmed": 1}, False),
        (identity_pb2.IdentityRecord, {"birth_date": {"precision": "DATE_PRECISION_UNSPECIFIED", "year": 0}}, False),
        (annex_pb2.AnnexRecord, {"overseas_emigrant": True, "address_date": {"year": 2026, "month": 1, "day": 2},
                                 "birth_date": {"precision": "DATE_PRECISION_MONTH", "year": 1990, "month": 3}}, True),
    ]
    for record_type, fields, canonical in rows:
        record = record_type(**fields)
        expected = json_format.MessageToDict(record, preserving_proto_field_name=True)
        assert record_dict(record) == expected
        assert record_dict(record, fields) == expected
        assert (record_dict(record, fields) is fields) == canonical
