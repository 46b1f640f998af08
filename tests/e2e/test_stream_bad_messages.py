"""Streams answer bad messages (issue 15): a `StreamNotifications` message that cannot be decoded, or that
holds a text no store can take, ends the stream promptly with INVALID_ARGUMENT naming the field, after
the answers to the messages before it, and the refusal is in the operation log. Before, the client waited
for its own deadline (or forever) and the log had nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc

from juki.identity.v1 import identity_pb2
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import generate_residents
from tests.conftest import RunningSuite, field_violations

STREAM = "/juki.identity.v1.IdentityService/StreamNotifications"
PROMPT = 5.0  # a bound on a hang (the client's deadline is 30 s), not a benchmark
UNDECODABLE = b"\x0a\x05ab"  # field 1 says 5 bytes follow; 2 do


@dataclass
class Outcome:
    indexes: list[int]
    code: grpc.StatusCode
    fields: list[str]
    seconds: float


def _notifications(seed: int, count: int) -> list[identity_pb2.ApplyNotificationRequest]:
    return [birth_notification(r, f"bad-stream-{uuid.uuid4()}", dt.date(2026, 4, 1),
                               dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC))
            for r in generate_residents(count, seed=seed)]


def _message(notifications: list[identity_pb2.ApplyNotificationRequest]) -> bytes:
    return identity_pb2.StreamNotificationsRequest(notifications=notifications).SerializeToString()


async def _stream(suite: RunningSuite, messages: list[bytes], request_id: str) -> Outcome:
    """Send `messages` as raw bytes, then keep the sending side open (a client waiting for its answers)
    until the stream ends."""
    ended = asyncio.Event()

    async def requests() -> AsyncIterator[bytes]:
        for data in messages:
            yield data
        await ended.wait()

    indexes: list[int] = []
    code, fields = grpc.StatusCode.OK, []
    async with secure_channel(suite.gateway, suite.client_tls("maebashi-cs")) as channel:
        call = channel.stream_stream(STREAM, response_deserializer=identity_pb2.StreamNotificationsResponse.FromString)
        started = time.monotonic()
        try:
            async for answer in call(requests(), metadata=purpose_metadata("CS-NOTIFY-30-6", request_id=request_id),
                                     timeout=30):
                indexes.extend(outcome.index for outcome in answer.outcomes)
        except grpc.aio.AioRpcError as error:
            code, fields = error.code(), field_violations(error)
        finally:
            ended.set()
    return Outcome(indexes, code, fields, time.monotonic() - started)


async def _log_rows(suite: RunningSuite, request_id: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        return await connection.fetch("SELECT decision, status, reason, resident_codes FROM operation_log "
                                      "WHERE request_id = $1 ORDER BY sequence", request_id)
    finally:
        await connection.close()


async def test_an_undecodable_message_ends_the_stream_with_invalid_argument_and_is_logged(
        suite: RunningSuite) -> None:
    request_id = str(uuid.uuid4())
    outcome = await _stream(suite, [_message(_notifications(15_300, 3)), UNDECODABLE], request_id)
    assert (outcome.code, outcome.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])
    assert outcome.indexes == [0, 1, 2]  # the message before it was answered
    assert outcome.seconds < PROMPT, f"answered after {outcome.seconds:.1f}s"
    rows = await _log_rows(suite, request_id)
    assert [(r["decision"], r["status"]) for r in rows] == [(1, "OK"), (2, "INVALID_ARGUMENT")]
    assert "message 2" in rows[-1]["reason"] and rows[-1]["resident_codes"] == []


async def test_a_nul_byte_in_a_notification_ends_the_stream_with_invalid_argument_naming_it_and_is_logged(
        suite: RunningSuite) -> None:
    request_id = str(uuid.uuid4())
    poisoned = _notifications(15_301, 2)
    poisoned[1].record.full_name = "群馬\x00太郎"
    outcome = await _stream(suite, [_message(_notifications(15_302, 2)), _message(poisoned)], request_id)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.fields == ["notifications[1].record.full_name"]
    assert outcome.indexes == [0, 1]
    assert outcome.seconds < PROMPT, f"answered after {outcome.seconds:.1f}s"
    rows = await _log_rows(suite, request_id)
    assert [(r["decision"], r["status"]) for r in rows] == [(1, "OK"), (2, "INVALID_ARGUMENT")]
    assert "message 2" in rows[-1]["reason"]


async def test_a_first_message_that_cannot_be_decoded_is_refused_before_anything_is_applied(
        suite: RunningSuite) -> None:
    request_id = str(uuid.uuid4())
    outcome = await _stream(suite, [UNDECODABLE, _message(_notifications(15_303, 2))], request_id)
    assert (outcome.code, outcome.fields, outcome.indexes) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"], [])
    assert outcome.seconds < PROMPT, f"answered after {outcome.seconds:.1f}s"
    rows = await _log_rows(suite, request_id)
    assert [(r["decision"], r["status"]) for r in rows] == [(2, "INVALID_ARGUMENT")]
