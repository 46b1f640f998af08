"""Who may notify what, and identifiers that belong to one person: the registers' legal rules, end to end
through the gateway with mTLS, as a municipality's CS meets them (issue 17).

- 住基法 30-6 ① / 30-41 ①: a municipality records only its own residents (identity: by address, annex: by
  本籍地), and corrects or removes only a person whose record it holds; a move is the old municipality's
  消除 and the new one's 記載, in either arrival order.
- 番号法 7 ②: one 個人番号, one person; it changes only by its change reasons.
- 住基法 30-4, 番号法 7 ②: a former identifier leads a provision purpose to nobody, and organs never receive
  the register's internal person id.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from juki.annex.v1 import annex_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib.errors import STATUS_DETAILS_KEY
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import RunningSuite

MAEBASHI, TAKASAKI = "102016", "102024"
CS = {MAEBASHI: "maebashi-cs", TAKASAKI: "cs-102024"}
NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)


def _resident(seed: int, municipality: str = MAEBASHI) -> SyntheticResident:
    base = generate_residents(1, seed=91_000 + seed)[0]
    town = "前橋市大手町" if municipality == MAEBASHI else "高崎市高松町"
    return dataclasses.replace(base, municipality_code=municipality, address=f"群馬県{town}{seed}番地")


def _identity(resident: SyntheticResident, notification_id: str, day: int, *,
              kind: int = rpb.CHANGE_KIND_RECORD, reason: int = rpb.CHANGE_REASON_DOMESTIC_MOVE_IN) -> Any:
    request = birth_notification(resident, notification_id, dt.date(2026, 3, day), NOTIFY_TIME)
    request.change.kind, request.change.reason = kind, reason
    return request


async def _notify(suite: RunningSuite, municipality: str, request: Any, register: str = "identity") -> Any:
    stub_type = identity_pb2_grpc.IdentityServiceStub if register == "identity" else annex_pb2_grpc.AnnexServiceStub
    purpose = "CS-NOTIFY-30-6" if register == "identity" else "CS-NOTIFY-30-41"
    async with secure_channel(suite.gateway, suite.client_tls(CS[municipality])) as channel:
        return await stub_type(channel).ApplyNotification(
            request, metadata=purpose_metadata(purpose, request_id=str(uuid.uuid4())), timeout=10)


async def _refusal(suite: RunningSuite, municipality: str, request: Any, register: str = "identity") -> str:
    """The reason of the FAILED_PRECONDITION that the notification must get."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _notify(suite, municipality, request, register)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = status_pb2.Status.FromString(dict(refused.value.trailing_metadata() or ())[STATUS_DETAILS_KEY])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


async def _history(suite: RunningSuite, resident_code: str, order: str = "v.version") -> list[asyncpg.Record]:
    """The person's versions as the identity file holds them (notification id, municipality, state)."""
    connection = await asyncpg.connect(suite.database_url("identity"))
    try:
        return await connection.fetch(
            "SELECT v.notification_id, v.municipality_code, v.state FROM person_version v "
            f"JOIN person p ON p.id = v.person_id WHERE p.resident_code = $1 ORDER BY {order}", resident_code)
    finally:
        await connection.close()


async def _current(suite: RunningSuite, resident_code: str) -> asyncpg.Record:
    """The person's current state as the identity file holds it (version, state, holding municipality)."""
    connection = await asyncpg.connect(suite.database_url("identity"))
    try:
        row = await connection.fetchrow(
            "SELECT current_version, state, municipality_code FROM person WHERE resident_code = $1", resident_code)
    finally:
        await connection.close()
    assert row is not None
    return row


async def test_a_municipality_cannot_record_a_resident_of_another(suite: RunningSuite) -> None:
    # 住基法 30-6 ①: Takasaki's CS notifies a 記載 whose address is in Maebashi.
    resident = _resident(1)
    assert await _refusal(suite, TAKASAKI, _identity(resident, "law-1", 1)) == "OUT_OF_JURISDICTION"


@pytest.mark.parametrize(("kind", "reason"), [
    (rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_MINOR_CORRECTION),
    (rpb.CHANGE_KIND_REMOVE, rpb.CHANGE_REASON_DEATH),
])
async def test_a_municipality_cannot_change_another_ones_resident(suite: RunningSuite, kind: int,
                                                                   reason: int) -> None:
    # 住基法 30-6 ①: Maebashi holds the person; Takasaki's 修正 or 消除 (even naming itself) changes nothing.
    resident = _resident(2 + kind)
    answer = await _notify(suite, MAEBASHI, _identity(resident, f"law-hold-{kind}", 1))
    takeover = _identity(dataclasses.replace(resident, municipality_code=TAKASAKI), f"law-take-{kind}", 2,
                         kind=kind, reason=reason)
    assert await _refusal(suite, TAKASAKI, takeover) == "NOT_HOLDING_MUNICIPALITY"
    current = await _current(suite, resident.resident_code)
    assert current["current_version"] == answer.resident_version.version == 1
    assert current["municipality_code"] == MAEBASHI


