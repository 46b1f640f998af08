"""The caller's side of a traced call (`jukilib.grpc.tracing.outgoing`): a CLIENT span whose context
travels in the call's metadata, and nothing at all outside a trace."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jukilib.grpc import tracing

METHOD = "/juki.identity.v1.IdentityService/LookupResident"


def test_outside_a_trace_the_metadata_goes_unchanged_and_no_span_is_made(span_exporter: InMemorySpanExporter) -> None:
    before = len(span_exporter.get_finished_spans())
    with tracing.outgoing(METHOD, (("x-juki-purpose", "P"),)) as metadata:
        assert metadata == (("x-juki-purpose", "P"),)
    assert len(span_exporter.get_finished_spans()) == before


def test_inside_a_trace_the_call_carries_a_client_span_as_its_parent(span_exporter: InMemorySpanExporter) -> None:
    with (trace.get_tracer("test").start_as_current_span("caller") as caller_span,
          tracing.outgoing(METHOD, (("x-juki-purpose", "P"),)) as metadata):
        traceparent = str(dict(metadata)["traceparent"])
    (client,) = [s for s in span_exporter.get_finished_spans()
                 if s.kind.name == "CLIENT" and s.parent and s.parent.span_id == caller_span.get_span_context().span_id]
    assert traceparent.split("-")[1:3] == [f"{client.context.trace_id:032x}", f"{client.context.span_id:016x}"]
    assert client.name == METHOD and (client.attributes or {})["rpc.grpc.status_code"] == 0


class _Refused(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.PERMISSION_DENIED, grpc.aio.Metadata(), grpc.aio.Metadata())


def test_a_refused_call_marks_its_client_span_as_an_error(span_exporter: InMemorySpanExporter) -> None:
    with trace.get_tracer("test").start_as_current_span("caller"), pytest.raises(_Refused), tracing.outgoing(METHOD):
        raise _Refused()
    client = span_exporter.get_finished_spans()[-2]  # the caller's span ends after it
    assert client.kind.name == "CLIENT" and client.status.status_code.name == "ERROR"
    assert (client.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]


class _Context:
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def test_a_call_whose_trace_is_sampled_out_makes_no_span_but_carries_the_trace_on(
        span_exporter: InMemorySpanExporter) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    incoming = _Context((("traceparent", f"00-{trace_id}-{parent_id}-00"),))
    before = len(span_exporter.get_finished_spans())
    with tracing._server_span(METHOD, tracing.method_attributes(METHOD), incoming) as span:  # type: ignore[arg-type]
        assert not span.is_recording()
        with tracing.outgoing(METHOD) as metadata:
            forwarded = dict(metadata)["traceparent"]
    assert forwarded == f"00-{trace_id}-{parent_id}-00"
    assert len(span_exporter.get_finished_spans()) == before


def test_a_sampled_call_makes_its_server_span_under_the_callers(span_exporter: InMemorySpanExporter) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4737", "00f067aa0ba902b8"
    incoming = _Context((("traceparent", f"00-{trace_id}-{parent_id}-01"),))
    with tracing._server_span(METHOD, tracing.method_attributes(METHOD), incoming) as span:  # type: ignore[arg-type]
        assert span.is_recording()
    server = span_exporter.get_finished_spans()[-1]
    assert server.kind.name == "SERVER" and f"{server.context.trace_id:032x}" == trace_id
    assert server.parent is not None and f"{server.parent.span_id:016x}" == parent_id
