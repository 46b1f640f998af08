"""Volume caps of a purpose (DESIGN §4): records per call, per organisation per day, per operator per day.

A record is one resident touched by an answer. The per-call cap is decided on the answer before it
leaves (PERMISSION_DENIED: the purpose never allows so much at once). The per-day caps are counted
in PostgreSQL, per Japanese calendar day, by one conditional upsert per counter inside one
transaction, so the cap holds however many gateway replicas serve the organisation; reaching one is
RESOURCE_EXHAUSTED with the time until the next day as retry delay.

Every purpose that answers records has caps (issue 18), so counting is on the path of every provision.
A replica therefore counts in leases: it takes a few records at a time from the shared counter (`lease_size`,
a fiftieth of the cap, at most 500) and spends them in memory, going back to PostgreSQL only when its lease
is spent. The database's count is what every replica took, spent or not, so the cap is never exceeded; a
lease left unspent is given back on a graceful stop, and at worst (a crash) the organisation loses a few
records of that day's allowance. A call that needs more than a lease takes exactly what it needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field

import asyncpg

from juki_services.gateway.policy import Purpose
from jukilib.db.pool import Database
from jukilib.domain.dates import JAPAN, japan_date
from jukilib.errors import PermissionDenied, ResourceExhausted

logger = logging.getLogger(__name__)
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


MAX_LEASE = 500
_GIVE_BACK = """UPDATE volume_counter SET records = greatest(records - $5, 0)
    WHERE day = $1 AND purpose = $2 AND organization = $3 AND operator = $4"""


def lease_size(cap: int) -> int:
    """Records a replica takes from the shared counter at a time: small against the cap (a fiftieth), so that
    what one replica holds unspent never starves the others for long."""
    return max(1, min(cap // 50, MAX_LEASE))


Key = tuple[dt.date, str, str, str]
"""(day, purpose, organisation, operator) of one counter."""


@dataclass
class _Lease:
    """What this replica took from one counter and has not spent yet."""

    unspent: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class VolumeCounter:
    """The per-day counters, shared by every replica through the gateway's database, spent in leases."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._leases: dict[Key, _Lease] = {}
        self.database_reservations = 0
        """Transactions on the shared counters (for tests and benchmarks: one per lease, not per call)."""

    async def reserve(self, purpose: Purpose, organization: str, operator: str, records: int,
                      now: dt.datetime) -> None:
        """Count `records` against the purpose's daily caps, or raise ResourceExhausted counting nothing."""
        caps = self._caps(purpose, organization, operator)
        if not caps or records <= 0:
            return
        day = japan_date(now)
        keys = [((day, purpose.code, organization, who), cap, reason) for who, cap, reason in caps]
        self._forget_other_days(day)
        if self._spend(keys, records):
            return
        leases = [self._leases.setdefault(key, _Lease()) for key, _, _ in keys]
        for lease in leases:  # in key order: two calls never wait on each other's locks the other way round
            await lease.lock.acquire()
        try:
            if not self._spend(keys, records):  # another call may have taken a lease meanwhile
                await self._take_leases(keys, records, now)
                if not self._spend(keys, records):
                    raise AssertionError("a lease taken for the call covers it")
        finally:
            for lease in leases:
                lease.lock.release()

    def _spend(self, keys: list[tuple[Key, int, str]], records: int) -> bool:
        """Spend `records` from every counter's lease, all or none (no await: nothing interleaves)."""
        leases = [self._leases.get(key) for key, _, _ in keys]
        if any(lease is None or lease.unspent < records for lease in leases):
            return False
        for lease in leases:
            assert lease is not None
            lease.unspent -= records
        return True

    async def _take_leases(self, keys: list[tuple[Key, int, str]], records: int, now: dt.datetime) -> None:
        """One transaction taking, for each counter short of `records`, a lease covering at least them:
        the lease size when the cap leaves room, else exactly what the call needs; refused (nothing taken)
        when even that does not fit."""
        async with self._database.transaction() as connection:
            self.database_reservations += 1
            taken = []
            for key, cap, reason in keys:
                lease = self._leases[key]
                if lease.unspent >= records:
                    taken.append(0)
                    continue
                needed = records - lease.unspent
                amount = await self._take_some(connection, key, cap, max(needed, lease_size(cap)), needed)
                if amount == 0:
                    # Raising rolls back the transaction: a refused call consumes nothing.
                    raise ResourceExhausted(f"the purpose's daily volume cap of {cap} records is reached",
                                            reason, retry_after_seconds=seconds_until_next_day(now))
                taken.append(amount)
        for (key, _, _), amount in zip(keys, taken, strict=True):
            self._leases[key].unspent += amount

    async def _take_some(self, connection: asyncpg.Connection, key: Key, cap: int, wanted: int, needed: int) -> int:
        """`wanted` records of the counter if the cap leaves them, else `needed`, else 0."""
        for amount in dict.fromkeys((wanted, needed)):
            if amount <= cap and await self._take(connection, key, amount, cap):
                return amount
        return 0

    @staticmethod
    async def _take(connection: asyncpg.Connection, key: Key, records: int, cap: int) -> bool:
        day, purpose, organization, operator = key
        return await connection.fetchval(_RESERVE, day, purpose, organization, operator, records, cap) is not None

    def _forget_other_days(self, day: dt.date) -> None:
        for key in [k for k in self._leases if k[0] != day and not self._leases[k].lock.locked()]:
            del self._leases[key]

    async def give_back(self) -> None:
        """Return what this replica holds unspent (a graceful stop), so that other replicas may use it today."""
        unspent = {key: lease.unspent for key, lease in self._leases.items() if lease.unspent}
        if not unspent:
            return
        try:
            async with self._database.transaction() as connection:
                for key, amount in unspent.items():
                    await connection.execute(_GIVE_BACK, *key, amount)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:  # kept as spent: never over the cap
            logger.warning("unspent volume leases not given back", extra={"error_type": type(error).__name__})
            return
        for key in unspent:
            self._leases[key].unspent = 0

    @staticmethod
    def _caps(purpose: Purpose, organization: str, operator: str) -> list[tuple[str, int, str]]:
        caps = []
        if purpose.max_records_per_day is not None:
            caps.append((ORGANIZATION_TOTAL, purpose.max_records_per_day, "VOLUME_CAP_PER_DAY"))
        if purpose.max_records_per_operator_per_day is not None and operator:
            caps.append((operator, purpose.max_records_per_operator_per_day, "OPERATOR_VOLUME_CAP_PER_DAY"))
        return caps
