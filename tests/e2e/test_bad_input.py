"""Every bad input is INVALID_ARGUMENT naming the field, never INTERNAL (issue 15): inputs that once reached
SQL or a conversion and failed there — an enum value the contract does not define, a Timestamp outside
years 1-9999, a forged page token — are refused at the gateway or by the owning service, and change
nothing."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import grpc
import pytest

from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2, operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib.grpc.channels import secure_channel
from jukilib.paging import encode_token
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import generate_residents
from tests.conftest import RunningSuite, field_violations

STUBS = {"ListOperationLogEntries": operation_log_pb2_grpc.OperationLogServiceStub,
         "CreateDisclosureCase": disclosure_pb2_grpc.DisclosureServiceStub}


async def _refused_fields(suite: RunningSuite, caller: str, purpose: str, method: str, request: object) -> list[str]:
    metadata = purpose_metadata(purpose, credential=suite.credential(caller), request_id=str(uuid.uuid4()))
    async with secure_channel(suite.gateway, suite.client_tls(caller)) as channel:
        stub = STUBS.get(method, identity_pb2_grpc.IdentityServiceStub)(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(stub, method)(request, metadata=metadata, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    return field_violations(refused.value)


def _notification(index: int) -> identity_pb2.ApplyNotificationRequest:
    resident = generate_residents(1, seed=15_100 + index)[0]
    return birth_notification(resident, f"implausible-{index}-{uuid.uuid4().hex[:8]}", dt.date(2026, 4, 1))


async def _notification_refused(suite: RunningSuite, request: identity_pb2.ApplyNotificationRequest) -> list[str]:
    fields = await _refused_fields(suite, "maebashi-cs", "CS-NOTIFY-30-6", "ApplyNotification", request)
    connection = await asyncpg.connect(suite.database_url("identity"))
    try:
        assert await connection.fetchval("SELECT count(*) FROM person_version WHERE notification_id = $1",
                                         request.notification_id) == 0
    finally:
        await connection.close()
    return fields


async def test_an_undefined_enum_value_is_refused_naming_the_field(suite: RunningSuite) -> None:
    request = register_pb2.ListMunicipalityReportsRequest(state=70000)
    assert await _refused_fields(suite, "maebashi-cs", "CS-REPORTS-12-5", "ListMunicipalityReports", request) == [
        "state"]


@pytest.mark.parametrize("offset", [-1, 2**64])
async def test_a_forged_page_token_is_refused_naming_it(suite: RunningSuite, offset: int) -> None:
    request = register_pb2.ListMunicipalityReportsRequest(page_token=encode_token({"offset": offset}))
    assert await _refused_fields(suite, "maebashi-cs", "CS-REPORTS-12-5", "ListMunicipalityReports", request) == [
        "page_token"]


async def test_an_out_of_range_notify_time_is_refused_and_nothing_is_applied(suite: RunningSuite) -> None:
    request = _notification(0)
    request.change.notify_time.seconds = 253_402_300_800  # 10000-01-01T00:00:00Z
    assert await _notification_refused(suite, request) == ["change.notify_time"]


async def test_an_out_of_range_review_period_is_refused_naming_the_field(suite: RunningSuite) -> None:
    request = operation_log_pb2.ListOperationLogEntriesRequest()
    request.start_time.seconds = -62_135_596_801  # one second before 0001-01-01
    assert await _refused_fields(suite, "auditor", "AUDIT-OPERATION-LOG", "ListOperationLogEntries", request) == [
        "start_time"]


# --- plausibility: what a municipality or a clerk states must be possible (住基法 30-6, 30-32) -----------

async def test_a_name_of_only_spaces_is_refused(suite: RunningSuite) -> None:
    request = _notification(1)
    request.record.full_name = "\u3000 \u3000"
    assert await _notification_refused(suite, request) == ["record.full_name"]


async def test_a_birth_date_after_the_event_notified_is_refused(suite: RunningSuite) -> None:
    request = _notification(2)
    request.record.birth_date.year, request.record.birth_date.month, request.record.birth_date.day = 2026, 4, 2
    assert await _notification_refused(suite, request) == ["record.birth_date"]


@pytest.mark.parametrize("year", [530, 9999])
async def test_a_notification_time_far_from_now_is_refused(suite: RunningSuite, year: int) -> None:
    request = _notification(3)
    request.change.notify_time.FromDatetime(dt.datetime(year, 1, 1, tzinfo=dt.UTC))
    assert await _notification_refused(suite, request) == ["change.notify_time"]


async def test_a_disclosure_request_received_in_1900_is_refused(suite: RunningSuite) -> None:
    case = disclosure_pb2.DisclosureCase(
        subject_resident_code="12345678901", requester_kind=disclosure_pb2.REQUESTER_KIND_PERSON,
        requester_name="請求者 本人", identity_documents=[disclosure_pb2.IDENTITY_DOCUMENT_MY_NUMBER_CARD],
        channel=disclosure_pb2.CHANNEL_COUNTER, scopes=[disclosure_pb2.DISCLOSURE_SCOPE_IDENTITY_FILE])
    case.receive_time.FromDatetime(dt.datetime(1900, 1, 1, tzinfo=dt.UTC))
    assert await _refused_fields(suite, "disclosure-desk", "DISCLOSURE-30-32", "CreateDisclosureCase",
                                 disclosure_pb2.CreateDisclosureCaseRequest(disclosure_case=case)) == [
        "disclosure_case.receive_time"]
