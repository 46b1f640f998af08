"""The registers' review queue, end to end through the gateway with mTLS (issue 17; DOMAIN §B, §C).

- A notification refused for a state conflict (住基法 30-6 ① / 30-41 ①: unknown person, already recorded, out
  of jurisdiction; 番号法 7 ②: a 個人番号 another person holds) is kept, its content sealed at rest, for the
  prefecture's desk (総務部市町村課, a report clerk logged in) to inspect and resolve: dismiss with a reason, or
  report to the municipality (住基法 12-5). The register settles the item itself when the notification is
  applied on a resend.
- DOMAIN §B: a name with characters the register cannot identify (外字, private use) is accepted, never
  refused, and queued for 文字同定.
- 住基法 30-6 ①: a 転入 recorded while the old municipality still holds the person waits for that
  municipality's 転出; alone longer than the configured wait, it is listed for review, and the 転出's arrival
  settles it.
- No municipality sees the queue; nothing of a refused notification's content reaches the logs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from typing import Any

import asyncpg
import grpc
import pytest

from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from tests.conftest import TEST_MOVE_HALF_WAIT, RunningSuite, field_violations

MAEBASHI, TAKASAKI = "102016", "102024"
CS = {MAEBASHI: "maebashi-cs", TAKASAKI: "cs-102024"}
NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
QUEUE = "PREFECTURE-REVIEW-QUEUE"
MOVE_IN, MOVE_OUT = rpb.CHANGE_REASON_DOMESTIC_MOVE_IN, rpb.CHANGE_REASON_DOMESTIC_MOVE_OUT


def _resident(seed: int, municipality: str = MAEBASHI, **changes: Any) -> SyntheticResident:
    base = generate_residents(1, seed=177_000 + seed)[0]
    town = "前橋市大手町" if municipality == MAEBASHI else "高崎市高松町"
    return dataclasses.replace(base, municipality_code=municipality, address=f"群馬県{town}{seed}番地", **changes)


def _identity(resident: SyntheticResident, notification_id: str, day: int, *,
              kind: int = rpb.CHANGE_KIND_RECORD, reason: int = MOVE_IN) -> Any:
    request = birth_notification(resident, notification_id, dt.date(2026, 3, day), NOTIFY_TIME)
    request.change.kind, request.change.reason = kind, reason
    return request


def _stub(register: str, channel: Any) -> Any:
    return (identity_pb2_grpc.IdentityServiceStub if register == "identity" else annex_pb2_grpc.AnnexServiceStub)(
        channel)


async def _notify(suite: RunningSuite, municipality: str, request: Any, register: str = "identity") -> Any:
    purpose = "CS-NOTIFY-30-6" if register == "identity" else "CS-NOTIFY-30-41"
    async with secure_channel(suite.gateway, suite.client_tls(CS[municipality])) as channel:
        return await _stub(register, channel).ApplyNotification(
            request, metadata=purpose_metadata(purpose, request_id=str(uuid.uuid4())), timeout=10)


async def _refused(suite: RunningSuite, municipality: str, request: Any, register: str = "identity") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _notify(suite, municipality, request, register)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def _desk(suite: RunningSuite, method: str, request: Any, register: str = "identity",
                purpose: str = QUEUE) -> Any:
    """The prefecture's desk (総務部市町村課), a report clerk logged in, through the gateway."""
    async with secure_channel(suite.gateway, suite.client_tls("shichoson-ka")) as channel:
        return await getattr(_stub(register, channel), method)(
            request, metadata=purpose_metadata(purpose, credential=suite.credential("shichoson-ka"),
                                               request_id=str(uuid.uuid4())), timeout=10)


async def _item(suite: RunningSuite, notification_id: str, register: str = "identity",
                kind: int = rpb.REVIEW_ITEM_KIND_UNSPECIFIED) -> Any | None:
    """The listed review item of a notification (None: not listed)."""
    token = ""
    while True:
        page = await _desk(suite, "ListReviewItems", rpb.ListReviewItemsRequest(kind=kind, page_size=500,
                                                                              page_token=token), register)
        for item in page.review_items:
            if item.notification_id == notification_id:
                return item
        token = page.next_page_token
        if not token:
            return None


