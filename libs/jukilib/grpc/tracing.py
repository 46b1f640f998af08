"""Traces of gRPC calls: a SERVER span for every call a service answers, joined to the caller's trace
(W3C `traceparent` in the metadata), and a CLIENT span around every call a service makes (`outgoing`).

This replaces OpenTelemetry's generic gRPC instrumentation (interceptors on every server and channel),
which makes and ends spans on every call even when the trace is sampled out. Here a call whose caller's
trace is sampled out makes no span at all and passes the context on (no sampler would record it): less
CPU per call than the generic instrumentation (docs/performance.md, "Tracing"). The spans are of the same
kind, name and attributes: the
full method as name (`/juki.identity.v1.IdentityService/LookupResident`), `rpc.system`,
`rpc.service`, `rpc.method` and `rpc.grpc.status_code`. No request or answer content is ever put on a
span.

Every call is also measured, sampled or not (OpenTelemetry RPC metrics conventions): the server side of
each call a service answers as `rpc.server.duration`, the client side of each call it makes through
`outgoing` as `rpc.client.duration`, in milliseconds, with the same four attributes (the status code as
its number in a string: "0" OK, "14" UNAVAILABLE): Prometheus's `rpc_server_duration_milliseconds_*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from jukilib import instruments
from jukilib.grpc.interceptors import Behavior, WrappedHandlers, wrap_handler
from jukilib.trace_sampling import background_job

Metadata = Sequence[tuple[str, str | bytes]]
_tracer = trace.get_tracer("jukilib.grpc")


class _MetadataGetter(Getter[Metadata]):
    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        found = [value if isinstance(value, str) else value.decode() for name, value in carrier if name == key]
        return found or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()
_attributes: dict[tuple[str, grpc.StatusCode], dict[str, str]] = {}


def _measure(histogram: Any, method: str, code: grpc.StatusCode | None, started: float) -> None:
    """Record one call's duration (ms) under its method and status code (attributes made once per pair)."""
    code = code or grpc.StatusCode.OK
    attributes = _attributes.get((method, code))
    if attributes is None:
        attributes = _attributes[(method, code)] = {**method_attributes(method),
                                                    "rpc.grpc.status_code": str(code.value[0])}
    histogram.record((time.perf_counter() - started) * 1000.0, attributes)


_SERVER_DURATION = instruments.histogram("rpc.server.duration", "ms", "duration of the calls this service answered",
                                         instruments.MILLISECONDS_BUCKETS)
_CLIENT_DURATION = instruments.histogram("rpc.client.duration", "ms", "duration of the calls this service made",
                                         instruments.MILLISECONDS_BUCKETS)


def method_attributes(method: str) -> dict[str, str]:
    """`rpc.*` attributes of a full method name (`/package.Service/Method`)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _finish(span: trace.Span, code: grpc.StatusCode | None) -> None:
    if not span.is_recording():
        return
    code = code or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


class TracingInterceptor(aio.ServerInterceptor):
    """The outermost interceptor of every server: one SERVER span per call, child of the caller's span."""

    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails,
                                ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return self._wrapped.get(method, handler, lambda: _traced(handler, method))


@contextlib.contextmanager
def _server_span(method: str, attributes: dict[str, str], context: aio.ServicerContext[Any, Any]
                 ) -> Iterator[trace.Span]:
    metadata = cast(Metadata, context.invocation_metadata() or ())
    parent = propagate.extract(metadata, getter=_GETTER)
    caller_span = trace.get_current_span(parent)
    if caller_span.get_span_context().is_valid and not caller_span.get_span_context().trace_flags.sampled:
        # The caller's trace is sampled out, so no sampler records this call's span either (parent-based
        # ones follow the caller, trace-id ratios decide alike on the same trace id): no span is made, the
        # caller's context stays current so that calls made from here carry the same trace on.
        token = otel_context.attach(parent)
        try:
            yield caller_span
        finally:
            otel_context.detach(token)
        return
    with _tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                       record_exception=False, set_status_on_exception=False) as span:
        yield span


def _traced(handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
    attributes = method_attributes(method)
    duration = _SERVER_DURATION

    def wrap_unary(behavior: Behavior) -> Behavior:
        async def traced(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            with _server_span(method, attributes, context) as span:
                try:
                    return await behavior(request, context)
                finally:
                    _finish(span, context.code())
                    _measure(duration, method, context.code(), started)

        return traced

    def wrap_stream(behavior: Behavior) -> Behavior:
        async def traced(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            started = time.perf_counter()
            with _server_span(method, attributes, context) as span:
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    _finish(span, context.code())
                    _measure(duration, method, context.code(), started)

        return traced

    return wrap_handler(handler, wrap_unary, wrap_stream)


@contextlib.contextmanager
def outgoing(method: str, metadata: Metadata = ()) -> Iterator[tuple[tuple[str, str | bytes], ...]]:
    """The call to `method` measured (`rpc.client.duration`) and traced (`_client_span`): wrap the whole
    call, its answer or stream read included."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        with _client_span(method, metadata) as carried:
            yield carried
    except grpc.aio.AioRpcError as error:
        code = error.code()
        raise
    except BaseException as exc:
        code = grpc.StatusCode.CANCELLED if isinstance(exc, asyncio.CancelledError) else grpc.StatusCode.UNKNOWN
        raise
    finally:
        _measure(_CLIENT_DURATION, method, code, started)


@contextlib.contextmanager
def _client_span(method: str, metadata: Metadata) -> Iterator[tuple[tuple[str, str | bytes], ...]]:
    """A CLIENT span for a call this service makes to `method` (a full method name, see `method_name`),
    and the call's metadata with the trace context added (`traceparent`), so that the callee's span
    joins this trace. Outside any trace the metadata goes unchanged and no span is made (a command-line
    client), except in a background job, where the span starts a trace its sampler decides on and the callee
    follows (`jukilib.trace_sampling`). The span is not made current: a stream may be read by another task
    than the one that opened it."""
    current = trace.get_current_span().get_span_context()
    if not current.is_valid and background_job() is None:
        yield tuple(metadata)
        return
    if current.is_valid and not current.trace_flags.sampled:  # sampled out: the trace goes on, no span (see above)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield (*metadata, *carrier.items())
        return
    span = _tracer.start_span(method, kind=SpanKind.CLIENT, attributes=method_attributes(method),
                              record_exception=False)
    carrier = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    try:
        yield (*metadata, *carrier.items())
    except grpc.aio.AioRpcError as error:
        _finish(span, error.code())
        raise
    else:
        _finish(span, grpc.StatusCode.OK)
    finally:
        span.end()


def method_name(multicallable: Any) -> str:
    """The full method name a stub's callable calls (grpc keeps it as bytes in `_method`)."""
    method = getattr(multicallable, "_method", b"")
    return method.decode() if isinstance(method, bytes) else str(method or "grpc")
