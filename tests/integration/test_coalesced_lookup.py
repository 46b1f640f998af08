"""Single lookups coalesced by the gateway into the register's batch lookup (`juki_services.gateway.coalesce`),
proven for both registers on a real PostgreSQL: each call gets exactly what the single lookup answers
(the same resource bytes, or the same status with the same details), concurrent calls share batch
lookups, only calls of the same caller share one, and what is not a plain current lookup of a
well-formed code is left to the single method."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2
from grpc import aio

from juki.register.v1 import register_pb2 as rpb
from juki_services.gateway.app import ANNEX, IDENTITY
from juki_services.gateway.coalesce import LookupCoalescer, batch_method_of
from juki_services.gateway.proxy import backend_routes
from jukilib import caller
from jukilib.devcerts import DevPki
from jukilib.errors import STATUS_DETAILS_KEY, JukiError, to_status
from jukilib.register.api import RegisterApi
from tests.conftest import eventually
from tests.integration.registers import Register, apply, new_person, open_register, resident_code

SERVICES = {"identity": (IDENTITY, "LookupResident"), "annex": (ANNEX, "LookupAnnexResident")}
# The persons recorded here live in Japan: the annex register answers them only to a call the gateway
# declared a subject access (住基法 30-44-6 / 30-44-13, services/annex/perimeter.py); identity ignores it.
SCHOLARSHIP = caller.Caller(organization="kyoiku-iinkai", purpose="EDU-SCHOLARSHIP-30-15-2-2",
                            fields=("name", "record.full_name", "record.birth_date"), subject_access=True)


@dataclasses.dataclass
class Backend:
    """The register's servicer answering batch lookups in-process, as the register's server would."""

    servicer: Any
    batch: MethodDescriptor
    calls: list[tuple[list[str], caller.Caller]] = dataclasses.field(default_factory=list)

    async def invoke(self, request: bytes, who: caller.Caller) -> bytes:
        request_message: Any = GetMessageClass(self.batch.input_type).FromString(request)
        self.calls.append((list(request_message.resident_codes), who))
        token = caller.set_current(who)
        try:
            answer = await getattr(self.servicer, self.batch.name)(request_message, None)
        finally:
            caller.reset_current(token)
        data: bytes = answer.SerializeToString()
        return data


@pytest.fixture(scope="module", params=["identity", "annex"])
async def register(request: pytest.FixtureRequest, admin_url: str, pki: DevPki,
                   home: Path) -> AsyncIterator[tuple[Register, RegisterApi, ServiceDescriptor, MethodDescriptor]]:
    async with open_register(request.param, admin_url, pki, home) as (chosen, api, _, _):
        service, single_name = SERVICES[request.param]
        yield chosen, api, service, service.methods_by_name[single_name]


def _coalescer(reg: Register, api: RegisterApi, service: ServiceDescriptor,
               single: MethodDescriptor) -> tuple[LookupCoalescer, Backend]:
    batch = batch_method_of(service, single)
    assert batch is not None
    backend = Backend(reg.service.servicer(api), batch)
    return LookupCoalescer(single, batch, backend.invoke), backend


async def _single(reg: Register, api: RegisterApi, single: MethodDescriptor, code: str,
                  who: caller.Caller) -> bytes | status_pb2.Status:
    """What the register's own single lookup answers `who` for `code`."""
    token = caller.set_current(who)
    try:
        answer = await getattr(reg.service.servicer(api), single.name)(reg.lookup(code), None)
        data: bytes = answer.SerializeToString(deterministic=True)
        return data
    except JukiError as error:
        return to_status(error)
    finally:
        caller.reset_current(token)


async def _coalesced(coalescer: LookupCoalescer, code: str, who: caller.Caller) -> bytes | status_pb2.Status:
    try:
        answer = await coalescer.lookup(code, who)
        return answer.SerializeToString(deterministic=True)
    except aio.AioRpcError as error:
        (details,) = [v for k, v in error.trailing_metadata() or () if k == STATUS_DETAILS_KEY]
        status = status_pb2.Status.FromString(details)
        assert (error.code().value[0], error.details()) == (status.code, status.message)
        return status


async def _recorded(reg: Register, api: RegisterApi, label: str) -> tuple[list[str], str]:
    """Codes of three recorded persons, one of whom changed code (its former code is second), and the
    changed person's new code."""
    first, changed, third = new_person(), new_person(), new_person()
    for index, person in enumerate((first, changed, third)):
        await apply(api, reg.request(person, f"{label}-{index}", event=dt.date(2026, 1, 1)))
    former, changed.code = changed.code, new_person().code
    await apply(api, reg.request(changed, f"{label}-code", kind=rpb.CHANGE_KIND_MODIFY,
                                 reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST, event=dt.date(2026, 2, 1),
                                 previous_code=former))
    return [first.code, former, third.code], changed.code


@pytest.mark.parametrize("who", [SCHOLARSHIP, dataclasses.replace(SCHOLARSHIP, fields=None)],
                         ids=["masked", "every-field"])
