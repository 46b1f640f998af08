"""Group commit for single notifications (ApplyNotification): many callers, few transactions.

Each unary ApplyNotification used to be its own transaction: seven round trips and a commit for
one row in each table. Under load (64 CSs sending at once) the service spent most of its time on
those round trips. `GroupCommit` lets concurrent callers share a transaction: a caller queues its
notification and waits; a runner takes everything queued (at most `max_batch`) and applies it with
`RegisterEngine.apply_many`, which gives each notification exactly the answer `apply` would give it
(same idempotency, ordering, rules and rows). When the service is idle a notification is applied at
once, alone: nobody waits for a batch to fill. While one batch is in the database the next one
gathers, so the batch size follows the load by itself.

Nothing is lost or applied twice: a caller whose call is cancelled while its batch runs may find,
on resending, that the notification was applied; the receipt answers the resend with the stored
version, as for any repeat.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opentelemetry import trace

from jukilib.errors import JukiError
from jukilib.register.model import Notification, StoredVersion

tracer = trace.get_tracer(__name__)

ApplyMany = Callable[[Sequence[Notification]], Awaitable[list[StoredVersion | JukiError]]]
MAX_BATCH = 128
"""Also OpenTelemetry's default limit of links per span: every call of a batch stays linked to it."""
RUNNERS = 1
"""Batches in the database at once: one committing while the next is written overlaps round trips;
more would only contend for the same rows and connections."""


class GroupCommit:
    """Applies single notifications in shared batches; one instance per register engine."""

    def __init__(self, apply_many: ApplyMany, *, max_batch: int = MAX_BATCH, runners: int = RUNNERS) -> None:
        if max_batch < 1 or runners < 1:
            raise ValueError("max_batch and runners must be at least 1")
        self._apply_many = apply_many
        self._max_batch = max_batch
        self._runners = runners
        self._queue: deque[tuple[Notification, asyncio.Future[StoredVersion], trace.Link | None]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    async def apply(self, notification: Notification) -> StoredVersion:
        """The version `RegisterEngine.apply(notification)` would answer, or its error raised."""
        future: asyncio.Future[StoredVersion] = asyncio.get_running_loop().create_future()
        self._queue.append((notification, future, _link_to_current_span()))
        if len(self._running) < self._runners:
            # A fresh context: the batch is its own trace, linked to each caller's span.
            task = asyncio.create_task(self._run(), name="register-group-commit",
                                       context=contextvars.Context())
            self._running.add(task)
        return await future

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._apply_batch([self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))])
        finally:
            # Leave the set in the same step as the empty queue was seen: a caller that queues after this
            # finds a free runner slot and starts one (a done-callback would come a step too late).
            self._running.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _apply_batch(self, batch: list[tuple[Notification, asyncio.Future[StoredVersion], trace.Link | None]],
                           ) -> None:
        links = [link for _, _, link in batch if link is not None]
        try:
            with tracer.start_as_current_span("register.group_commit", links=links,
                                              attributes={"juki.batch.size": len(batch)}):
                outcomes: list[StoredVersion | Exception] = list(
                    await self._apply_many([notification for notification, _, _ in batch]))
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


def _link_to_current_span() -> trace.Link | None:
    context: Any = trace.get_current_span().get_span_context()
    return trace.Link(context) if context.is_valid else None
