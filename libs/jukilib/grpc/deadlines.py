"""Deadlines propagated: a call made while serving a call gets at most the time its caller has left.

gRPC tells a server its caller's deadline (`context.time_remaining()`) but does not pass it on to the
calls the server makes in turn. A fixed timeout there is wrong both ways: longer than the caller waits,
the work goes on for nobody and the server cannot log and answer the failure before its caller gives
up; shorter, a call the caller gave more time (a large batch, a long listing) is cut for no reason.

`DeadlineInterceptor`, on every server, notes the deadline of each call it serves; `timeout(default)` is
what a call made on its behalf may take: the time left, less a margin to answer in, and `default` only
when the call being served has no deadline or no call is being served (a background job). It never
gives more than the caller has left.

The deadline travels in a context variable, as the trace context does, so that the code between a
handler and the call it makes (the disclosure desk's rules, the gateway's coalescer) need not carry it;
only the code that makes a call reads it, through `timeout`. The database needs no such bound: when a
call's deadline passes gRPC cancels its handler, and asyncpg cancels the statement it was running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

import grpc
from grpc import aio

from jukilib.grpc.interceptors import Behavior, WrappedHandlers, wrap_handler

MARGIN_SECONDS = 0.05
"""Kept back from what is passed on, so that a server whose call out ran out can still log and answer
before its own caller gives up (the gateway logs the failure first)."""
MARGIN_FRACTION = 0.02
"""Also kept back: this fraction of what is left. gRPC sends a deadline rounded up, by up to about 1 % of
it (10 ms of 1 to 10 s, 100 ms of 10 to 100 s), and the callee must not see more than the caller has left.
The margin is at most half of what is left."""

_deadline: ContextVar[float | None] = ContextVar("juki_deadline", default=None)
"""`time.monotonic()` by which the call being served must be answered; None: no deadline."""


def current() -> float | None:
    """The deadline (`time.monotonic()`) of the call being served, or None."""
    return _deadline.get()


def remaining() -> float | None:
    """Seconds the call being served has left (0 once it has passed), or None when it has no deadline."""
    deadline = _deadline.get()
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


def timeout(default: float | None) -> float | None:
    """Seconds a call made now may take: what the call being served has left less the margin, or
    `default` when it has no deadline (None: unbounded, for a stream its caller bounds)."""
    left = remaining()
    if left is None:
        return default
    return left - min(MARGIN_SECONDS + MARGIN_FRACTION * left, left / 2)


@contextlib.contextmanager
def serving_until(deadline: float | None) -> Iterator[None]:
    """Calls made inside are bounded by `deadline` (`time.monotonic()`; None: by their default), e.g. a
    batch made for several calls, which waits no longer than the last of them."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def _deadline_of(context: aio.ServicerContext[Any, Any]) -> float | None:
    left = context.time_remaining()
    return None if left is None else time.monotonic() + left


class DeadlineInterceptor(aio.ServerInterceptor):
    """Notes each call's deadline for the calls made while serving it (`timeout`)."""

    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    async def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails,
                                ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped.get(handler_call_details.method, handler, lambda: _bounded(handler))


def _bounded(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:

    def wrap_unary(behavior: Behavior) -> Behavior:
        async def bounded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            token = _deadline.set(_deadline_of(context))
            try:
                return await behavior(request, context)
            finally:
                _deadline.reset(token)

        return bounded

    def wrap_stream(behavior: Behavior) -> Behavior:
        async def bounded(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            token = _deadline.set(_deadline_of(context))
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                _deadline.reset(token)

        return bounded

    return wrap_handler(handler, wrap_unary, wrap_stream)
