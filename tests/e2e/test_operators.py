"""Operators through the real gateway: human work needs a signed credential bound to the certificate's
organisation, an active registration and a role the purpose names; administrators manage the registry
through the gateway; disabling an operator or an organisation takes effect on every replica within 5 s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2

from juki.gateway.v1 import operator_admin_pb2 as apb
from juki.gateway.v1 import operator_admin_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib.errors import STATUS_DETAILS_KEY
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukitools.client import purpose_metadata
from jukitools.suite import service_migrations
from tests.conftest import RunningSuite, issue_credential, service_config

PASSPORT = "PASSPORT-30-15-1-1"
UNKNOWN_CODE = "12345678901"  # no such resident: an allowed call is answered NOT_FOUND by identity
ADMIN = "admin-office"


@asynccontextmanager
async def gateway_replica(suite: RunningSuite, home: Path, policy_file: Path | None = None,
                          now: dt.datetime | None = None) -> AsyncIterator[str]:
    """Another gateway replica on the same database and backends, deciding as if it were `now` when given;
    yields its address."""
    from juki_services.gateway import app

    targets = {name: suite.address(name) for name in ("identity", "annex", "disclosure", "agency")}
    config = service_config("gateway", suite.pki, suite.databases["gateway"], home, targets)
    config = dataclasses.replace(config, policy_file=policy_file)
    build = app.build if now is None else functools.partial(app.build, clock=lambda: now)
    replica = GrpcService(config, service_migrations("gateway"), build)
    await replica.start()
    await replica.wait_ready(30)
    try:
        yield f"127.0.0.1:{replica.port}"
    finally:
        await replica.stop(0.5)


def _reason(error: grpc.aio.AioRpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            info = error_details_pb2.ErrorInfo()
            assert status_pb2.Status.FromString(value).details[0].Unpack(info)
            return str(info.reason)
    return ""


def _violations(error: grpc.aio.AioRpcError) -> set[str]:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            bad = error_details_pb2.BadRequest()
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Unpack(bad):
                    return {v.field for v in bad.field_violations}
    return set()


async def _lookup(suite: RunningSuite, target: str, caller: str, credential: str, purpose: str = PASSPORT,
                  extra: tuple[tuple[str, str], ...] = (), request_id: str = "") -> tuple[grpc.StatusCode, str]:
    """(status, reason) of a LookupResident through `target` as `caller`."""
    metadata = purpose_metadata(purpose, credential=credential, request_id=request_id) + extra
    async with secure_channel(target, suite.client_tls(caller)) as channel:
        try:
            await identity_pb2_grpc.IdentityServiceStub(channel).LookupResident(
                identity_pb2.LookupResidentRequest(resident_code=UNKNOWN_CODE), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code(), _reason(error)
    return grpc.StatusCode.OK, ""


def _gateway_allowed(outcome: tuple[grpc.StatusCode, str]) -> bool:
    return outcome[0] not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


async def _admin(suite: RunningSuite, method: str, request: Any, target: str = "") -> Any:
    async with secure_channel(target or suite.gateway, suite.client_tls(ADMIN)) as channel:
        stub = operator_admin_pb2_grpc.OperatorAdminServiceStub(channel)
        return await getattr(stub, method)(
            request, metadata=purpose_metadata("ADMIN-OPERATORS", credential=suite.credential(ADMIN)), timeout=10)


async def _new_operator(suite: RunningSuite, operator_id: str, organization: str = "kikaku-bu",
                        roles: tuple[int, ...] = (apb.OPERATOR_ROLE_PROVISION_CLERK,)) -> apb.Operator:
    return await _admin(suite, "CreateOperator", apb.CreateOperatorRequest(
        operator_id=operator_id, operator=apb.Operator(organization=organization, roles=list(roles))))


async def _log_row(suite: RunningSuite, request_id: str) -> asyncpg.Record:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        return await connection.fetchrow("SELECT * FROM operation_log WHERE request_id = $1", request_id)
    finally:
        await connection.close()


async def _until(check: Any, seconds: float) -> float:
    """Poll `check` until it holds; returns how long it took (the caller asserts the bound)."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, f"not in effect within {seconds:.0f} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


