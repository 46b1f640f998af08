"""Deadlines propagated (jukilib.grpc.deadlines): a call made while serving a call gets at most what its
caller has left, and the configured default only when the caller set no deadline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from jukilib.grpc import deadlines
from jukilib.grpc.deadlines import MARGIN_FRACTION, MARGIN_SECONDS, DeadlineInterceptor

DEFAULT = 99.0


def test_outside_any_call_the_default_applies() -> None:
    assert deadlines.remaining() is None
    assert deadlines.timeout(DEFAULT) == DEFAULT
    assert deadlines.timeout(None) is None


def test_within_a_call_what_is_left_is_passed_on_less_the_margin_whatever_the_default() -> None:
    for default in (0.5, DEFAULT, None):
        with deadlines.serving_until(time.monotonic() + 2.0):
            passed_on = deadlines.timeout(default)
        assert passed_on is not None
        kept = MARGIN_SECONDS + MARGIN_FRACTION * 2.0
        assert 2.0 - kept - 0.05 < passed_on <= 2.0 - kept


def test_when_little_is_left_half_of_it_is_kept() -> None:
    with deadlines.serving_until(time.monotonic() + 0.04):
        passed_on = deadlines.timeout(DEFAULT)
    assert passed_on is not None
    assert 0.0 < passed_on <= 0.02


def test_a_passed_deadline_leaves_nothing() -> None:
    with deadlines.serving_until(time.monotonic() - 1.0):
        assert deadlines.remaining() == 0.0
        assert deadlines.timeout(DEFAULT) == 0.0


def test_the_deadline_is_forgotten_after_the_work_done_for_the_call() -> None:
    with deadlines.serving_until(time.monotonic() + 1.0):
        pass
    assert deadlines.current() is None


class _Echo(grpc.GenericRpcHandler):
    """Answers what `deadlines.timeout(DEFAULT)` says inside the handler (unary and streamed), or the time
    the handler's call has left."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        if details.method == "/test.Deadlines/Unary":
            return grpc.unary_unary_rpc_method_handler(self._unary)
        if details.method == "/test.Deadlines/Remaining":
            return grpc.unary_unary_rpc_method_handler(self._remaining)
        return grpc.unary_stream_rpc_method_handler(self._stream)

    @staticmethod
    async def _remaining(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        return repr(deadlines.remaining()).encode()

    @staticmethod
    async def _unary(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        return repr(deadlines.timeout(DEFAULT)).encode()

    @staticmethod
    async def _stream(request: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        yield repr(deadlines.timeout(DEFAULT)).encode()


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = aio.server(interceptors=[DeadlineInterceptor()])
    server.add_generic_rpc_handlers((_Echo(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_a_server_passes_its_callers_deadline_on_and_the_default_only_without_one(target: str) -> None:
    async with aio.insecure_channel(target) as channel:
        unary = channel.unary_unary("/test.Deadlines/Unary")
        stream = channel.unary_stream("/test.Deadlines/Stream")
        bounded = float(await unary(b"", timeout=3.0))
        streamed = [float(answer) async for answer in stream(b"", timeout=3.0)]
        unbounded = float(await unary(b""))

    # The server sees the caller's 3 s rounded up by gRPC (by up to 10 ms); the margin covers that.
    assert 2.5 < bounded < 3.0 - MARGIN_SECONDS
    assert len(streamed) == 1 and 2.5 < streamed[0] < 3.0 - MARGIN_SECONDS
    assert unbounded == DEFAULT


async def test_what_is_passed_on_arrives_as_no_more_than_the_caller_had_left(target: str) -> None:
    """gRPC rounds the deadline it sends up (by up to about 1 %): through two hops, as gateway → backend,
    the callee must still see no more time than its caller's caller gave."""
    async with aio.insecure_channel(target) as channel:
        remaining = channel.unary_unary("/test.Deadlines/Remaining")
        for given in (0.5, 1.0, 1.06, 9.99, 10.0, 10.06, 60.0, 100.0, 100.6, 1000.0):
            with deadlines.serving_until(time.monotonic() + given):
                seen = float(await remaining(b"", timeout=deadlines.timeout(DEFAULT)))
            assert seen < given, given
