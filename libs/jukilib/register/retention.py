"""Retention of a register: what may be purged, and the purge (`juki retention purge`).

Two record classes, each with its own period (DESIGN §A.5):
- superseded versions: a version is superseded when a newer one (in event order) arrived; it may go
  `superseded_years` after that arrival;
- removed persons: a person whose current version is a 消除 may go, with their whole history,
  `removed_years` after the removal was received.
The prefecture's own period (施行令, the article behind 30-6 ③ / 30-41 ③) is UNVERIFIED; 150 years
mirrors 令34 for the municipal CS copy, so that is the default and, on the stricter reading, also the
shortest period a rule may set (a longer one is the prefecture's choice). Nothing is purged that the
agency has not acknowledged, nor the current version of a person, nor evidence: a version a 12-5 report
names (as the one found wrong or the one that resolved it) or a removed person with a report stays with
the report. The purge runs as the schema owner (the service's role cannot delete) and records every run
in `retention_run`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from jukilib.register.model import RecordState

logger = logging.getLogger(__name__)

DEFAULT_YEARS = 150.0
MINIMUM_YEARS = DEFAULT_YEARS
"""No rule purges sooner: 令34 keeps the municipal copy 150 years, and the prefecture's article is UNVERIFIED."""


@dataclass(frozen=True)
class RetentionRules:
    superseded_years: float = DEFAULT_YEARS
    removed_years: float = DEFAULT_YEARS

    def __post_init__(self) -> None:
        for name in ("superseded_years", "removed_years"):
            if not getattr(self, name) >= MINIMUM_YEARS:  # also refuses NaN
                raise ValueError(f"{name} must be at least {MINIMUM_YEARS:g} years")


@dataclass(frozen=True)
class PurgeResult:
    versions: int
    persons: int


_SUPERSEDED = """
WITH ordered AS (
    SELECT v.person_id, v.version, v.receive_time,
           lead(v.receive_time) OVER (PARTITION BY v.person_id
               ORDER BY v.event_date, v.notify_time, v.municipality_code, v.notification_id) AS next_received
    FROM person_version v
)
SELECT o.person_id, o.version FROM ordered o JOIN person p ON p.id = o.person_id
WHERE o.next_received IS NOT NULL
  AND greatest(o.receive_time, o.next_received) < now() - make_interval(secs => $1 * 365.2425 * 86400)
  AND o.version <> p.current_version
  AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.person_id = o.person_id AND x.version = o.version
                  AND x.state <> 'delivered')
  AND NOT EXISTS (SELECT 1 FROM municipality_report m WHERE m.person_id = o.person_id
                  AND o.version IN (m.version, m.resolving_version))
"""

_REMOVED = f"""
SELECT p.id FROM person p JOIN person_version v ON v.person_id = p.id AND v.version = p.current_version
WHERE p.state = {int(RecordState.REMOVED)}
  AND v.receive_time < now() - make_interval(secs => $1 * 365.2425 * 86400)
  AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.person_id = p.id AND x.state <> 'delivered')
  AND NOT EXISTS (SELECT 1 FROM municipality_report m WHERE m.person_id = p.id)
"""


async def purge(connection: asyncpg.Connection, rules: RetentionRules, *, dry_run: bool) -> PurgeResult:
    """Purge what the rules allow (or only count it, with `dry_run`), in one transaction."""
    async with connection.transaction():
        versions = await connection.fetch(_SUPERSEDED, rules.superseded_years)
        persons = await connection.fetch(_REMOVED, rules.removed_years)
        if not dry_run:
            await connection.execute(
                """DELETE FROM person_version v USING unnest($1::uuid[], $2::bigint[]) AS gone (person_id, version)
                   WHERE v.person_id = gone.person_id AND v.version = gone.version""",
                [r["person_id"] for r in versions], [r["version"] for r in versions])
            await connection.execute("DELETE FROM person WHERE id = ANY($1::uuid[])", [r["id"] for r in persons])
        await connection.execute(
            """INSERT INTO retention_run (superseded_years, removed_years, dry_run, versions_purged, persons_purged)
               VALUES ($1, $2, $3, $4, $5)""",
            rules.superseded_years, rules.removed_years, dry_run, len(versions), len(persons))
    result = PurgeResult(len(versions), len(persons))
    logger.info("retention purge", extra={"dry_run": dry_run, "versions": result.versions, "persons": result.persons,
                                          "superseded_years": rules.superseded_years,
                                          "removed_years": rules.removed_years})
    return result
