"""The register engine's behaviour, specified once and proven for both registers (identity, annex)
on a real PostgreSQL: idempotent ordered ingest, rules per kind, the 住民票コード chain, history,
as-of reads and the 4-item search."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from juki.register.v1 import register_pb2 as rpb
from jukilib.devcerts import DevPki
from jukilib.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from jukilib.register.api import RegisterApi
from tests.integration.registers import TAKASAKI, Register, apply, new_person, open_register

D = dt.date


@pytest.fixture(scope="module", params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, _, _):
        yield chosen, api


def _reason(error: pytest.ExceptionInfo[Any]) -> str:
    return str(error.value.reason)


async def test_repeat_is_answered_from_the_receipt_and_reuse_is_refused(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    first = await apply(api, reg.request(person, "idem-1"))
    assert await apply(api, reg.request(person, "idem-1")) == first
    other = new_person()
    with pytest.raises(AlreadyExists) as reused:
        await apply(api, reg.request(other, "idem-1"))
    assert _reason(reused) == "NOTIFICATION_ID_REUSED"


async def test_late_notification_is_kept_in_history_without_overwriting_current(
        register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    await apply(api, reg.request(person, "late-1", event=D(2026, 1, 10)))
    person.address = "群馬県前橋市新しい町2丁目2番2号"
    await apply(api, reg.request(person, "late-3", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY, event=D(2026, 3, 1)))
    person.address = "群馬県前橋市途中の町1丁目1番1号"
    late = await apply(api, reg.request(person, "late-2", kind=rpb.CHANGE_KIND_MODIFY,
                                        reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY,
                                        event=D(2026, 2, 1)))
    current = await api.lookup(reg.lookup(person.code))
    assert current.record.address == "群馬県前橋市新しい町2丁目2番2号"
    versions, _ = await api.list_versions(current.name, 0, "")
    assert [v.change.notification_id for v in versions] == ["late-1", "late-2", "late-3"]
    assert [v.version for v in versions] == [1, 3, 2]
    assert _version_of(late) == 3
    # The current row keeps the change that made it (register migration 0018), as the history holds it.
    made = next(v for v in versions if v.version == current.version)
    assert current.change.notification_id == "late-3"
    assert current.change == made.change


def _version_of(answer: Any) -> int:
    return int(answer.version)


@pytest.mark.parametrize(("first_kind", "then_kind", "reason"), [
    (None, rpb.CHANGE_KIND_REMOVE, "UNKNOWN_PERSON"),
    (None, rpb.CHANGE_KIND_MODIFY, "UNKNOWN_PERSON"),
    (rpb.CHANGE_KIND_RECORD, rpb.CHANGE_KIND_RECORD, "ALREADY_RECORDED"),
])
async def test_changes_that_contradict_the_persons_state_are_failed_preconditions(
        register: tuple[Register, RegisterApi], first_kind: int | None, then_kind: int, reason: str) -> None:
    reg, api = register
    person = new_person()
    if first_kind is not None:
        await apply(api, reg.request(person, f"rule-{reason}-a", event=D(2026, 1, 1)))
    reasons = {rpb.CHANGE_KIND_RECORD: rpb.CHANGE_REASON_BIRTH, rpb.CHANGE_KIND_REMOVE: rpb.CHANGE_REASON_DEATH,
               rpb.CHANGE_KIND_MODIFY: rpb.CHANGE_REASON_MINOR_CORRECTION}
    with pytest.raises(FailedPrecondition) as refused:
        await apply(api, reg.request(person, f"rule-{reason}-b", kind=then_kind, reason=reasons[then_kind],
                                     event=D(2026, 2, 1)))
    assert _reason(refused) == reason


async def test_removal_keeps_the_person_marked_removed_with_the_reason(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    await apply(api, reg.request(person, "rm-1", event=D(2026, 1, 1)))
    await apply(api, reg.request(person, "rm-2", kind=rpb.CHANGE_KIND_REMOVE, reason=rpb.CHANGE_REASON_DEATH,
                                 event=D(2026, 2, 1)))
    current = await api.lookup(reg.lookup(person.code))
    assert current.state == rpb.RECORD_STATE_REMOVED
    assert current.change.reason == rpb.CHANGE_REASON_DEATH
    with pytest.raises(FailedPrecondition) as refused:
        await apply(api, reg.request(person, "rm-3", kind=rpb.CHANGE_KIND_MODIFY,
                                     reason=rpb.CHANGE_REASON_MINOR_CORRECTION, event=D(2026, 3, 1)))
    assert _reason(refused) == "PERSON_REMOVED"


async def test_resident_code_change_keeps_the_chain(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    await apply(api, reg.request(person, "code-1", event=D(2026, 1, 1)))
    old_code, person.code = person.code, new_person().code
    await apply(api, reg.request(person, "code-2", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1),
                                 previous_code=old_code))
    by_old = await api.lookup(reg.lookup(old_code))
    by_new = await api.lookup(reg.lookup(person.code))
    assert by_old.name == by_new.name and by_new.record.resident_code == person.code
    other = new_person()
    await apply(api, reg.request(other, "code-3", event=D(2026, 1, 1)))
    taking_a_used_code = reg.request(replace(other, code=person.code), "code-4", kind=rpb.CHANGE_KIND_MODIFY,
                                     reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1),
                                     previous_code=other.code)
    with pytest.raises(FailedPrecondition) as taken:
        await apply(api, taking_a_used_code)
    assert _reason(taken) == "RESIDENT_CODE_IN_USE"


async def test_code_change_without_the_previous_code_names_the_field(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    with pytest.raises(InvalidArgument) as refused:
        await apply(api, reg.request(person, "code-x", kind=rpb.CHANGE_KIND_MODIFY,
                                     reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1)))
    assert [v.field for v in refused.value.violations] == ["previous_resident_code"]


async def test_record_as_it_stood_on_a_date(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    await apply(api, reg.request(person, "asof-1", event=D(2026, 1, 10)))
    person.address = "群馬県前橋市その後の町3丁目3番3号"
    await apply(api, reg.request(person, "asof-2", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY, event=D(2026, 3, 1)))
    before = await api.lookup(reg.lookup(person.code, as_of=D(2026, 2, 1)))
    assert before.record.address == "群馬県前橋市大手町1丁目1番1号" and before.version == 1
    after = await api.lookup(reg.lookup(person.code, as_of=D(2026, 3, 1)))
    assert after.version == 2
    with pytest.raises(NotFound):
        await api.lookup(reg.lookup(person.code, as_of=D(2025, 12, 31)))
    received_today = await api.lookup(reg.lookup(person.code, as_of=dt.date.today() + dt.timedelta(days=1),
                                                 by_receipt=True))
    assert received_today.version == 2


async def test_event_date_after_receipt_is_refused_except_for_moving_out(
        register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    future = dt.date.today() + dt.timedelta(days=30)
    with pytest.raises(InvalidArgument) as refused:
        await apply(api, reg.request(person, "future-1", event=future))
    assert [v.field for v in refused.value.violations] == ["change.event_date"]
    await apply(api, reg.request(person, "future-2", event=D(2026, 1, 1)))
    moving_out = await apply(api, reg.request(person, "future-3", kind=rpb.CHANGE_KIND_REMOVE,
                                              reason=rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT, event=future))
    assert moving_out.state == rpb.RECORD_STATE_REMOVED


async def test_only_the_prefectures_municipalities_may_notify(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    with pytest.raises(PermissionDenied) as refused:
        await apply(api, reg.request(new_person(), "tokyo-1"), municipality="131016")
    assert _reason(refused) == "NOT_A_NOTIFYING_MUNICIPALITY"


async def test_search_lists_candidates_with_matched_items_and_a_cap(register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    twins = [new_person(name="榛名　髙子", kana="ハルナ　タカコ", birth=(1971, 7, 7), sex="2") for _ in range(3)]
    for index, twin in enumerate(twins):
        await apply(api, reg.request(twin, f"search-{index}"))
    query = rpb.SearchQuery(full_name="榛名 高子",  # another spacing and the common form of 髙
                            birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_YEAR, year=1971))
    found, truncated = await api.search(query)
    assert len(found) == 3 and not truncated
    assert all(fields == ("full_name", "birth_date") for _, fields in found)
    query.max_candidates = 2
    capped, truncated = await api.search(query)
    assert len(capped) == 2 and truncated
    by_kana = rpb.SearchQuery(full_name_kana="ハルナ　タカコ", sex_code="2",
                              birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_DAY, year=1971, month=7, day=7))
    hits, _ = await api.search(by_kana)
    assert {h.record.resident_code for h, _ in hits} == {t.code for t in twins}
    assert all(fields == ("full_name_kana", "birth_date", "sex_code") for _, fields in hits)
    nobody = rpb.SearchQuery(full_name="榛名 高子", birth_date=rpb.PartialDate(precision=rpb.DATE_PRECISION_YEAR,
                                                                             year=1972))
    assert (await api.search(nobody))[0] == []


async def test_search_without_name_or_birth_date_names_the_fields(register: tuple[Register, RegisterApi]) -> None:
    _, api = register
    with pytest.raises(InvalidArgument) as refused:
        await api.search(rpb.SearchQuery(sex_code="1"))
    assert {v.field for v in refused.value.violations} == {"query.full_name", "query.birth_date"}


async def test_notification_from_another_municipality_for_the_same_person_is_ordered_too(
        register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    if reg.name == "annex":
        pytest.skip("the annex is notified by the 本籍地 municipality only")
    person = new_person()
    await apply(api, reg.request(person, "move-1", event=D(2026, 1, 1)))
    await apply(api, reg.request(person, "move-2", kind=rpb.CHANGE_KIND_REMOVE,
                                 reason=rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT, event=D(2026, 2, 1)))
    person.municipality, person.address = TAKASAKI, "群馬県高崎市高松町1番地1"
    moved_in = await api.apply(reg.request(person, "move-3", event=D(2026, 2, 2)), TAKASAKI)
    assert moved_in.state == rpb.RECORD_STATE_ACTIVE and moved_in.change.municipality_code == TAKASAKI


async def test_a_former_code_cannot_become_current_again_without_a_change_of_code(
        register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    person = new_person()
    await apply(api, reg.request(person, "revert-1", event=D(2026, 1, 1)))
    old_code, person.code = person.code, new_person().code
    await apply(api, reg.request(person, "revert-2", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1),
                                 previous_code=old_code))
    with pytest.raises(FailedPrecondition) as refused:
        await apply(api, reg.request(replace(person, code=old_code), "revert-3", kind=rpb.CHANGE_KIND_MODIFY,
                                     reason=rpb.CHANGE_REASON_MINOR_CORRECTION, event=D(2026, 3, 1)))
    assert _reason(refused) == "RESIDENT_CODE_REPLACED"
    assert (await api.lookup(reg.lookup(old_code))).record.resident_code == person.code
