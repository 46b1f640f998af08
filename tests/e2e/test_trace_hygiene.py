"""Traces show the calls (issue 21, trace hygiene), on the whole suite with its real background jobs.

- The gateway's operator-registry refresh (two queries a second) and its usage-suspension refresh (a call to
  the disclosure service every second) make at most one trace a minute each, and the disclosure service makes
  none of its own for a sampled-out refresh (jukilib.trace_sampling).
- The operation log's group commit is a span linked to every call whose record it writes, a child of the
  first, so the call's trace shows the append it waited for and each call leads to its append.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.grpc.channels import secure_channel
from jukilib.trace_sampling import JOB_ATTRIBUTE
from jukitools.client import purpose_metadata
from tests.conftest import RunningSuite, eventually

LOOKUP = "/juki.identity.v1.IdentityService/LookupResident"
LIST_SUSPENSIONS = "/juki.disclosure.v1.DisclosureService/ListActiveUsageSuspensions"


def _since(exporter: InMemorySpanExporter, start_ns: int) -> list[Any]:
    return [span for span in exporter.get_finished_spans() if (span.start_time or 0) >= start_ns]


async def test_the_gateways_refreshes_make_at_most_one_trace_a_minute(suite: RunningSuite,
                                                                      span_exporter: InMemorySpanExporter) -> None:
    await asyncio.sleep(1.0)  # the suite's first passes (each job's first is sampled) are behind
    start = time.time_ns()
    await asyncio.sleep(4.0)  # 8 registry queries and 4 suspension reads, untraced before
    spans = _since(span_exporter, start)
    registry = [span for span in spans if (span.attributes or {}).get(JOB_ATTRIBUTE) == "operator-registry"]
    suspensions = [span for span in spans if span.name == LIST_SUSPENSIONS]
    # At most one pass each (if the minute turned in the window): the registry's two queries, the
    # suspension read's client and server spans.
    assert len(registry) <= 2, [span.name for span in registry]
    assert len(suspensions) <= 2
    # The disclosure service's side joins the gateway's trace (never a trace of its own). The gateway's side
    # starts the pass's trace: a root, sampled once a minute, or kept because it was slow (a loaded machine).
    assert all(span.parent is not None for span in suspensions if span.kind == SpanKind.SERVER)


async def test_an_operation_log_append_links_to_every_call_it_writes(suite: RunningSuite,
                                                                     span_exporter: InMemorySpanExporter) -> None:
    request_ids = [str(uuid.uuid4()) for _ in range(6)]

    async def lookup(request_id: str) -> None:
        async with secure_channel(suite.gateway, suite.client_tls("kyoiku-iinkai")) as channel:
            try:  # an unknown resident: NOT_FOUND, logged like any call
                await identity_pb2_grpc.IdentityServiceStub(channel).LookupResident(
                    identity_pb2.LookupResidentRequest(resident_code="00000000000"),
                    metadata=purpose_metadata("EDU-SCHOLARSHIP-30-15-2-2", request_id=request_id,
                                              credential=suite.credential("kyoiku-iinkai")), timeout=10)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND

    await asyncio.gather(*(lookup(request_id) for request_id in request_ids))
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        rows = await connection.fetch("SELECT trace_id FROM operation_log WHERE request_id = ANY($1)", request_ids)
    finally:
        await connection.close()
    traces = {int(row["trace_id"], 16) for row in rows}
    assert len(traces) == len(request_ids)

    def calls() -> list[Any]:
        return [span for span in span_exporter.get_finished_spans()
                if span.context.trace_id in traces and span.name == LOOKUP and span.kind.name == "SERVER"]

    def appends() -> list[Any]:
        return [span for span in span_exporter.get_finished_spans() if span.name == "operation_log.append"]

    async def exported() -> bool:
        linked = {link.context.span_id for span in appends() for link in span.links}
        return len(calls()) == len(request_ids) and all(call.context.span_id in linked for call in calls())

    await eventually(exported)
    for call in calls():
        (append,) = [span for span in appends() if call.context.span_id in {link.context.span_id
                                                                             for link in span.links}]
        served = {link.context.span_id for link in append.links}
        # A child of the first call it serves, linked to each: the batch's size is what it wrote.
        assert append.parent is not None and append.parent.span_id in served
        assert (append.attributes or {})["juki.batch.size"] >= len(served)
        db = [span for span in span_exporter.get_finished_spans()
              if span.parent is not None and span.parent.span_id == append.context.span_id]
        assert any((span.attributes or {}).get("db.system") == "postgresql" for span in db)