# --- credentials ---------------------------------------------------------------------------------------

async def test_human_work_without_a_credential_is_denied_and_logged(suite: RunningSuite) -> None:
    request_id = str(uuid.uuid4())
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", "", request_id=request_id)
    assert outcome == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_CREDENTIAL_REQUIRED")
    row = await _log_row(suite, request_id)
    assert (row["decision"], row["status"], row["reason"]) == (2, "PERMISSION_DENIED", "OPERATOR_CREDENTIAL_REQUIRED")


async def test_a_claimed_operator_name_is_not_trusted(suite: RunningSuite) -> None:
    request_id = str(uuid.uuid4())
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", "", extra=(("x-juki-operator", "kikaku-0001"),),
                            request_id=request_id)
    assert outcome == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_CREDENTIAL_REQUIRED")
    assert (await _log_row(suite, request_id))["operator"] == ""


async def test_the_operator_in_the_log_is_the_one_the_credential_names(suite: RunningSuite) -> None:
    request_id = str(uuid.uuid4())
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", suite.credential("kikaku-bu"), request_id=request_id)
    assert outcome[0] == grpc.StatusCode.NOT_FOUND  # allowed by the gateway; identity knows no such resident
    row = await _log_row(suite, request_id)
    assert (row["operator"], row["decision"]) == ("kikaku-0001", 1)


async def test_expired_credential_is_unauthenticated_and_logged_with_its_operator(suite: RunningSuite,
                                                                                  home: Path) -> None:
    expired = issue_credential(home, "kikaku-0001", "kikaku-bu", frozenset({"provision_clerk"}),
                               now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
    request_id = str(uuid.uuid4())
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", expired, request_id=request_id)
    assert outcome == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_EXPIRED")
    row = await _log_row(suite, request_id)
    assert (row["operator"], row["decision"], row["status"]) == ("kikaku-0001", 2, "UNAUTHENTICATED")


async def test_credential_of_another_organisation_than_the_certificate_is_denied(suite: RunningSuite) -> None:
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", suite.credential("kyoiku-iinkai"))
    assert outcome == (grpc.StatusCode.PERMISSION_DENIED, "CREDENTIAL_ORGANIZATION_MISMATCH")


async def test_forged_credential_is_unauthenticated(suite: RunningSuite) -> None:
    genuine = suite.credential("kikaku-bu")
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", genuine[:-4] + ("AAAA" if genuine[-4:] != "AAAA"
                                                                               else "BBBB"))
    assert outcome == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_SIGNATURE_INVALID")


async def test_operator_without_the_role_the_purpose_names_is_denied(suite: RunningSuite, home: Path) -> None:
    await _new_operator(suite, "kikaku-auditor-1", roles=(apb.OPERATOR_ROLE_AUDITOR,))
    credential = issue_credential(home, "kikaku-auditor-1", "kikaku-bu", frozenset({"auditor"}))
    outcome = await _lookup(suite, suite.gateway, "kikaku-bu", credential)
    assert outcome == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_ROLE_NOT_ALLOWED")


# --- the admin API -------------------------------------------------------------------------------------

