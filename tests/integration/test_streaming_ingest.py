"""StreamNotifications and the batch apply behind it (`RegisterEngine.apply_many`), for both registers
on a real PostgreSQL: every request answered in order with its index; invalid, refused and repeated
requests answered as ApplyNotification would answer them alone, without taking the others down; a
person's notifications in any order within a stream ending as applied in event order; the same rows
(versions, receipts, outbox, 個人番号, former codes, resolved 12-5 reports) as the unary path."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from juki_services.identity.numbers import IndividualNumbers
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.errors import FailedPrecondition, InvalidArgument, JukiError
from jukilib.grpc.channels import secure_channel
from jukilib.register import store
from jukilib.register.api import RegisterApi
from jukilib.register.reports import NewReport
from jukilib.register.rows import outbox_key
from jukilib.register.streaming import stream_notifications
from tests.conftest import RunningSuite
from tests.integration.registers import (
    MAEBASHI,
    REGISTERS,
    Person,
    Register,
    apply,
    new_person,
    open_register,
)
from tests.integration.test_register_ordering import STEPS

D = dt.date
RESPONSES = {"identity": (identity_pb2.StreamNotificationsResponse, "resident_version"),
             "annex": (annex_pb2.StreamNotificationsResponse, "annex_resident_version")}
STREAM_REQUESTS = {"identity": identity_pb2.StreamNotificationsRequest, "annex": annex_pb2.StreamNotificationsRequest}


@dataclass
class Setup:
    reg: Register
    api: RegisterApi
    database: Database


@pytest.fixture(scope="module", params=["identity", "annex"])
async def setup(request: pytest.FixtureRequest, admin_url: str, pki: DevPki, home: Path,
                span_exporter: InMemorySpanExporter) -> AsyncIterator[Setup]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, database, _):
        yield Setup(chosen, api, database)


async def _requests(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def chunked(register: str, requests: list[Any], per_message: int) -> list[Any]:
    """Request messages carrying `per_message` notifications each (the last one the rest)."""
    return [STREAM_REQUESTS[register](notifications=requests[i:i + per_message])
            for i in range(0, len(requests), per_message)]


def outcomes_of(responses: list[Any]) -> list[Any]:
    """Every notification's outcome, in stream order."""
    return [outcome for response in responses for outcome in response.outcomes]


async def stream(setup: Setup, requests: list[Any], *, max_batch: int = 500, per_message: int = 1,
                 municipality: str = MAEBASHI) -> list[Any]:
    """StreamNotifications through the servicer's handler, as the CS of `municipality`: the outcome of
    each notification, in stream order."""
    response_type, field = RESPONSES[setup.reg.name]
    wrapped = chunked(setup.reg.name, requests, per_message)
    responses = [answer async for answer in stream_notifications(
        setup.api, _requests(wrapped), response_type, field, municipality, max_batch=max_batch)]
    assert [len(r.outcomes) for r in responses] == [len(m.notifications) for m in wrapped]  # one answer per message
    return outcomes_of(responses)


def version_of(setup: Setup, answer: Any) -> Any:
    _, field = RESPONSES[setup.reg.name]
    assert answer.WhichOneof("result") == field, answer.error
    return getattr(answer, field)


def error_of(answer: Any) -> tuple[int, str]:
    assert answer.WhichOneof("result") == "error"
    for detail in answer.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return answer.error.code, info.reason
    raise AssertionError("no ErrorInfo")


def _modify(reg: Register, person: Person, notification_id: str, event: dt.date, **kwargs: Any) -> Any:
    return reg.request(person, notification_id, kind=rpb.CHANGE_KIND_MODIFY,
                       reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY, event=event, **kwargs)


# --- answers ---------------------------------------------------------------------------------------

async def test_every_notification_is_answered_in_order_with_its_version(setup: Setup) -> None:
    persons = [new_person() for _ in range(1200)]
    answers = await stream(setup, [setup.reg.request(p, f"bulk-{p.code}") for p in persons])
    assert [a.index for a in answers] == list(range(1200))
    versions = [version_of(setup, a) for a in answers]
    assert all(v.version == 1 and v.record.resident_code == p.code for v, p in zip(versions, persons, strict=True))
    found = await setup.api.lookup(setup.reg.lookup(persons[777].code))
    assert found.name == versions[777].name.rsplit("/versions/", 1)[0]
    # The answer is the version as any read shows it (record, change information, times).
    history, _ = await setup.api.list_versions(found.name, 0, "")
    assert history == [versions[777]]
    if setup.reg.name == "identity":
        assert versions[777].record.individual_number == persons[777].number


