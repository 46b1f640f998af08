"""Background loops do not drown the calls in traces (issue 21, trace hygiene; jukilib.trace_sampling).

A supervised job's traces are sampled one pass a period (the pass whole), the others recorded only and
dropped unless they fail or are slow; work done for calls (a root span linking to them) and everything
outside a job is sampled as before; the callee of a sampled-out pass follows the decision.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Status, StatusCode

from jukilib.grpc import tracing
from jukilib.trace_sampling import JOB_ATTRIBUTE, BackgroundSampler, KeepFailedBackground, enter_background_job


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _traced(clock: Clock, **options: Any) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=BackgroundSampler(period=60.0, burst=0.25, clock=clock, **options))
    provider.add_span_processor(KeepFailedBackground(SimpleSpanProcessor(exporter), slow=1.0))
    return provider.get_tracer("test"), exporter


def _in_job(job: str, work: Callable[[], None]) -> None:
    """`work` run as a task of job `job` runs it (in a context of its own, as the supervisor's task)."""
    def run() -> None:
        enter_background_job(job)
        work()

    contextvars.copy_context().run(run)


def _queries(tracer: trace.Tracer, *names: str) -> Callable[[], None]:
    def work() -> None:
        for name in names:
            tracer.start_span(name).end()
    return work


def test_a_loop_is_traced_one_whole_pass_a_period() -> None:
    clock = Clock()
    tracer, exporter = _traced(clock)
    for second in range(130):  # the operator-registry refresh: two queries a second
        clock.now = 1000.0 + second
        _in_job("operator-registry", _queries(tracer, "SELECT operator", "SELECT organization_status"))
    exported = exporter.get_finished_spans()
    # Passes at 0, 60 and 120 s, each with both its queries: 6 spans, not 260.
    assert [span.name for span in exported] == ["SELECT operator", "SELECT organization_status"] * 3
    assert all((span.attributes or {})[JOB_ATTRIBUTE] == "operator-registry" for span in exported)
    assert len({span.context.trace_id for span in exported}) == 6


def test_each_job_has_its_own_period() -> None:
    clock = Clock()
    tracer, exporter = _traced(clock)
    _in_job("operator-registry", _queries(tracer, "SELECT operator"))
    _in_job("usage-suspensions", _queries(tracer, "ListActiveUsageSuspensions"))
    clock.now += 1
    _in_job("operator-registry", _queries(tracer, "SELECT operator"))
    assert [span.name for span in exporter.get_finished_spans()] == ["SELECT operator", "ListActiveUsageSuspensions"]


def test_a_failed_or_slow_pass_is_kept_though_not_sampled() -> None:
    clock = Clock()
    tracer, exporter = _traced(clock)
    _in_job("relay-1", _queries(tracer, "SELECT claim"))  # the sampled pass
    clock.now += 5

    def failing() -> None:
        span = tracer.start_span("SELECT claim")
        span.set_status(Status(StatusCode.ERROR))
        span.end()
        quiet = tracer.start_span("SELECT claim")
        quiet.end()
        slow = tracer.start_span("SELECT claim", start_time=10**9)
        slow.end(end_time=10**9 + 1_500_000_000)

    _in_job("relay-1", failing)
    kept = exporter.get_finished_spans()[1:]
    assert [(span.attributes or {}).get("juki.background.kept") for span in kept] == ["failed", "slow"]
    assert all(span.context.trace_flags.sampled for span in kept)


def test_work_for_calls_and_everything_outside_a_job_is_sampled() -> None:
    clock = Clock()
    tracer, exporter = _traced(clock)
    _in_job("relay-1", _queries(tracer, "SELECT claim"))
    clock.now += 5
    caller = tracer.start_span("/juki.identity.v1.IdentityService/ApplyNotification")
    caller.end()

    def deliver() -> None:
        tracer.start_span("outbox.deliver", links=[trace.Link(caller.get_span_context())]).end()
        tracer.start_span("SELECT claim").end()  # the poll: not sampled

    _in_job("relay-1", deliver)
    tracer.start_span("/juki.identity.v1.IdentityService/LookupResident").end()
    assert [span.name for span in exporter.get_finished_spans()] == [
        "SELECT claim", "/juki.identity.v1.IdentityService/ApplyNotification", "outbox.deliver",
        "/juki.identity.v1.IdentityService/LookupResident"]


def test_the_configured_sampler_has_the_last_word() -> None:
    """OTEL_TRACES_SAMPLER=always_off (the benchmarks) turns background traces off too."""
    clock = Clock()
    tracer, exporter = _traced(clock, delegate=ALWAYS_OFF)
    _in_job("relay-1", _queries(tracer, "SELECT claim"))
    assert exporter.get_finished_spans() == ()


def test_a_sampled_out_pass_tells_its_callee_so(span_exporter: InMemorySpanExporter) -> None:
    """`outgoing` in a job starts the pass's trace and propagates its decision (W3C sampled flag): the
    callee's server span follows it (jukilib.grpc.tracing), so a sampled-out refresh makes no trace in the
    service it asks either. Outside a job and a trace (a command) nothing is added, as before."""
    sampled: list[bool] = []

    def call() -> None:
        with tracing.outgoing("/juki.disclosure.v1.DisclosureService/ListActiveUsageSuspensions") as metadata:
            sampled.append(bool(int(dict(metadata)["traceparent"][-2:], 16) & 0x01))  # W3C flags: bit 0

    _in_job("test-sampled-out-pass", call)  # the first pass of the period: sampled
    time.sleep(0.3)  # past the pass's burst
    _in_job("test-sampled-out-pass", call)  # the next one: sampled out
    assert sampled == [True, False]
    with tracing.outgoing("/juki.disclosure.v1.DisclosureService/ListActiveUsageSuspensions") as metadata:
        assert "traceparent" not in dict(metadata)