async def test_a_refused_notification_is_kept_sealed_for_the_desk_to_inspect(
        suite: RunningSuite, log_lines: list[str]) -> None:
    stranger = _resident(1)
    correction = _identity(stranger, "rq-1", 2, kind=rpb.CHANGE_KIND_MODIFY,
                           reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY)
    await _refused(suite, MAEBASHI, correction)  # 住基法 30-6 ①: nobody to correct

    listed = await _item(suite, "rq-1")
    assert listed is not None
    assert (listed.kind, listed.state, listed.rule, listed.municipality_code) == (
        rpb.REVIEW_ITEM_KIND_REFUSED_NOTIFICATION, rpb.REVIEW_ITEM_STATE_OPEN, "UNKNOWN_PERSON", MAEBASHI)
    assert not listed.HasField("record")  # a list never carries the content
    item = await _desk(suite, "GetReviewItem", rpb.GetReviewItemRequest(name=listed.name))
    record = identity_pb2.IdentityRecord()
    assert item.record.Unpack(record)
    assert (record.full_name, record.individual_number) == (stranger.full_name, stranger.individual_number)
    assert (item.change.kind, item.change.notification_id) == (rpb.CHANGE_KIND_MODIFY, "rq-1")
    # Sealed at rest, as the 個人番号 are: the database holds neither the name nor the number in clear.
    connection = await asyncpg.connect(suite.database_url("identity"))
    try:
        stored = await connection.fetchrow("SELECT * FROM review_item WHERE notification_id = 'rq-1'")
    finally:
        await connection.close()
    assert stored is not None
    sealed = bytes(stored["ciphertext"])
    assert stranger.full_name.encode() not in sealed and stranger.individual_number.encode() not in sealed
    assert stranger.individual_number not in repr(dict(stored)) and stranger.resident_code not in repr(dict(stored))
    logs = "\n".join(log_lines)
    assert stranger.full_name not in logs and stranger.individual_number not in logs
    assert stranger.resident_code not in logs


async def test_a_refused_notification_applied_when_resent_settles_its_item(suite: RunningSuite) -> None:
    resident = _resident(2)
    correction = _identity(resident, "rq-2b", 5, kind=rpb.CHANGE_KIND_MODIFY,
                           reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY)
    await _refused(suite, MAEBASHI, correction)  # arrived before the 記載 it corrects
    await _notify(suite, MAEBASHI, _identity(resident, "rq-2a", 1))
    await _notify(suite, MAEBASHI, correction)  # the CS resends it

    item = await _item(suite, "rq-2b")
    assert item is not None
    assert (item.state, item.resolution_reason_code) == (rpb.REVIEW_ITEM_STATE_SETTLED, "APPLIED_WHEN_RESENT")


async def test_a_number_held_by_another_person_is_queued_with_its_rule(suite: RunningSuite) -> None:
    holder = _resident(3)
    await _notify(suite, MAEBASHI, _identity(holder, "rq-3a", 1))
    twin = _resident(4, individual_number=holder.individual_number)
    await _refused(suite, MAEBASHI, _identity(twin, "rq-3b", 2))  # 番号法 7 ②: one number, one person

    item = await _item(suite, "rq-3b", kind=rpb.REVIEW_ITEM_KIND_REFUSED_NOTIFICATION)
    assert item is not None and item.rule == "INDIVIDUAL_NUMBER_IN_USE"


async def test_the_desk_dismisses_an_item_only_with_a_reason(suite: RunningSuite) -> None:
    await _refused(suite, TAKASAKI, _identity(_resident(5), "rq-5", 1))  # 30-6 ①: a Maebashi address
    item = await _item(suite, "rq-5")
    assert item is not None and item.rule == "OUT_OF_JURISDICTION"

    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await _desk(suite, "DismissReviewItem", rpb.DismissReviewItemRequest(name=item.name))
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(no_reason.value) == ["reason_code"]
    dismissed = await _desk(suite, "DismissReviewItem", rpb.DismissReviewItemRequest(
        name=item.name, reason_code="SENT_TO_THE_WRONG_PREFECTURE_SERVER"))
    assert (dismissed.state, dismissed.resolution_reason_code) == (
        rpb.REVIEW_ITEM_STATE_DISMISSED, "SENT_TO_THE_WRONG_PREFECTURE_SERVER")
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await _desk(suite, "DismissReviewItem", rpb.DismissReviewItemRequest(name=item.name, reason_code="AGAIN"))
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_the_desk_turns_an_item_into_a_report_to_the_municipality(suite: RunningSuite) -> None:
    resident = _resident(6)
    await _notify(suite, MAEBASHI, _identity(resident, "rq-6a", 1))
    await _refused(suite, MAEBASHI, _identity(resident, "rq-6b", 3))  # recorded twice, no 消除 between
    item = await _item(suite, "rq-6b")
    assert item is not None and item.rule == "ALREADY_RECORDED"

    reported = await _desk(suite, "ReportReviewItem", rpb.ReportReviewItemRequest(
        name=item.name, municipality_report=rpb.MunicipalityReport(
            resident_code=resident.resident_code, reason_code="DUPLICATE_NOTIFICATION", fields=["record.address"])))

    assert reported.state == rpb.REVIEW_ITEM_STATE_REPORTED
    report = await _desk(suite, "GetMunicipalityReport", rpb.GetMunicipalityReportRequest(
        name=reported.municipality_report), purpose="PREFECTURE-REPORTS-12-5")
    assert report.origin_reference == item.name  # 住基法 12-5, with where it came from
    assert (report.state, report.municipality_code) == (rpb.REPORT_STATE_OPEN, MAEBASHI)