async def test_mixed_stream_answers_each_request_as_apply_would_and_applies_only_the_valid(setup: Setup) -> None:
    reg = setup.reg
    known, fresh, unknown, reused = new_person(), new_person(), new_person(), new_person()
    earlier = await apply(setup.api, reg.request(known, "mix-earlier"))
    invalid = reg.request(new_person(), "")  # notification id missing
    invalid.record.full_name = ""
    requests = [
        reg.request(fresh, "mix-fresh"),                                            # 0 applied
        invalid,                                                                    # 1 INVALID_ARGUMENT
        reg.request(unknown, "mix-unknown", kind=rpb.CHANGE_KIND_REMOVE,           # 2 FAILED_PRECONDITION
                    reason=rpb.CHANGE_REASON_DEATH),
        reg.request(known, "mix-earlier"),                                          # 3 repeat of an earlier call
        reg.request(known, "mix-again", event=D(2026, 4, 2)),                       # 4 ALREADY_RECORDED
        reg.request(reused, "mix-fresh"),                                           # 5 reuse: ALREADY_EXISTS
        reg.request(fresh, "mix-fresh"),                                            # 6 repeat within the stream
    ]
    answers = await stream(setup, requests)
    assert [a.index for a in answers] == list(range(7))
    first = version_of(setup, answers[0])
    assert first.version == 1
    assert error_of(answers[1]) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], "INVALID_ARGUMENT")
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in answers[1].error.details)
    assert {v.field for v in bad_request.field_violations} == {"notification_id", "record.full_name"}
    assert error_of(answers[2]) == (grpc.StatusCode.FAILED_PRECONDITION.value[0], "UNKNOWN_PERSON")
    assert version_of(setup, answers[3]) == earlier
    assert error_of(answers[4]) == (grpc.StatusCode.FAILED_PRECONDITION.value[0], "ALREADY_RECORDED")
    assert error_of(answers[5]) == (grpc.StatusCode.ALREADY_EXISTS.value[0], "NOTIFICATION_ID_REUSED")
    assert version_of(setup, answers[6]) == first
    # Only the valid ones were applied, once.
    for person in (unknown, reused):
        with pytest.raises(JukiError):
            await setup.api.lookup(reg.lookup(person.code))
    current = await setup.api.lookup(reg.lookup(fresh.code))
    assert current.version == 1
    versions, _ = await setup.api.list_versions(current.name, 0, "")
    assert len(versions) == 1


async def test_a_caller_that_is_not_a_municipality_gets_permission_denied_per_item(setup: Setup) -> None:
    answers = await stream(setup, [setup.reg.request(new_person(), "tokyo-s1")], municipality="131016")
    assert error_of(answers[0]) == (grpc.StatusCode.PERMISSION_DENIED.value[0], "NOT_A_NOTIFYING_MUNICIPALITY")


async def test_chunks_of_any_size_are_answered_one_response_per_message_with_stream_indexes(setup: Setup) -> None:
    persons = [new_person() for _ in range(23)]
    requests = [setup.reg.request(p, f"chunk-{p.code}") for p in persons]
    requests[5].record.resident_code = "123"  # invalid: answered with its own error, in its place
    outcomes = await stream(setup, requests, per_message=7, max_batch=4)
    assert [o.index for o in outcomes] == list(range(23))
    assert error_of(outcomes[5])[0] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert all(version_of(setup, o).record.resident_code == p.code
               for i, (o, p) in enumerate(zip(outcomes, persons, strict=True)) if i != 5)


@pytest.mark.parametrize("count", [0, 1001])
async def test_a_message_with_no_or_too_many_notifications_ends_the_stream_after_what_came_before(
        setup: Setup, count: int) -> None:
    response_type, field = RESPONSES[setup.reg.name]
    person = new_person()
    good = STREAM_REQUESTS[setup.reg.name](notifications=[setup.reg.request(person, f"before-bad-{count}")])
    bad = STREAM_REQUESTS[setup.reg.name](notifications=[setup.reg.request(new_person(), f"n-{count}-{i}")
                                                         for i in range(count)])
    answers = []
    with pytest.raises(InvalidArgument) as refused:
        async for answer in stream_notifications(setup.api, _requests([good, bad]), response_type, field, MAEBASHI):
            answers.append(answer)
    assert [v.field for v in refused.value.violations] == ["notifications"]
    assert [version_of(setup, o).record.resident_code for o in outcomes_of(answers)] == [person.code]


