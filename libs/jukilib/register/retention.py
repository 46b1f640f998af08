"""Retention of a register: the purge of what its periods allow (PurgeExpiredRecords).

住基法 30-6 ③ / 30-41 ③: the governor keeps the files for the period the 施行令 sets (DOMAIN §A.5). Two
record classes, each with its own period:
- superseded versions: a version is superseded when a newer one (in event order) arrived; it may go
  `superseded_years` after that arrival;
- removed persons: a person whose current version is a 消除 may go, with their whole history,
  `removed_years` after the removal was received.
The prefecture's own article is UNVERIFIED; 150 years mirrors 令34 for the municipal CS copy, so that is the
default and, on the stricter reading, also the shortest period allowed.

The purge is an RPC reached only through the gateway, whose operation log records who ran it, when and how
it ended. The runtime role cannot delete: it calls `purge_expired_records` (migration 0012), a function of
the schema owner that enforces the periods and keeps the evidence whatever its caller asks: what the agency
has not acknowledged, current versions, a version or person a 12-5 report or a review item names, a person
an open disclosure or correction case is about. Those cases live in the disclosure service, which the
register asks (`ListRetentionHolds`) before anything is deleted; when it cannot be asked nothing is purged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg
import grpc
from grpc import aio

from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib.db.pool import Database
from jukilib.errors import FailedPrecondition, Unavailable, Violations
from jukilib.grpc import deadlines, tracing

logger = logging.getLogger(__name__)

HOLDS_METHOD = "/juki.disclosure.v1.DisclosureService/ListRetentionHolds"
HOLDS_PAGE = 1000
PURGE_TIMEOUT = 3600.0
"""Seconds the purge statement may take when its call has no deadline: one pass over a register's history."""

Holds = Callable[[], Awaitable[Sequence[str]]]
"""The 住民票コード of the subjects of open disclosure and correction cases; raises when they cannot be had."""


@dataclass(frozen=True)
class PurgeOrder:
    """What the operator asked: None for a period means the default (150 years)."""

    superseded_years: float | None = None
    removed_years: float | None = None
    dry_run: bool = False
    idempotency_key: str | None = None
    """AIP-155: a repeat answers the run already made."""


@dataclass(frozen=True)
class PurgeRun:
    """Who ran the purge, as the gateway established it: the request id joins `retention_run` to the
    operation log's entry."""

    request_id: str = ""
    operator: str = ""


@dataclass(frozen=True)
class PurgeResult:
    versions: int
    persons: int
    versions_held: int
    persons_held: int
    dry_run: bool
    superseded_years: float
    removed_years: float


def order_of(request: register_pb2.PurgeExpiredRecordsRequest) -> PurgeOrder:
    """The request as an order; INVALID_ARGUMENT naming `request_id` when it is unusable. The periods are
    checked by the database (`check_periods`), the one place their bounds are written."""
    violations = Violations()
    violations.optional_text("request_id", request.request_id, max_length=64)
    violations.raise_if_any()
    superseded = request.superseded_years if request.HasField("superseded_years") else None
    removed = request.removed_years if request.HasField("removed_years") else None
    return PurgeOrder(superseded, removed, request.dry_run, request.request_id or None)


async def check_periods(connection: asyncpg.Connection, order: PurgeOrder) -> None:
    """INVALID_ARGUMENT naming every period out of bounds (0, negative, NaN, under 150 or over 1,000 years)."""
    problems = await connection.fetch("SELECT field, description FROM retention_period_problems($1, $2)",
                                      order.superseded_years, order.removed_years)
    if problems:
        violations = Violations()
        for problem in problems:
            violations.add(problem["field"], problem["description"])
        violations.raise_if_any()


def disclosure_holds(channel: aio.Channel, call_timeout: float) -> Holds:
    """The holds as the disclosure service lists them, every page, asked over `channel` (mTLS as this register)."""

    async def holds() -> list[str]:
        stub = disclosure_pb2_grpc.DisclosureServiceStub(channel)
        request = disclosure_pb2.ListRetentionHoldsRequest(page_size=HOLDS_PAGE)
        codes: list[str] = []
        while True:
            with tracing.outgoing(HOLDS_METHOD) as metadata:
                page = await stub.ListRetentionHolds(request, metadata=metadata,
                                                     timeout=deadlines.timeout(call_timeout))
            codes.extend(hold.resident_code for hold in page.retention_holds)
            if not page.next_page_token:
                return codes
            request.page_token = page.next_page_token

    return holds


class Retention:
    """The purge of one register, holding back what open cases need."""

    def __init__(self, database: Database, holds: Holds | None) -> None:
        self._database = database
        self._holds = holds
        """None when no disclosure service is configured: then nothing may be purged (fail closed)."""

    async def purge(self, order: PurgeOrder, run: PurgeRun) -> PurgeResult:
        """Purge what the periods allow (only count it, with `dry_run`), in one transaction; every run is
        recorded in `retention_run`."""
        async with self._database.connection() as connection:
            await check_periods(connection, order)
        held = await self._held_codes()
        async with self._database.transaction() as connection:
            row = await connection.fetchrow(
                "SELECT * FROM purge_expired_records($1, $2, $3, $4, $5, $6, $7)",
                order.superseded_years, order.removed_years, order.dry_run, held, run.request_id or None,
                order.idempotency_key, run.operator or None, timeout=deadlines.timeout(PURGE_TIMEOUT))
        assert row is not None
        result = _result(row)
        logger.info("retention purge", extra={
            "run": row["run_id"], "dry_run": result.dry_run, "versions": result.versions, "persons": result.persons,
            "versions_held": result.versions_held, "persons_held": result.persons_held,
            "superseded_years": result.superseded_years, "removed_years": result.removed_years})
        return result

    async def _held_codes(self) -> list[str]:
        """The open cases' subjects, asked before anything is deleted; without them nothing is."""
        if self._holds is None:
            raise FailedPrecondition("no disclosure service configured (JUKI_DISCLOSURE_TARGET): open cases "
                                     "cannot be asked, nothing was purged", "RETENTION_HOLDS_UNCONFIGURED")
        try:
            return list(await self._holds())
        except (grpc.aio.AioRpcError, TimeoutError, OSError) as error:
            code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else type(error).__name__
            logger.warning("retention purge refused: open cases could not be asked", extra={"error": code})
            raise Unavailable("the disclosure service could not be asked for open cases; nothing was purged",
                              "RETENTION_HOLDS_UNAVAILABLE") from None


def _result(row: asyncpg.Record) -> PurgeResult:
    """A run as `purge_expired_records` answers it (held counts are NULL only in runs from before migration 0012)."""
    return PurgeResult(row["versions_purged"], row["persons_purged"], row["versions_held"] or 0,
                       row["persons_held"] or 0, row["applied_dry_run"], float(row["applied_superseded_years"]),
                       float(row["applied_removed_years"]))
