"""OperatorAdminService: the operator registry and organisation status, managed through the gateway.

Reached like every method behind the gateway (purpose ADMIN-OPERATORS, role administrator, one
operation log entry per call), so every administrative act is in the hash-chained log, with its target and
the state before and after (the entry's `detail`): who could read resident data on any day can be answered
from the log alone (`juki audit who-could`). Separation of duties (技術的基準: 操作者の管理): an administrator
cannot change their own roles or status, and roles the prefecture declares incompatible (administrator and
auditor, by default) are never held together. After each change this replica reads the registry again at
once; the others within their refresh interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from juki.gateway.v1 import operator_admin_pb2 as pb
from juki_services.gateway import registry_store as store
from juki_services.gateway.operators import ACTIVE, DISABLED, OperatorRegistry
from juki_services.gateway.oplog import record_detail
from juki_services.gateway.policy import Catalogue
from jukilib import caller, paging
from jukilib.db.pool import Database
from jukilib.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from jukilib.operator_credential import OPERATOR_ID

ROLE_NAMES: dict[int, str] = {
    pb.OPERATOR_ROLE_PROVISION_CLERK: "provision_clerk",
    pb.OPERATOR_ROLE_DISCLOSURE_CLERK: "disclosure_clerk",
    pb.OPERATOR_ROLE_AUDITOR: "auditor",
    pb.OPERATOR_ROLE_ADMINISTRATOR: "administrator",
    pb.OPERATOR_ROLE_REPORT_CLERK: "report_clerk",
    pb.OPERATOR_ROLE_RETENTION_CLERK: "retention_clerk",
    pb.OPERATOR_ROLE_SRE: "sre",
}
ROLE_VALUES = {name: pb.OperatorRole.ValueType(value) for value, name in ROLE_NAMES.items()}
STATES = {ACTIVE: pb.REGISTRATION_STATE_ACTIVE, DISABLED: pb.REGISTRATION_STATE_DISABLED}
UPDATABLE = frozenset({"roles", "valid_from", "valid_until"})
DEFAULT_INCOMPATIBLE_ROLES = (frozenset({"administrator", "auditor"}),)
"""Who manages the operators does not audit them (JUKI_INCOMPATIBLE_ROLES overrides)."""


def operator_state(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """What the operation log keeps of an operator before and after a change (no personal data: the id is
    an opaque staff id)."""
    if row is None:
        return None
    return {"organization": row["organization"], "roles": sorted(row["roles"]), "status": row["status"],
            "valid_from": row["valid_from"].isoformat(),
            "valid_until": row["valid_until"].isoformat() if row["valid_until"] else None}


def _incompatible(roles: frozenset[str], rules: Iterable[frozenset[str]], violations: list[FieldViolation]) -> None:
    for rule in rules:
        if rule <= roles:
            violations.append(FieldViolation("operator.roles", f"may not hold {' and '.join(sorted(rule))} "
                                                               "together (separation of duties)"))


def operator_message(row: asyncpg.Record) -> pb.Operator:
    message = pb.Operator(name=f"operators/{row['operator_id']}", organization=row["organization"],
                          roles=[ROLE_VALUES[r] for r in row["roles"]], state=STATES[row["status"]])
    message.valid_from.FromDatetime(row["valid_from"])
    if row["valid_until"] is not None:
        message.valid_until.FromDatetime(row["valid_until"])
    message.create_time.FromDatetime(row["create_time"])
    message.update_time.FromDatetime(row["update_time"])
    return message


def _operator_id(name: str, field: str) -> str:
    prefix, _, operator_id = name.partition("/")
    if prefix != "operators" or not OPERATOR_ID.match(operator_id):
        raise InvalidArgument([FieldViolation(field, "must be operators/{operator_id}")])
    return operator_id


def _roles(values: list[int], field: str, violations: list[FieldViolation]) -> frozenset[str]:
    if not values or any(v not in ROLE_NAMES for v in values):
        violations.append(FieldViolation(field, "must list one or more known roles"))
        return frozenset()
    return frozenset(ROLE_NAMES[v] for v in values)


def _period(operator: pb.Operator, violations: list[FieldViolation]) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = operator.valid_from.ToDatetime(dt.UTC) if operator.HasField("valid_from") else None
    end = operator.valid_until.ToDatetime(dt.UTC) if operator.HasField("valid_until") else None
    if end is not None and end <= (start or dt.datetime.now(dt.UTC)):
        violations.append(FieldViolation("operator.valid_until", "must be after valid_from (and in the future)"))
    return start, end


class OperatorAdmin:
    """The methods of OperatorAdminService; `who` is the caller the gateway authenticated."""

    def __init__(self, database: Database, registry: OperatorRegistry, catalogue: Callable[[], Catalogue],
                 incompatible_roles: Iterable[frozenset[str]] = DEFAULT_INCOMPATIBLE_ROLES) -> None:
        self._database = database
        self._registry = registry
        self._catalogue = catalogue
        self._incompatible_roles = tuple(incompatible_roles)

    async def CreateOperator(self, request: pb.CreateOperatorRequest, who: caller.Caller) -> pb.Operator:
        violations: list[FieldViolation] = []
        if not OPERATOR_ID.match(request.operator_id):
            violations.append(FieldViolation("operator_id", "must be 2-64 characters of a-z, 0-9, '.', '_', '-'"))
        if request.operator.organization not in self._catalogue().organizations:
            violations.append(FieldViolation("operator.organization", "must be an organisation of the catalogue"))
        roles = _roles(list(request.operator.roles), "operator.roles", violations)
        _incompatible(roles, self._incompatible_roles, violations)
        start, end = _period(request.operator, violations)
        if violations:
            raise InvalidArgument(violations)
        async with self._database.connection() as connection:
            row = await store.insert_operator(
                connection, request.operator_id, organization=request.operator.organization, roles=roles,
                valid_from=start, valid_until=end, by=who.operator)
        record_detail(target=f"operators/{request.operator_id}", before=None, after=operator_state(row))
        await self._registry.refresh()
        return operator_message(row)

    async def GetOperator(self, request: pb.GetOperatorRequest, who: caller.Caller) -> pb.Operator:
        operator_id = _operator_id(request.name, "name")
        async with self._database.connection() as connection:
            row = await store.fetch_operator(connection, operator_id)
        if row is None:
            raise NotFound("no such operator", "OPERATOR_NOT_FOUND")
        return operator_message(row)

    async def ListOperators(self, request: pb.ListOperatorsRequest, who: caller.Caller) -> pb.ListOperatorsResponse:
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token, keys=("after",))
        after = str(position["after"]) if position else ""
        async with self._database.connection() as connection:
            rows = await store.list_operators(connection, request.organization, after, limit + 1)
        token = paging.encode_token({"after": rows[limit - 1]["operator_id"]}) if len(rows) > limit else ""
        return pb.ListOperatorsResponse(operators=[operator_message(r) for r in rows[:limit]], next_page_token=token)

    async def UpdateOperator(self, request: pb.UpdateOperatorRequest, who: caller.Caller) -> pb.Operator:
        operator_id = _operator_id(request.operator.name, "operator.name")
        paths = set(request.update_mask.paths)
        violations: list[FieldViolation] = []
        if not paths or not paths <= UPDATABLE:
            violations.append(FieldViolation("update_mask", f"must name some of {', '.join(sorted(UPDATABLE))}"))
        roles = _roles(list(request.operator.roles), "operator.roles", violations) if "roles" in paths else None
        if roles is not None:
            _incompatible(roles, self._incompatible_roles, violations)
        start, end = _period(request.operator, violations)
        if violations:
            raise InvalidArgument(violations)

        async def update(connection: asyncpg.Connection) -> asyncpg.Record | None:
            return await store.update_operator(
                connection, operator_id, roles=roles, valid_from=start if "valid_from" in paths else None,
                valid_until=end if "valid_until" in paths else None,
                clear_until="valid_until" in paths and end is None, by=who.operator)

        return await self._change_operator(operator_id, who, update)

    async def DisableOperator(self, request: pb.DisableOperatorRequest, who: caller.Caller) -> pb.Operator:
        return await self._set_operator_status(_operator_id(request.name, "name"), DISABLED, who)

    async def EnableOperator(self, request: pb.EnableOperatorRequest, who: caller.Caller) -> pb.Operator:
        return await self._set_operator_status(_operator_id(request.name, "name"), ACTIVE, who)

    async def _set_operator_status(self, operator_id: str, status: str, who: caller.Caller) -> pb.Operator:
        async def set_status(connection: asyncpg.Connection) -> asyncpg.Record | None:
            return await store.set_operator_status(connection, operator_id, status, who.operator)

        return await self._change_operator(operator_id, who, set_status)

    async def _change_operator(self, operator_id: str, who: caller.Caller,
                               change: Callable[[asyncpg.Connection], Awaitable[asyncpg.Record | None]],
                               ) -> pb.Operator:
        """Apply `change` to one operator, logging the target and its state before and after."""
        record_detail(target=f"operators/{operator_id}")
        if operator_id == who.operator:  # separation of duties: nobody grants or restores their own access
            raise FailedPrecondition("an administrator cannot change their own roles or status", "SELF_CHANGE")
        async with self._database.connection() as connection, connection.transaction():
            before = await store.fetch_operator(connection, operator_id, for_update=True)
            after = await change(connection) if before is not None else None
        if after is None:
            raise NotFound("no such operator", "OPERATOR_NOT_FOUND")
        record_detail(before=operator_state(before), after=operator_state(after))
        await self._registry.refresh()
        return operator_message(after)

    async def GetOrganization(self, request: pb.GetOrganizationRequest, who: caller.Caller) -> pb.Organization:
        code = self._organization(request.name)
        async with self._database.connection() as connection:
            return self._organization_message(code, await store.organization_status(connection, code))

    async def DisableOrganization(self, request: pb.DisableOrganizationRequest,
                                  who: caller.Caller) -> pb.Organization:
        code = self._organization(request.name)
        if code == who.organization:
            raise FailedPrecondition("an administrator cannot disable their own organisation", "SELF_DISABLE")
        return await self._set_organization_status(code, DISABLED, who)

    async def EnableOrganization(self, request: pb.EnableOrganizationRequest, who: caller.Caller) -> pb.Organization:
        return await self._set_organization_status(self._organization(request.name), ACTIVE, who)

    async def _set_organization_status(self, code: str, status: str, who: caller.Caller) -> pb.Organization:
        async with self._database.connection() as connection, connection.transaction():
            before = await store.organization_status(connection, code, for_update=True)
            row = await store.set_organization_status(connection, code, status, who.operator)
        record_detail(target=f"organizations/{code}", before={"status": before["status"] if before else ACTIVE},
                      after={"status": row["status"]})
        await self._registry.refresh()
        return self._organization_message(code, row)

    def _organization(self, name: str) -> str:
        prefix, _, code = name.partition("/")
        if prefix != "organizations" or not code:
            raise InvalidArgument([FieldViolation("name", "must be organizations/{organization_code}")])
        if code not in self._catalogue().organizations:
            raise NotFound("no such organisation in the policy catalogue", "ORGANIZATION_NOT_FOUND")
        return code

    def _organization_message(self, code: str, row: asyncpg.Record | None) -> pb.Organization:
        message = pb.Organization(name=f"organizations/{code}",
                                  display_name=self._catalogue().organizations[code].name,
                                  state=STATES[row["status"] if row else ACTIVE])
        if row is not None:
            message.update_time.FromDatetime(row["update_time"])
        return message
