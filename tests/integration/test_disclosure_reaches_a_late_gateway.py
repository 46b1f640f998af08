"""The disclosure service and the gateway each call the other, so one of them starts first: `juki up`
starts the disclosure service before the gateway, and its correction follower calls the gateway at once
and fails. A case decided right after must still read the person's records (住基法 30-32: the
prefecture answers the person's request for disclosure); the failed first attempt must not make the
channel refuse every call until gRPC's next reconnection attempt."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki_services.disclosure.records import IDENTITY, Records
from jukilib.errors import Unavailable


class _Register(identity_pb2_grpc.IdentityServiceServicer):
    """The gateway's identity face, holding nobody: every lookup answers NOT_FOUND."""

    def __init__(self) -> None:
        self.lookups = 0

    async def LookupResident(self, request: identity_pb2.LookupResidentRequest,
                             context: aio.ServicerContext) -> identity_pb2.Resident:
        self.lookups += 1
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such resident")
        raise AssertionError("abort returns no value")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def gateway_channel() -> AsyncIterator[tuple[aio.Channel, int]]:
    port = _free_port()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, port


async def test_a_case_reads_the_records_through_a_gateway_that_started_after_the_service(
        gateway_channel: tuple[aio.Channel, int]) -> None:
    channel, port = gateway_channel
    # The follower's first call, before the gateway listens: it fails within its own deadline.
    with pytest.raises(Unavailable):
        await Records(channel, call_timeout=0.3).file_records(IDENTITY, "12345678901", "case-1")

    register = _Register()
    server = aio.server()
    identity_pb2_grpc.add_IdentityServiceServicer_to_server(register, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        # At once after the gateway is up: the call waits for the connection instead of failing.
        found = await Records(channel, call_timeout=10).file_records(IDENTITY, "12345678901", "case-1")
    finally:
        await server.stop(None)
    assert not found.found and register.lookups == 1
