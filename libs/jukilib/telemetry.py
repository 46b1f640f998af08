"""OpenTelemetry set-up: traces over every gRPC hop and every database call.

Spans go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, otherwise to a local
JSON-lines file under `.juki/traces/`. W3C trace context is propagated by the gRPC instrumentation
on every hop. Span attributes never carry request or response contents: the gRPC instrumentation
records methods and status codes, the asyncpg instrumentation parameterised SQL without values, and a
failed database call by its SQLSTATE and constraint, never by its message: PostgreSQL's message and
DETAIL quote the row (`Key (resident_code)=(…) already exists`).

Metrics go to OTLP when configured and to a Prometheus `/metrics` endpoint when `JUKI_METRICS_ADDRESS` is
set (`setup_metrics`); the instruments and their names are in `jukilib.instruments`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from jukilib.config import ConfigError, Env
from jukilib.trace_sampling import DEFAULT_PERIOD, BackgroundSampler, KeepFailedBackground

_lock = threading.Lock()
_instrumented: set[str] = set()


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _default_exporter(service: str, home: Path) -> SpanExporter:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return JsonLinesSpanExporter(home / "traces" / f"{service}.jsonl")


def _background_period() -> float:
    """`JUKI_TRACE_BACKGROUND_SECONDS`: seconds between two sampled passes of a background loop (a tiny value
    samples every pass)."""
    return Env().seconds("JUKI_TRACE_BACKGROUND_SECONDS", DEFAULT_PERIOD)


def setup_tracing(service: str, home: Path, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install the process-wide tracer provider (once) and instrument asyncpg."""
    with _lock:
        current: Any = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current
        else:
            resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"juki-{service}"),
                                        "service.namespace": "juki"})
            # Background loops are sampled once a minute, failed and slow passes kept (jukilib.trace_sampling).
            provider = TracerProvider(resource=resource, sampler=BackgroundSampler(
                period=_background_period(), delegate=sampling._get_from_env_or_default()))
            # An exporter handed in (tests) gets every span synchronously; the default ones are batched.
            processor = SimpleSpanProcessor(exporter) if exporter else BatchSpanProcessor(
                _default_exporter(service, home))
            provider.add_span_processor(KeepFailedBackground(processor))
            trace.set_tracer_provider(provider)
        _instrument_asyncpg(provider)
    return provider


class JsonLinesMetricExporter(MetricExporter):
    """Appends each metrics export as one JSON object per line (the local fallback to OTLP)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        with self._path.open("a", encoding="utf-8") as out:
            out.write(metrics_data.to_json(indent=None) + "\n")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


@dataclass
class MetricsEndpoint:
    """A Prometheus `/metrics` endpoint served from a thread of this process (prometheus_client)."""

    host: str
    port: int
    server: Any

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


_endpoints: list[MetricsEndpoint] = []
"""The process's `/metrics` endpoint, when it serves one (stopped by `shutdown_tracing`)."""


def metrics_address(value: str) -> tuple[str, int]:
    """`JUKI_METRICS_ADDRESS` as (host, port): `PORT` or `:PORT` binds 127.0.0.1 only; another host only
    when the address names it (`0.0.0.0:9464` for a container's scraper)."""
    host, _, port = value.strip().rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError("JUKI_METRICS_ADDRESS must be host:port (e.g. 127.0.0.1:9464)")
    return host.strip("[]") or "127.0.0.1", int(port)


def setup_metrics(service: str, home: Path, interval_seconds: float = 15.0, address: str = "") -> MeterProvider:
    """Install the process-wide meter provider: OTLP when configured, a Prometheus `/metrics` endpoint at
    `address` when given (`JUKI_METRICS_ADDRESS`), and the local `.juki/metrics/<service>.jsonl` only when
    neither is (a debug fallback). The endpoint serves the process's CPU and resident memory too."""
    readers: list[MetricReader] = []
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(),
                                                     export_interval_millis=interval_seconds * 1000))
    if address:
        reader, endpoint = _prometheus_endpoint(*metrics_address(address))
        readers.append(reader)
        _endpoints.append(endpoint)
    if not readers:
        readers.append(PeriodicExportingMetricReader(JsonLinesMetricExporter(home / "metrics" / f"{service}.jsonl"),
                                                     export_interval_millis=interval_seconds * 1000))
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"juki-{service}"),
                                "service.namespace": "juki"})
    provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(provider)
    return provider


