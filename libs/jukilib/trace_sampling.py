"""Background loops in traces: sampled, so that they do not drown the calls.

Every loop a service runs besides its RPCs is a supervised job (`jukilib.supervision`). Left alone, each pass
of a loop that reads the database or calls another service starts traces of its own: the gateway's
operator-registry refresh two a second (its two queries), its usage-suspension refresh one a second (and one
in the disclosure service it asks), the registers' relays one per poll of the outbox, the disclosure
service's followers one per poll. In a trace viewer the calls (a clerk's lookup, a municipality's
notification) disappear among them.

Decision: head sampling of the traces a job starts, keeping the passes that fail or are slow.

- A span that starts a trace (no parent) in a job's task and links to no call is a *background span*. The
  first pass of each job in every `period` (60 s) is sampled: every background span the job starts within
  `burst` (0.25 s) of that pass's first one, so that a pass made of several queries is seen whole. About one
  pass a minute per loop shows that it runs and what it costs.
- The others are recorded but not sampled (RECORD_ONLY). Their W3C trace context says so (sampled flag 0), so
  the services they call make no span either (`jukilib.grpc.tracing`) and nothing of the pass is exported...
- ...unless the span failed (status ERROR) or took longer than `slow` (1 s): `KeepFailedBackground` exports it
  anyway. Only this process's span of such a pass is kept (its callee did not record its side): enough to
  see which call or query failed, with what code, and when.
- A sampled-out pass that calls through the gateway (the disclosure service's followers) is still in the
  operation log, under its trace id: the record is the evidence; the trace of one pass a minute shows the
  loop's shape.
- A root span that links to calls is work done for them, always sampled: the relay's `outbox.deliver` (linked
  to the requests whose changes it forwards), the operation log's group commit (linked to the calls it logs).
  Spans with a parent follow their parent, as before.

Folding passes into one span per N (with counts) was the alternative: it hides what one pass did and when it
failed. Tail sampling in a collector was the other: the development suite has no collector, and the callee's
spans would still be made and shipped to be dropped.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

JOB_ATTRIBUTE = "juki.background.job"
"""The attribute every background span carries: the job that started it."""

DEFAULT_PERIOD = 60.0
"""Seconds between two sampled passes of one job."""
DEFAULT_BURST = 0.25
"""Seconds after a sampled pass's first span during which the job's other background spans join it."""
DEFAULT_SLOW = 1.0
"""A background span at least this long (seconds) is exported even when its pass was not sampled."""

_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar("juki_background_job", default=None)


def enter_background_job(name: str) -> None:
    """Mark the current task (and the tasks it creates) as job `name`'s: call it first in the job's task."""
    _JOB.set(name)


def background_job() -> str | None:
    """The job the current task runs, None in an RPC's task or a command."""
    return _JOB.get()


class BackgroundSampler(Sampler):
    """Samples the traces a background job starts once per `period`; everything else as `delegate` (the
    sampler `OTEL_TRACES_SAMPLER` names, parent-based always-on by default), which also has the last word on
    a background span: a trace it would drop is dropped."""

    def __init__(self, *, period: float = DEFAULT_PERIOD, burst: float = DEFAULT_BURST,
                 delegate: Sampler | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._period = period
        self._burst = burst
        self._delegate = delegate or ParentBased(ALWAYS_ON)
        self._clock = clock
        self._pass_started: dict[str, float] = {}
        """When the sampled pass of each job began."""
        self._lock = threading.Lock()

    def should_sample(  # noqa: PLR0917 (the Sampler interface)
            self, parent_context: otel_context.Context | None, trace_id: int, name: str,
            kind: SpanKind | None = None, attributes: Attributes = None, links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None) -> SamplingResult:
        result = self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        job = _JOB.get()
        if job is None or links or result.decision is not Decision.RECORD_AND_SAMPLE or \
                trace.get_current_span(parent_context).get_span_context().is_valid:
            return result
        decision = Decision.RECORD_AND_SAMPLE if self._in_sampled_pass(job) else Decision.RECORD_ONLY
        return SamplingResult(decision, {**(attributes or {}), JOB_ATTRIBUTE: job}, trace_state)

    def _in_sampled_pass(self, job: str) -> bool:
        now = self._clock()
        with self._lock:
            started = self._pass_started.get(job)
            if started is not None and now - started <= self._burst:
                return True
            if started is None or now - started >= self._period:
                self._pass_started[job] = now
                return True
            return False

    def get_description(self) -> str:
        return f"BackgroundSampler(period={self._period}, burst={self._burst}, {self._delegate.get_description()})"


class KeepFailedBackground(SpanProcessor):
    """Passes every span to `processor`; a background span its sampler did not sample goes too, as sampled,
    when it failed or took `slow` seconds or more."""

    def __init__(self, processor: SpanProcessor, *, slow: float = DEFAULT_SLOW) -> None:
        self._processor = processor
        self._slow_ns = int(slow * 1e9)

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        self._processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:
        self._processor._on_ending(span)  # the SDK's hook between end and export

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and not span.context.trace_flags.sampled and self._worth_keeping(span):
            span = _sampled(span)
        self._processor.on_end(span)

    def _worth_keeping(self, span: ReadableSpan) -> bool:
        if JOB_ATTRIBUTE not in (span.attributes or {}):
            return False
        duration = (span.end_time or 0) - (span.start_time or 0)
        return span.status.status_code is StatusCode.ERROR or duration >= self._slow_ns

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._processor.force_flush(timeout_millis)


def _sampled(span: ReadableSpan) -> ReadableSpan:
    """`span` as exporters take it: with the sampled flag."""
    assert span.context is not None
    context = SpanContext(span.context.trace_id, span.context.span_id, span.context.is_remote,
                          TraceFlags(span.context.trace_flags | TraceFlags.SAMPLED), span.context.trace_state)
    attributes: Mapping[str, Any] = {**(span.attributes or {}), "juki.background.kept": "failed"
                                     if span.status.status_code is StatusCode.ERROR else "slow"}
    return ReadableSpan(name=span.name, context=context, parent=span.parent, resource=span.resource,
                        attributes=attributes, events=span.events, links=span.links, kind=span.kind,
                        status=span.status, start_time=span.start_time, end_time=span.end_time,
                        instrumentation_scope=span.instrumentation_scope)
