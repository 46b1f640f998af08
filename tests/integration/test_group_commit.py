"""ApplyNotification under concurrency (group commit, `RegisterEngine.apply_grouped`), both registers on a real
PostgreSQL: concurrent callers share transactions, and each gets exactly what it would get alone — its
version, a refusal naming its rule, the stored answer to a repeat — without changing another's."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from juki.register.v1 import register_pb2 as rpb
from jukilib.batching import Batcher
from jukilib.devcerts import DevPki
from jukilib.errors import AlreadyExists, FailedPrecondition, JukiError
from jukilib.register.api import RegisterApi
from tests.integration.registers import Register, apply, new_person, open_register


@pytest.fixture(scope="module", params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi, Any]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, _, databases):
        yield chosen, api, databases


async def _outcome(api: RegisterApi, request: Any) -> Any:
    try:
        return await apply(api, request)
    except JukiError as error:
        return error


async def test_concurrent_notifications_share_transactions_and_each_gets_its_own_version(
        register: tuple[Register, RegisterApi, Any], span_exporter: InMemorySpanExporter) -> None:
    reg, api, _ = register
    persons = [new_person() for _ in range(200)]
    span_exporter.clear()
    tracer = trace.get_tracer(__name__)

    async def call(person: Any) -> Any:
        with tracer.start_as_current_span("rpc"):  # as the server interceptor opens one per call
            return await apply(api, reg.request(person, f"group-{person.code}"))

    answers = await asyncio.gather(*(call(p) for p in persons))
    assert [a.record.resident_code for a in answers] == [p.code for p in persons]
    assert {a.version for a in answers} == {1}
    assert len({a.name for a in answers}) == 200
    batches = [s for s in span_exporter.get_finished_spans() if s.name == "register.group_commit"]
    sizes = [s.attributes["juki.batch.size"] for s in batches]  # type: ignore[index]
    assert sum(sizes) == 200 and len(batches) < 200  # shared, and nobody left out
    # Each batch's trace links to the calls it served.
    assert sum(len(s.links) for s in batches) == 200


async def test_a_refused_or_reused_notification_does_not_take_its_batch_down(
        register: tuple[Register, RegisterApi, Any]) -> None:
    reg, api, _ = register
    known, unknown, fresh = new_person(), new_person(), new_person()
    first = await apply(api, reg.request(known, "group-known"))
    outcomes = await asyncio.gather(
        _outcome(api, reg.request(known, "group-known")),                       # a repeat: the stored answer
        _outcome(api, reg.request(fresh, "group-known")),                       # id reused with other content
        _outcome(api, reg.request(unknown, "group-remove", kind=rpb.CHANGE_KIND_REMOVE,
                                  reason=rpb.CHANGE_REASON_DEATH)),             # removal of an unknown person
        _outcome(api, reg.request(known, "group-again", event=dt.date(2026, 4, 2))),  # 記載 of a recorded person
        _outcome(api, reg.request(fresh, "group-fresh")),                       # applied
    )
    repeat, reused, unknown_removal, again, applied = outcomes
    assert repeat == first
    assert isinstance(reused, AlreadyExists) and reused.reason == "NOTIFICATION_ID_REUSED"
    assert isinstance(unknown_removal, FailedPrecondition) and unknown_removal.reason == "UNKNOWN_PERSON"
    assert isinstance(again, FailedPrecondition) and again.reason == "ALREADY_RECORDED"
    assert applied.version == 1 and applied.record.resident_code == fresh.code


async def test_the_same_notification_sent_concurrently_is_applied_once(
        register: tuple[Register, RegisterApi, Any]) -> None:
    reg, api, databases = register
    person = new_person()
    answers = await asyncio.gather(*(apply(api, reg.request(person, "group-twice")) for _ in range(20)))
    assert len({a.SerializeToString(deterministic=True) for a in answers}) == 1
    connection = await asyncpg.connect(databases.url)
    try:
        schema = reg.name
        versions = await connection.fetchval(
            f"SELECT count(*) FROM {schema}.person_version WHERE resident_code = $1", person.code)
        outbox = await connection.fetchval(
            f"SELECT count(*) FROM {schema}.outbox o JOIN {schema}.person p ON p.id = o.person_id "
            "WHERE p.resident_code = $1", person.code)
    finally:
        await connection.close()
    assert (versions, outbox) == (1, 1)


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_runs() -> None:
    calls: list[int] = []
    first_batch_out = asyncio.Event()

    async def flaky(notifications: Any) -> list[Any]:
        calls.append(len(notifications))
        if len(calls) == 1:
            first_batch_out.set()
            raise ConnectionError("database gone")
        return list(notifications)

    group: Batcher[str, str] = Batcher(flaky, span_name="register.group_commit", max_batch=128, runners=1)
    first = asyncio.ensure_future(group.submit("a"))
    await first_batch_out.wait()  # the first batch is out (alone) before the others are queued
    rest = [asyncio.ensure_future(group.submit(name)) for name in "bcd"]
    with pytest.raises(ConnectionError):
        await first
    assert await asyncio.gather(*rest) == ["b", "c", "d"]
    assert calls == [1, 3]
