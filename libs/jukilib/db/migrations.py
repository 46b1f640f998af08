"""Numbered SQL migrations per service: applied in order under an advisory lock, recorded with a
checksum. A changed file that was already applied stops start-up.

Files are named `NNNN_description.sql`. A service's migrations may come from several directories
(the register engine's shared tables in `jukilib/register/migrations`, numbered below 0100, then the
service's own); versions must be unique across them. Files are plain SQL, run with `search_path`
set to the service's schema and the setting `juki.runtime_role` naming the role that runs the
service, so that grants can be written once: ``GRANT ... TO "<runtime role>"`` via `format()`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations cannot be applied (changed file, duplicate version, failed statement)."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directories: Sequence[Path]) -> list[Migration]:
    """Every `NNNN_*.sql` file of `directories`, ordered by version."""
    found: dict[int, Migration] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.sql")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise MigrationError(f"migration file name not of the form NNNN_name.sql: {path.name}")
            version = int(match.group(1))
            if version in found:
                raise MigrationError(f"two migrations share version {version:04d}: {path.name}")
            found[version] = Migration(version, path.stem, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def _applied(connection: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await connection.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: (row["name"], row["checksum"]) for row in rows}


def _check_unchanged(migrations: Sequence[Migration], applied: dict[int, tuple[str, str]]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded[1] != migration.checksum:
            raise MigrationError(f"applied migration {migration.name} was changed (checksum differs)")


async def pending(connection: asyncpg.Connection, schema: str, migrations: Sequence[Migration]) -> list[Migration]:
    """Migrations not yet applied in `schema`; raises if an applied one was changed."""
    await connection.execute(f"SET search_path TO {_ident(schema)}")
    applied = await _applied(connection)
    _check_unchanged(migrations, applied)
    return [m for m in migrations if m.version not in applied]


async def apply(
    connection: asyncpg.Connection, schema: str, migrations: Sequence[Migration], runtime_role: str
) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns the names applied."""
    lock_key = f"juki.migrations.{schema}"
    await connection.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
    try:
        await connection.execute(f"SET search_path TO {_ident(schema)}")
        await connection.execute(_CREATE_TABLE)
        todo = await pending(connection, schema, migrations)
        for migration in todo:
            await _apply_one(connection, schema, migration, runtime_role)
        return [m.name for m in todo]
    finally:
        await connection.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)


async def _apply_one(connection: asyncpg.Connection, schema: str, migration: Migration, runtime_role: str) -> None:
    async with connection.transaction():
        await connection.execute(f"SET LOCAL search_path TO {_ident(schema)}")
        await connection.execute("SELECT set_config('juki.runtime_role', $1, true)", runtime_role)
        try:
            await connection.execute(migration.sql)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"migration {migration.name} failed: SQLSTATE {exc.sqlstate}") from exc
        await connection.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            migration.version, migration.name, migration.checksum,
        )


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise MigrationError("schema names are lower-case identifiers")
    return name
