"""Background work of the disclosure service: the deadline gauge, following 12-5 reports and the registers' 修正."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import grpc

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki_services.disclosure import rules, store
from juki_services.disclosure.desk import Desk
from juki_services.disclosure.organ_notices import OrganNotices
from jukilib import instruments
from jukilib.db.pool import Database
from jukilib.errors import JukiError
from jukilib.supervision import Heartbeat

logger = logging.getLogger(__name__)


OPEN = instruments.gauge("juki.cases.open", "{case}",
                         "disclosure and usage-suspension cases whose deadline runs, by state")
AT_RISK = instruments.gauge("juki.cases.at_risk", "{case}",
                            "running cases whose deadline (or the prefecture's target) is near or past")
OVERDUE = instruments.gauge("juki.cases.overdue", "{case}", "running cases past their statutory deadline")
_STATE_NAMES = {
    **{("disclosure", int(state)): dpb.DisclosureState.Name(state).lower() for state in rules.DEADLINE_RUNNING},
    **{("usage_suspension", int(state)): dpb.UsageSuspensionState.Name(state).lower()
       for state in rules.SUSPENSION_RUNNING}}


class DeadlineGauge:
    """Open, at-risk and overdue disclosure and usage-suspension cases as OpenTelemetry gauges: counts only,
    no personal data (住基法 30-33, 個人情報保護法 102 deadlines; DESIGN §7 "deadlines at risk"). The label
    `state` is the case's state as the enum names it, lower-case (`disclosure_state_received`)."""

    def __init__(self, database: Database, desk: Desk, interval: float = 30.0,
                 at_risk_days: int = store.AT_RISK_DAYS) -> None:
        self._database = database
        self._desk = desk
        self.interval = interval
        self._at_risk_days = at_risk_days
        self.values = {"open": 0, "at_risk": 0, "overdue": 0}

    async def measure(self) -> dict[str, int]:
        async with self._database.connection() as connection:
            self.values = await store.deadline_counts(connection, self._desk.today(), self._at_risk_days)
            by_state = {(kind, state): count for kind, state, count in await store.running_by_state(connection)}
        for key, name in _STATE_NAMES.items():
            OPEN.set(by_state.get(key, 0), {"state": name})
        AT_RISK.set(self.values["at_risk"])
        OVERDUE.set(self.values["overdue"])
        return self.values

    async def run(self, heartbeat: Heartbeat) -> None:
        while True:
            try:
                await self.measure()
                heartbeat.beat()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, JukiError):
                logger.warning("disclosure deadlines not measured")
            await asyncio.sleep(self.interval)

class ReportFollower:
    """Moves correction cases on when the municipality's 修正 resolved their 12-5 report (see Desk.follow_reports)."""

    def __init__(self, desk: Desk, interval: float) -> None:
        self._desk = desk
        self._interval = interval

    async def run(self, heartbeat: Heartbeat) -> None:
        while True:
            try:
                moved = await self._desk.follow_reports()
                heartbeat.beat()
                if moved:
                    logger.info("correction cases completed by the municipality's correction", extra={"cases": moved})
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, JukiError,
                    grpc.aio.AioRpcError) as exc:
                logger.warning("12-5 reports not followed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self._interval)


class ModificationFollower:
    """Tells the organs of every 修正 of a value they received that no correction case handles
    (organ_notices.OrganNotices): supervised, restart-safe, idempotent across replicas.

    Every read of the feed goes through the gateway and into the operation log: while the feed is empty the
    follower waits longer, up to `BACKOFF` times its interval, and at once again after a 修正."""

    BACKOFF = 4

    def __init__(self, organ_notices: OrganNotices, interval: float) -> None:
        self._organ_notices = organ_notices
        self._interval = interval

    @property
    def longest_wait(self) -> float:
        """The longest sleep between two passes: what the job's staleness allows for."""
        return self._interval * self.BACKOFF

    async def run(self, heartbeat: Heartbeat) -> None:
        wait = self._interval
        while True:
            try:
                read = await self._organ_notices.follow()
                heartbeat.beat()
                if read >= self._organ_notices.page_size:
                    continue  # a full page: more behind it
                wait = self._interval if read else min(wait * 2, self.longest_wait)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, JukiError,
                    grpc.aio.AioRpcError) as exc:
                logger.warning("registers' corrections not followed", extra={"error_type": type(exc).__name__})
                wait = self._interval
            await asyncio.sleep(wait)
