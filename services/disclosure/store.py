"""SQL of disclosure cases. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

_COLUMNS = """id, request_id, subject_resident_code, requester_kind, requester_name, identity_documents,
    channel, scopes, receive_time, state, deadline, target_date, revision, create_time, update_time"""


@dataclass(frozen=True)
class NewCase:
    id: uuid.UUID
    request_id: str | None
    subject_resident_code: str
    requester_kind: int
    requester_name: str
    identity_documents: list[int]
    channel: int
    scopes: list[int]
    receive_time: dt.datetime
    state: int
    deadline: dt.date
    target_date: dt.date
    opened_by: str


async def find_by_request_id(connection: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(f"SELECT {_COLUMNS} FROM disclosure_case WHERE request_id = $1", request_id)


async def insert_case(connection: asyncpg.Connection, case: NewCase) -> asyncpg.Record:
    row = await connection.fetchrow(
        f"""INSERT INTO disclosure_case (id, request_id, subject_resident_code, requester_kind, requester_name,
                identity_documents, channel, scopes, receive_time, state, deadline, target_date, opened_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            RETURNING {_COLUMNS}""",
        case.id, case.request_id, case.subject_resident_code, case.requester_kind, case.requester_name,
        case.identity_documents, case.channel, case.scopes, case.receive_time, case.state, case.deadline,
        case.target_date, case.opened_by,
    )
    assert row is not None
    await connection.execute(
        "INSERT INTO disclosure_case_event (case_id, seq, state, actor) VALUES ($1, 1, $2, $3)",
        case.id, case.state, case.opened_by,
    )
    return row


async def get_case(connection: asyncpg.Connection, case_id: uuid.UUID) -> asyncpg.Record | None:
    return await connection.fetchrow(f"SELECT {_COLUMNS} FROM disclosure_case WHERE id = $1", case_id)


async def list_cases(
    connection: asyncpg.Connection, before: tuple[dt.datetime, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    if before is None:
        return await connection.fetch(
            f"SELECT {_COLUMNS} FROM disclosure_case ORDER BY receive_time DESC, id DESC LIMIT $1", limit)
    return await connection.fetch(
        f"""SELECT {_COLUMNS} FROM disclosure_case WHERE (receive_time, id) < ($1, $2)
            ORDER BY receive_time DESC, id DESC LIMIT $3""",
        before[0], before[1], limit,
    )
