"""Nothing escapes the operation log (issue 19): every change to an operator or an organisation is logged with
its target and the state before and after, and so are the first administrator's registration and every
log-in, refused ones included; from the log alone `juki audit who-could` answers who could read resident
data on a day (the PIA's 取扱者数). Separation of duties: an administrator cannot change their own roles or
status, and incompatible roles (administrator and auditor) are never held together."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from juki.gateway.v1 import operation_log_pb2 as opb
from juki.gateway.v1 import operator_admin_pb2 as apb
from jukilib.domain.dates import JAPAN
from jukilib.grpc.channels import secure_channel
from tests.conftest import RunningSuite
from tests.e2e.test_operators import _admin, _new_operator, _reason, _violations
from tests.e2e.test_operators_cli import _juki


async def _entries(suite: RunningSuite, where: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        return await connection.fetch(f"SELECT * FROM operation_log WHERE {where} ORDER BY sequence", *args)
    finally:
        await connection.close()


def _detail(row: asyncpg.Record) -> dict[str, object]:
    detail: dict[str, object] = json.loads(row["detail"])
    return detail


async def test_every_change_to_an_operator_is_logged_with_target_before_and_after(suite: RunningSuite) -> None:
    await _new_operator(suite, "kikaku-0310")
    await _admin(suite, "UpdateOperator", apb.UpdateOperatorRequest(
        operator=apb.Operator(name="operators/kikaku-0310", roles=[apb.OPERATOR_ROLE_AUDITOR]),
        update_mask=field_mask_pb2.FieldMask(paths=["roles"])))
    await _admin(suite, "DisableOperator", apb.DisableOperatorRequest(name="operators/kikaku-0310"))
    rows = await _entries(suite, "detail LIKE '%operators/kikaku-0310%'")
    assert [r["method"].rsplit("/", 1)[1] for r in rows] == ["CreateOperator", "UpdateOperator", "DisableOperator"]
    created, updated, disabled = (_detail(r) for r in rows)
    assert created["before"] is None
    assert created["after"] == {**created["after"], "organization": "kikaku-bu",  # type: ignore[dict-item]
                                "roles": ["provision_clerk"], "status": "active", "valid_until": None}
    assert (updated["before"]["roles"], updated["after"]["roles"]) == (  # type: ignore[index]
        ["provision_clerk"], ["auditor"])
    assert (disabled["before"]["status"], disabled["after"]["status"]) == ("active", "disabled")  # type: ignore[index]
    assert {r["operator"] for r in rows} == {"admin-0001"}  # and who did it


async def test_an_organisation_disabled_is_logged_with_its_status_before_and_after(suite: RunningSuite) -> None:
    await _admin(suite, "DisableOrganization", apb.DisableOrganizationRequest(name="organizations/jinji-iinkai"))
    await _admin(suite, "EnableOrganization", apb.EnableOrganizationRequest(name="organizations/jinji-iinkai"))
    details = [_detail(r) for r in await _entries(suite, "detail LIKE '%organizations/jinji-iinkai%'")]
    assert [(d["before"], d["after"]) for d in details][-2:] == [
        ({"status": "active"}, {"status": "disabled"}), ({"status": "disabled"}, {"status": "active"})]


async def test_an_administrator_cannot_change_their_own_roles_or_status(suite: RunningSuite) -> None:
    for method, request in (
            ("UpdateOperator", apb.UpdateOperatorRequest(
                operator=apb.Operator(name="operators/admin-0001", roles=[apb.OPERATOR_ROLE_AUDITOR]),
                update_mask=field_mask_pb2.FieldMask(paths=["roles"]))),
            ("DisableOperator", apb.DisableOperatorRequest(name="operators/admin-0001"))):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _admin(suite, method, request)
        assert (refused.value.code(), _reason(refused.value)) == (grpc.StatusCode.FAILED_PRECONDITION, "SELF_CHANGE")
    attempts = await _entries(suite, "detail LIKE '%operators/admin-0001%' AND status = 'FAILED_PRECONDITION'")
    assert len(attempts) >= 2  # the attempts are in the log, with their target


async def test_incompatible_roles_are_refused_naming_the_field(suite: RunningSuite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _new_operator(suite, "admin-0320", "admin-office",
                            (apb.OPERATOR_ROLE_ADMINISTRATOR, apb.OPERATOR_ROLE_AUDITOR))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(refused.value) == {"operator.roles"}
    await _new_operator(suite, "admin-0321", "admin-office", (apb.OPERATOR_ROLE_ADMINISTRATOR,))
    with pytest.raises(grpc.aio.AioRpcError) as updated:
        await _admin(suite, "UpdateOperator", apb.UpdateOperatorRequest(
            operator=apb.Operator(name="operators/admin-0321",
                                  roles=[apb.OPERATOR_ROLE_ADMINISTRATOR, apb.OPERATOR_ROLE_AUDITOR]),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"])))
    assert _violations(updated.value) == {"operator.roles"}


async def test_log_ins_and_refused_log_ins_are_in_the_chain(suite: RunningSuite, home: Path, tmp_path: Path) -> None:
    env = {"JUKI_DATABASE_URL": suite.database_url("gateway"),
           "JUKI_OPERATOR_AUTH_KEY": str(home / "operator-auth.key")}
    assert _juki(tmp_path, env, "operators", "login", "kyoiku-0001", "--hours", "1").returncode == 0
    assert _juki(tmp_path, env, "operators", "login", "kyoiku-0999").returncode == 1
    assert _juki(tmp_path, env, "operators", "login", "kyoiku-0001", "--role", "auditor").returncode == 1
    rows = await _entries(suite, "method = 'operator-auth/login' AND operator IN ('kyoiku-0001', 'kyoiku-0999')")
    outcomes = [(r["operator"], r["status"], r["reason"]) for r in rows][-3:]
    assert outcomes == [("kyoiku-0001", "OK", "logged in"),
                        ("kyoiku-0999", "PERMISSION_DENIED", "is not an active registered operator"),
                        ("kyoiku-0001", "PERMISSION_DENIED", "holds none of the roles asked for")]
    assert rows[-3]["organization"] == "kyoiku-iinkai"
    assert _detail(rows[-3])["roles"] == ["provision_clerk"]


async def test_the_first_administrator_registered_directly_is_in_the_chain(suite: RunningSuite,
                                                                          tmp_path: Path) -> None:
    result = _juki(tmp_path, {"JUKI_MIGRATION_DATABASE_URL": suite.owner_url("gateway")},
                   "operators", "add", "admin-0930", "--organization", "admin-office", "--role", "administrator",
                   "--bootstrap")
    assert result.returncode == 0, result.stderr
    [row] = await _entries(suite, "method = 'operator-registry/bootstrap' AND detail LIKE '%operators/admin-0930%'")
    assert _detail(row)["after"]["roles"] == ["administrator"]  # type: ignore[index]


def _who_could(suite: RunningSuite, tmp_path: Path, day: dt.date) -> tuple[int, dict[str, str], str]:
    result = _juki(tmp_path, {"JUKI_DATABASE_URL": suite.database_url("gateway")},
                   "audit", "who-could", "--date", day.isoformat())
    holders = {}
    for line in result.stdout.splitlines():
        if line.startswith("  ") and ": " in line and "/" in line.split(": ")[0]:
            who, roles = line.strip().split(": ")
            holders[who.split("/")[1]] = roles
    return result.returncode, holders, result.stderr


async def test_who_could_read_resident_data_on_a_day_is_answered_from_the_log(suite: RunningSuite,
                                                                             tmp_path: Path) -> None:
    today = dt.datetime.now(JAPAN).date()
    await _new_operator(suite, "kikaku-0330")  # a provision clerk: reads resident data
    await _new_operator(suite, "admin-0331", "admin-office", (apb.OPERATOR_ROLE_ADMINISTRATOR,))  # reads none
    await _new_operator(suite, "kikaku-0332")
    await _admin(suite, "DisableOperator", apb.DisableOperatorRequest(name="operators/kikaku-0332"))
    _, holders, _ = _who_could(suite, tmp_path, today)
    assert holders["kikaku-0330"] == "provision_clerk"
    assert holders["kyoiku-0001"] == "provision_clerk"  # a demo operator, registered at start-up
    assert "kikaku-0332" in holders  # active for a moment today: it could
    assert "admin-0331" not in holders
    _, tomorrow, _ = _who_could(suite, tmp_path, today + dt.timedelta(days=1))
    assert "kikaku-0330" in tomorrow and "kikaku-0332" not in tomorrow  # disabled since
    _, before, _ = _who_could(suite, tmp_path, dt.date(2020, 1, 1))
    assert before == {}  # nobody was registered yet
    # A row written behind the log's back is named: the registry and the log disagree.
    connection = await asyncpg.connect(suite.owner_url("gateway"))
    try:
        await connection.execute("SET search_path TO gateway")
        await connection.execute("INSERT INTO operator (operator_id, organization, roles, created_by, updated_by) "
                                 "VALUES ('kikaku-0339', 'kikaku-bu', '{provision_clerk}', 'x', 'x')")
    finally:
        await connection.close()
    code, holders, stderr = _who_could(suite, tmp_path, today)
    assert code == 1 and "kikaku-0339" in stderr and "kikaku-0339" not in holders


@pytest.mark.parametrize("method", ["/juki.agency.v1.AgencyService/SetFaultInjection",  # exists, not exposed
                                    "/juki.identity.v1.IdentityService/DropEverything"])  # does not exist
async def test_a_call_to_a_method_the_gateway_does_not_expose_is_logged_as_denied(suite: RunningSuite,
                                                                                 method: str) -> None:
    request_id = f"probe-{uuid.uuid4()}"
    async with secure_channel(suite.gateway, suite.client_tls("kikaku-bu")) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"", metadata=(("x-request-id", request_id),), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    [row] = await _entries(suite, "request_id = $1", request_id)
    assert (row["organization"], row["method"], row["decision"], row["reason"], row["status"]) == (
        "kikaku-bu", method, opb.DECISION_DENIED, "METHOD_NOT_EXPOSED", "UNIMPLEMENTED")


async def test_every_catalogue_in_the_log_can_be_read_back_by_its_digest(suite: RunningSuite, tmp_path: Path) -> None:
    env = {"JUKI_DATABASE_URL": suite.database_url("gateway")}
    listing = _juki(tmp_path, env, "audit", "catalogues")
    assert listing.returncode == 0, listing.stderr
    digest = listing.stdout.splitlines()[0].rsplit("sha256 ", 1)[1]
    shown = _juki(tmp_path, env, "audit", "catalogues", "--sha256", digest)
    assert shown.returncode == 0, shown.stderr
    assert hashlib.sha256(shown.stdout.encode()).hexdigest() == digest
    assert "[[purposes]]" in shown.stdout
