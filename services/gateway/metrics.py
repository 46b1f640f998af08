"""The gateway's metrics (README, "Metrics"): decisions, denials, refusals, and the operation log's health.

Every call through the gateway leaves exactly one operation-log entry, allowed or denied: the entry is
where the decision is counted, so no refusal path can be missed. Labels are bounded: the outcome, a
reason *code* (the `ErrorInfo` reason of a refusal, "" when allowed, `OTHER` for anything that is not a
code), the organisation (the certificate's, as the prefecture's CA issued it) and the refusal kind. Never
the purpose's case reference, an operator, a resident code or a search condition.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import time
import weakref
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from juki.gateway.v1 import operation_log_pb2 as pb
from jukilib import instruments

_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_ORGANIZATION = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
RATE_LIMIT_REASONS = frozenset({"ORGANIZATION_RATE_LIMIT", "OPERATOR_RATE_LIMIT"})
VOLUME_CAP_REASONS = frozenset({"VOLUME_CAP_PER_CALL", "VOLUME_CAP_PER_DAY", "OPERATOR_VOLUME_CAP_PER_DAY"})

_allowed = [0]
"""Calls allowed so far: counted in memory on the hot path (a counter's measurement costs the SDK some
15 µs per call), reported cumulatively at each collection (`_observe_decisions`)."""
_denied: collections.Counter[str] = collections.Counter()


def _observe_decisions(_: CallbackOptions) -> list[Observation]:
    return [Observation(_allowed[0], {"outcome": "allowed", "reason": ""}),
            *(Observation(count, {"outcome": "denied", "reason": code}) for code, count in list(_denied.items()))]


instruments.observable_counter("juki.gateway.decisions", "{call}", "calls decided, by outcome and reason code",
                               _observe_decisions)
DENIALS = instruments.counter("juki.gateway.denials", "{call}", "calls denied, by organisation and reason code")
REFUSALS = instruments.counter("juki.gateway.refusals", "{call}", "calls refused by a rate limit or a volume cap")
APPEND_DURATION = instruments.histogram("juki.oplog.append_duration", "s",
                                        "time to append one batch of operation-log entries (group commit)")
APPEND_FAILURES = instruments.counter("juki.oplog.append_failures", "{append}",
                                      "failed appends of the operation log (their calls fail closed)")
FAILING_CLOSED = instruments.gauge("juki.oplog.failing_closed", "",
                                   "1 while calls are refused because the operation log cannot be written")


def reason_code(reason: str) -> str:
    """A refusal's reason as a label: its code, or OTHER when the text is not one (never free text)."""
    return reason if _CODE.fullmatch(reason) else "OTHER"


def organization_label(organization: str) -> str:
    return organization if _ORGANIZATION.fullmatch(organization) else "other"


def decided(method: str, organization: str, decision: int, reason: str) -> None:
    """Count one call's decision as the operation log records it (maintenance entries are not calls)."""
    if not method.startswith("/"):
        return
    if decision != pb.DECISION_DENIED:
        _allowed[0] += 1
        return
    code = reason_code(reason)
    _denied[code] += 1
    DENIALS.add(1, {"organization": organization_label(organization), "reason": code})
    if code in RATE_LIMIT_REASONS:
        REFUSALS.add(1, {"kind": "rate_limit"})
    elif code in VOLUME_CAP_REASONS:
        REFUSALS.add(1, {"kind": "volume_cap"})


def appended(started: float) -> None:
    APPEND_DURATION.record(time.perf_counter() - started)
    FAILING_CLOSED.set(0)


def append_failed() -> None:
    APPEND_FAILURES.add(1)
    FAILING_CLOSED.set(1)


_watched: dict[str, weakref.ref[Any]] = {}


def watch(log: Any, registry: Any) -> None:
    """Export the operation log's queue depth and newest checkpoint's age, and the age of the operator
    registry's last read (revocations take effect through it): read from memory at each scrape, no query.
    The last gateway built in the process is the one watched."""
    _watched["log"], _watched["registry"] = weakref.ref(log), weakref.ref(registry)
    # Series an alert rate()s or compares exist from the start, at zero, not from their first event.
    for kind in ("rate_limit", "volume_cap"):
        REFUSALS.add(0, {"kind": kind})
    APPEND_FAILURES.add(0)
    FAILING_CLOSED.set(0)
    instruments.observable_gauge("juki.oplog.queue_depth", "{entry}",
                                 "operation-log entries waiting to be appended", _queue_depth)
    instruments.observable_gauge("juki.checkpoint.age", "s",
                                 "seconds since the newest signed checkpoint of the operation log", _checkpoint_age)
    instruments.observable_gauge("juki.revocation.refresh_age", "s",
                                 "seconds since the operator registry was last read", _refresh_age)


def _alive(name: str) -> Any:
    ref = _watched.get(name)
    return ref() if ref is not None else None


def _queue_depth(_: CallbackOptions) -> list[Observation]:
    log = _alive("log")
    return [Observation(log.queue_depth())] if log is not None else []


def _checkpoint_age(_: CallbackOptions) -> list[Observation]:
    log = _alive("log")
    signed_at = log.newest_checkpoint_at() if log is not None else None
    if signed_at is None:
        return []
    return [Observation(round((dt.datetime.now(dt.UTC) - signed_at).total_seconds(), 3))]


def _refresh_age(_: CallbackOptions) -> list[Observation]:
    registry = _alive("registry")
    age = registry.refresh_age() if registry is not None else None
    return [Observation(round(age, 3))] if age is not None else []
