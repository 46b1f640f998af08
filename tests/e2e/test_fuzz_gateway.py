"""Every public RPC, fuzzed through the gateway (issue 15): whatever a caller sends, the answer is never
INTERNAL or UNKNOWN, and a refused request stores nothing.

For each unary method the gateway exposes, requests are generated from the contract's descriptors (any
string, NUL included; any integer of the field's width; enum numbers the contract does not define;
Timestamps out of range; nested and repeated fields) and sent as a caller that a purpose of the catalogue
lets through, with that purpose and, for human work, the demo operator's credential, so that the owning
service's own validation is reached, not only the gateway's. Bounded: a few examples per method.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import message
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from juki_services.gateway.app import (
    AGENCY,
    AGENCY_METHODS_EXPOSED,
    ANNEX,
    DISCLOSURE,
    IDENTITY,
    OPERATION_LOG,
    OPERATOR_ADMIN,
)
from juki_services.gateway.policy import DEFAULT_CATALOGUE, load_catalogue
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.suite import SAMPLE_CALLERS
from tests.conftest import RunningSuite

EXAMPLES_PER_METHOD = 12
NEVER = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
_INT_BOUNDS = {FieldDescriptor.TYPE_INT32: 31, FieldDescriptor.TYPE_SINT32: 31, FieldDescriptor.TYPE_SFIXED32: 31,
               FieldDescriptor.TYPE_INT64: 63, FieldDescriptor.TYPE_SINT64: 63, FieldDescriptor.TYPE_SFIXED64: 63}
_UINT_BOUNDS = {FieldDescriptor.TYPE_UINT32: 32, FieldDescriptor.TYPE_FIXED32: 32, FieldDescriptor.TYPE_UINT64: 64,
                FieldDescriptor.TYPE_FIXED64: 64}
# What a refused request must not have changed: every table of the services' own data. The operation log
# records every call, refusals included, and the volume counters count answers: both are left out.
_UNCOUNTED = ("operation_log", "operation_log_checkpoint", "volume_count", "schema_migrations")


def _methods() -> list[tuple[str, Any]]:
    unary = [(f"{s.full_name}/{m.name}", m) for s in (IDENTITY, ANNEX, DISCLOSURE, OPERATION_LOG, OPERATOR_ADMIN)
             for m in s.methods if not (m.client_streaming or m.server_streaming)]
    return unary + [(f"{AGENCY.full_name}/{name}", AGENCY.methods_by_name[name]) for name in AGENCY_METHODS_EXPOSED]


def _caller_for(method: str) -> tuple[str, str]:
    """(sample caller, purpose code) of a purpose that grants `method` to that caller's organisation."""
    catalogue = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities())
    callers = {**{org: name for name, org in SAMPLE_CALLERS.items()},
               **{m.code6: f"cs-{m.code6}" for m in gunma_municipalities()}}
    for purpose in sorted(catalogue.purposes.values(), key=lambda p: p.code):
        if method not in purpose.methods:
            continue
        for code, organization in sorted(catalogue.organizations.items()):
            if code in callers and purpose.grants(organization):
                return callers[code], purpose.code
    return "kikaku-bu", ""  # granted to nobody: the gateway refuses it, which must still not be INTERNAL


_FIXED_STRATEGIES: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: st.text(max_size=20) | st.sampled_from(
        ["", "12345678901", "102016", "residents/x", "a\x00b", "\u3000", "x" * 70]),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=20),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type in _FIXED_STRATEGIES:
        return _FIXED_STRATEGIES[field.type]
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.integers(-(2**31), 2**31 - 1) | st.sampled_from([v.number for v in field.enum_type.values])
    if field.type in _INT_BOUNDS:
        bits = _INT_BOUNDS[field.type]
        return st.integers(-(2**bits), 2**bits - 1) | st.sampled_from([0, 1, -1, 1000, 1001])
    bits = _UINT_BOUNDS[field.type]
    return st.integers(0, 2**bits - 1)


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[message.Message]:
    """Messages of `descriptor`'s type with any subset of its fields set (recursion bounded)."""
    fields = [f for f in descriptor.fields if depth < 3 or f.type != FieldDescriptor.TYPE_MESSAGE]
    values = {f.name: _field(f, depth) for f in fields}
    message_type = GetMessageClass(descriptor)

    def build(chosen: dict[str, Any]) -> message.Message:
        built = message_type()
        for name, value in chosen.items():
            _set(built, descriptor.fields_by_name[name], value)
        return built

    return st.fixed_dictionaries({}, optional=values).map(build)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    single = _message(field.message_type, depth + 1) if field.type == FieldDescriptor.TYPE_MESSAGE \
        else _scalar(field)
    return st.lists(single, max_size=3) if field.is_repeated else single


def _set(target: message.Message, field: FieldDescriptor, value: Any) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return  # no contract of ours has maps
    if field.is_repeated:
        container = getattr(target, field.name)
        for item in value:
            container.add().CopyFrom(item) if field.type == FieldDescriptor.TYPE_MESSAGE else container.append(item)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


async def _stored(admin_url: str, database: str) -> dict[str, int]:
    """Rows of every table of the services' schemas but those a refusal may add to."""
    connection = await asyncpg.connect(admin_url.rsplit("/", 1)[0] + f"/{database}")
    try:
        tables = await connection.fetch(
            """SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'
                 AND table_schema IN ('identity', 'annex', 'disclosure', 'gateway', 'agency')
                 AND table_name <> ALL($1::text[])""", list(_UNCOUNTED))
        counts = {}
        for row in tables:
            name = f'"{row["table_schema"]}"."{row["table_name"]}"'
            counts[name] = await connection.fetchval(f"SELECT count(*) FROM {name}")
        return counts
    finally:
        await connection.close()


def _call(suite: RunningSuite, method: Any, path: str) -> Callable[[message.Message], Any]:
    caller, purpose = _caller_for(path)
    credential = suite.credential(caller)

    async def call(request: message.Message) -> grpc.StatusCode:
        response_type = GetMessageClass(method.output_type)
        metadata = purpose_metadata(purpose, credential=credential, request_id=str(uuid.uuid4()))
        async with secure_channel(suite.gateway, suite.client_tls(caller)) as channel:
            stub = channel.unary_unary(f"/{path}", request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response_type.FromString)
            try:
                await stub(request, metadata=metadata, timeout=20)
            except grpc.aio.AioRpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    return call


@pytest.mark.parametrize(("path", "method"), _methods(), ids=[path.rsplit(".", 1)[1] for path, _ in _methods()])
@settings(max_examples=EXAMPLES_PER_METHOD, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
async def test_no_request_is_answered_internal_and_a_refused_one_stores_nothing(
        suite: RunningSuite, admin_url: str, path: str, method: Any, data: st.DataObject) -> None:
    request = data.draw(_message(method.input_type), label="request")
    database = suite.database_url("identity").rsplit("/", 1)[1].split("?")[0]
    before = await _stored(admin_url, database)
    code = await _call(suite, method, path)(request)
    assert code not in NEVER, f"{path} answered {code.name}"
    if code != grpc.StatusCode.OK:
        assert await _stored(admin_url, database) == before, f"{path} stored something for a refused request"
