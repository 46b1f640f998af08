"""Property: applying a person's notifications in any order — a CS resending what was refused until
everything is accepted — ends in the same current record and the same history as applying them in
order (hypothesis, both registers, real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from juki.register.v1 import register_pb2 as rpb
from jukilib.devcerts import DevPki
from jukilib.errors import FailedPrecondition
from jukilib.register.api import RegisterApi
from tests.integration.registers import Person, Register, apply, new_person, open_register

# A life in the file: recorded, corrected, moved out (removed), recorded again, corrected ...
STEPS = [
    (rpb.CHANGE_KIND_RECORD, rpb.CHANGE_REASON_BIRTH),
    (rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY),
    (rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_MINOR_CORRECTION),
    (rpb.CHANGE_KIND_REMOVE, rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT),
    (rpb.CHANGE_KIND_RECORD, rpb.CHANGE_REASON_DOMESTIC_MOVE_IN),
    (rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY),
    (rpb.CHANGE_KIND_REMOVE, rpb.CHANGE_REASON_DEATH),
]


@pytest.fixture(scope="module", params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, _, _):
        yield chosen, api


def _notifications(reg: Register, person: Person, length: int, same_day: list[bool], tag: str) -> list[Any]:
    requests = []
    day = dt.date(2025, 1, 1)
    for index, (kind, reason) in enumerate(STEPS[:length]):
        if index and not same_day[index]:
            day += dt.timedelta(days=7)
        version = replace(person, address=f"群馬県前橋市大手町{index + 1}丁目1番1号")
        notify_time = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=index)
        requests.append(reg.request(version, f"{tag}-{index}", kind=kind, reason=reason, event=day,
                                    notify_time=notify_time))
    return requests


async def _apply_with_resends(api: RegisterApi, requests: list[Any]) -> None:
    pending = list(requests)
    while pending:
        refused = []
        for request in pending:
            try:
                await apply(api, request)
            except FailedPrecondition:
                refused.append(request)
        assert len(refused) < len(pending), "no progress: the resends never converge"
        pending = refused


async def _state(api: RegisterApi, reg: Register, code: str) -> tuple[Any, list[Any]]:
    current = await api.lookup(reg.lookup(code))
    versions, _ = await api.list_versions(current.name, 0, "")
    history = [(v.change.notification_id, v.state, v.record.address) for v in versions]
    return (current.state, current.record.address, current.change.notification_id), history


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(min_value=1, max_value=len(STEPS)), data=st.data(),
       same_day=st.lists(st.booleans(), min_size=len(STEPS), max_size=len(STEPS)))
async def test_any_arrival_order_gives_the_same_current_record_and_history(
        register: tuple[Register, RegisterApi], length: int, same_day: list[bool], data: st.DataObject) -> None:
    reg, api = register
    in_order, shuffled = new_person(), new_person()
    await _apply_with_resends(api, _notifications(reg, in_order, length, same_day, in_order.code))
    requests = _notifications(reg, shuffled, length, same_day, shuffled.code)
    order = data.draw(st.permutations(range(length)))
    await _apply_with_resends(api, [requests[i] for i in order])
    expected, got = await _state(api, reg, in_order.code), await _state(api, reg, shuffled.code)
    assert _without_person_prefix(got) == _without_person_prefix(expected)


def _without_person_prefix(state: tuple[Any, list[Any]]) -> tuple[Any, list[Any]]:
    """The notification ids of the two persons differ only in their prefix (the person's code)."""
    current, history = state
    return ((*current[:2], current[2].split("-")[-1]), [(n.split("-")[-1], s, a) for n, s, a in history])