async def test_a_client_that_waits_for_each_answer_is_answered(setup: Setup) -> None:
    """The handler never holds an answer back waiting for more requests (no deadlock with a client
    that sends the next request only after the answer to the previous one)."""
    response_type, field = RESPONSES[setup.reg.name]
    persons = [new_person() for _ in range(4)]
    answered = asyncio.Queue[Any]()

    async def one_at_a_time() -> AsyncIterator[Any]:
        for person in persons:
            yield STREAM_REQUESTS[setup.reg.name](notifications=[setup.reg.request(person, f"pingpong-{person.code}")])
            await asyncio.wait_for(answered.get(), 10)

    answers = []
    async for answer in stream_notifications(setup.api, one_at_a_time(), response_type, field, MAEBASHI):
        answers.append(answer)
        answered.put_nowait(answer)
    assert [o.index for o in outcomes_of(answers)] == [0, 1, 2, 3]


async def test_what_was_read_is_answered_before_a_broken_stream_fails(setup: Setup) -> None:
    response_type, field = RESPONSES[setup.reg.name]
    persons = [new_person() for _ in range(3)]

    async def broken() -> AsyncIterator[Any]:
        for person in persons:
            yield STREAM_REQUESTS[setup.reg.name](notifications=[setup.reg.request(person, f"broken-{person.code}")])
        raise ConnectionResetError("the client went away")

    answers = []
    with pytest.raises(ConnectionResetError):
        async for answer in stream_notifications(setup.api, broken(), response_type, field, MAEBASHI):
            answers.append(answer)
    assert [version_of(setup, o).version for o in outcomes_of(answers)] == [1, 1, 1]


# --- ordering --------------------------------------------------------------------------------------

def _life(reg: Register, person: Person, tag: str, same_day: list[bool] | None = None) -> list[Any]:
    """The steps of `test_register_ordering` for one person, in event order."""
    requests, day = [], D(2025, 1, 1)
    for index, (kind, reason) in enumerate(STEPS):
        if index and not (same_day and same_day[index]):
            day += dt.timedelta(days=7)
        version = replace(person, address=f"群馬県前橋市大手町{index + 1}丁目1番1号")
        notify_time = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(minutes=index)
        requests.append(reg.request(version, f"{tag}-{index}", kind=kind, reason=reason, event=day,
                                    notify_time=notify_time))
    return requests


async def _state(setup: Setup, code: str) -> tuple[Any, list[Any]]:
    current = await setup.api.lookup(setup.reg.lookup(code))
    versions, _ = await setup.api.list_versions(current.name, 0, "")
    history = [(v.change.notification_id.split("-")[-1], v.state, v.record.address) for v in versions]
    return (current.state, current.record.address, current.change.notification_id.split("-")[-1]), history


async def test_a_persons_notifications_in_one_batch_in_any_order_end_as_applied_in_event_order(setup: Setup) -> None:
    in_order, shuffled = new_person(), new_person()
    for request in _life(setup.reg, in_order, in_order.code):
        await apply(setup.api, request)
    requests = _life(setup.reg, shuffled, shuffled.code)
    random.Random(7).shuffle(requests)
    answers = await stream(setup, requests)
    assert all(a.WhichOneof("result") != "error" for a in answers), [a.error for a in answers]
    assert await _state(setup, shuffled.code) == await _state(setup, in_order.code)
    # Versions are numbered in event order (the batch applies a person's notifications in that order).
    current = await setup.api.lookup(setup.reg.lookup(shuffled.code))
    versions, _ = await setup.api.list_versions(current.name, 0, "")
    assert [v.version for v in versions] == list(range(1, len(STEPS) + 1))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), same_day=st.lists(st.booleans(), min_size=len(STEPS), max_size=len(STEPS)),
       max_batch=st.integers(min_value=1, max_value=8))
