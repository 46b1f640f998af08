"""Mutual TLS with the development PKI against a real grpc.aio server.

The server requires a client certificate from the dev CA.  A dev client certificate gets the
health service's SERVING answer and the server sees its organisation code in the auth context;
a certificate from a foreign CA, or no certificate at all, cannot connect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from jukilib.devcerts import CertPair, DevPki, ensure_dev_pki, issue_untrusted_client
from jukilib.grpc.peer import organisation_from_certificate, peer_of

SERVERS = ("gateway", "identity")
CLIENTS = {"maebashi-cs": "102016", "auditor": "audit-office"}
WHOAMI = "/juki.test.Whoami/Get"
TIMEOUT = 10.0


@dataclass
class _Seen:
    """What the server-side handler observed in the auth context of each call."""

    contexts: list[dict[str, list[bytes]]] = field(default_factory=list)


@dataclass(frozen=True)
class _Running:
    port: int
    seen: _Seen


def _whoami_handler(seen: _Seen) -> grpc.GenericRpcHandler:
    async def whoami(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        auth = {key: list(values) for key, values in context.auth_context().items()}
        seen.contexts.append(auth)
        peer = peer_of(context)
        return (peer.organisation if peer is not None else "").encode()

    handler = grpc.unary_unary_rpc_method_handler(whoami)
    return grpc.method_handlers_generic_handler("juki.test.Whoami", {"Get": handler})


def _server_credentials(pki: DevPki) -> grpc.ServerCredentials:
    pair = pki.servers["gateway"]
    return grpc.ssl_server_credentials(
        [(pair.key.read_bytes(), pair.cert.read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )


@asynccontextmanager
async def _serving(pki: DevPki) -> AsyncIterator[_Running]:
    seen = _Seen()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_generic_rpc_handlers([_whoami_handler(seen)])
    port = server.add_secure_port("127.0.0.1:0", _server_credentials(pki))
    assert port > 0
    await server.start()
    try:
        yield _Running(port, seen)
    finally:
        await server.stop(None)


def _client_credentials(pki: DevPki, pair: CertPair | None) -> grpc.ChannelCredentials:
    if pair is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca_cert.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pair.key.read_bytes(),
        certificate_chain=pair.cert.read_bytes(),
    )


def _channel(port: int, creds: grpc.ChannelCredentials, override: str | None = "gateway") -> grpc.aio.Channel:
    options = [] if override is None else [("grpc.ssl_target_name_override", override)]
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options)


async def _check(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    return int(response.status)


async def _whoami(channel: grpc.aio.Channel) -> str:
    answer = await channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT)
    assert isinstance(answer, bytes)
    return answer.decode()


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki", servers=SERVERS, clients=CLIENTS)


@pytest.mark.asyncio
async def test_dev_client_gets_serving_and_server_sees_its_org(pki: DevPki) -> None:
    async with _serving(pki) as running:
        creds = _client_credentials(pki, pki.clients["maebashi-cs"])
        async with _channel(running.port, creds) as channel:
            assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING
            assert await _whoami(channel) == "102016"
    auth = running.seen.contexts[0]
    assert auth["transport_security_type"] == [b"ssl"]
    assert auth["x509_common_name"] == [b"102016"]
    assert auth["x509_subject_alternative_name"] == [b"urn:juki:org:102016"]
    assert auth["peer_uri"] == [b"urn:juki:org:102016"]
    assert organisation_from_certificate(auth["x509_pem_cert"][0]) == "102016"


@pytest.mark.asyncio
async def test_ip_san_lets_a_client_connect_without_a_name_override(pki: DevPki) -> None:
    async with _serving(pki) as running:
        creds = _client_credentials(pki, pki.clients["auditor"])
        async with _channel(running.port, creds, override=None) as channel:
            assert await _whoami(channel) == "audit-office"


@pytest.mark.asyncio
async def test_service_certificate_works_as_a_client_certificate(pki: DevPki) -> None:
    async with _serving(pki) as running:
        creds = _client_credentials(pki, pki.servers["identity"])
        async with _channel(running.port, creds) as channel:
            assert await _whoami(channel) == "identity"


@pytest.mark.asyncio
async def test_client_with_untrusted_ca_certificate_is_rejected(pki: DevPki, tmp_path: Path) -> None:
    foreign = issue_untrusted_client(tmp_path / "pki", "intruder", "102016")
    async with _serving(pki) as running:
        async with _channel(running.port, _client_credentials(pki, foreign)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _check(channel)
        assert running.seen.contexts == []
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.asyncio
async def test_client_without_certificate_is_rejected(pki: DevPki) -> None:
    async with _serving(pki) as running:
        async with _channel(running.port, _client_credentials(pki, None)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _whoami(channel)
        assert running.seen.contexts == []
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
