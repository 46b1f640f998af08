"""The tables of a load: which it fills, locked; in fast mode their keys and indexes dropped before and
rebuilt after, in the load's transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from jukilib.register.hooks import RegisterHooks
from jukilib.register.load.copy import CREATE_STAGING
from jukilib.register.load.results import BulkLoadError, FastModeRefused, LoadOptions, RowProblem
from jukilib.register.load.workers import Prepared

logger = logging.getLogger(__name__)
_ENGINE_TABLES = ("person", "person_version")
_OTHER_ENGINE_TABLES = ("resident_code_history", "outbox", "person_key")

@dataclass
class Plan:
    fast: bool
    filled: list[str]
    constraints: list[tuple[str, str, str]] = field(default_factory=list)
    """(table, constraint, definition) of primary keys and unique constraints."""
    indexes: list[str] = field(default_factory=list)
    """Definitions of the other indexes."""
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)


async def _is_empty(connection: asyncpg.Connection, tables: Sequence[str]) -> bool:
    for table in tables:
        if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            return False
    return True


async def plan_and_lock(connection: asyncpg.Connection, hooks: RegisterHooks, options: LoadOptions) -> Plan:
    filled = [*_ENGINE_TABLES, *hooks.table_names, *(("person_key",) if hooks.unique_key else ())]
    if options.forward:
        filled.append("outbox")
    involved = list(dict.fromkeys([*filled, *_OTHER_ENGINE_TABLES]))
    quoted = await connection.fetch("SELECT quote_ident(name) AS name FROM unnest($1::text[]) AS name", involved)
    if [row["name"] for row in quoted] != involved:
        raise BulkLoadError("table names of the register must be plain identifiers")
    await connection.execute("SET LOCAL lock_timeout = '30s'")
    wants_fast = options.mode != "indexed" and await _is_empty(connection, involved)
    # Fast mode drops indexes: nobody may read meanwhile. Otherwise writers are kept out (a concurrent
    # 記載 of the same 住民票コード would make the load fail at its end).
    lock = "ACCESS EXCLUSIVE" if wants_fast or options.mode == "fast" else "SHARE ROW EXCLUSIVE"
    await connection.execute(f"LOCK TABLE {', '.join(involved)} IN {lock} MODE")
    fast = wants_fast and await _is_empty(connection, involved)
    if options.mode == "fast" and not fast:
        raise FastModeRefused("fast mode loads only into an empty register; this one has persons "
                              "(use --mode auto or indexed to load into the indexed tables)")
    plan = Plan(fast=fast, filled=filled)
    if fast:
        await _drop_keys_and_indexes(connection, plan)
    await connection.execute(CREATE_STAGING)  # dropped before the load commits
    return plan


async def _drop_keys_and_indexes(connection: asyncpg.Connection, plan: Plan) -> None:
    tables = plan.filled
    foreign = await connection.fetch(
        """SELECT c.conrelid::regclass::text AS table_name, quote_ident(c.conname) AS name,
                  pg_get_constraintdef(c.oid) AS definition
           FROM pg_constraint c
           WHERE c.contype = 'f'
             AND (c.conrelid = ANY($1::text[]::regclass[]) OR c.confrelid = ANY($1::text[]::regclass[]))
           ORDER BY c.conrelid::regclass::text, c.conname""", tables)
    keys = await connection.fetch(
        """SELECT c.conrelid::regclass::text AS table_name, quote_ident(c.conname) AS name,
                  pg_get_constraintdef(c.oid) AS definition
           FROM pg_constraint c
           WHERE c.contype IN ('p', 'u') AND c.conrelid = ANY($1::text[]::regclass[])
           ORDER BY c.contype, c.conname""", tables)
    indexes = await connection.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
           FROM pg_index i
           WHERE i.indrelid = ANY($1::text[]::regclass[])
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                             WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                               AND c.contype IN ('p', 'u', 'x'))
           ORDER BY 1""", tables)
    unsupported = await connection.fetchval(
        """SELECT (SELECT count(*) FROM pg_constraint c
                   WHERE c.conrelid = ANY($1::text[]::regclass[])
                     AND (c.contype = 'x' OR obj_description(c.oid, 'pg_constraint') IS NOT NULL))
                + (SELECT count(*) FROM pg_index i
                   WHERE i.indrelid = ANY($1::text[]::regclass[])
                     AND (i.indisclustered OR i.indisreplident
                          OR obj_description(i.indexrelid, 'pg_class') IS NOT NULL))
        """, tables)
    if unsupported:
        # What pg_get_constraintdef / pg_get_indexdef do not carry would be lost on the rebuild.
        raise BulkLoadError("the register's tables have exclusion constraints, clustered or replica-identity "
                            "indexes, or comments on keys or indexes, which fast mode would not rebuild; use "
                            "--mode indexed")
    plan.foreign_keys = [(r["table_name"], r["name"], r["definition"]) for r in foreign]
    plan.constraints = [(r["table_name"], r["name"], r["definition"]) for r in keys]
    plan.indexes = [r["definition"] for r in indexes]
    for table, name, _ in plan.foreign_keys:
        await connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for table, name, _ in plan.constraints:
        await connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for row in indexes:
        await connection.execute(f"DROP INDEX {row['name']}")


