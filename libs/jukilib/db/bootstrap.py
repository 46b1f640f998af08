"""Create the database, one schema per service and two roles per service.

Each service owns a schema named after it. `juki_<service>_owner` owns the schema and applies the
migrations; `juki_<service>` runs the service with only the grants its migrations give it (for
example: INSERT and SELECT, but no UPDATE or DELETE, on append-only history). No service role can
read another service's schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

DEFAULT_DATABASE = "juki"


@dataclass(frozen=True)
class ServiceDatabase:
    """Connection URLs of one service."""

    schema: str
    runtime_role: str
    url: str
    migration_url: str


def runtime_role(service: str) -> str:
    return f"juki_{service}"


def owner_role(service: str) -> str:
    return f"juki_{service}_owner"


def with_credentials(url: str, user: str, password: str, database: str) -> str:
    """`url` with another user, password and database (host, port and query kept)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user)}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError("identifiers must be lower-case names")
    return f'"{name}"'


async def _ensure_role(connection: asyncpg.Connection, role: str, password: str) -> None:
    exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    verb = "ALTER" if exists else "CREATE"
    # Passwords cannot be bound parameters in DDL; quote_literal does the escaping server-side.
    literal = await connection.fetchval("SELECT quote_literal($1)", password)
    await connection.execute(f"{verb} ROLE {_ident(role)} LOGIN PASSWORD {literal}")


async def _ensure_database(admin: asyncpg.Connection, database: str) -> None:
    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        await admin.execute(f"CREATE DATABASE {_ident(database)}")


async def bootstrap(
    admin_url: str,
    services: Iterable[str],
    passwords: Mapping[str, str],
    database: str = DEFAULT_DATABASE,
) -> dict[str, ServiceDatabase]:
    """Create (or update) the database, schemas and roles; return each service's URLs.

    `passwords` maps role names to passwords. Safe to run again: everything is created if missing.
    """
    services = list(services)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute("SELECT pg_advisory_lock(hashtext('juki.bootstrap'))")
        await _ensure_database(admin, database)
        for service in services:
            for role in (owner_role(service), runtime_role(service)):
                await _ensure_role(admin, role, passwords[role])
    finally:
        await admin.close()
    target = await asyncpg.connect(with_credentials(admin_url, *_admin_credentials(admin_url), database))
    try:
        await target.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        await target.execute(f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC")
        for service in services:
            await _ensure_schema(target, database, service)
    finally:
        await target.close()
    return {
        service: ServiceDatabase(
            schema=service,
            runtime_role=runtime_role(service),
            url=with_credentials(admin_url, runtime_role(service), passwords[runtime_role(service)], database),
            migration_url=with_credentials(admin_url, owner_role(service), passwords[owner_role(service)], database),
        )
        for service in services
    }


def _admin_credentials(admin_url: str) -> tuple[str, str]:
    parts = urlsplit(admin_url)
    return parts.username or "postgres", parts.password or ""


async def _ensure_schema(connection: asyncpg.Connection, database: str, service: str) -> None:
    owner, runtime = _ident(owner_role(service)), _ident(runtime_role(service))
    schema = _ident(service)
    await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}")
    await connection.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
    await connection.execute(f"GRANT USAGE ON SCHEMA {schema} TO {runtime}")
    await connection.execute(f"GRANT CONNECT ON DATABASE {_ident(database)} TO {owner}, {runtime}")
    # The runtime role must be able to read what the owner creates only where migrations grant it.
    for role in (owner, runtime):
        await connection.execute(f"ALTER ROLE {role} IN DATABASE {_ident(database)} SET search_path = {schema}")
