"""Volume caps through real gateway replicas sharing one database: a search over the per-call cap is
denied, and the per-day caps (per organisation, per operator) hold across replicas and are answered
RESOURCE_EXHAUSTED with retry info; every refusal is in the operation log with its reason."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from juki.gateway.v1 import operator_admin_pb2 as apb
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from juki_services.gateway.policy import DEFAULT_CATALOGUE
from jukilib.errors import STATUS_DETAILS_KEY
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from tests.conftest import RunningSuite, issue_credential
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _resident
from tests.e2e.test_operators import _gateway_allowed, _lookup, _new_operator, _until, gateway_replica

CAPPED = """
[[purposes]]
code = "TEST-CAPPED"
legal_basis = "住基法30-15①(1) 別表第五"
affair = "volume caps under test"
recipients = ["kikaku-bu"]
methods = ["juki.identity.v1.IdentityService/LookupResident", "juki.identity.v1.IdentityService/SearchResidents"]
fields = ["name", "record.full_name"]
operator_roles = ["provision_clerk"]
max_records_per_call = 1
max_records_per_day = 2
valid_from = 2015-06-01

[[purposes]]
code = "TEST-CAPPED-OPERATOR"
legal_basis = "住基法30-15①(1) 別表第五"
affair = "per-operator volume cap under test"
recipients = ["kikaku-bu"]
methods = ["juki.identity.v1.IdentityService/LookupResident"]
fields = ["name", "record.full_name"]
operator_roles = ["provision_clerk"]
max_records_per_call = 1
max_records_per_day = 1000
max_records_per_operator_per_day = 1
valid_from = 2015-06-01
"""
TWIN_NAME, TWIN_KANA = "榛名　太郎", "ハルナ　タロウ"


@pytest.fixture(scope="module")
async def replicas(suite: RunningSuite, home: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[tuple[str, str]]:
    """Two more gateway replicas whose catalogue adds the capped test purposes."""
    catalogue = tmp_path_factory.mktemp("caps") / "purposes.toml"
    catalogue.write_text(DEFAULT_CATALOGUE.read_text(encoding="utf-8") + CAPPED, encoding="utf-8")
    async with gateway_replica(suite, home, catalogue) as first, gateway_replica(suite, home, catalogue) as second:
        yield first, second


@pytest.fixture(scope="module")
async def twins(suite: RunningSuite) -> list[str]:
    """Two residents a 4-item search finds together; returns their resident codes."""
    codes = []
    for index in (90, 91):
        resident = _resident(index)
        request = birth_notification(resident, f"caps-{index}", EVENT_DATE, NOTIFY_TIME)
        request.record.full_name, request.record.full_name_kana = TWIN_NAME, TWIN_KANA
        request.record.birth_date.year, request.record.birth_date.month, request.record.birth_date.day = 1985, 5, 5
        await _call(suite, "maebashi-cs", "identity.ApplyNotification", request, "CS-NOTIFY-30-6")
        codes.append(resident.resident_code)
    return codes


def _details(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    """(ErrorInfo reason, RetryInfo delay in seconds or None)."""
    reason, delay = "", None
    for key, value in error.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY:
            continue
        for detail in status_pb2.Status.FromString(value).details:
            info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                reason = info.reason
            elif detail.Unpack(retry):
                delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return reason, delay


async def _identity(suite: RunningSuite, target: str, method: str, request: object, purpose: str,
                    credential: str, request_id: str = "") -> object:
    async with secure_channel(target, suite.client_tls("kikaku-bu")) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        return await getattr(stub, method)(
            request, metadata=purpose_metadata(purpose, credential=credential, request_id=request_id), timeout=10)


async def _log_reason(suite: RunningSuite, request_id: str) -> tuple[int, str, str]:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        row = await connection.fetchrow("SELECT * FROM operation_log WHERE request_id = $1", request_id)
    finally:
        await connection.close()
    return row["decision"], row["status"], row["reason"]


async def test_search_answering_more_records_than_the_per_call_cap_is_denied(
        suite: RunningSuite, replicas: tuple[str, str], twins: list[str]) -> None:
    search = identity_pb2.SearchResidentsRequest(query=register_pb2.SearchQuery(
        full_name="榛名 太郎", birth_date=register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_YEAR,
                                                                 year=1985)))
    request_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await _identity(suite, replicas[0], "SearchResidents", search, "TEST-CAPPED", suite.credential("kikaku-bu"),
                        request_id)
    assert (denied.value.code(), _details(denied.value)[0]) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                "VOLUME_CAP_PER_CALL")
    assert await _log_reason(suite, request_id) == (2, "PERMISSION_DENIED", "VOLUME_CAP_PER_CALL")


async def test_daily_cap_of_the_organisation_holds_across_replicas(
        suite: RunningSuite, replicas: tuple[str, str], twins: list[str]) -> None:
    first, second = replicas
    credential = suite.credential("kikaku-bu")
    for target, code in ((first, twins[0]), (second, twins[1])):
        answer = await _identity(suite, target, "LookupResident", identity_pb2.LookupResidentRequest(
            resident_code=code), "TEST-CAPPED", credential)
        assert answer.record.full_name == TWIN_NAME  # type: ignore[attr-defined]
    for target in (first, second):
        request_id = str(uuid.uuid4())
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            await _identity(suite, target, "LookupResident", identity_pb2.LookupResidentRequest(
                resident_code=twins[0]), "TEST-CAPPED", credential, request_id)
        reason, delay = _details(exhausted.value)
        assert (exhausted.value.code(), reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "VOLUME_CAP_PER_DAY")
        assert delay is not None and 0 < delay <= 86400
        assert await _log_reason(suite, request_id) == (2, "RESOURCE_EXHAUSTED", "VOLUME_CAP_PER_DAY")


async def test_daily_cap_per_operator_leaves_other_operators_of_the_organisation_working(
        suite: RunningSuite, replicas: tuple[str, str], twins: list[str], home: Path) -> None:
    first, second = replicas
    await _new_operator(suite, "kikaku-0300", roles=(apb.OPERATOR_ROLE_PROVISION_CLERK,))
    mine = issue_credential(home, "kikaku-0300", "kikaku-bu", frozenset({"provision_clerk"}))

    async def known_everywhere() -> bool:  # a lookup of no one: allowed, but nothing counted
        return all([_gateway_allowed(await _lookup(suite, target, "kikaku-bu", mine)) for target in replicas])

    await _until(known_everywhere, 5)
    lookup = identity_pb2.LookupResidentRequest(resident_code=twins[0])
    await _identity(suite, first, "LookupResident", lookup, "TEST-CAPPED-OPERATOR", mine)
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:
        await _identity(suite, second, "LookupResident", lookup, "TEST-CAPPED-OPERATOR", mine)
    assert _details(exhausted.value)[0] == "OPERATOR_VOLUME_CAP_PER_DAY"
    await _identity(suite, second, "LookupResident", lookup, "TEST-CAPPED-OPERATOR", suite.credential("kikaku-bu"))