async def test_any_arrival_order_and_batching_gives_the_same_record_and_history(
        setup: Setup, same_day: list[bool], max_batch: int, data: st.DataObject) -> None:
    """The ordering property through streams cut in batches of any size, resending what was refused."""
    in_order, shuffled = new_person(), new_person()
    for request in _life(setup.reg, in_order, in_order.code, same_day):
        await apply(setup.api, request)
    requests = _life(setup.reg, shuffled, shuffled.code, same_day)
    pending = [requests[i] for i in data.draw(st.permutations(range(len(requests))))]
    while pending:
        answers = await stream(setup, pending, max_batch=max_batch)
        refused = [r for r, a in zip(pending, answers, strict=True) if a.WhichOneof("result") == "error"]
        assert all(error_of(a)[0] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
                   for a in answers if a.WhichOneof("result") == "error")
        assert len(refused) < len(pending), "no progress"
        pending = refused
    assert await _state(setup, shuffled.code) == await _state(setup, in_order.code)


async def test_late_notification_in_a_stream_is_kept_in_history_without_overwriting_current(setup: Setup) -> None:
    reg, person = setup.reg, new_person()
    await apply(setup.api, reg.request(person, "slate-1", event=D(2026, 1, 10)))
    person.address = "群馬県前橋市新しい町2丁目2番2号"
    await apply(setup.api, _modify(reg, person, "slate-3", D(2026, 3, 1)))
    middle = replace(person, address="群馬県前橋市途中の町1丁目1番1号")
    newest = replace(person, address="群馬県前橋市最後の町9丁目9番9号")
    answers = await stream(setup, [_modify(reg, middle, "slate-2", D(2026, 2, 1)),
                                   _modify(reg, newest, "slate-4", D(2026, 3, 5))])
    assert [version_of(setup, a).version for a in answers] == [3, 4]
    current = await setup.api.lookup(reg.lookup(person.code))
    assert current.record.address == newest.address and current.version == 4
    versions, _ = await setup.api.list_versions(current.name, 0, "")
    assert [v.change.notification_id for v in versions] == ["slate-1", "slate-2", "slate-3", "slate-4"]
    assert [v.version for v in versions] == [1, 3, 2, 4]


# --- the 住民票コード chain -------------------------------------------------------------------------

async def test_resident_code_change_inside_a_stream_keeps_the_chain(setup: Setup) -> None:
    reg = setup.reg
    person, other, stranger = new_person(), new_person(), new_person()
    old_code = person.code
    changed = replace(person, code=new_person().code)
    taking = replace(other, code=changed.code)
    requests = [
        reg.request(person, "schain-1", event=D(2026, 1, 1)),
        reg.request(other, "schain-2", event=D(2026, 1, 1)),
        reg.request(changed, "schain-3", kind=rpb.CHANGE_KIND_MODIFY,
                    reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1), previous_code=old_code),
        reg.request(taking, "schain-4", kind=rpb.CHANGE_KIND_MODIFY,
                    reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 2),
                    previous_code=other.code),
        reg.request(replace(stranger, code=new_person().code), "schain-5", kind=rpb.CHANGE_KIND_MODIFY,
                    reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1),
                    previous_code=stranger.code),
        _modify(reg, replace(changed, address="群馬県前橋市後の町5丁目5番5号"), "schain-6", D(2026, 3, 1)),
    ]
    answers = await stream(setup, requests)
    assert version_of(setup, answers[2]).record.resident_code == changed.code
    assert error_of(answers[3])[1] == "RESIDENT_CODE_IN_USE"
    assert error_of(answers[4])[1] == "UNKNOWN_PREVIOUS_RESIDENT_CODE"
    assert version_of(setup, answers[5]).version == 3
    by_old = await setup.api.lookup(reg.lookup(old_code))
    by_new = await setup.api.lookup(reg.lookup(changed.code))
    assert by_old.name == by_new.name and by_new.record.resident_code == changed.code
    assert by_new.record.address == "群馬県前橋市後の町5丁目5番5号"
    async with setup.database.connection() as connection:
        kept = await connection.fetch("SELECT resident_code FROM resident_code_history WHERE person_id = $1",
                                      uuid.UUID(by_new.name.split("/")[1]))
    assert [row["resident_code"] for row in kept] == [old_code]


# --- batches in the database together ------------------------------------------------------------