async def rebuild_keys_and_indexes(connection: asyncpg.Connection, plan: Plan) -> None:
    """Keys and indexes first (parallel index builds), then statistics (the plans of the foreign-key
    checks depend on them), then the foreign keys (each checked with one anti-join)."""
    await connection.execute("SET LOCAL maintenance_work_mem = '1GB'")
    statements = [f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for table, name, definition in
                  plan.constraints] + plan.indexes + [f"ANALYZE {', '.join(plan.filled)}"] + [
        f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for table, name, definition in plan.foreign_keys]
    for statement in statements:
        started = time.perf_counter()
        await connection.execute(statement)
        logger.info("rebuilt", extra={"statement": statement, "seconds": round(time.perf_counter() - started, 3)})


REPEATS_LISTED = 10_000
"""Repeated values fetched per field when a fast load finds some: what the second pass over the file holds."""


@dataclass
class Repeated:
    """Values that more than one loaded row holds (at most `REPEATS_LISTED` of each kind)."""

    codes: list[str] = field(default_factory=list)
    receipts: list[tuple[str, str]] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.codes or self.receipts or self.keys)


async def repeated_values(connection: asyncpg.Connection, plan: Plan) -> Repeated:
    """The values the unique keys dropped by fast mode would refuse, as loaded (the tables held nothing
    before: `plan_and_lock`)."""
    repeated = Repeated()
    repeated.codes = [row["resident_code"] for row in await connection.fetch(
        "SELECT resident_code FROM person GROUP BY resident_code HAVING count(*) > 1 LIMIT $1", REPEATS_LISTED)]
    repeated.receipts = [(row["municipality_code"], row["notification_id"]) for row in await connection.fetch(
        """SELECT municipality_code, notification_id FROM person_version
           GROUP BY municipality_code, notification_id HAVING count(*) > 1 LIMIT $1""", REPEATS_LISTED)]
    if "person_key" in plan.filled:
        repeated.keys = [bytes(row["key"]) for row in await connection.fetch(
            "SELECT key FROM person_key GROUP BY key HAVING count(*) > 1 LIMIT $1", REPEATS_LISTED)]
    return repeated


async def already_known(connection: asyncpg.Connection, prepared: Prepared, key_field: str) -> list[RowProblem]:
    """Rows whose 住民票コード, notification id or unique key the register already holds (indexed mode)."""
    taken = set(await connection.fetchval(
        """SELECT coalesce(array_agg(code), '{}') FROM (
               SELECT resident_code AS code FROM person WHERE resident_code = ANY($1::text[])
               UNION ALL
               SELECT resident_code FROM resident_code_history WHERE resident_code = ANY($1::text[])) AS known""",
        prepared.resident_codes))
    used = {(row["municipality_code"], row["notification_id"]) for row in await connection.fetch(
        """SELECT r.municipality_code, r.notification_id
           FROM unnest($1::text[], $2::text[]) AS wanted (municipality_code, notification_id)
           JOIN person_version r USING (municipality_code, notification_id)""",
        [m for m, _ in prepared.receipts], [n for _, n in prepared.receipts])}
    held = {bytes(row["key"]) for row in await connection.fetch(
        "SELECT key FROM person_key WHERE key = ANY($1::bytea[])", [k for keys in prepared.unique_keys for k in keys])}
    problems = []
    for line, code, receipt, keys in zip(prepared.lines, prepared.resident_codes, prepared.receipts,
                                         prepared.unique_keys, strict=True):
        if code in taken:
            problems.append(RowProblem(line, "resident_code", "is already recorded in the register"))
        if receipt in used:
            problems.append(RowProblem(line, "notification_id", "was already used by this municipality"))
        if any(key in held for key in keys):
            problems.append(RowProblem(line, key_field, "is another person's in the register"))
    return problems
