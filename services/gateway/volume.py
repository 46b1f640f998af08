"""Volume caps of a purpose (DESIGN §4): records per call, per organisation per day, per operator per day.

A record is one resident touched by an answer. The per-call cap is decided on the answer before it
leaves (PERMISSION_DENIED: the purpose never allows so much at once). The per-day caps are counted
in PostgreSQL, per Japanese calendar day, by one conditional upsert per counter inside one
transaction, so the cap holds however many gateway replicas serve the organisation; reaching one is
RESOURCE_EXHAUSTED with the time until the next day as retry delay.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from juki_services.gateway.policy import Purpose
from jukilib.db.pool import Database
from jukilib.domain.dates import JAPAN, japan_date
from jukilib.errors import PermissionDenied, ResourceExhausted

ORGANIZATION_TOTAL = ""  # the operator column of an organisation's own counter

_RESERVE = """
INSERT INTO volume_counter AS c (day, purpose, organization, operator, records) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (day, purpose, organization, operator) DO UPDATE SET records = c.records + EXCLUDED.records
    WHERE c.records + EXCLUDED.records <= $6
RETURNING c.records"""


def check_per_call(purpose: Purpose, records: int) -> None:
    """PermissionDenied when one answer (or request) carries more records than the purpose allows."""
    if purpose.max_records_per_call is not None and records > purpose.max_records_per_call:
        raise PermissionDenied(f"the purpose allows at most {purpose.max_records_per_call} records per call",
                               "VOLUME_CAP_PER_CALL")


def seconds_until_next_day(now: dt.datetime) -> float:
    local = now.astimezone(JAPAN)
    tomorrow = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), JAPAN)
    return max((tomorrow - local).total_seconds(), 1.0)


class VolumeCounter:
    """The per-day counters, shared by every replica through the gateway's database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def reserve(self, purpose: Purpose, organization: str, operator: str, records: int,
                      now: dt.datetime) -> None:
        """Count `records` against the purpose's daily caps, or raise ResourceExhausted counting nothing."""
        caps = self._caps(purpose, organization, operator)
        if not caps or records <= 0:
            return
        day = japan_date(now)
        async with self._database.transaction() as connection:
            for who, cap, reason in caps:
                if not await self._take(connection, day, purpose=purpose.code, organization=organization,
                                       operator=who, records=records, cap=cap):
                    # Raising rolls back the transaction: a refused call consumes nothing.
                    raise ResourceExhausted(f"the purpose's daily volume cap of {cap} records is reached",
                                            reason, retry_after_seconds=seconds_until_next_day(now))

    @staticmethod
    def _caps(purpose: Purpose, organization: str, operator: str) -> list[tuple[str, int, str]]:
        caps = []
        if purpose.max_records_per_day is not None:
            caps.append((ORGANIZATION_TOTAL, purpose.max_records_per_day, "VOLUME_CAP_PER_DAY"))
        if purpose.max_records_per_operator_per_day is not None and operator:
            caps.append((operator, purpose.max_records_per_operator_per_day, "OPERATOR_VOLUME_CAP_PER_DAY"))
        return caps

    @staticmethod
    async def _take(connection: asyncpg.Connection, day: dt.date, *, purpose: str, organization: str,
                    operator: str, records: int, cap: int) -> bool:
        if records > cap:
            return False
        return await connection.fetchval(_RESERVE, day, purpose, organization, operator, records, cap) is not None