async def test_batches_in_the_database_together_apply_as_one_after_the_other(setup: Setup) -> None:
    """Two persons' lives, one notification per batch, steps interleaved: each step of a person is two
    batches after the one before it, so both are in the database together unless the later one waits
    for the earlier (a 修正 racing ahead of its 記載 would be refused as about an unknown person)."""
    persons, twins = [new_person(), new_person()], [new_person(), new_person()]
    for index, twin in enumerate(twins):
        for request in _life(setup.reg, twin, f"ptwin{index}"):
            await apply(setup.api, request)
    lives = [_life(setup.reg, person, f"ppipe{index}") for index, person in enumerate(persons)]
    answers = await stream(setup, [life[step] for step in range(len(STEPS)) for life in lives], max_batch=1)
    assert all(a.WhichOneof("result") != "error" for a in answers), [a.error for a in answers]
    for person, twin in zip(persons, twins, strict=True):
        assert await _state(setup, person.code) == await _state(setup, twin.code)


async def test_a_code_chain_across_batches_in_the_database_together_is_followed(setup: Setup) -> None:
    """One notification per batch: a code change and what follows it find the person (and a code kept
    as a former one is refused to another person) as if each batch had committed before the next."""
    reg, person, other = setup.reg, new_person(), new_person()
    changed = replace(person, code=new_person().code)
    answers = await stream(setup, [
        reg.request(person, "pchain-1", event=D(2026, 1, 1)),
        reg.request(other, "pchain-2", event=D(2026, 1, 1)),
        reg.request(changed, "pchain-3", kind=rpb.CHANGE_KIND_MODIFY,
                    reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 2, 1),
                    previous_code=person.code),
        _modify(reg, replace(changed, address="群馬県前橋市後の町5丁目5番5号"), "pchain-4", D(2026, 3, 1)),
        reg.request(replace(other, code=person.code), "pchain-5", kind=rpb.CHANGE_KIND_MODIFY,
                    reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=D(2026, 3, 2),
                    previous_code=other.code),
    ], max_batch=1)
    assert [version_of(setup, a).version for a in answers[:4]] == [1, 1, 2, 3]
    assert error_of(answers[4])[1] == "RESIDENT_CODE_IN_USE"
    by_old = await setup.api.lookup(reg.lookup(person.code))
    assert by_old.record.resident_code == changed.code and by_old.record.address == "群馬県前橋市後の町5丁目5番5号"


async def test_a_stream_leaves_the_pool_a_connection(admin_url: str, pki: DevPki, home: Path) -> None:
    """With a pool of two, batches go one at a time (the other connection stays free for the rest of
    the service), and the stream is answered as with a larger pool."""
    async with open_register("identity", admin_url, pki, home, pool_max=2) as (reg, api, database, _):
        small = Setup(reg, api, database)
        persons = [new_person() for _ in range(3)]
        seen: list[int] = []
        spare = database.spare_connections

        def watched() -> int:
            seen.append(spare())
            return seen[-1]

        database.spare_connections = watched  # type: ignore[method-assign]
        lives = [_life(reg, person, f"psmall{index}") for index, person in enumerate(persons)]
        answers = await stream(small, [life[step] for step in range(len(STEPS)) for life in lives], max_batch=1)
        assert all(a.WhichOneof("result") != "error" for a in answers), [a.error for a in answers]
        assert seen and max(seen) <= 2 and min(seen) == 1  # a batch in the database held one of the two
        async with database.connection():
            assert spare() == 1


# --- the same rows as the unary path -----------------------------------------------------------------

def _normalised(value: Any, person: Person) -> Any:
    """A row value with the person's own identifiers (code, 個人番号, ids tagged with the code) abstracted."""
    if isinstance(value, str):
        return value.replace(person.code, "<code>").replace(person.number, "<number>")
    if isinstance(value, dict):
        return {k: _normalised(v, person) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v, person) for v in value]
    return value


