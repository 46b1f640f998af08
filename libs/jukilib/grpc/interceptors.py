"""Server interceptors: error mapping (every service) and trusted-peer checks (backends).

Order on every server (outermost first): `jukilib.grpc.tracing.TracingInterceptor`,
`ErrorInterceptor`, `jukilib.grpc.deadlines.DeadlineInterceptor`, then `TrustedPeerInterceptor` on
backends. Interceptors wrap the handler returned
by `continuation` so that they see the request context (TLS peer, metadata).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any

import grpc
from grpc import aio

from jukilib import caller
from jukilib.errors import Internal, JukiError, PermissionDenied, log_unexpected, status_trailer, translate
from jukilib.grpc.peer import peer_of

logger = logging.getLogger(__name__)

# Services any authenticated peer may call (probes, tooling).
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")

async def abort_with(context: aio.ServicerContext[Any, Any], error: JukiError) -> None:
    """Abort the RPC with `error` as a rich `google.rpc.Status` (AIP-193)."""
    await context.abort(error.code, error.message, trailing_metadata=status_trailer(error))


Behavior = Callable[..., Any]


class WrappedHandlers:
    """The wrapped handler of each method, made once: a servicer returns the same handler object for a
    method on every call, so an interceptor need not rebuild its wrapper per call (the wrappers keep no
    per-call state)."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]] = {}

    def get(self, method: str, handler: grpc.RpcMethodHandler[Any, Any],
            build: Callable[[], grpc.RpcMethodHandler[Any, Any]]) -> grpc.RpcMethodHandler[Any, Any]:
        known = self._handlers.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = build()
        self._handlers[method] = (handler, wrapped)
        return wrapped


def wrap_handler(handler: grpc.RpcMethodHandler[Any, Any], wrap_unary: Callable[[Behavior], Behavior],
          wrap_stream: Callable[[Behavior], Behavior]) -> grpc.RpcMethodHandler[Any, Any]:
    """Rebuild `handler` with its behaviour wrapped, whatever its arity."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream), **kwargs)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream), **kwargs)


class ErrorInterceptor(aio.ServerInterceptor):
    """Turns domain errors into rich statuses; never lets a raw exception text reach a caller."""

    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return self._wrapped.get(method, handler, lambda: self._guarded(method, handler))

    def _guarded(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:

        def wrap_unary(behavior: Behavior) -> Behavior:
            async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await behavior(request, context)
                except aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(method, context, exc)

            return guarded

        def wrap_stream(behavior: Behavior) -> Behavior:
            async def guarded(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                try:
                    async for item in behavior(request, context):
                        yield item
                except aio.AbortError:
                    raise
                except Exception as exc:
                    await self._fail(method, context, exc)

            return guarded

        return wrap_handler(handler, wrap_unary, wrap_stream)

    @staticmethod
    async def _fail(method: str, context: aio.ServicerContext[Any, Any], exc: Exception) -> None:
        error = translate(exc)
        if isinstance(error, Internal) or not isinstance(exc, JukiError):
            log_unexpected(method, exc)
        await abort_with(context, error)


class TrustedPeerInterceptor(aio.ServerInterceptor):
    """Backends: accept calls only from trusted certificates, and expose the caller to handlers.

    The gateway sets `x-juki-*` metadata (organisation, operator, purpose, ...); a backend trusts it
    only because the TLS peer is the gateway (DESIGN §3). `reserved` methods (full name → peers) are for
    their peers alone, and those peers may call nothing else (`jukilib.config.RESERVED_METHODS`).
    """

    def __init__(self, trusted_common_names: Collection[str],
                 reserved: Mapping[str, frozenset[str]] | None = None) -> None:
        self._trusted = frozenset(trusted_common_names)
        self._reserved = dict(reserved or {})
        self._reserved_peers = frozenset().union(*self._reserved.values())
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        method = handler_call_details.method
        return self._wrapped.get(method, handler, lambda: self._checked(method, handler))

    def _checked(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:

        def wrap_unary(behavior: Behavior) -> Behavior:
            async def checked(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                token = caller.set_current(self._caller(context, method))
                try:
                    return await behavior(request, context)
                finally:
                    caller.reset_current(token)

            return checked

        def wrap_stream(behavior: Behavior) -> Behavior:
            async def checked(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                token = caller.set_current(self._caller(context, method))
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    caller.reset_current(token)

            return checked

        return wrap_handler(handler, wrap_unary, wrap_stream)

    def _caller(self, context: aio.ServicerContext[Any, Any], method: str) -> caller.Caller:
        peer = peer_of(context)
        if peer is None or peer.common_name not in self._trusted:
            raise PermissionDenied("this service accepts calls only from the gateway", "UNTRUSTED_PEER")
        reserved_for = self._reserved.get(method)
        allowed = peer.common_name in reserved_for if reserved_for is not None \
            else peer.common_name not in self._reserved_peers
        if not allowed:
            raise PermissionDenied("this method is not for this caller", "METHOD_NOT_FOR_PEER")
        return caller.caller_from_metadata(list(context.invocation_metadata() or ()), peer.common_name)