async def test_each_coalesced_lookup_answers_exactly_what_the_single_lookup_answers(
        register: tuple[Register, RegisterApi, ServiceDescriptor, MethodDescriptor], who: caller.Caller) -> None:
    reg, api, service, single = register
    codes, new_code = await _recorded(reg, api, f"coalesced-{who.fields is None}")
    asked = [*codes, new_code, resident_code(9_999_998), codes[0]] * 5
    coalescer, backend = _coalescer(reg, api, service, single)
    callers = [dataclasses.replace(who, request_id=f"call-{index}") for index in range(len(asked))]

    answers = await asyncio.gather(*(_coalesced(coalescer, code, c) for code, c in zip(asked, callers, strict=True)))

    expected = [await _single(reg, api, single, code, who) for code in asked]
    assert answers == expected
    # Errors: the former code (住基法 30-4: it leads a provision purpose to nobody) and the unknown one.
    assert [isinstance(answer, status_pb2.Status) for answer in answers[:6]] == [False, True, False, False, True,
                                                                                 False]
    # Shared: fewer batch lookups than calls, and every call in exactly one of them.
    assert sorted(code for codes, _ in backend.calls for code in codes) == sorted(asked)
    assert len(backend.calls) < len(asked)


async def test_only_calls_of_the_same_caller_share_a_batch_lookup(
        register: tuple[Register, RegisterApi, ServiceDescriptor, MethodDescriptor]) -> None:
    reg, api, service, single = register
    (first, _, third), _ = await _recorded(reg, api, "coalesced-callers")
    codes = [first, third]  # codes held now: every lookup answers
    coalescer, backend = _coalescer(reg, api, service, single)
    callers = [SCHOLARSHIP, dataclasses.replace(SCHOLARSHIP, purpose="ELECTION-30-15-2-2"),
               dataclasses.replace(SCHOLARSHIP, fields=("name",)), dataclasses.replace(SCHOLARSHIP, operator="op-1")]
    calls = [(code, dataclasses.replace(who, request_id=f"{n}-{code}"))
             for n, who in enumerate(callers) for code in codes * 4]

    await asyncio.gather(*(coalescer.lookup(code, who) for code, who in calls))

    for _, who in backend.calls:
        assert who.request_id == "" and dataclasses.replace(who, request_id="") in callers
    per_caller = {who: sorted(code for codes_, w in backend.calls if w == who for code in codes_) for who in callers}
    assert per_caller == {who: sorted(codes * 4) for who in callers}


async def test_a_failed_batch_lookup_fails_each_of_its_calls_with_the_register_s_status(
        register: tuple[Register, RegisterApi, ServiceDescriptor, MethodDescriptor]) -> None:
    _, _, service, single = register
    batch = batch_method_of(service, single)
    assert batch is not None

    async def unavailable(request: bytes, who: caller.Caller) -> bytes:
        raise aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, aio.Metadata(), aio.Metadata(), details="down")

    coalescer = LookupCoalescer(single, batch, unavailable)
    outcomes = await asyncio.gather(*(coalescer.lookup(resident_code(n), SCHOLARSHIP) for n in range(5)),
                                    return_exceptions=True)
    assert [o.code() for o in outcomes if isinstance(o, aio.AioRpcError)] == [grpc.StatusCode.UNAVAILABLE] * 5


@pytest.mark.parametrize("service,single", [(IDENTITY, "LookupResident"), (ANNEX, "LookupAnnexResident")])
def test_only_a_plain_current_lookup_of_a_well_formed_code_is_coalesced(service: ServiceDescriptor,
                                                                         single: str) -> None:
    request_type = GetMessageClass(service.methods_by_name[single].input_type)
    dated = request_type(resident_code="12345678901")
    dated.as_of_date.year, dated.as_of_date.month, dated.as_of_date.day = 2026, 1, 1
    by_receipt = request_type(resident_code="12345678901", as_of_basis=rpb.AS_OF_BASIS_RECEIPT)
    assert LookupCoalescer.code_of(request_type(resident_code="12345678901")) == "12345678901"
    for request in (dated, by_receipt, request_type(resident_code="1234567890"), request_type(resident_code=""),
                    request_type(resident_code="１２３４５６７８９０１"), request_type(resident_code="1234567890a")):
        assert LookupCoalescer.code_of(request) is None


async def test_the_gateway_coalesces_exactly_the_single_lookups_by_resident_code() -> None:
    channel = aio.insecure_channel("127.0.0.1:1")  # never connected
    coalesced = {route.method.name for service in (IDENTITY, ANNEX) for route in backend_routes(service, channel)
                 if route.coalescer is not None}
    assert coalesced == {"LookupResident", "LookupAnnexResident"}


async def test_a_caller_is_forgotten_once_its_lookups_are_answered_even_when_its_calls_were_cancelled(
        register: tuple[Register, RegisterApi, ServiceDescriptor, MethodDescriptor]) -> None:
    """A gateway runs for months and callers (case references included) come and go: nothing is kept per
    caller once it has no lookup in flight."""
    reg, api, service, single = register
    (first, _, third), _ = await _recorded(reg, api, "coalesced-forget")
    codes = [first, third]  # codes held now: every lookup answers
    coalescer, _ = _coalescer(reg, api, service, single)
    callers = [dataclasses.replace(SCHOLARSHIP, case_reference=f"case-{n}") for n in range(3)]

    await asyncio.gather(*(coalescer.lookup(code, who) for who in callers for code in codes))
    assert coalescer.callers_in_flight == 0

    abandoned = [asyncio.ensure_future(coalescer.lookup(code, callers[0])) for code in codes]
    await asyncio.sleep(0)
    assert coalescer.callers_in_flight == 1
    for call in abandoned:
        call.cancel()  # the client went away while its batch was out
    await asyncio.gather(*abandoned, return_exceptions=True)

    async def forgotten() -> bool:  # the batch still completes, then its caller is forgotten
        return coalescer.callers_in_flight == 0

    await eventually(forgotten)
