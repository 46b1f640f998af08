"""A register's metrics (README, "Metrics"), label `register` ("identity" or "annex") on every series.

Counted where they happen: notifications by kind and outcome (the refusal's reason code, "" when applied)
and their ingest lag, when a batch is decided; deliveries to the agency, their duration and whether the
agency was reached, when the relay records them. Counted from the database by `RegisterGauges`, every
`interval` seconds in the background, never per scrape: the outbox (backlog, oldest age, dead letters),
the review queue and the open 12-5 reports, each one bounded statement on a partial or leading-column
index (`outbox_undelivered_by_person`, `review_item_queue`, `municipality_report_open`), so that a scrape
never scans the 1.9 M-row tables. No label names a person, a notification or a municipality.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg
import grpc
from opentelemetry.instrumentation.utils import suppress_instrumentation

from juki.register.v1 import register_pb2 as pb
from jukilib import instruments
from jukilib.db.pool import Database
from jukilib.errors import JukiError
from jukilib.register.model import ChangeKind, Notification
from jukilib.supervision import Heartbeat

NOTIFICATIONS = instruments.counter("juki.notifications", "{notification}",
                                    "change notifications decided, by kind and outcome (refusal reason code)")
INGEST_LAG = instruments.histogram("juki.ingest.lag", "s", "receive time minus the municipality's notify time")
DELIVERIES = instruments.counter("juki.relay.deliveries", "{change}", "changes sent to the agency, by outcome")
DELIVERY_DURATION = instruments.histogram("juki.relay.delivery_duration", "s",
                                          "duration of one delivery attempt to the agency (one call or a batch)")
AGENCY_UP = instruments.gauge("juki.agency.up", "",
                              "1 if the last delivery attempt reached the agency, 0 if it was unreachable")
OUTBOX_BACKLOG = instruments.gauge("juki.outbox.backlog", "{change}", "changes not yet acknowledged by the agency")
OUTBOX_OLDEST_AGE = instruments.gauge("juki.outbox.oldest_age", "s", "age of the oldest undelivered change")
OUTBOX_DEAD = instruments.gauge("juki.outbox.dead", "{change}", "changes dead-lettered after max attempts")
REVIEW_QUEUE_SIZE = instruments.gauge("juki.review_queue.size", "{item}", "open items of the review queue")
REPORTS_OPEN = instruments.gauge("juki.reports.open", "{report}", "12-5 reports not yet resolved or dismissed")
REPORTS_OLDEST_AGE = instruments.gauge("juki.reports.oldest_age", "s", "age of the oldest open 12-5 report")

_KINDS: dict[int, str] = {int(kind): kind.name.lower() for kind in ChangeKind}
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


LAG_SAMPLES = 32
"""Ingest-lag samples per decided batch at most: every notification of a small batch (a single
ApplyNotification, a group commit), evenly spaced ones of a streamed chunk of up to 1,000, whose lags are
alike. A histogram measurement costs the SDK some 15-20 µs (it cleans and hashes the attributes each
time): one per notification would add several per cent to a streamed notification's CPU."""


def decided(register: str, notifications: Sequence[Notification], outcomes: Sequence[Any]) -> None:
    """Count a decided batch: one counter step per (kind, outcome, reason), and its ingest lag."""
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for notification, outcome in zip(notifications, outcomes, strict=True):
        kind = _KINDS.get(int(notification.change.kind), "unspecified")
        if isinstance(outcome, JukiError):
            counts[(kind, "refused", outcome.reason)] += 1
        else:
            counts[(kind, "applied", "")] += 1
    lag_labels = {"register": register}
    for notification in notifications[::max(1, -(-len(notifications) // LAG_SAMPLES))]:
        change = notification.change
        INGEST_LAG.record(max(0.0, (change.receive_time - change.notify_time).total_seconds()), lag_labels)
    for (kind, outcome_name, reason), count in counts.items():
        NOTIFICATIONS.add(count, {"register": register, "kind": kind, "outcome": outcome_name, "reason": reason})


def unreachable(error: BaseException) -> bool:
    """The agency was not reached (as opposed to reached and refusing a change)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in _UNREACHABLE
    return isinstance(error, (TimeoutError, OSError))


def delivered(register: str, outcomes: Sequence[BaseException | None], seconds: float) -> None:
    """Record one delivery attempt of `len(outcomes)` changes."""
    labels = {"register": register}
    DELIVERY_DURATION.record(seconds, labels)
    failed = sum(1 for outcome in outcomes if outcome is not None)
    if failed:
        DELIVERIES.add(failed, {"register": register, "outcome": "failed"})
    if len(outcomes) - failed:
        DELIVERIES.add(len(outcomes) - failed, {"register": register, "outcome": "delivered"})
    AGENCY_UP.set(0 if any(o is not None and unreachable(o) for o in outcomes) else 1, labels)


_REVIEW_QUEUE = f"""SELECT count(*) FROM review_item WHERE state = {int(pb.REVIEW_ITEM_STATE_OPEN)}
    AND (kind <> {int(pb.REVIEW_ITEM_KIND_LONE_MOVE_HALF)} OR create_time <= now() - $1::interval)"""
_CLOSED_REPORTS = (int(pb.REPORT_STATE_RESOLVED), int(pb.REPORT_STATE_DISMISSED))
_OPEN_REPORTS = f"""SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(create_time)), 0) AS age
    FROM municipality_report WHERE state <> 3 AND state NOT IN {_CLOSED_REPORTS}"""


class RegisterGauges:
    """The register's gauges, measured from the database every `interval` seconds (a supervised job)."""

    def __init__(self, database: Database, register: str, move_half_wait: dt.timedelta,
                 interval: float = 5.0) -> None:
        self._database = database
        self._labels = {"register": register}
        self._move_half_wait = move_half_wait
        self.interval = interval
        for outcome in ("delivered", "failed"):  # at zero from the start: an alert's rate() needs the series
            DELIVERIES.add(0, {"register": register, "outcome": outcome})

    async def measure(self, connection: asyncpg.Connection) -> None:
        from jukilib.register.relay import outbox_backlog

        backlog, age, dead = await outbox_backlog(connection)
        OUTBOX_BACKLOG.set(backlog, self._labels)
        OUTBOX_OLDEST_AGE.set(round(age, 3), self._labels)
        OUTBOX_DEAD.set(dead, self._labels)
        REVIEW_QUEUE_SIZE.set(await connection.fetchval(_REVIEW_QUEUE, self._move_half_wait), self._labels)
        reports = await connection.fetchrow(_OPEN_REPORTS)
        assert reports is not None
        REPORTS_OPEN.set(int(reports["n"]), self._labels)
        REPORTS_OLDEST_AGE.set(round(float(reports["age"]), 3), self._labels)

    async def run(self, heartbeat: Heartbeat) -> None:
        """Measure every `interval` until cancelled; a failure ends the run (its supervisor restarts it)."""
        while True:
            async with self._database.connection() as connection:
                with suppress_instrumentation():  # no trace of a gauge's statements every few seconds
                    await self.measure(connection)
            heartbeat.beat()
            await asyncio.sleep(self.interval)
