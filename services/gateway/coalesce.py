"""Single lookups by 住民票コード coalesced into the register's batch lookup.

A register answers `BatchLookupResidents` (1 to 1,000 codes) for little more than one lookup costs;
a single `LookupResident` costs a whole gRPC hop and a database round trip behind the gateway. When
many single lookups of the same caller, purpose and mask are in flight at once (an organisation's
system checking residents one by one), the gateway sends them to the register as one batch lookup
and answers each call with its own result, exactly as the single lookup would have answered it:
the same resource (the register builds both through the same engine call), or the same error (the
batch's per-code `google.rpc.Status` is what the single lookup's NOT_FOUND carries).

Nothing else changes for the call: it is authorised, counted, minimised and logged on its own (one
operation-log entry per call, naming its code), and a lone call is sent at once, alone (the batch
size follows the load, `jukilib.batching.Batcher`). Only a plain current lookup of a well-formed code
is coalesced; a lookup `as_of_date` or of a malformed code goes to the single method, which answers
it (and names the bad field) itself. Calls are grouped only with calls whose forwarded metadata is
the same but for the request id, so the register sees the same organisation, operator, purpose,
case reference and field mask as it would have for each call.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from google.rpc import status_pb2
from grpc import aio

from jukilib import caller
from jukilib.batching import Batcher
from jukilib.errors import STATUS_DETAILS_KEY
from jukilib.grpc import deadlines

MAX_BATCH = 256
"""Codes in one coalesced batch lookup (the registers take up to 1,000; a smaller batch comes back sooner)."""
RUNNERS = 1
"""Batch lookups of one caller in flight at once. One: the next batch gathers while it is in the register;
with two, a saturated gateway sends batches of about one code (docs/performance.md, "Coalescing")."""
LINGER_SECONDS = 0.004
"""How long a batch waits for more calls once lookups keep coming (a lone call never waits): 4 ms under
load buys batches of many codes for a wait well below a lookup's p50 (docs/performance.md, "Coalescing")."""
_RESIDENT_CODE = re.compile(r"\d{11}", re.ASCII)
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}

Invoke = Callable[[bytes, caller.Caller], Awaitable[bytes]]


def batch_method_of(service: ServiceDescriptor, single: MethodDescriptor) -> MethodDescriptor | None:
    """`BatchLookupXs` beside a unary `LookupX` answering the same resource, if the service has it."""
    batch = service.methods_by_name.get(f"Batch{single.name}s")
    if batch is None or batch.client_streaming or batch.server_streaming:
        return None
    return batch if _resource_field(batch, single) is not None else None


def _resource_field(batch: MethodDescriptor, single: MethodDescriptor) -> FieldDescriptor | None:
    """The field of a batch result that holds what the single lookup answers (e.g. `resident`)."""
    results = batch.output_type.fields_by_name.get("results")
    if results is None or results.message_type is None:
        return None
    for candidate in results.message_type.fields:
        if candidate.message_type is single.output_type:
            return candidate
    return None


class LookupCoalescer:
    """Coalesces the single lookups of one route into its register's batch lookup."""

    def __init__(self, single: MethodDescriptor, batch: MethodDescriptor, invoke_batch: Invoke, *,
                 max_batch: int = MAX_BATCH, runners: int = RUNNERS) -> None:
        field = _resource_field(batch, single)
        if field is None:
            raise ValueError(f"{batch.full_name} does not answer what {single.full_name} answers")
        self._resource = field.name
        # A class made from the descriptor at run time: its fields are known to protobuf, not to the type stubs
        self._request_type: Callable[..., message.Message] = GetMessageClass(batch.input_type)
        self._response_type = GetMessageClass(batch.output_type)
        self._invoke_batch = invoke_batch
        self._method = f"/{batch.containing_service.full_name}/{batch.name}"
        self._max_batch = max_batch
        self._runners = runners
        self._batchers: dict[caller.Caller, Batcher[tuple[str, float | None], message.Message]] = {}

    @staticmethod
    def code_of(request: message.Message) -> str | None:
        """The code of a plain current lookup of a well-formed code, or None (sent on its own)."""
        code = getattr(request, "resident_code", "")
        if not _RESIDENT_CODE.fullmatch(code) or len(request.ListFields()) != 1:
            return None  # malformed, or not only a code (as_of_date, as_of_basis)
        return code

    async def lookup(self, code: str, who: caller.Caller) -> message.Message:
        """What the single lookup of `code` answers for `who`: the resource, or its error raised as the
        register's answer (`grpc.aio.AioRpcError`, with the status details the single call carries)."""
        # The request id names one call; the register's answer does not depend on it.
        key = dataclasses.replace(who, request_id="", peer="")
        batcher = self._batchers.get(key)
        if batcher is None:
            # One batcher per caller only while it has calls in flight: callers (case references
            # included) come and go, and a gateway runs for months.
            batcher = self._batchers[key] = Batcher(
                lambda lookups: self._lookup_many(lookups, key), span_name="gateway.coalesced_lookup",
                max_batch=self._max_batch, runners=self._runners, linger=LINGER_SECONDS,
                attributes={"juki.backend.method": self._method}, on_idle=lambda: self._forget(key))
        return await batcher.submit((code, deadlines.current()))

    def _forget(self, key: caller.Caller) -> None:
        batcher = self._batchers.get(key)
        if batcher is not None and batcher.idle:
            del self._batchers[key]

    @property
    def callers_in_flight(self) -> int:
        """Callers with lookups queued or in a batch now."""
        return len(self._batchers)

    async def _lookup_many(self, lookups: Sequence[tuple[str, float | None]], who: caller.Caller
                           ) -> list[message.Message | Exception]:
        """The batch lookup of (code, deadline of the call that asked) pairs: the batch waits as long as the
        last of its calls (each call still ends at its own deadline); a call with none lets it take the
        default."""
        codes = [code for code, _ in lookups]
        ends = [end for _, end in lookups]
        with deadlines.serving_until(None if None in ends else max(e for e in ends if e is not None)):
            request = self._request_type(resident_codes=codes).SerializeToString()
            answer: Any = self._response_type.FromString(await self._invoke_batch(request, who))
        results = answer.results
        if len(results) != len(codes):
            raise RuntimeError(f"{self._method} answered {len(results)} results for {len(codes)} codes")
        return [getattr(result, self._resource) if result.WhichOneof("result") == self._resource
                else _as_backend_error(result.error) for result in results]


def _as_backend_error(status: status_pb2.Status) -> aio.AioRpcError:
    """The error the single lookup would have raised at the gateway for this per-code status."""
    code = _STATUS_CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    trailer: Any = aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString()))
    return aio.AioRpcError(code, aio.Metadata(), trailer, details=status.message)