async def _rows(setup: Setup, person: Person) -> dict[str, Any]:
    """What the database holds about a person, identifiers abstracted, times left out."""
    async with setup.database.connection() as connection:
        person_id = await store.person_of_code(connection, person.code)
        assert person_id is not None
        row = await connection.fetchrow("SELECT * FROM person WHERE id = $1", person_id)
        versions = await connection.fetch("SELECT * FROM person_version WHERE person_id = $1 ORDER BY version",
                                          person_id)
        outbox = await connection.fetch(
            "SELECT o.*, v.municipality_code, v.notification_id FROM outbox o JOIN person_version v"
            " ON v.person_id = o.person_id AND v.version = o.version WHERE o.person_id = $1 ORDER BY o.id", person_id)
        reports = await connection.fetch(
            "SELECT state, version, resolving_version, resolve_time IS NOT NULL AS resolved FROM municipality_report"
            " WHERE person_id = $1 ORDER BY create_time", person_id)
        numbers = (await connection.fetch(
            "SELECT version, key_id, length(nonce) AS nonce FROM individual_number WHERE person_id = $1"
            " ORDER BY version", person_id) if setup.reg.name == "identity" else [])

    def plain(record: asyncpg.Record, *left_out: str) -> dict[str, Any]:
        return {k: _normalised(v, person) for k, v in dict(record).items() if k not in left_out}

    history, _ = await setup.api.list_versions(f"{setup.api.binding.collection}/{person_id}", 0, "")
    return {
        "person": plain(row, "id", "updated_at", "receive_time", "version_created_at"),
        "versions": [plain(v, "person_id", "created_at", "receive_time", "request_digest", "commit_xid")
                     for v in versions],
        "outbox": [(o["version"], o["idempotency_key"] == outbox_key(setup.reg.name, o["municipality_code"],
                                                                  o["notification_id"]),
                    o["trace_parent"] is not None, o["state"], o["attempts"]) for o in outbox],
        "outbox_in_version_order": [o["version"] for o in outbox] == sorted(o["version"] for o in outbox),
        "reports": [dict(r) for r in reports],
        "numbers": [dict(n) for n in numbers],
        "answers": [_normalised(getattr(v.record, "individual_number", ""), person) for v in history],
    }


async def _report(setup: Setup, person: Person) -> None:
    await setup.api.reports.create(NewReport(person.code, rpb.REPORT_SOURCE_PREFECTURE_FINDING, "ADDRESS_ERROR",
                                             ["record.address"], "", None))


async def test_a_stream_and_single_notifications_write_the_same_rows(setup: Setup) -> None:
    """Versions, receipts, outbox rows, encrypted 個人番号, resolved 12-5 reports: one person through
    streams, one through ApplyNotification, same notifications (in event order for the unary one)."""
    reg = setup.reg
    streamed, unary = new_person(), new_person()

    def life(person: Person) -> list[Any]:
        return [reg.request(person, f"{person.code}-rec", event=D(2026, 1, 10)),
                _modify(reg, replace(person, address="群馬県前橋市二月の町2丁目2番2号"), f"{person.code}-feb",
                        D(2026, 2, 1)),
                _modify(reg, replace(person, address="群馬県前橋市三月の町3丁目3番3号"), f"{person.code}-mar",
                        D(2026, 3, 1)),
                _modify(reg, replace(person, address="群馬県前橋市一月の町1丁目1番1号"), f"{person.code}-jan",
                        D(2026, 1, 20))]

    s_rec, s_feb, s_mar, s_jan = life(streamed)
    assert all(a.WhichOneof("result") != "error" for a in await stream(setup, [s_rec]))
    await _report(setup, streamed)
    assert all(a.WhichOneof("result") != "error" for a in await stream(setup, [s_mar, s_feb]))
    (late,) = await stream(setup, [s_jan])  # late: among the stored versions
    assert version_of(setup, late).version == 4

    u_rec, u_feb, u_mar, u_jan = life(unary)
    await apply(setup.api, u_rec)
    await _report(setup, unary)
    for request in (u_feb, u_mar, u_jan):
        await apply(setup.api, request)

    got, expected = await _rows(setup, streamed), await _rows(setup, unary)
    assert got == expected
    report = expected["reports"][0]
    assert report["state"] == rpb.REPORT_STATE_RESOLVED and report["resolving_version"] == 2
    assert expected["outbox_in_version_order"] and len(expected["outbox"]) == 4
    if reg.name == "identity":
        assert len(expected["numbers"]) == 4 and expected["answers"] == ["<number>"] * 4
        hooks = setup.api.engine.hooks
        assert isinstance(hooks, IndividualNumbers)
        async with setup.database.connection() as connection:
            streamed_id = await store.person_of_code(connection, streamed.code)
        assert await hooks.person_of(streamed.number) == streamed_id


# --- races and failures ------------------------------------------------------------------------------

async def test_concurrent_streams_of_the_same_backlog_apply_it_once(setup: Setup) -> None:
    persons = [new_person() for _ in range(300)]
    requests = [setup.reg.request(p, f"race-{p.code}") for p in persons]
    notifications = [setup.api.notification(r, MAEBASHI) for r in requests]
    first, second = await asyncio.gather(setup.api.engine.apply_many(notifications),
                                         setup.api.engine.apply_many(list(reversed(notifications))))
    assert not any(isinstance(o, JukiError) for o in [*first, *second])
    assert first == list(reversed(second))
    async with setup.database.connection() as connection:
        count = await connection.fetchval(
            "SELECT count(*) FROM person_version WHERE notification_id LIKE 'race-%'")
    assert count == 300