async def test_a_municipality_cannot_take_over_an_annex_person_by_naming_itself_the_domicile(
        suite: RunningSuite) -> None:
    # 住基法 30-41 ①: the 本籍地 holds the 附票; a 転籍 is the old one's 消除 and the new one's 記載.
    resident = _resident(7)
    await _notify(suite, MAEBASHI, annex_notification(resident, "law-annex-1", dt.date(2026, 3, 1),
                                                      moved_abroad=False, notify_time=NOTIFY_TIME), "annex")
    takeover = annex_notification(dataclasses.replace(resident, municipality_code=TAKASAKI), "law-annex-2",
                                  dt.date(2026, 3, 2), moved_abroad=False, notify_time=NOTIFY_TIME)
    takeover.change.kind, takeover.change.reason = rpb.CHANGE_KIND_MODIFY, rpb.CHANGE_REASON_MINOR_CORRECTION
    assert await _refusal(suite, TAKASAKI, takeover, "annex") == "NOT_HOLDING_MUNICIPALITY"


async def test_a_move_within_the_prefecture_ends_with_one_record_in_the_new_municipality(
        suite: RunningSuite) -> None:
    resident = _resident(8)
    await _notify(suite, MAEBASHI, _identity(resident, "law-move-1", 1))
    await _notify(suite, MAEBASHI, _identity(resident, "law-move-2", 10, kind=rpb.CHANGE_KIND_REMOVE,
                                             reason=rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT))
    moved = _resident(8, TAKASAKI)
    await _notify(suite, TAKASAKI, _identity(moved, "law-move-3", 11))
    current = await _current(suite, resident.resident_code)
    assert (current["current_version"], current["state"], current["municipality_code"]) == (
        3, rpb.RECORD_STATE_ACTIVE, TAKASAKI)


async def test_a_move_whose_move_in_arrives_first_ends_the_same_without_a_refusal(suite: RunningSuite) -> None:
    # 住基法 30-6 ①: 高崎市's 転入 reaches the prefecture before 前橋市's 転出. Neither is refused; the one
    # record of the person is active in 高崎市, and both events are in its history.
    resident = _resident(30)
    await _notify(suite, MAEBASHI, _identity(resident, "law-move-in-1", 1))
    moved = _resident(30, TAKASAKI)
    moved_in = await _notify(suite, TAKASAKI, _identity(moved, "law-move-in-3", 11))
    current = await _current(suite, resident.resident_code)
    assert (current["current_version"], current["state"], current["municipality_code"]) == (
        moved_in.resident_version.version, rpb.RECORD_STATE_ACTIVE, TAKASAKI)
    moved_out = await _notify(suite, MAEBASHI, _identity(resident, "law-move-in-2", 10, kind=rpb.CHANGE_KIND_REMOVE,
                                                         reason=rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT))
    assert moved_out.resident_version.state == rpb.RECORD_STATE_REMOVED  # kept in history, before the 転入
    current = await _current(suite, resident.resident_code)
    assert (current["current_version"], current["state"], current["municipality_code"]) == (
        2, rpb.RECORD_STATE_ACTIVE, TAKASAKI)
    history = await _history(suite, resident.resident_code, "v.event_date, v.notify_time")
    assert [(r["municipality_code"], r["state"]) for r in history] == [
        (MAEBASHI, rpb.RECORD_STATE_ACTIVE), (MAEBASHI, rpb.RECORD_STATE_REMOVED), (TAKASAKI, rpb.RECORD_STATE_ACTIVE)]
    # A second 記載 that is not a 転入 stays refused, whoever sends it.
    born_again = _identity(moved, "law-move-in-4", 12, reason=rpb.CHANGE_REASON_BIRTH)
    assert await _refusal(suite, TAKASAKI, born_again) == "ALREADY_RECORDED"


@pytest.mark.parametrize(("seed", "in_notified_first", "in_arrives_first"), [
    (40, True, True), (41, False, False), (42, True, False), (43, False, True)])
