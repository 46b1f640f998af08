"""The operator registry: who may work at a terminal, for which organisation, in which roles.

Each gateway replica keeps the whole registry (operators and organisation status) in memory and
reads it again from PostgreSQL every `refresh_seconds` (default 1 s). A disabled operator or
organisation is therefore refused on every replica within about a second, and never later than
`max_staleness` (5 s): a replica whose copy is older refreshes before deciding, and if it cannot, it
refuses human work with UNAVAILABLE rather than trust a stale copy (fail closed).
A system's call (no operator) needs only its organisation's status and never waits for a read: it is
decided on the last copy read, within `system_max_staleness` (see `check_system_organization`).
The registry is small (a prefecture has thousands of operators, not millions), so a full read per
refresh is simpler and safer than change tracking.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import asyncpg

from jukilib.db.pool import Database
from jukilib.errors import PermissionDenied, Unavailable
from jukilib.operator_credential import OperatorClaims
from jukilib.supervision import Heartbeat

logger = logging.getLogger(__name__)
ACTIVE, DISABLED = "active", "disabled"
SYSTEM_MAX_STALENESS = 60.0
"""Seconds a system's call may be decided on the last organisation status read (see
`OperatorRegistry.check_system_organization`)."""


@dataclass(frozen=True)
class OperatorRecord:
    """One row of the registry."""

    operator_id: str
    organization: str
    roles: frozenset[str]
    status: str
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    create_time: dt.datetime
    update_time: dt.datetime

    def in_effect(self, now: dt.datetime) -> bool:
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)


@dataclass(frozen=True)
class Operator:
    """An authenticated operator of the current call, with the roles granted for it."""

    operator_id: str
    roles: frozenset[str]


def record_of(row: asyncpg.Record) -> OperatorRecord:
    return OperatorRecord(row["operator_id"], row["organization"], frozenset(row["roles"]), row["status"],
                          row["valid_from"], row["valid_until"], row["create_time"], row["update_time"])


@dataclass(frozen=True)
class Snapshot:
    """The registry as read at one moment."""

    operators: Mapping[str, OperatorRecord]
    disabled_organizations: frozenset[str]

    def check_organization(self, organization: str) -> None:
        if organization in self.disabled_organizations:
            raise PermissionDenied("the calling organisation has been disabled", "ORGANIZATION_DISABLED")

    def authenticate(self, claims: OperatorClaims, organization: str, now: dt.datetime) -> Operator:
        """The operator a verified credential names, if the registry still lets them work now."""
        # The credential is bound to the organisation of the client certificate: a clerk of one organ
        # cannot work through another organ's terminal.
        if claims.organization != organization:
            raise PermissionDenied("the operator credential belongs to another organisation",
                                   "CREDENTIAL_ORGANIZATION_MISMATCH")
        record = self.operators.get(claims.operator)
        if record is None or record.organization != organization:
            raise PermissionDenied("the operator is not registered for this organisation", "OPERATOR_NOT_REGISTERED")
        if record.status != ACTIVE:
            raise PermissionDenied("the operator has been disabled", "OPERATOR_DISABLED")
        if not record.in_effect(now):
            raise PermissionDenied("the operator's registration is not in effect", "OPERATOR_NOT_IN_EFFECT")
        # A role removed from the registry is gone at once, whatever the credential still says.
        return Operator(record.operator_id, claims.roles & record.roles)


async def read_snapshot(connection: asyncpg.Connection) -> Snapshot:
    rows = await connection.fetch("SELECT * FROM operator")
    disabled = await connection.fetch("SELECT organization FROM organization_status WHERE status = 'disabled'")
    return Snapshot({r["operator_id"]: record_of(r) for r in rows}, frozenset(r["organization"] for r in disabled))


class OperatorRegistry:
    """The in-memory copy of the registry of one replica, refreshed in the background."""

    def __init__(self, database: Database, *, refresh_seconds: float = 1.0, max_staleness: float = 5.0,
                 system_max_staleness: float = SYSTEM_MAX_STALENESS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._database = database
        self._refresh_seconds = refresh_seconds
        self._max_staleness = max_staleness
        self._system_max_staleness = system_max_staleness
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> Snapshot:
        """Read the registry now (also called after every change made through this replica)."""
        async with self._lock:
            return await self._read()

    async def _read(self) -> Snapshot:
        started = self._clock()
        async with self._database.connection() as connection:
            snapshot = await read_snapshot(connection)
        self._snapshot, self._read_at = snapshot, started
        return snapshot

    def refresh_age(self) -> float | None:
        """Seconds since the registry was last read (None before the first read): a metric."""
        return None if self._snapshot is None else self._clock() - self._read_at

    def _fresh(self) -> Snapshot | None:
        if self._snapshot is not None and self._clock() - self._read_at <= self._max_staleness:
            return self._snapshot
        return None

    async def current(self) -> Snapshot:
        """The registry, never older than `max_staleness`; UNAVAILABLE when it cannot be read."""
        snapshot = self._fresh()
        if snapshot is not None:
            return snapshot
        try:
            async with self._lock:  # one read for every call that found the copy stale
                return self._fresh() or await self._read()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, Unavailable):
            logger.error("operator registry cannot be read; calls are refused")
            raise Unavailable("the operator registry cannot be read", "OPERATOR_REGISTRY_UNAVAILABLE") from None

    async def check_system_organization(self, organization: str) -> None:
        """Refuse a system's call (no operator) of a disabled organisation, on the copy this replica holds.

        A system's call (a municipality CS notifying under 住基法 30-6 / 30-41, J-LIS reporting under 30-8,
        the disclosure service reading for a case) needs from the registry only its organisation's
        status, and it never waits for a read: the copy is refreshed every second in the background, and
        a notification the law has the municipality send at once, computer to computer (30-6 ②), should
        neither stop nor wait out the database's command timeout (10 s) when the registry cannot be read.
        The price is bounded: an organisation disabled while this replica cannot read the registry is
        still admitted for system calls until its copy is `system_max_staleness` (60 s) old, then every
        call is refused at once, UNAVAILABLE (fail closed). Only before the first read ever is there
        nothing to decide on: then the call waits for that read like human work does.
        Human work keeps the 5 s bound (`current`): an operator's status and roles are the registry's."""
        if self._snapshot is None:
            snapshot = await self.current()
        elif self._clock() - self._read_at <= self._system_max_staleness:
            snapshot = self._snapshot
        else:
            logger.error("operator registry not read for too long; system calls are refused")
            raise Unavailable("the operator registry cannot be read", "OPERATOR_REGISTRY_UNAVAILABLE")
        snapshot.check_organization(organization)

    async def run(self, heartbeat: Heartbeat) -> None:
        """Refresh every `refresh_seconds` until cancelled; a failed read is retried on the next tick."""
        while True:
            try:
                await self.refresh()
                heartbeat.beat()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, Unavailable) as exc:
                logger.warning("operator registry refresh failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self._refresh_seconds)
