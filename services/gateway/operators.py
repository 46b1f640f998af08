"""The operator registry: who may work at a terminal, for which organisation, in which roles.

Each gateway replica keeps the whole registry (operators and organisation status) in memory and
reads it again from PostgreSQL every `refresh_seconds` (default 1 s). A disabled operator or
organisation is therefore refused on every replica within about a second, and never later than
`max_staleness` (5 s): a replica whose copy is older refreshes before deciding, and if it cannot, it
refuses human work with UNAVAILABLE rather than trust a stale copy (fail closed).
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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._database = database
        self._refresh_seconds = refresh_seconds
        self._max_staleness = max_staleness
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

    async def run(self, heartbeat: Heartbeat) -> None:
        """Refresh every `refresh_seconds` until cancelled; a failed read is retried on the next tick."""
        while True:
            try:
                await self.refresh()
                heartbeat.beat()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, Unavailable) as exc:
                logger.warning("operator registry refresh failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self._refresh_seconds)