async def test_a_batch_the_database_refuses_is_applied_one_by_one(setup: Setup,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write = store.write

    async def refuse_batches(connection: Any, rows: Any, trace_parent: Any, secret_paths: Any = ()) -> Any:
        # The database refuses what a batch of several writes, and takes each notification alone.
        if len(rows.versions) > 1:
            raise asyncpg.DataError("refused")
        return await write(connection, rows, trace_parent, secret_paths)

    monkeypatch.setattr(store, "write", refuse_batches)
    person, second, other = new_person(), new_person(), new_person()
    answers = await stream(setup, [setup.reg.request(person, "refused-1"), setup.reg.request(second, "refused-3"),
                                   setup.reg.request(other, "refused-2", kind=rpb.CHANGE_KIND_MODIFY,
                                                     reason=rpb.CHANGE_REASON_MINOR_CORRECTION)])
    assert version_of(setup, answers[0]).version == 1
    assert version_of(setup, answers[1]).version == 1
    assert error_of(answers[2])[1] == "UNKNOWN_PERSON"
    monkeypatch.undo()
    assert (await setup.api.lookup(setup.reg.lookup(person.code))).version == 1
    assert (await setup.api.lookup(setup.reg.lookup(second.code))).version == 1


async def test_apply_many_answers_like_apply(setup: Setup) -> None:
    person = new_person()
    notifications = [setup.api.notification(setup.reg.request(person, "many-1"), MAEBASHI),
                     setup.api.notification(setup.reg.request(person, "many-2", event=D(2026, 4, 1)), MAEBASHI)]
    outcomes = await setup.api.engine.apply_many(notifications)
    assert not isinstance(outcomes[0], JukiError)
    assert isinstance(outcomes[1], FailedPrecondition) and outcomes[1].reason == "ALREADY_RECORDED"
    assert await setup.api.engine.apply(notifications[0]) == outcomes[0]


# --- through the real servers ------------------------------------------------------------------------

@pytest.mark.parametrize("register", ["identity", "annex"])
async def test_stream_notifications_over_grpc(suite: RunningSuite, register: str) -> None:
    reg = REGISTERS[register]
    persons = [new_person() for _ in range(50)]
    requests = [reg.request(p, f"grpc-{p.code}") for p in persons]
    requests.append(reg.request(new_person(), "grpc-bad", kind=rpb.CHANGE_KIND_MODIFY,
                                reason=rpb.CHANGE_REASON_MINOR_CORRECTION))
    async with secure_channel(suite.address(register), suite.server_tls("gateway")) as channel:
        stub: Any = (identity_pb2_grpc.IdentityServiceStub(channel) if register == "identity"
                     else annex_pb2_grpc.AnnexServiceStub(channel))
        call = stub.StreamNotifications(_requests(chunked(register, requests, 10)),
                                        metadata=(("x-juki-organization", MAEBASHI),), timeout=30)
        answers = outcomes_of([answer async for answer in call])
    _, field = RESPONSES[register]
    assert [a.index for a in answers] == list(range(51))
    assert all(a.WhichOneof("result") == field for a in answers[:50])
    assert error_of(answers[50])[1] == "UNKNOWN_PERSON"


@pytest.mark.parametrize("register", ["identity", "annex"])
async def test_a_message_that_cannot_be_decoded_ends_the_stream_with_invalid_argument_naming_request(
        suite: RunningSuite, register: str) -> None:
    reg = REGISTERS[register]
    person = new_person()
    good = STREAM_REQUESTS[register](notifications=[reg.request(person, f"undecodable-{person.code}")])
    response_type, _ = RESPONSES[register]
    service = "IdentityService" if register == "identity" else "AnnexService"
    async with secure_channel(suite.address(register), suite.server_tls("gateway")) as channel:
        call = channel.stream_stream(f"/juki.{register}.v1.{service}/StreamNotifications",
                                     response_deserializer=response_type.FromString)
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for answer in call(_requests([good.SerializeToString(), b"\x0a\x05ab"]),
                                     metadata=(("x-juki-organization", MAEBASHI),), timeout=10):
                answers.append(answer)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # was INTERNAL
    assert [o.index for o in outcomes_of(answers)] == [0]
