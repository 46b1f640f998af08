"""The gateway's handling of every call: who, for what purpose, forward, minimise, log, answer.

One generic handler per method of the contracts the gateway exposes. For each call it
1. takes the organisation from the client certificate (issued by the prefecture's CA),
2. checks the declared purpose against the catalogue (PERMISSION_DENIED with a reason otherwise),
3. forwards the call to the owning service with the caller in `x-juki-*` metadata,
4. cuts the answer down to the purpose's field mask,
5. writes the operation log entry — before anything leaves; if it cannot, the call fails closed.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from jukilib import caller
from jukilib.devcerts import organisation_from_certificate
from jukilib.errors import (
    STATUS_DETAILS_KEY,
    FieldViolation,
    InvalidArgument,
    JukiError,
    Unauthenticated,
    code_name,
)
from jukilib.grpc.interceptors import abort_with, log_unexpected, translate
from jukilib.telemetry import current_trace_id
from services.gateway import minimise
from services.gateway.oplog import LogEntry, OperationLog
from services.gateway.policy import Catalogue, Purpose

ALLOWED, DENIED = 1, 2
BACKEND_TIMEOUT_SECONDS = 10.0

# Sends the request bytes on to whoever answers the method; returns the answer bytes.
Invoke = Callable[[bytes, caller.Caller], Awaitable[bytes]]


@dataclass(frozen=True)
class Route:
    method: MethodDescriptor
    invoke: Invoke

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def backend_routes(service: ServiceDescriptor, channel: aio.Channel, only: Iterable[str] | None = None) -> list[Route]:
    """Routes forwarding the methods of `service` (all, or `only` these) over `channel`."""
    routes = []
    for method in service.methods:
        if only is not None and method.name not in only:
            continue
        stub: Any = channel.unary_unary(f"/{service.full_name}/{method.name}")

        async def invoke(request: bytes, who: caller.Caller, stub: Any = stub) -> bytes:
            answer: bytes = await stub(request, metadata=who.to_metadata(), timeout=BACKEND_TIMEOUT_SECONDS)
            return answer

        routes.append(Route(method, invoke))
    return routes


def _organization(context: aio.ServicerContext[Any, Any]) -> str:
    pems = list(context.auth_context().get("x509_pem_cert") or [])
    organization = _organization_of(pems[0]) if pems else None
    if not organization:
        raise Unauthenticated("a client certificate issued by the prefecture is required")
    return organization


@functools.lru_cache(maxsize=1024)
def _organization_of(pem: bytes) -> str | None:
    return organisation_from_certificate(pem)


def _caller(context: aio.ServicerContext[Any, Any]) -> caller.Caller:
    metadata = context.invocation_metadata()
    return caller.Caller(
        organization=_organization(context),
        # Until operator credentials are verified (signed, issue 5), the operator is as claimed.
        operator=caller.metadata_value(metadata, caller.OPERATOR_KEY)[:64],
        purpose=caller.metadata_value(metadata, caller.PURPOSE_KEY)[:64],
        case_reference=caller.metadata_value(metadata, caller.CASE_REFERENCE_KEY)[:128],
        request_id=caller.metadata_value(metadata, caller.REQUEST_ID_KEY)[:64] or str(uuid.uuid4()),
    )


def _status_trailer(error: grpc.aio.AioRpcError) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in (error.trailing_metadata() or ()) if k == STATUS_DETAILS_KEY)


class Gateway:
    """Turns routes into gRPC handlers that enforce the policy and write the operation log."""

    def __init__(self, catalogue: Callable[[], Catalogue], log: OperationLog,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._catalogue = catalogue
        self._log = log
        self._clock = clock

    def generic_handler(self, routes: Iterable[Route]) -> grpc.GenericRpcHandler:
        return _Handlers({
            route.path: grpc.unary_unary_rpc_method_handler(functools.partial(self._handle, route))
            for route in routes
        })

    async def _handle(self, route: Route, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        entry = LogEntry(time=self._clock(), request_id="", trace_id=current_trace_id(), organization="",
                         method=route.path)
        try:
            return await self._serve(route, request, context, entry)
        except aio.AbortError:
            raise
        except Exception as exc:  # every refusal and failure is logged, then answered
            error = translate(exc)
            if not isinstance(exc, JukiError):
                log_unexpected(route.path, exc)
            if error.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                entry.decision = DENIED
            if entry.decision == DENIED or not entry.reason:
                entry.reason = error.reason
            entry.status = code_name(error.code)
            await self._log.write(entry)
            await abort_with(context, error)
            raise AssertionError("unreachable") from None

    async def _serve(self, route: Route, request: bytes, context: aio.ServicerContext[Any, Any],
                     entry: LogEntry) -> bytes:
        who = _caller(context)
        entry.organization, entry.operator, entry.purpose = who.organization, who.operator, who.purpose
        entry.case_reference, entry.request_id = who.case_reference, who.request_id
        parsed = self._parse(route.method.input_type, request)
        entry.resident_codes.extend(minimise.resident_codes(parsed))
        purpose = self._catalogue().authorize(who.organization, route.path, who.purpose, who.case_reference,
                                              self._clock().date())
        entry.legal_basis = purpose.legal_basis
        entry.decision = ALLOWED
        entry.reason = f"purpose {purpose.code} granted"
        try:
            answer_bytes = await route.invoke(request, who)
        except grpc.aio.AioRpcError as error:
            entry.status = error.code().name
            entry.reason = f"purpose {purpose.code} granted; backend answered {error.code().name}"
            await self._log.write(entry)
            await context.abort(error.code(), error.details() or "", trailing_metadata=_status_trailer(error))
            raise
        return await self._answer(route, answer_bytes, purpose, entry)

    async def _answer(self, route: Route, answer_bytes: bytes, purpose: Purpose, entry: LogEntry) -> bytes:
        answer = self._parse(route.method.output_type, answer_bytes, field="answer")
        entry.resident_codes.extend(minimise.resident_codes(answer))
        entry.disclosed_fields = minimise.minimise(answer, purpose.fields,
                                                   overseas_emigrant_only=purpose.overseas_emigrant_only)
        entry.status = "OK"
        await self._log.write(entry)  # before the answer leaves
        return answer.SerializeToString()

    @staticmethod
    def _parse(descriptor: Any, data: bytes, field: str = "request") -> message.Message:
        parsed = GetMessageClass(descriptor)()
        try:
            parsed.ParseFromString(data)
        except message.DecodeError:
            raise InvalidArgument([FieldViolation(field, "is not a valid encoded message")]) from None
        return parsed


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)
