"""The disclosure service's retention holds (住基法 30-6 ③ / 30-41 ③ with 30-32 … 30-35): the subject of every
disclosure or correction case not closed, each once, in code order, page by page; a closed case holds nothing.
What the registers do with them: tests/integration/test_retention.py, tests/e2e/test_retention.py."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki_services.disclosure import store
from tests.conftest import fresh_database

OPEN, CLOSED = int(pb.DISCLOSURE_STATE_RECEIVED), int(pb.DISCLOSURE_STATE_CLOSED)
CORRECTION_OPEN, CORRECTION_CLOSED = int(pb.CORRECTION_STATE_INVESTIGATING), int(pb.CORRECTION_STATE_CLOSED)


async def _disclosure(connection: asyncpg.Connection, code: str, state: int) -> uuid.UUID:
    case_id = uuid.uuid4()
    await connection.execute(
        """INSERT INTO disclosure_case (id, subject_resident_code, requester_kind, requester_name, identity_documents,
                                        channel, scopes, receive_time, state, deadline, target_date, opened_by)
           VALUES ($1, $2, 1, '請求者 本人', '{1}', 1, '{1}', now(), $3, $4, $4, 'disclosure-desk')""",
        case_id, code, state, dt.date(2026, 12, 1))
    return case_id


async def _correction(connection: asyncpg.Connection, disclosure: uuid.UUID, code: str, state: int) -> None:
    await connection.execute(
        """INSERT INTO correction_case (id, disclosure_case_id, subject_resident_code, file, items, receive_time,
                                        state, opened_by)
           VALUES ($1, $2, $3, 1, '[]', now(), $4, 'disclosure-desk')""", uuid.uuid4(), disclosure, code, state)


async def test_the_subjects_of_open_cases_are_held_each_once_and_closed_cases_hold_nothing(admin_url: str) -> None:
    databases = await fresh_database(admin_url)
    owner = await asyncpg.connect(databases["disclosure"].migration_url)
    try:
        await owner.execute("SET search_path TO disclosure")
        await _disclosure(owner, "00000000004", OPEN)
        await _disclosure(owner, "00000000004", OPEN)  # two open cases, one hold
        corrected = await _disclosure(owner, "00000000002", CLOSED)
        await _correction(owner, corrected, "00000000002", CORRECTION_OPEN)  # the correction is still open
        finished = await _disclosure(owner, "00000000003", CLOSED)
        await _correction(owner, finished, "00000000003", CORRECTION_CLOSED)
        await _disclosure(owner, "00000000001", OPEN)
    finally:
        await owner.close()
    runtime = await asyncpg.connect(databases["disclosure"].url)
    try:
        await runtime.execute("SET search_path TO disclosure")
        first = await store.retention_holds(runtime, "", 2)
        rest = await store.retention_holds(runtime, first[-1], 2)
    finally:
        await runtime.close()
    assert (first, rest) == (["00000000001", "00000000002"], ["00000000004"])
