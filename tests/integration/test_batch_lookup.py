"""The batch lookup by 住民票コード (AIP-231), specified once and proven for both registers on a real
PostgreSQL: answers in request order, former codes found, codes nobody had answered as absent without
failing the call, and every bad request refused naming the field (with the index of a bad code)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from juki.register.v1 import register_pb2 as rpb
from jukilib.devcerts import DevPki
from jukilib.errors import InvalidArgument, JukiError
from jukilib.register.api import BATCH_LOOKUP_MAX, RegisterApi
from tests.integration.registers import Register, apply, new_person, open_register, resident_code


@pytest.fixture(scope="module", params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, _, _):
        yield chosen, api


async def test_answers_come_in_request_order_with_former_codes_found_and_unknown_codes_absent(
        register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    first, second, third = new_person(), new_person(), new_person()
    for index, person in enumerate((first, second, third)):
        await apply(api, reg.request(person, f"batch-{index}", event=dt.date(2026, 1, 1)))
    former, second.code = second.code, new_person().code
    await apply(api, reg.request(second, "batch-code", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=dt.date(2026, 2, 1),
                                 previous_code=former))
    nobody = resident_code(9_999_999)
    asked = [third.code, former, nobody, first.code, second.code, third.code]

    found = await api.batch_lookup(asked)

    codes = [f.current.resident_code if f is not None else None for f in found]
    assert codes == [third.code, second.code, None, first.code, second.code, third.code]
    assert found[1] is not None and found[4] is not None and found[1].person_id == found[4].person_id
    single = await api.lookup(reg.lookup(first.code))
    assert found[3] is not None and api.resource_message(found[3]) == single


async def test_identity_batch_reveals_every_individual_number_and_annex_has_none(
        register: tuple[Register, RegisterApi]) -> None:
    reg, api = register
    persons = [new_person() for _ in range(3)]
    for index, person in enumerate(persons):
        await apply(api, reg.request(person, f"batch-number-{index}"))

    found = await api.batch_lookup([p.code for p in persons])

    numbers = [f.current.record.get("individual_number") if f else "not found" for f in found]
    assert numbers == ([p.number for p in persons] if reg.name == "identity" else [None, None, None])


async def test_more_than_a_thousand_codes_are_refused_naming_the_field(register: tuple[Register, RegisterApi]) -> None:
    _, api = register
    with pytest.raises(InvalidArgument) as refused:
        await api.batch_lookup([resident_code(i) for i in range(BATCH_LOOKUP_MAX + 1)])
    assert [v.field for v in refused.value.violations] == ["resident_codes"]
    assert len(await api.batch_lookup([resident_code(i) for i in range(BATCH_LOOKUP_MAX)])) == BATCH_LOOKUP_MAX


async def test_no_codes_is_refused_naming_the_field(register: tuple[Register, RegisterApi]) -> None:
    _, api = register
    with pytest.raises(InvalidArgument) as refused:
        await api.batch_lookup([])
    assert [(v.field, v.reason) for v in refused.value.violations] == [("resident_codes", "REQUIRED_FIELD")]


async def test_each_malformed_code_is_named_with_its_index(register: tuple[Register, RegisterApi]) -> None:
    _, api = register
    asked = [resident_code(1), "1234", resident_code(2), "１２３４５６７８９０１", "12345678901x"]
    with pytest.raises(InvalidArgument) as refused:
        await api.batch_lookup(asked)
    assert [v.field for v in refused.value.violations] == ["resident_codes[1]", "resident_codes[3]",
                                                           "resident_codes[4]"]
    assert all("1234" not in v.description for v in refused.value.violations)  # no value in the message


async def test_a_former_code_is_never_given_to_another_person_and_keeps_finding_its_own(
        register: tuple[Register, RegisterApi]) -> None:
    """Why the lookup reads codes held now first and former codes only for what is left: no code is both."""
    reg, api = register
    earlier, later = new_person(), new_person()
    await apply(api, reg.request(earlier, "batch-reused-0", event=dt.date(2026, 1, 1)))
    reused, earlier.code = earlier.code, new_person().code
    await apply(api, reg.request(earlier, "batch-reused-code", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=dt.date(2026, 2, 1),
                                 previous_code=reused))
    later.code = reused
    with pytest.raises(JukiError):
        await apply(api, reg.request(later, "batch-reused-1", event=dt.date(2026, 3, 1)))

    found = await api.batch_lookup([reused, earlier.code])

    assert [f.current.record["full_name"] if f else None for f in found] == [earlier.name, earlier.name]