async def test_administrator_registers_lists_and_changes_an_operator(suite: RunningSuite) -> None:
    created = await _new_operator(suite, "kikaku-0100")
    assert (created.name, created.state) == ("operators/kikaku-0100", apb.REGISTRATION_STATE_ACTIVE)
    listed = await _admin(suite, "ListOperators", apb.ListOperatorsRequest(organization="kikaku-bu"))
    assert "operators/kikaku-0100" in {o.name for o in listed.operators}
    assert {o.organization for o in listed.operators} == {"kikaku-bu"}
    changed = await _admin(suite, "UpdateOperator", apb.UpdateOperatorRequest(
        operator=apb.Operator(name="operators/kikaku-0100", roles=[apb.OPERATOR_ROLE_AUDITOR]),
        update_mask=field_mask_pb2.FieldMask(paths=["roles"])))
    assert list(changed.roles) == [apb.OPERATOR_ROLE_AUDITOR]
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await _new_operator(suite, "kikaku-0100")
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_invalid_operator_names_every_bad_field(suite: RunningSuite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _admin(suite, "CreateOperator", apb.CreateOperatorRequest(
            operator_id="Yamada Taro", operator=apb.Operator(organization="no-such-organ")))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(refused.value) == {"operator_id", "operator.organization", "operator.roles"}


async def test_only_an_administrator_may_manage_operators(suite: RunningSuite) -> None:
    async with secure_channel(suite.gateway, suite.client_tls("kikaku-bu")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await operator_admin_pb2_grpc.OperatorAdminServiceStub(channel).ListOperators(
                apb.ListOperatorsRequest(), timeout=10,
                metadata=purpose_metadata("ADMIN-OPERATORS", credential=suite.credential("kikaku-bu")))
    assert (refused.value.code(), _reason(refused.value)) == (grpc.StatusCode.PERMISSION_DENIED,
                                                              "PURPOSE_NOT_GRANTED")


# --- disabling, on every replica within 5 s ------------------------------------------------------------

async def test_disabled_operator_is_refused_by_every_replica_within_five_seconds(suite: RunningSuite,
                                                                                 home: Path) -> None:
    await _new_operator(suite, "kikaku-0200")
    credential = issue_credential(home, "kikaku-0200", "kikaku-bu", frozenset({"provision_clerk"}))
    async with gateway_replica(suite, home) as other:
        async def allowed() -> bool:
            return _gateway_allowed(await _lookup(suite, other, "kikaku-bu", credential))

        await _until(allowed, 5)  # the other replica has learnt of the new operator
        await _admin(suite, "DisableOperator", apb.DisableOperatorRequest(name="operators/kikaku-0200"))

        async def refused() -> bool:
            return await _lookup(suite, other, "kikaku-bu", credential) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                            "OPERATOR_DISABLED")

        await _until(refused, 5)
        await _admin(suite, "EnableOperator", apb.EnableOperatorRequest(name="operators/kikaku-0200"))
        await _until(allowed, 5)


async def test_disabled_organisation_is_refused_by_every_replica_within_five_seconds(suite: RunningSuite,
                                                                                     home: Path) -> None:
    caller, name = "cs-104485", "organizations/104485"  # a municipality CS no other test uses

    async def reports() -> tuple[grpc.StatusCode, str]:
        async with secure_channel(other, suite.client_tls(caller)) as channel:
            try:
                await identity_pb2_grpc.IdentityServiceStub(channel).ListMunicipalityReports(
                    register_pb2.ListMunicipalityReportsRequest(), metadata=purpose_metadata("CS-REPORTS-12-5"),
                    timeout=10)
            except grpc.aio.AioRpcError as error:
                return error.code(), _reason(error)
        return grpc.StatusCode.OK, ""

    async with gateway_replica(suite, home) as other:
        assert await reports() == (grpc.StatusCode.OK, "")
        disabled = await _admin(suite, "DisableOrganization", apb.DisableOrganizationRequest(name=name))
        assert disabled.state == apb.REGISTRATION_STATE_DISABLED

        async def refused() -> bool:
            return await reports() == (grpc.StatusCode.PERMISSION_DENIED, "ORGANIZATION_DISABLED")

        await _until(refused, 5)
        await _admin(suite, "EnableOrganization", apb.EnableOrganizationRequest(name=name))

        async def served() -> bool:
            return await reports() == (grpc.StatusCode.OK, "")

        await _until(served, 5)


async def test_validity_period_that_would_end_before_it_starts_is_refused_naming_the_field(
        suite: RunningSuite) -> None:
    now = dt.datetime.now(dt.UTC)
    operator = apb.Operator(organization="kikaku-bu", roles=[apb.OPERATOR_ROLE_PROVISION_CLERK])
    operator.valid_until.FromDatetime(now + dt.timedelta(days=1))
    await _admin(suite, "CreateOperator", apb.CreateOperatorRequest(operator_id="kikaku-0400", operator=operator))
    later = apb.Operator(name="operators/kikaku-0400")
    later.valid_from.FromDatetime(now + dt.timedelta(days=2))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _admin(suite, "UpdateOperator", apb.UpdateOperatorRequest(
            operator=later, update_mask=field_mask_pb2.FieldMask(paths=["valid_from"])))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(refused.value) == {"operator.valid_until"}
