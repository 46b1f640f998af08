"""The gateway's open-case check (juki_services.gateway.open_cases; issue 19): what it asks the disclosure
service, what it keeps, and how each answer becomes a decision."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki_services.gateway.open_cases import OpenCases
from jukilib.errors import PermissionDenied, Unavailable


class _Error(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="backend text")


class _Service:
    """A disclosure service answering from a table of case states; counts the questions."""

    def __init__(self) -> None:
        self.open: dict[str, bool] = {}
        self.asked: list[str] = []
        self.error: grpc.StatusCode | None = None
        self.delay = 0.0

    async def __call__(self, name: str) -> dpb.CaseStatus:
        self.asked.append(name)
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise _Error(self.error)
        if name not in self.open:
            raise _Error(grpc.StatusCode.NOT_FOUND)
        return dpb.CaseStatus(name=name, open=self.open[name], state="OPEN" if self.open[name] else "CLOSED")


def _case(collection: str = "disclosureCases") -> str:
    return f"{collection}/{uuid.uuid4()}"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _reason(check: object) -> str:
    with pytest.raises((PermissionDenied, Unavailable)) as caught:
        await check  # type: ignore[misc]
    return caught.value.reason


async def test_a_reference_that_is_not_a_case_name_is_refused_without_asking() -> None:
    service = _Service()
    cases = OpenCases(service)
    for reference in ("", "licence-2026-001", "disclosureCases/not-a-uuid", f"{_case()}/documents/{uuid.uuid4()}",
                      f"reviewItems/{uuid.uuid4()}"):
        assert await _reason(cases.check(reference)) == "CASE_REFERENCE_NOT_A_CASE"
    assert service.asked == []


async def test_an_unknown_case_and_a_closed_case_are_refused_and_each_answer_is_asked_anew() -> None:
    service, closed = _Service(), _case("correctionCases")
    service.open[closed] = False
    cases = OpenCases(service)
    assert await _reason(cases.check(_case())) == "CASE_NOT_FOUND"
    for _ in range(2):  # a refusal is never kept: the case may be opened (or reopened) meanwhile
        assert await _reason(cases.check(closed)) == "CASE_NOT_OPEN"
    assert len(service.asked) == 3


async def test_an_open_case_is_asked_once_for_its_reads_until_the_cache_expires() -> None:
    service, clock, name = _Service(), _Clock(), _case("usageSuspensionCases")
    service.open[name] = True
    cases = OpenCases(service, ttl=5.0, clock=clock)
    for _ in range(30):
        await cases.check(name)
    assert service.asked == [name]
    clock.now += 5.1
    service.open[name] = False
    assert await _reason(cases.check(name)) == "CASE_NOT_OPEN"


async def test_concurrent_checks_of_one_case_share_one_question() -> None:
    service, name = _Service(), _case()
    service.open[name], service.delay = True, 0.05
    cases = OpenCases(service)
    await asyncio.gather(*(cases.check(name) for _ in range(20)))
    assert service.asked == [name]


async def test_a_case_answer_passing_through_makes_the_next_read_ask_again() -> None:
    service, name = _Service(), _case()
    service.open[name] = True
    cases = OpenCases(service)
    await cases.check(name)
    service.open[name] = False
    cases.observe(dpb.DisclosureCase(name=name, state=dpb.DISCLOSURE_STATE_CLOSED))
    assert await _reason(cases.check(name)) == "CASE_NOT_OPEN"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.INTERNAL])
async def test_a_service_that_cannot_say_makes_the_read_wait_unavailable(code: grpc.StatusCode) -> None:
    service, name = _Service(), _case()
    service.open[name], service.error = True, code
    cases = OpenCases(service)
    assert await _reason(cases.check(name)) == "OPEN_CASE_UNKNOWN"
    service.error = None
    await cases.check(name)  # the failure is not kept either
