"""Maintenance actions of the command line, in the operation log before they are done (issue 19).

A tool that changes what the registers hold or send outside any RPC (queueing dead letters again, an
initial load, a key rotation) first appends its intent to the gateway's operation log, then acts, then
appends the outcome. It cannot act when the log cannot be written: the log is the audited path, not a
report after the fact. The entries carry the action's parameters (counts, registers, ids), never personal
data. The log's database is the gateway's runtime role: `JUKI_OPERATION_LOG_DATABASE_URL`, else the
running suite's.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from jukilib.config import UsageError
from jukitools.local import LocalSuite
from jukitools.runner import connected


class Outcome:
    """What the action reports when done (`detail` grows as it learns)."""

    def __init__(self) -> None:
        self.detail: dict[str, Any] = {}


@asynccontextmanager
async def logged_action(suite: LocalSuite, action: str, **parameters: Any) -> AsyncIterator[Outcome]:
    """Log the intent of `action` with `parameters`, yield, then log its outcome (done, or failed with the
    error's type)."""
    from juki_services.gateway.maintenance import maintenance_entry
    from juki_services.gateway.oplog import append_entry

    try:
        url = suite.operation_log_url()
    except UsageError as error:
        raise UsageError(f"{error}: a maintenance action is written to the operation log first "
                         "(JUKI_OPERATION_LOG_DATABASE_URL)") from None
    operator = os.environ.get("JUKI_OPERATOR", "")
    method = f"maintenance/{action}"
    async with connected(url, "gateway") as connection:
        await append_entry(connection, maintenance_entry(method, operator=operator, reason="started",
                                                         detail=parameters))
        outcome = Outcome()
        try:
            yield outcome
        except BaseException as error:
            await append_entry(connection, maintenance_entry(
                method, operator=operator, allowed=False, reason=f"failed: {type(error).__name__}",
                detail={**parameters, **outcome.detail}))
            raise
        await append_entry(connection, maintenance_entry(method, operator=operator, reason="done",
                                                         detail={**parameters, **outcome.detail}))
