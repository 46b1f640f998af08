"""Who could read resident data on a given day, from the operation log alone (issue 19; the PIA's 取扱者数).

Every change to an operator or an organisation's status is in the chain with its state before and after
(`admin.py`, `maintenance.py`). Replaying those states in sequence order gives the registry at any moment;
an operator could read resident data at a moment when they were registered, active, within their validity
period, their organisation was not disabled, and they held a role whose purposes answer resident records.
The registry as it is now is compared with the replay: an operator the log never registered (a row written
behind the log's back) is reported.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from jukilib.domain.dates import JAPAN

READING_ROLES = frozenset({"provision_clerk", "disclosure_clerk", "report_clerk", "auditor"})
"""Roles under which an operator receives resident data: provisions, disclosure cases, the 12-5 desk's review
items and reports, the operation log's 住民票コード. An administrator or a retention clerk sees none."""


@dataclass(frozen=True)
class Change:
    """One logged change of the registry: at `time`, `target` became `after` (None: no such thing)."""

    sequence: int
    time: dt.datetime
    target: str
    after: Mapping[str, Any] | None


@dataclass
class Holder:
    """An operator who could read resident data during the day, with the roles they held meanwhile."""

    operator_id: str
    organization: str
    roles: set[str] = field(default_factory=set)


def changes_of(rows: Iterable[Mapping[str, Any] | asyncpg.Record]) -> list[Change]:
    """The registry changes among operation-log rows (allowed, answered OK, with a target and an after)."""
    changes = []
    for row in rows:
        if not row["detail"] or row["status"] != "OK":
            continue
        detail = json.loads(row["detail"])
        if "target" in detail and "after" in detail:
            changes.append(Change(row["sequence"], row["time"], detail["target"], detail["after"]))
    return sorted(changes, key=lambda change: change.sequence)


def _able(state: Mapping[str, Any], organizations: Mapping[str, str], start: dt.datetime, end: dt.datetime) -> bool:
    """Whether an operator in `state` could act at some moment of [start, end)."""
    if state["status"] != "active" or organizations.get(state["organization"], "active") != "active":
        return False
    valid_from = dt.datetime.fromisoformat(state["valid_from"])
    valid_until = dt.datetime.fromisoformat(state["valid_until"]) if state["valid_until"] else None
    return valid_from < end and (valid_until is None or valid_until > start)


def who_could(changes: list[Change], day: dt.date) -> list[Holder]:
    """The operators who could read resident data on `day` (a Japanese calendar day)."""
    day_start = dt.datetime.combine(day, dt.time(), JAPAN)
    day_end = day_start + dt.timedelta(days=1)
    operators: dict[str, Mapping[str, Any]] = {}
    organizations: dict[str, str] = {}
    holders: dict[str, Holder] = {}
    moments = [change.time for change in changes] + [day_end]
    for index, change in enumerate(changes):
        kind, _, name = change.target.partition("/")
        if kind == "operators" and change.after is not None:
            operators[name] = change.after
        elif kind == "organizations" and change.after is not None:
            organizations[name] = change.after["status"]
        start, end = max(change.time, day_start), min(moments[index + 1], day_end)
        if start < end:
            _note_holders(operators, organizations, start, end, holders)
    return sorted(holders.values(), key=lambda holder: (holder.organization, holder.operator_id))


def _note_holders(operators: Mapping[str, Mapping[str, Any]], organizations: Mapping[str, str],
                  start: dt.datetime, end: dt.datetime, holders: dict[str, Holder]) -> None:
    for operator_id, state in operators.items():
        reading = READING_ROLES & set(state["roles"])
        if reading and _able(state, organizations, start, end):
            holder = holders.setdefault(operator_id, Holder(operator_id, state["organization"]))
            holder.roles |= reading


def unlogged(changes: list[Change], registered: Iterable[str]) -> list[str]:
    """Operators in the registry now that no logged change ever registered."""
    seen = {change.target.partition("/")[2] for change in changes if change.target.startswith("operators/")}
    return sorted(set(registered) - seen)
