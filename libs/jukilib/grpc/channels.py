"""Client channels: mTLS with this process's certificate. Calls carry the trace context by
`jukilib.grpc.tracing.outgoing`, not by a channel interceptor (see there why)."""

from __future__ import annotations

import grpc
from grpc import aio

from jukilib.config import TlsConfig

# Keep connections alive across idle periods and fail fast when a peer disappears. A peer that was away
# (a service started before the one it calls, or restarted) is tried again within 5 s: gRPC's default
# backoff grows to 120 s, during which every call fails at once with UNAVAILABLE.
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    cert, key, ca = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def secure_channel(target: str, tls: TlsConfig, *, server_name: str | None = None) -> aio.Channel:
    """An mTLS channel to `target` presenting this process's certificate."""
    options = list(CHANNEL_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return aio.secure_channel(target, channel_credentials(tls), options=options)