def _prometheus_endpoint(host: str, port: int) -> tuple[MetricReader, MetricsEndpoint]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    # A registry of our own: the default one would also carry the Python GC and platform collectors.
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes
    # Scope labels (the instrumenting module's name) add nothing an operator needs; series stay one per name.
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        reader.shutdown()
        raise ConfigError(f"JUKI_METRICS_ADDRESS: cannot listen there ({error.strerror})") from None
    return reader, MetricsEndpoint(host, server.server_port, server)


def metrics_endpoint() -> MetricsEndpoint | None:
    """The running `/metrics` endpoint of this process, if any."""
    return _endpoints[-1] if _endpoints else None


def _instrument_asyncpg(provider: TracerProvider) -> None:
    if "asyncpg" in _instrumented:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    class SampledOnlyInstrumentor(AsyncPGInstrumentor):  # type: ignore[misc]  # untyped base
        """The asyncpg instrumentation, skipped in a trace that is sampled out: no sampler records a span
        there (`jukilib.grpc.tracing._server_span`), and the instrumentation would still, per query, read
        the statement's first word, build its attributes and make and enter a span that records nothing."""

        async def _do_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if sampled_out():
                return await func(*args, **kwargs)
            return await super()._do_execute(func, instance, args, kwargs)

        async def _do_cursor_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if sampled_out():
                return await func(*args, **kwargs)
            return await super()._do_cursor_execute(func, instance, args, kwargs)

        async def _do_prepared_execute(self, func: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if sampled_out():
                return await func(*args, **kwargs)
            return await super()._do_prepared_execute(func, instance, args, kwargs)

    SampledOnlyInstrumentor(capture_parameters=False).instrument(tracer_provider=_DatabaseErrorsByCode(provider))
    _instrumented.add("asyncpg")


def sampled_out() -> bool:
    """Whether the current trace is sampled out (a valid context whose sampled flag is off): spans started
    under it are not recorded by a parent-based sampler, nor by a trace-id ratio, which decides alike."""
    context = trace.get_current_span().get_span_context()
    return context.is_valid and not context.trace_flags.sampled


class _DatabaseErrorsByCode:
    """The tracer provider the asyncpg instrumentation gets: its spans record an error as an `exception`
    event with the exception's type, SQLSTATE and constraint name only. By default a span records
    `str(exception)` (as the event's message and stack trace, and as the status description), which for
    asyncpg includes PostgreSQL's DETAIL with the row's values."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> _DatabaseTracer:
        return _DatabaseTracer(self._provider.get_tracer(*args, **kwargs))


class _DatabaseTracer:
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        kwargs.update(record_exception=False, set_status_on_exception=False)  # the instrumentation sets ERROR
        with self._tracer.start_as_current_span(name, *args, **kwargs) as span:
            try:
                yield span
            except Exception as exc:
                span.add_event("exception", database_error_attributes(exc))
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracer, name)


def database_error_attributes(exc: BaseException) -> dict[str, str]:
    """What may be said of a database error outside the process: never its message or DETAIL."""
    attributes = {"exception.type": type(exc).__qualname__}
    for key, attribute in (("db.response.status_code", "sqlstate"), ("db.constraint", "constraint_name")):
        if value := getattr(exc, attribute, None):
            attributes[key] = str(value)
    return attributes


def current_trace_id() -> str:
    """The current trace id as 32 hex digits, or '' outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def shutdown_tracing() -> None:
    """Flush and stop the exporters (end of process)."""
    provider: Any = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    meters: Any = metrics.get_meter_provider()
    if isinstance(meters, MeterProvider):
        meters.shutdown()
    while _endpoints:
        _endpoints.pop().stop()
