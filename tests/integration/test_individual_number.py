"""個人番号 at rest (identity only): encrypted per version with a key id, found through a keyed hash,
kept across number changes, re-encrypted online by `juki keys rotate`; the engine's tables never
hold it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.exceptions import InvalidTag

from juki.register.v1 import register_pb2 as rpb
from juki_services.identity.numbers import IndividualNumbers, rotate
from jukilib import caller
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.errors import FailedPrecondition, JukiError, NotFound
from jukilib.keyring import Keyring
from jukilib.register import review
from jukilib.register.api import RegisterApi
from tests.conftest import fresh_database, service_config
from tests.integration.registers import MAEBASHI, REGISTERS, apply, new_person

IDENTITY = REGISTERS["identity"]


@pytest.fixture
async def identity(admin_url: str, pki: DevPki, tmp_path: Path,
                   home: Path) -> AsyncIterator[tuple[RegisterApi, Database, str, Path]]:
    databases = await fresh_database(admin_url)
    keyring_path = tmp_path / "keyring.json"
    Keyring.generate().save(keyring_path)
    config = dataclasses.replace(service_config("identity", pki, databases["identity"], home, {"agency": "x:1"}),
                                 keyring_file=keyring_path)
    database = Database(config.common.database)
    await database.connect()
    try:
        yield IDENTITY.api(config, database), database, databases["identity"].migration_url, keyring_path
    finally:
        await database.close()


async def _plaintext_anywhere(database: Database, number: str) -> bool:
    async with database.connection() as connection:
        for table in ("person", "person_version", "outbox", "individual_number"):
            rows = await connection.fetch(f"SELECT t::text AS row FROM {table} t")
            if any(number in row["row"] for row in rows):
                return True
    return False


async def test_number_is_encrypted_at_rest_and_found_by_keyed_hash(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    api, database, _, _ = identity
    person = new_person()
    answer = await apply(api, IDENTITY.request(person, "num-1"))
    assert answer.record.individual_number == person.number  # the answer carries it back
    assert not await _plaintext_anywhere(database, person.number)
    numbers = api.engine.hooks
    assert isinstance(numbers, IndividualNumbers)
    found = await numbers.person_of(person.number)
    assert found is not None and answer.name.startswith(f"residents/{found}/")
    current = await api.lookup(IDENTITY.lookup(person.code))
    assert current.record.individual_number == person.number


async def test_former_number_still_finds_the_person_after_a_change(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    api, _, _, _ = identity
    person = new_person()
    await apply(api, IDENTITY.request(person, "change-1"))
    former, person.number = person.number, new_person().number
    await apply(api, IDENTITY.request(person, "change-2", kind=rpb.CHANGE_KIND_MODIFY,
                                      reason=rpb.CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST))
    numbers = api.engine.hooks
    assert isinstance(numbers, IndividualNumbers)
    assert await numbers.person_of(former) == await numbers.person_of(person.number)
    versions, _ = await api.list_versions((await api.lookup(IDENTITY.lookup(person.code))).name, 0, "")
    assert [v.record.individual_number for v in versions] == [former, person.number]


async def test_a_number_another_person_holds_is_refused(identity: tuple[RegisterApi, Database, str, Path]) -> None:
    # 番号法 7 ②: one 個人番号, one person — also a number the other person held before a change.
    api, _, _, _ = identity
    holder, impostor, changer = new_person(), new_person(), new_person()
    await apply(api, IDENTITY.request(holder, "held-1"))
    impostor.number = holder.number
    with pytest.raises(FailedPrecondition) as refused:
        await apply(api, IDENTITY.request(impostor, "held-2"))
    assert refused.value.reason == "INDIVIDUAL_NUMBER_IN_USE"
    await apply(api, IDENTITY.request(changer, "held-3"))
    former, changer.number = changer.number, new_person().number
    await apply(api, IDENTITY.request(changer, "held-4", kind=rpb.CHANGE_KIND_MODIFY,
                                      reason=rpb.CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST))
    impostor.number = former
    with pytest.raises(FailedPrecondition) as former_refused:
        await apply(api, IDENTITY.request(impostor, "held-5"))
    assert former_refused.value.reason == "INDIVIDUAL_NUMBER_IN_USE"
    with pytest.raises(NotFound):
        await api.lookup(IDENTITY.lookup(impostor.code))


async def test_one_number_given_to_two_persons_at_once_goes_to_one_of_them(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    api, database, _, _ = identity
    first, second, third = new_person(), new_person(), new_person()
    second.number = third.number = first.number
    together = [api.notification(IDENTITY.request(p, f"race-{p.code}"), MAEBASHI) for p in (first, second)]
    alone = api.notification(IDENTITY.request(third, f"race-{third.code}"), MAEBASHI)
    # Two persons with one number in one batch, and a third in a concurrent batch.
    batch, single = await asyncio.gather(api.engine.apply_many(together), api.engine.apply_many([alone]))
    results = [*batch, *single]
    accepted = [o for o in results if not isinstance(o, JukiError)]
    refused = [o.reason for o in results if isinstance(o, FailedPrecondition)]
    assert len(accepted) == 1 and refused == ["INDIVIDUAL_NUMBER_IN_USE"] * 2
    async with database.connection() as connection:
        owners = await connection.fetch("SELECT person_id FROM person_key")
    assert {row["person_id"] for row in owners} == {accepted[0].person_id}


async def test_a_number_changes_only_under_its_change_reasons(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    # 番号法 7 ②: 個人番号 changes by 変更請求 or 職権 only; a 転居 that carries another number is refused.
    api, _, _, _ = identity
    person = new_person()
    await apply(api, IDENTITY.request(person, "reason-1"))
    kept, person.number = person.number, new_person().number
    with pytest.raises(FailedPrecondition) as refused:
        await apply(api, IDENTITY.request(person, "reason-2", kind=rpb.CHANGE_KIND_MODIFY,
                                          reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY))
    assert refused.value.reason == "INDIVIDUAL_NUMBER_CHANGE_REFUSED"
    current = await api.lookup(IDENTITY.lookup(person.code))
    assert current.record.individual_number == kept and current.version == 1


async def test_rotation_re_encrypts_every_row_while_reads_go_on(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    api, _, owner_url, keyring_path = identity
    persons = [new_person() for _ in range(5)]
    for index, person in enumerate(persons):
        await apply(api, IDENTITY.request(person, f"rot-{index}"))
    old_key = Keyring.load(keyring_path).active
    rotated = Keyring.load(keyring_path).with_new_active_key()
    rotated.save(keyring_path)  # the running service reloads the file when it meets the new key id
    owner = await asyncpg.connect(owner_url)
    try:
        await owner.execute("SET search_path TO identity")
        assert await rotate(owner, rotated, batch=2) == 5
        key_ids = {r["key_id"] for r in await owner.fetch("SELECT key_id FROM individual_number")}
    finally:
        await owner.close()
    assert key_ids == {rotated.active} and rotated.active != old_key
    for person in persons:
        assert (await api.lookup(IDENTITY.lookup(person.code))).record.individual_number == person.number


async def test_rotation_re_seals_the_refused_notifications_of_the_review_queue(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    api, _, owner_url, keyring_path = identity
    stranger = new_person()
    with pytest.raises(FailedPrecondition):  # a 修正 of nobody: kept, sealed, for review
        await apply(api, IDENTITY.request(stranger, "rot-review", kind=rpb.CHANGE_KIND_MODIFY,
                                          reason=rpb.CHANGE_REASON_MINOR_CORRECTION))
    rotated = Keyring.load(keyring_path).with_new_active_key()
    rotated.save(keyring_path)
    owner = await asyncpg.connect(owner_url)
    try:
        await owner.execute("SET search_path TO identity")
        assert await review.rotate(owner, rotated, batch=2) >= 1
        sealed = await owner.fetch("SELECT key_id FROM review_item WHERE ciphertext IS NOT NULL")
        key_ids = {r["key_id"] for r in sealed}
        item_id = await owner.fetchval("SELECT id FROM review_item WHERE notification_id = 'rot-review'")
    finally:
        await owner.close()
    assert key_ids == {rotated.active}
    _, content = await api.review.get(f"reviewItems/{item_id}")
    assert content is not None and content["record"]["individual_number"] == stranger.number


async def test_ciphertext_moved_to_another_row_does_not_decrypt(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    api, _, owner_url, _ = identity
    first, second = new_person(), new_person()
    await apply(api, IDENTITY.request(first, "swap-1"))
    await apply(api, IDENTITY.request(second, "swap-2"))
    owner = await asyncpg.connect(owner_url)
    try:
        await owner.execute("SET search_path TO identity")
        rows = await owner.fetch("SELECT person_id, nonce, ciphertext FROM individual_number ORDER BY person_id")
        await owner.execute("UPDATE individual_number SET nonce = $2, ciphertext = $3 WHERE person_id = $1",
                            rows[0]["person_id"], rows[1]["nonce"], rows[1]["ciphertext"])
    finally:
        await owner.close()
    with pytest.raises(InvalidTag):
        for person in (first, second):
            await api.lookup(IDENTITY.lookup(person.code))


def _calling_for(fields: tuple[str, ...] | None) -> caller.Caller:
    """A caller the gateway forwarded for a purpose with this field mask."""
    return caller.Caller(organization="kyoiku-iinkai", purpose="P", fields=fields)


async def test_a_purpose_without_the_number_never_has_it_read_or_decrypted(
        identity: tuple[RegisterApi, Database, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    api, _, _, _ = identity
    person = new_person()
    await apply(api, IDENTITY.request(person, "mask-1"))
    opened: list[str] = []
    original = Keyring.open
    monkeypatch.setattr(Keyring, "open", lambda self, *a: opened.append("open") or original(self, *a))
    without = ("name", "record.resident_code", "record.full_name")
    single = await api.lookup(IDENTITY.lookup(person.code), _calling_for(without))
    (batch,) = await api.batch_lookup([person.code], _calling_for(without))
    assert single.record.resident_code == person.code and not single.record.individual_number
    # What the mask cuts is left out at the source; what the gateway's log records is always there.
    assert single.name and single.version == 1 and single.record.full_name
    assert not single.HasField("change") and not single.HasField("update_time") and not single.state
    assert batch is not None and "individual_number" not in batch.current.record
    assert opened == []
    # `record` covers every field of the record (FieldMask)
    found = await api.lookup(IDENTITY.lookup(person.code), _calling_for(("name", "record")))
    assert found.record.individual_number == person.number
    found = await api.lookup(IDENTITY.lookup(person.code), _calling_for(None))  # a purpose granted every field
    assert found.record.individual_number == person.number
    assert opened == ["open", "open"]


def test_the_field_mask_travels_to_backends_in_metadata() -> None:
    masked = caller.Caller(organization="o", purpose="P", fields=("name", "record.full_name"))
    assert caller.caller_from_metadata(list(masked.to_metadata()), "gateway").fields == masked.fields
    everything = caller.Caller(organization="o", purpose="P")
    assert caller.FIELDS_KEY not in dict(everything.to_metadata())
    assert caller.caller_from_metadata(list(everything.to_metadata()), "gateway").fields is None
    nothing = caller.Caller(organization="o", purpose="P", fields=())
    assert caller.caller_from_metadata(list(nothing.to_metadata()), "gateway").fields == ()
    assert masked.may_receive("record.full_name") and not masked.may_receive("record.individual_number")
    assert caller.Caller(organization="o", fields=("record",)).may_receive("record.individual_number")
    assert not caller.Caller(organization="o", fields=("rec",)).may_receive("record.individual_number")


async def test_numbers_recorded_before_the_rule_are_held_by_their_persons_after_the_migration(
        identity: tuple[RegisterApi, Database, str, Path]) -> None:
    # 番号法 7 ②: what the file held before `person_key` existed is held there after migrations 0103-0104.
    api, _, owner_url, keyring_path = identity
    person, impostor = new_person(), new_person()
    await apply(api, IDENTITY.request(person, "before-1"))
    migrations = Path(__file__).parents[2] / "services/identity/migrations"
    connection = await asyncpg.connect(owner_url)
    try:
        # The file as recorded before the rule: no person_key, the keyed hash beside each sealed number.
        await connection.execute("DELETE FROM person_key")
        await connection.execute("ALTER TABLE individual_number ADD COLUMN lookup_hash bytea")
        await connection.execute("UPDATE individual_number SET lookup_hash = $1",
                                 Keyring.load(keyring_path).lookup_hash(person.number))
        for name in ("0103_person_key_from_numbers.sql", "0104_number_hash_in_person_key_only.sql"):
            await connection.execute((migrations / name).read_text())
    finally:
        await connection.close()
    moved = dataclasses.replace(person, address="群馬県前橋市大手町2丁目2番2号")
    corrected = await apply(api, IDENTITY.request(moved, "before-2", kind=rpb.CHANGE_KIND_MODIFY,
                                                  reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY))
    assert corrected.version == 2  # the same number: no change of number, accepted
    impostor.number = person.number
    with pytest.raises(FailedPrecondition) as refused:
        await apply(api, IDENTITY.request(impostor, "before-3"))
    assert refused.value.reason == "INDIVIDUAL_NUMBER_IN_USE"