async def test_unidentified_characters_are_accepted_and_queued_for_character_identification(
        suite: RunningSuite) -> None:
    # DOMAIN §B: a municipality's 外字 (private use) is never a reason to refuse a name.
    resident = _resident(7, full_name="\ue001山\u3000花子")
    accepted = await _notify(suite, MAEBASHI, _identity(resident, "rq-7", 1))
    assert accepted.resident_version.record.full_name == resident.full_name

    item = await _item(suite, "rq-7", kind=rpb.REVIEW_ITEM_KIND_CHARACTER_IDENTIFICATION)
    assert item is not None
    assert (list(item.field_paths), item.version, item.state) == (
        ["record.full_name"], accepted.resident_version.name, rpb.REVIEW_ITEM_STATE_OPEN)
    assert await _item(suite, "rq-7", kind=rpb.REVIEW_ITEM_KIND_REFUSED_NOTIFICATION) is None


async def test_a_move_in_alone_longer_than_the_wait_is_listed_and_its_move_out_settles_it(
        suite: RunningSuite) -> None:
    resident = _resident(8)
    await _notify(suite, MAEBASHI, _identity(resident, "rq-8a", 1))
    moved = dataclasses.replace(resident, municipality_code=TAKASAKI, address="群馬県高崎市高松町8番地")
    await _notify(suite, TAKASAKI, _identity(moved, "rq-8c", 11))  # Maebashi's 転出 not arrived yet
    assert await _item(suite, "rq-8c") is None  # within the wait: the 転出 usually follows

    await asyncio.sleep(TEST_MOVE_HALF_WAIT)
    item = await _item(suite, "rq-8c", kind=rpb.REVIEW_ITEM_KIND_LONE_MOVE_HALF)
    assert item is not None
    assert (item.awaited_municipality_code, item.rule, item.state) == (
        MAEBASHI, "MOVE_HALF_ALONE", rpb.REVIEW_ITEM_STATE_OPEN)

    await _notify(suite, MAEBASHI, _identity(resident, "rq-8b", 10, kind=rpb.CHANGE_KIND_REMOVE, reason=MOVE_OUT))
    settled = await _item(suite, "rq-8c")
    assert settled is not None
    assert (settled.state, settled.resolution_reason_code) == (rpb.REVIEW_ITEM_STATE_SETTLED, "MOVE_COMPLETED")


async def test_a_move_whose_halves_arrive_within_the_wait_is_never_listed(suite: RunningSuite) -> None:
    resident = _resident(9)
    await _notify(suite, MAEBASHI, _identity(resident, "rq-9a", 1))
    moved = dataclasses.replace(resident, municipality_code=TAKASAKI, address="群馬県高崎市高松町9番地")
    await _notify(suite, TAKASAKI, _identity(moved, "rq-9c", 11))
    await _notify(suite, MAEBASHI, _identity(resident, "rq-9b", 10, kind=rpb.CHANGE_KIND_REMOVE, reason=MOVE_OUT))

    await asyncio.sleep(TEST_MOVE_HALF_WAIT)
    item = await _item(suite, "rq-9c")
    assert item is None or item.state == rpb.REVIEW_ITEM_STATE_SETTLED


async def test_the_annex_register_keeps_its_refusals_the_same_way(suite: RunningSuite) -> None:
    stranger = _resident(10)
    correction = annex_notification(stranger, "rq-10", dt.date(2026, 3, 2), moved_abroad=False,
                                    notify_time=NOTIFY_TIME)
    correction.change.kind = rpb.CHANGE_KIND_MODIFY
    correction.change.reason = rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY
    await _refused(suite, MAEBASHI, correction, "annex")

    listed = await _item(suite, "rq-10", "annex")
    assert listed is not None and listed.rule == "UNKNOWN_PERSON"
    item = await _desk(suite, "GetReviewItem", rpb.GetReviewItemRequest(name=listed.name), "annex")
    record = annex_pb2.AnnexRecord()
    assert item.record.Unpack(record) and record.full_name == stranger.full_name


async def test_a_municipality_cannot_see_the_review_queue(suite: RunningSuite) -> None:
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await identity_pb2_grpc.IdentityServiceStub(channel).ListReviewItems(
                rpb.ListReviewItemsRequest(), metadata=purpose_metadata(QUEUE, request_id=str(uuid.uuid4())),
                timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

