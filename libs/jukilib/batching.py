"""Many callers, few batches: single items that arrive together are handled in one go.

A caller hands its item to `Batcher.submit` and waits. A runner takes everything queued (at most
`max_batch`) and hands it to `handle_many`, which answers each item in order with its result or its
own exception. When the batcher is idle an item is handled at once (after one turn of the event loop,
in which items received at the same moment join it): nobody waits for a batch to fill. While a batch
is being handled the next one gathers, so the batch size follows the load by itself; a batcher given
a `linger` also lets each batch after the first of a busy spell wait that long for company (a lone
call never waits). Two users: group commit of single notifications (`RegisterEngine.apply_grouped`) and
the gateway's coalescing of single lookups into the registers' batch lookup
(`juki_services.gateway.coalesce`).

Traces: each batch is a span (`span_name`, attribute `juki.batch.size`), child of the span of the
call whose item opened the batch and linked to the span of every call it serves, so that a lone
call's trace shows its batch and a busy one's spans lead to the batch that served them.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import trace

T = TypeVar("T")
R = TypeVar("R")

tracer = trace.get_tracer(__name__)

MAX_LINKS = 128
"""OpenTelemetry's default limit of links per span: a batch larger than this links to its first ones."""


class Batcher(Generic[T, R]):
    """Handles concurrently submitted items in shared batches."""

    def __init__(self, handle_many: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]], *,
                 span_name: str, max_batch: int, runners: int = 1, linger: float = 0.0,
                 attributes: Mapping[str, str] | None = None, on_idle: Callable[[], None] | None = None) -> None:
        if max_batch < 1 or runners < 1:
            raise ValueError("max_batch and runners must be at least 1")
        self._handle_many = handle_many
        self._span_name = span_name
        self._max_batch = max_batch
        self._runners = runners
        self._linger = linger
        self._on_idle = on_idle
        """Called whenever the batcher becomes idle (e.g. to forget it until it is needed again)."""
        self._attributes = dict(attributes or {})
        self._queue: deque[tuple[T, asyncio.Future[R], trace.SpanContext]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being handled."""
        return not self._queue and not self._running

    async def submit(self, item: T) -> R:
        """The result `handle_many` gives `item`, or its exception raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future, trace.get_current_span().get_span_context()))
        if len(self._running) < self._runners:
            # A fresh context: each batch's span takes its parent from its own first call (`_handle`).
            task = asyncio.create_task(self._run(), name=self._span_name, context=contextvars.Context())
            self._running.add(task)
        return await future

    async def _run(self) -> None:
        busy = False
        try:
            while self._queue:
                # One turn of the event loop first: calls already received in this turn join the batch. Once
                # the queue has refilled while a batch was out (there is load), wait `linger` for more.
                await asyncio.sleep(self._linger if busy else 0)
                busy = True
                await self._handle([self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))])
        finally:
            # Leave the set in the same step as the empty queue was seen: a caller that queues after this
            # finds a free runner slot and starts one (a done-callback would come a step too late).
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]
            if self._on_idle is not None and self.idle:
                self._on_idle()

    async def _handle(self, batch: list[tuple[T, asyncio.Future[R], trace.SpanContext]]) -> None:
        callers = [span for _, _, span in batch if span.is_valid]
        parent = trace.set_span_in_context(trace.NonRecordingSpan(callers[0])) if callers else None
        links = [trace.Link(span) for span in callers[:MAX_LINKS]]
        try:
            with tracer.start_as_current_span(self._span_name, context=parent, links=links,
                                              attributes={**self._attributes, "juki.batch.size": len(batch)}):
                outcomes: list[Any] = list(await self._handle_many([item for item, _, _ in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{self._span_name}: {len(outcomes)} outcomes for {len(batch)} items")
        except Exception as exc:  # each caller gets the error; the next batch still runs
            outcomes = [exc] * len(batch)
        except BaseException:
            for _, future, _ in batch:
                future.cancel()
            raise
        for (_, future, _), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
