"""Nothing one caller sends can hurt another (issue 15): a lookup whose 住民票コード holds a NUL byte is
refused INVALID_ARGUMENT naming the field, is in the operation log, and never fails the calls it would
have shared a group commit with."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from tests.conftest import RunningSuite, field_violations

UNKNOWN_CODE = "12345678901"  # no such resident: an allowed call is answered NOT_FOUND by identity
PURPOSE = "EDU-SCHOLARSHIP-30-15-2-2"
NORMAL = 25  # within one operator's burst (twice 20 calls a second)


async def test_a_nul_byte_in_a_lookup_fails_only_its_own_call_and_is_logged(suite: RunningSuite) -> None:
    credential = suite.credential("kyoiku-iinkai")
    malformed_ids = [f"poison-{uuid.uuid4()}" for _ in range(5)]

    async def lookup(stub: identity_pb2_grpc.IdentityServiceStub, code: str, metadata: tuple[tuple[str, str], ...]
                     ) -> grpc.StatusCode | grpc.aio.AioRpcError:
        try:
            await stub.LookupResident(identity_pb2.LookupResidentRequest(resident_code=code), metadata=metadata,
                                      timeout=20)
        except grpc.aio.AioRpcError as error:
            return error if error.code() == grpc.StatusCode.INVALID_ARGUMENT else error.code()
        return grpc.StatusCode.OK

    async with secure_channel(suite.gateway, suite.client_tls("kyoiku-iinkai")) as channel, \
            secure_channel(suite.gateway, suite.client_tls("kikaku-bu")) as hostile:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        hostile_stub = identity_pb2_grpc.IdentityServiceStub(hostile)
        normal = [lookup(stub, UNKNOWN_CODE, purpose_metadata(PURPOSE, credential=credential,
                                                              request_id=str(uuid.uuid4()))) for _ in range(NORMAL)]
        malformed = [lookup(hostile_stub, "1234\x005678901", purpose_metadata("", request_id=request_id))
                     for request_id in malformed_ids]  # any certificate, no purpose
        # each malformed call amid normal ones, all in flight at once: they share group commits
        interleaved = [call for index, call in enumerate(normal) for call in
                       ((call, malformed[index // 5]) if index % 5 == 2 else (call,))]
        outcomes = await asyncio.gather(*interleaved)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert [field_violations(e) for e in refused] == [["resident_code"]] * 5
    assert sorted(str(o) for o in outcomes if not isinstance(o, grpc.aio.AioRpcError)) == \
        [str(grpc.StatusCode.NOT_FOUND)] * NORMAL  # none UNAVAILABLE
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        rows = await connection.fetch("SELECT decision, status, organization FROM operation_log "
                                      "WHERE request_id = ANY($1::text[])", malformed_ids)
    finally:
        await connection.close()
    assert sorted(tuple(r) for r in rows) == [(2, "INVALID_ARGUMENT", "kikaku-bu")] * 5
