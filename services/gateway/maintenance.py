"""Owner and maintenance actions done outside the gateway's RPCs, written into the same operation log.

The first administrator (and the demo operators) are registered before anyone can call the admin API; an
operator logs in at the authentication server (`juki operators login` stands for it), not at the gateway.
Both still belong in the chain an auditor verifies: each is appended with `oplog.append_entry` (under the
chain's lock, after whatever the gateway wrote last), as organisation `maintenance`, with its detail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from juki.gateway.v1 import operation_log_pb2 as pb
from juki_services.gateway import registry_store as store
from juki_services.gateway.admin import operator_state
from juki_services.gateway.oplog import LogEntry, append_entry, detail_text
from jukilib.errors import AlreadyExists

ORGANIZATION = "maintenance"
"""The `organization` of an entry written by a tool rather than a caller of the gateway."""
BOOTSTRAP = "operator-registry/bootstrap"
LOGIN = "operator-auth/login"


def maintenance_entry(method: str, *, operator: str = "", allowed: bool = True, reason: str = "",
                      detail: dict[str, Any] | None = None, organization: str = ORGANIZATION) -> LogEntry:
    return LogEntry(time=dt.datetime.now(dt.UTC), request_id=str(uuid.uuid4()), trace_id="",
                    organization=organization, operator=operator, method=method,
                    decision=pb.DECISION_ALLOWED if allowed else pb.DECISION_DENIED, reason=reason,
                    status="OK" if allowed else "PERMISSION_DENIED", detail=detail_text(detail) if detail else "")


async def bootstrap_operator(connection: asyncpg.Connection, operator_id: str, *, organization: str,
                             roles: Iterable[str], valid_until: dt.datetime | None = None) -> bool:
    """Register an operator directly (the first administrator, the demo operators) and log it in the chain in
    the same transaction; False when one with this id exists already (nothing is changed or logged)."""
    try:
        async with connection.transaction():
            row = await store.insert_operator(connection, operator_id, organization=organization,
                                              roles=frozenset(roles), valid_from=None, valid_until=valid_until,
                                              by="bootstrap")
            await append_entry(connection, maintenance_entry(
                BOOTSTRAP, reason="operator registered directly by the schema owner (no administrator yet)",
                detail={"target": f"operators/{operator_id}", "before": None, "after": operator_state(row)}))
    except AlreadyExists:  # the transaction was rolled back: nothing registered, nothing logged
        return False
    return True


async def log_login(connection: asyncpg.Connection, operator_id: str, organization: str, *, allowed: bool,
                    reason: str, roles: Iterable[str] = (), until: dt.datetime | None = None) -> int:
    """An operator's log-in at the authentication server, or its refusal (技術的基準: 操作者の識別及び認証)."""
    detail: dict[str, Any] = {"roles": sorted(roles)}
    if until is not None:
        detail["valid_until"] = until.isoformat()
    return await append_entry(connection, maintenance_entry(
        LOGIN, operator=operator_id, allowed=allowed, reason=reason, detail=detail,
        organization=organization or ORGANIZATION))
