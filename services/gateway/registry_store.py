"""SQL of the operator registry and organisation status. Functions take a connection; callers own it."""

from __future__ import annotations

import datetime as dt

import asyncpg

from jukilib.errors import AlreadyExists, FieldViolation, InvalidArgument


async def insert_operator(connection: asyncpg.Connection, operator_id: str, *, organization: str,
                          roles: frozenset[str], valid_from: dt.datetime | None, valid_until: dt.datetime | None,
                          by: str) -> asyncpg.Record:
    try:
        row: asyncpg.Record | None = await connection.fetchrow(
            """INSERT INTO operator (operator_id, organization, roles, valid_from, valid_until, created_by, updated_by)
               VALUES ($1, $2, $3, coalesce($4, now()), $5, $6, $6) RETURNING *""",
            operator_id, organization, sorted(roles), valid_from, valid_until, by)
    except asyncpg.UniqueViolationError:
        raise AlreadyExists("an operator with this id is already registered", "OPERATOR_EXISTS") from None
    assert row is not None  # INSERT … RETURNING always returns the row
    return row


async def fetch_operator(connection: asyncpg.Connection, operator_id: str, *,
                         for_update: bool = False) -> asyncpg.Record | None:
    """The operator's row (`for_update`: locked to the end of the transaction, the state before a change)."""
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT * FROM operator WHERE operator_id = $1{' FOR UPDATE' if for_update else ''}", operator_id)
    return row


async def list_operators(connection: asyncpg.Connection, organization: str, after: str,
                         limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await connection.fetch(
        """SELECT * FROM operator WHERE ($1 = '' OR organization = $1) AND operator_id > $2
           ORDER BY operator_id LIMIT $3""", organization, after, limit)
    return rows


async def update_operator(connection: asyncpg.Connection, operator_id: str, *, roles: frozenset[str] | None,
                          valid_from: dt.datetime | None, valid_until: dt.datetime | None, clear_until: bool,
                          by: str) -> asyncpg.Record | None:
    """Change what is given (`clear_until`: remove the end of the validity period)."""
    try:
        return await _update_operator(connection, operator_id, sorted(roles) if roles is not None else None,
                                      valid_from, valid_until, clear_until, by)
    except asyncpg.CheckViolationError:  # the new period would end before it starts
        raise InvalidArgument([FieldViolation("operator.valid_until", "must be after valid_from")]) from None


async def _update_operator(connection: asyncpg.Connection, operator_id: str, *args: object) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        """UPDATE operator SET roles = coalesce($2, roles), valid_from = coalesce($3, valid_from),
                  valid_until = CASE WHEN $5 THEN NULL ELSE coalesce($4, valid_until) END,
                  updated_by = $6, update_time = now()
           WHERE operator_id = $1 RETURNING *""",
        operator_id, *args)
    return row


async def set_operator_status(connection: asyncpg.Connection, operator_id: str, status: str,
                              by: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        """UPDATE operator SET status = $2, updated_by = $3, update_time = now()
           WHERE operator_id = $1 RETURNING *""", operator_id, status, by)
    return row


async def set_organization_status(connection: asyncpg.Connection, organization: str, status: str,
                                  by: str) -> asyncpg.Record:
    row: asyncpg.Record | None = await connection.fetchrow(
        """INSERT INTO organization_status (organization, status, updated_by) VALUES ($1, $2, $3)
           ON CONFLICT (organization) DO UPDATE SET status = $2, updated_by = $3, update_time = now()
           RETURNING *""", organization, status, by)
    assert row is not None  # an upsert … RETURNING always returns the row
    return row


async def organization_status(connection: asyncpg.Connection, organization: str, *,
                              for_update: bool = False) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT * FROM organization_status WHERE organization = $1{' FOR UPDATE' if for_update else ''}",
        organization)
    return row