async def test_a_move_on_one_day_ends_in_the_new_municipality_in_any_order(
        suite: RunningSuite, seed: int, in_notified_first: bool, in_arrives_first: bool) -> None:
    # 住基法 30-6 ①: both halves dated the same day, either notified first, either arriving first. Nothing is
    # refused; the person is active in 高崎市 with both events in its history.
    resident = _resident(seed)
    await _notify(suite, MAEBASHI, _identity(resident, f"law-day-{seed}-1", 1))
    moved_in = _identity(_resident(seed, TAKASAKI), f"law-day-{seed}-3", 10)
    moved_in.change.notify_time.FromDatetime(NOTIFY_TIME + dt.timedelta(hours=1 if in_notified_first else 5))
    moved_out = _identity(resident, f"law-day-{seed}-2", 10, kind=rpb.CHANGE_KIND_REMOVE,
                          reason=rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT)
    moved_out.change.notify_time.FromDatetime(NOTIFY_TIME + dt.timedelta(hours=5 if in_notified_first else 1))
    halves = [(moved_in, TAKASAKI), (moved_out, MAEBASHI)]
    for request, municipality in halves if in_arrives_first else halves[::-1]:
        await _notify(suite, municipality, request)
    current = await _current(suite, resident.resident_code)
    assert (current["state"], current["municipality_code"]) == (rpb.RECORD_STATE_ACTIVE, TAKASAKI)
    history = await _history(suite, resident.resident_code)
    assert sorted((r["notification_id"], r["state"]) for r in history) == [
        (f"law-day-{seed}-1", rpb.RECORD_STATE_ACTIVE), (f"law-day-{seed}-2", rpb.RECORD_STATE_REMOVED),
        (f"law-day-{seed}-3", rpb.RECORD_STATE_ACTIVE)]


async def test_a_person_is_not_recorded_twice_whatever_the_event_dates(suite: RunningSuite) -> None:
    # 住基法 30-6 ①: a second 記載 dated before the record the file holds, with no 消除 between, is refused
    # (it used to be kept as a late version).
    resident = _resident(31)
    await _notify(suite, MAEBASHI, _identity(resident, "law-twice-1", 5, reason=rpb.CHANGE_REASON_BIRTH))
    earlier = _identity(resident, "law-twice-2", 3, reason=rpb.CHANGE_REASON_BIRTH)
    assert await _refusal(suite, MAEBASHI, earlier) == "ALREADY_RECORDED"
    current = await _current(suite, resident.resident_code)
    assert current["current_version"] == 1


async def test_the_same_individual_number_for_two_persons_is_refused(suite: RunningSuite) -> None:
    # 番号法 7 ②: a 個人番号 is one person's.
    holder, impostor = _resident(9), _resident(10)
    await _notify(suite, MAEBASHI, _identity(holder, "law-number-1", 1))
    impostor = dataclasses.replace(impostor, individual_number=holder.individual_number)
    assert await _refusal(suite, MAEBASHI, _identity(impostor, "law-number-2", 1)) == "INDIVIDUAL_NUMBER_IN_USE"


async def test_an_individual_number_changes_only_under_its_reasons(suite: RunningSuite) -> None:
    resident = _resident(11)
    await _notify(suite, MAEBASHI, _identity(resident, "law-change-1", 1))
    renumbered = dataclasses.replace(resident, individual_number=_resident(12).individual_number)
    moved_house = _identity(renumbered, "law-change-2", 2, kind=rpb.CHANGE_KIND_MODIFY,
                            reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY)
    assert await _refusal(suite, MAEBASHI, moved_house) == "INDIVIDUAL_NUMBER_CHANGE_REFUSED"
    requested = _identity(renumbered, "law-change-3", 3, kind=rpb.CHANGE_KIND_MODIFY,
                          reason=rpb.CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST)
    assert (await _notify(suite, MAEBASHI, requested)).resident_version.version == 2


async def _by_number(suite: RunningSuite, number: str) -> Any:
    async with secure_channel(suite.gateway, suite.client_tls("kikaku-bu")) as channel:
        return await identity_pb2_grpc.IdentityServiceStub(channel).LookupResidentByIndividualNumber(
            identity_pb2.LookupResidentByIndividualNumberRequest(individual_number=number),
            metadata=purpose_metadata("TAX-NUMBER-30-15-1-2", credential=suite.credential("kikaku-bu"),
                                      request_id=str(uuid.uuid4())), timeout=10)


async def test_a_former_individual_number_leads_an_organ_to_nobody(suite: RunningSuite) -> None:
    # 番号法 7 ②: after a change of 個人番号 the old number links to the person only where the affair needs
    # it (the resident's own disclosure case, audit, the holding municipality), never for a provision.
    resident = _resident(13)
    await _notify(suite, MAEBASHI, _identity(resident, "law-former-1", 1))
    found = await _by_number(suite, resident.individual_number)
    assert found.record.full_name == resident.full_name and found.name == ""  # no internal id for an organ
    renumbered = dataclasses.replace(resident, individual_number=_resident(14).individual_number)
    await _notify(suite, MAEBASHI, _identity(renumbered, "law-former-2", 2, kind=rpb.CHANGE_KIND_MODIFY,
                                             reason=rpb.CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST))
    with pytest.raises(grpc.aio.AioRpcError) as former:
        await _by_number(suite, resident.individual_number)
    assert former.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await _by_number(suite, renumbered.individual_number)).record.full_name == resident.full_name
