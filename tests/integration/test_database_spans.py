"""Database spans follow their trace's sampling: a query of a sampled call is a span under the call's, a query
of a call whose trace is sampled out is run without a span being made (`jukilib.telemetry`), as the call's own
server span is not (`jukilib.grpc.tracing`)."""

from __future__ import annotations

import asyncpg
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

SAMPLED_OUT = SpanContext(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4738, span_id=0x00F067AA0BA902B9, is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.DEFAULT))


async def test_a_query_in_a_sampled_trace_is_a_span_under_the_calls(
        admin_url: str, span_exporter: InMemorySpanExporter) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        with trace.get_tracer("test").start_as_current_span("call") as call:
            assert await connection.fetchval("SELECT 41 + 1") == 42
    finally:
        await connection.close()
    (query,) = [span for span in span_exporter.get_finished_spans()
                if span.parent is not None and span.parent.span_id == call.get_span_context().span_id]
    assert (query.attributes or {}).get("db.system") == "postgresql" and query.name == "SELECT"


async def test_a_query_in_a_sampled_out_trace_runs_and_makes_no_span(
        admin_url: str, span_exporter: InMemorySpanExporter) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        with trace.use_span(NonRecordingSpan(SAMPLED_OUT)):
            assert await connection.fetchval("SELECT 41 + 1") == 42
            async with connection.transaction():
                assert [row[0] async for row in connection.cursor("SELECT generate_series(1, 3)")] == [1, 2, 3]
    finally:
        await connection.close()
    assert not [span for span in span_exporter.get_finished_spans()
                if span.context.trace_id == SAMPLED_OUT.trace_id]
