"""The gateway's handling of every call: who, for what purpose, forward, minimise, log, answer.

One generic handler per method of the contracts the gateway exposes. For each call it
1. takes the organisation from the client certificate (issued by the prefecture's CA), refuses a
   revoked certificate or a disabled organisation,
2. takes the operator, for human work, from a signed operator credential bound to that organisation
   and checked against the operator registry (never from a bare claim),
3. checks the declared purpose against the catalogue, including the operator's role
   (PERMISSION_DENIED with a reason otherwise),
4. forwards the call to the owning service with the caller in `x-juki-*` metadata and the caller's
   deadline (`jukilib.grpc.deadlines`; the configured default only when the caller set none),
5. cuts the answer down to the purpose's field mask and counts it against the purpose's volume caps,
6. writes the operation log entry — before anything leaves; if it cannot, the call fails closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import message
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from juki.gateway.v1.operation_log_pb2 import DECISION_ALLOWED, DECISION_DENIED
from juki_services.gateway import coalesce, contracts, minimise, volume
from juki_services.gateway.admission import Admission
from juki_services.gateway.coalesce import LookupCoalescer
from juki_services.gateway.open_cases import OpenCases
from juki_services.gateway.operators import Operator, OperatorRegistry
from juki_services.gateway.oplog import (
    LogEntry,
    LogEntryRefused,
    OperationLog,
    collected_detail,
    collecting_detail,
    detail_text,
)
from juki_services.gateway.policy import Catalogue, Purpose
from juki_services.gateway.search_log import AuditHashKey, search_conditions
from juki_services.gateway.suspensions import Suspensions
from juki_services.gateway.suspensions import check_request as check_suspension_request
from jukilib import boundary, caller
from jukilib.boundary import storable
from jukilib.config import DEFAULT_CALL_TIMEOUT
from jukilib.domain.dates import japan_date
from jukilib.errors import (
    STATUS_DETAILS_KEY,
    FieldViolation,
    InvalidArgument,
    JukiError,
    PermissionDenied,
    Unauthenticated,
    code_name,
    log_unexpected,
    translate,
)
from jukilib.grpc import deadlines, tracing
from jukilib.grpc.interceptors import abort_with
from jukilib.grpc.peer import peer_of
from jukilib.operator_credential import CREDENTIAL_KEY, OperatorClaims, check_in_force, genuine_claims
from jukilib.telemetry import current_trace_id

# Sends the request bytes on to whoever answers the method; returns the answer bytes.
Invoke = Callable[[bytes, caller.Caller], Awaitable[bytes]]
# Opens a bidirectional stream to whoever answers the method.
OpenStream = Callable[[AsyncIterator[bytes], caller.Caller], AsyncIterator[bytes]]
STREAM_LOG_BATCH = 512
STREAM_LOG_BATCH_BYTES = 1 << 20
"""A log entry covers at most this much of a stream's answers: a chunked stream's messages each carry up
to 1,000 outcomes, and an entry should not list hundreds of thousands of codes."""
VERIFIED_CREDENTIALS_MAX = 10_000
"""Credentials whose signature this replica has checked, kept so that an operator's every call does not
verify Ed25519 again (the registry, the organisation and the expiry are still checked on every call)."""


@dataclass(frozen=True)
class Route:
    method: MethodDescriptor
    invoke: Invoke | None = None
    open_stream: OpenStream | None = None
    coalescer: LookupCoalescer | None = None
    """For a single lookup whose register has the batch lookup: how concurrent calls share one."""

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def answers_records(self) -> bool:
        """Whether this method answers personal data (`contracts.RECORD_METHODS`): what volume caps count."""
        return self.path.lstrip("/") in contracts.RECORD_METHODS

    @property
    def reads_annex_file(self) -> bool:
        """住基法 30-44-6 is keyed on the file: whether this method answers records of the annex file."""
        return self.path.lstrip("/") in contracts.ANNEX_READS


def backend_routes(service: ServiceDescriptor, channel: aio.Channel, only: Iterable[str] | None = None, *,
                   default_timeout: float = DEFAULT_CALL_TIMEOUT) -> list[Route]:
    """Routes forwarding the methods of `service` (all, or `only` these) over `channel`. A forwarded call
    gets its caller's deadline; `default_timeout` seconds when the caller set none."""
    routes = []
    for method in service.methods:
        if only is not None and method.name not in only:
            continue
        path = f"/{service.full_name}/{method.name}"
        if method.client_streaming and method.server_streaming:
            routes.append(Route(method, open_stream=_stream_opener(channel.stream_stream(path), path)))
        elif not (method.client_streaming or method.server_streaming):
            routes.append(Route(method, invoke=_invoker(channel.unary_unary(path), path, default_timeout),
                                coalescer=_coalescer(service, method, channel, default_timeout)))
    return routes


def _coalescer(service: ServiceDescriptor, method: MethodDescriptor, channel: aio.Channel,
               default_timeout: float) -> LookupCoalescer | None:
    batch = coalesce.batch_method_of(service, method)
    if batch is None:
        return None
    path = f"/{service.full_name}/{batch.name}"
    return LookupCoalescer(method, batch, _invoker(channel.unary_unary(path), path, default_timeout))


_answered_codes: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("juki_answered_codes",
                                                                                 default=())
"""The 住民票コード a backend named in its trailers (`caller.ANSWERED_CODES_KEY`) for the call being served:
set by the invoker, read by the handler in the same task right after it (never forwarded to the caller)."""


def _trailer_codes(trailers: Any) -> tuple[str, ...]:
    text = caller.metadata_value(tuple(trailers or ()), caller.ANSWERED_CODES_KEY)
    return tuple(code for code in text.split(",") if code)


def _invoker(stub: Any, path: str, default_timeout: float) -> Invoke:
    async def invoke(request: bytes, who: caller.Caller) -> bytes:
        with tracing.outgoing(path, who.to_metadata()) as metadata:
            call = stub(request, metadata=metadata, timeout=deadlines.timeout(default_timeout))
            answer: bytes = await call
            _answered_codes.set(_trailer_codes(await call.trailing_metadata()))
        return answer

    return invoke


def _stream_opener(stub: Any, path: str) -> OpenStream:
    async def open_stream(requests: AsyncIterator[bytes], who: caller.Caller) -> AsyncIterator[bytes]:
        # A stream (an ingest backlog) runs as long as its caller lets it: its deadline, if any, and no default.
        with tracing.outgoing(path, who.to_metadata()) as metadata:
            async for answer in stub(requests, metadata=metadata, timeout=deadlines.timeout(None)):
                yield answer

    return open_stream


OVERSEAS_EMIGRANT_FIELD = "record.overseas_emigrant"


def forwarded_mask(purpose: Purpose) -> tuple[str, ...] | None:
    """The field mask a backend is told (`caller.Caller.fields`): the purpose's, plus what the gateway
    itself reads before it minimises (the 30-44-6 check reads `record.overseas_emigrant`); None when the
    purpose may receive every field."""
    if purpose.all_fields:
        return None
    if OVERSEAS_EMIGRANT_FIELD not in purpose.fields and (
            purpose.overseas_emigrant_only or purpose.methods & contracts.ANNEX_READS):
        return (*purpose.fields, OVERSEAS_EMIGRANT_FIELD)
    return purpose.fields


@dataclass(frozen=True)
class Perimeter:
    """What the gateway enforces on an answer beyond the mask (住基法 30-44-6, keyed on the file)."""

    emigrants_only: bool
    """Every record answered must be of a 国外転出者: the purpose says so, or the answer is from the annex
    file and the purpose is not the person's own disclosure (`subject_access`, 30-44-13)."""
    no_resident_code: bool
    """No 住民票コード leaves in the answer: the purpose says so, or the answer is from the annex file."""


def perimeter(route: Route, purpose: Purpose) -> Perimeter:
    annex = route.reads_annex_file
    return Perimeter(emigrants_only=purpose.overseas_emigrant_only or (annex and not purpose.subject_access),
                     no_resident_code=purpose.overseas_emigrant_only or annex)


def _certificate(context: aio.ServicerContext[Any, Any]) -> tuple[str, str]:
    """(organisation code, SHA-256 fingerprint) of the client certificate."""
    peer = peer_of(context)
    if peer is None or not peer.organisation:
        raise Unauthenticated("a client certificate issued by the prefecture is required")
    return peer.organisation, peer.fingerprint


def _caller(context: aio.ServicerContext[Any, Any], organization: str) -> caller.Caller:
    metadata = context.invocation_metadata()
    return caller.Caller(
        organization=organization,
        # The operator comes only from a verified credential (Gateway._operator), never from a claim.
        purpose=caller.metadata_value(metadata, caller.PURPOSE_KEY)[:64],
        case_reference=caller.metadata_value(metadata, caller.CASE_REFERENCE_KEY)[:128],
        request_id=caller.metadata_value(metadata, caller.REQUEST_ID_KEY)[:64] or str(uuid.uuid4()),
    )


def _status_trailer(error: grpc.aio.AioRpcError) -> tuple[tuple[str, Any], ...]:
    return tuple((k, v) for k, v in (error.trailing_metadata() or ()) if k == STATUS_DETAILS_KEY)


@dataclass(frozen=True)
class Operators:
    """How the gateway knows the operator of a call: the registry, and the key that checks credentials."""

    registry: OperatorRegistry
    public_key: Ed25519PublicKey
    max_lifetime: dt.timedelta


class Gateway:
    """Turns routes into gRPC handlers that enforce the policy and write the operation log."""

    def __init__(self, catalogue: Callable[[], Catalogue], log: OperationLog, admission: Admission, *,
                 operators: Operators, counter: volume.VolumeCounter, audit_hash: AuditHashKey | None = None,
                 suspensions: Suspensions | None = None, open_cases: OpenCases | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._catalogue = catalogue
        self._audit_hash = audit_hash
        self._log = log
        self._admission = admission
        self._operators = operators
        self._counter = counter
        self._suspensions = suspensions
        self._open_cases = open_cases
        self._clock = clock
        self._verified: dict[str, OperatorClaims] = {}

    def generic_handler(self, routes: Iterable[Route]) -> grpc.GenericRpcHandler:
        return _Handlers({
            route.path: grpc.stream_stream_rpc_method_handler(functools.partial(self._handle_stream, route))
            if route.open_stream else grpc.unary_unary_rpc_method_handler(functools.partial(self._handle, route))
            for route in routes
        }, self._unexposed)

    def _unexposed(self, method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler of a method the gateway does not expose: the probe is logged as denied (it is evidence),
        then answered UNIMPLEMENTED. Streaming either way, so that no kind of call waits on it; it reads nothing."""

        async def refuse(requests: AsyncIterator[bytes],
                         context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
            entry = LogEntry(time=self._clock(), request_id="", trace_id=current_trace_id(), organization="",
                             method=storable(method)[:200], decision=DECISION_DENIED,
                             reason="METHOD_NOT_EXPOSED", status="UNIMPLEMENTED")
            with contextlib.suppress(JukiError):  # no certificate of the prefecture: logged without one
                self._identify(context, entry)
            await self._log_refusal(entry, context)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            yield b""  # unreachable: makes this an async generator

        return grpc.stream_stream_rpc_method_handler(refuse)

    def _new_entry(self, route: Route) -> LogEntry:
        return LogEntry(time=self._clock(), request_id="", trace_id=current_trace_id(), organization="",
                        method=route.path)

    async def _handle(self, route: Route, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        entry = self._new_entry(route)
        try:
            return await self._serve(route, request, context, entry)
        except aio.AbortError:
            raise
        except Exception as exc:  # every refusal and failure is logged, then answered
            await self._refuse(route, entry, context, exc)
            raise AssertionError("unreachable") from None

    async def _refuse(self, route: Route, entry: LogEntry, context: aio.ServicerContext[Any, Any],
                      exc: Exception) -> None:
        """Log a refusal or failure, then answer it (abort raises)."""
        if isinstance(exc, LogEntryRefused):  # its refusal is in the log already
            await abort_with(context, exc)
        if isinstance(exc, grpc.aio.AioRpcError):
            entry.status = exc.code().name
            entry.reason = f"{entry.reason}; backend answered {exc.code().name}".lstrip("; ")
            await self._log_refusal(entry, context)
            await context.abort(exc.code(), exc.details() or "", trailing_metadata=_status_trailer(exc))
        error = translate(exc)
        if not isinstance(exc, JukiError):
            log_unexpected(route.path, exc)
        if error.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                          grpc.StatusCode.RESOURCE_EXHAUSTED):  # the gateway's own refusals
            entry.decision = DECISION_DENIED
        if entry.decision == DECISION_DENIED or not entry.reason:
            entry.reason = error.reason
        entry.status = code_name(error.code)
        await self._log_refusal(entry, context)
        await abort_with(context, error)

    async def _log_refusal(self, entry: LogEntry, context: aio.ServicerContext[Any, Any]) -> None:
        try:
            await self._log.write(entry)
        except LogEntryRefused as refused:  # the refusal of its values is logged instead
            await abort_with(context, refused)

    @staticmethod
    def _identify(context: aio.ServicerContext[Any, Any], entry: LogEntry) -> tuple[caller.Caller, str]:
        """(the caller as its certificate and metadata say, the certificate's fingerprint), written into
        `entry` first: whatever is refused after this is logged with who asked."""
        organization, fingerprint = _certificate(context)
        who = _caller(context, organization)
        entry.organization, entry.purpose = who.organization, who.purpose
        entry.case_reference, entry.request_id = who.case_reference, who.request_id
        return who, fingerprint

    async def _authorize(self, route: Route, context: aio.ServicerContext[Any, Any],
                         entry: LogEntry, identified: tuple[caller.Caller, str] | None = None,
                         ) -> tuple[caller.Caller, Purpose]:
        who, fingerprint = identified or self._identify(context, entry)
        organization = who.organization
        self._admission.check_certificate(fingerprint)
        operator = await self._operator(context, organization, entry)
        if operator is not None:
            who = dataclasses.replace(who, operator=operator.operator_id)
        self._admission.take(who.organization, who.operator)
        purpose = self._catalogue().authorize(who.organization, route.path, who.purpose, who.case_reference,
                                              japan_date(self._clock()),  # a purpose's days are Japanese days
                                              operator_roles=operator.roles if operator else None)
        if purpose.open_case_required:
            await self._check_open_case(who.case_reference)
        entry.legal_basis = purpose.legal_basis
        entry.decision = DECISION_ALLOWED
        entry.reason = f"purpose {purpose.code} granted"
        # The backend learns the mask so that it leaves unread what would be cut (minimise still cuts).
        return dataclasses.replace(who, fields=forwarded_mask(purpose),
                                   follows_former=purpose.follows_former_identifiers,
                                   subject_access=purpose.subject_access), purpose

    async def _check_open_case(self, case_reference: str) -> None:
        """Issue 19: disclosure and correction work names an open case of the disclosure service; refused, or
        not checkable now, the call is denied and logged. Without the check configured (a suite without a
        disclosure service) no such purpose is served (fail closed)."""
        if self._open_cases is None:
            raise PermissionDenied("this purpose requires an open case, which this gateway cannot check",
                                   "OPEN_CASE_UNCHECKED")
        await self._open_cases.check(case_reference)

    async def _operator(self, context: aio.ServicerContext[Any, Any], organization: str,
                        entry: LogEntry) -> Operator | None:
        """The operator named by the call's credential (None for a system's call without one)."""
        token = caller.metadata_value(context.invocation_metadata(), CREDENTIAL_KEY)
        claims = self._genuine(token) if token else None
        if claims is None:  # a system's call: decided on the organisation status held, never waiting
            await self._operators.registry.check_system_organization(organization)
            return None
        entry.operator = claims.operator  # signed: an auditor sees who tried, even when refused below
        registry = await self._operators.registry.current()
        registry.check_organization(organization)
        now = self._clock()
        check_in_force(claims, now=now, max_lifetime=self._operators.max_lifetime)
        return registry.authenticate(claims, organization, now)

    def _genuine(self, token: str) -> OperatorClaims:
        """The claims of a genuinely signed credential; a signature is checked once per credential string
        (the same bytes verify the same way until the key changes, and the key is fixed for this
        gateway's life). Refused credentials are never kept: they raise each time."""
        claims = self._verified.get(token)
        if claims is None:
            claims = genuine_claims(token, self._operators.public_key)
            if len(self._verified) >= VERIFIED_CREDENTIALS_MAX:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    async def _serve(self, route: Route, request: bytes, context: aio.ServicerContext[Any, Any],
                     entry: LogEntry) -> bytes:
        parsed = self._parse(route.method.input_type, request)
        identified = self._identify(context, entry)
        boundary.check_request(parsed)
        entry.resident_codes.extend(minimise.resident_codes(parsed))
        if self._audit_hash is not None and (conditions := search_conditions(parsed, self._audit_hash)):
            entry.detail = detail_text({"search": conditions})  # logged whatever the outcome, refusals too
        who, purpose = await self._authorize(route, context, entry, identified)
        if route.answers_records:
            volume.check_per_call(purpose, len(set(entry.resident_codes)))  # refused before the backend works
        if self._suspensions is not None:
            check_suspension_request(route.path, parsed, self._catalogue())
        if route.coalescer and (code := route.coalescer.code_of(parsed)) is not None:
            return await self._answer(route, await route.coalescer.lookup(code, who), None, purpose, who, entry)
        assert route.invoke is not None
        _answered_codes.set(())
        collecting = collecting_detail()  # the gateway's own services say what they changed (admin)
        try:
            answer_bytes = await route.invoke(request, who)
        finally:
            entry.detail = collected_detail(collecting) or entry.detail
        answer = self._parse(route.method.output_type, answer_bytes, field="answer")
        if self._suspensions is not None:
            self._suspensions.observe(answer)  # a usage-suspension case is in force here before its answer leaves
        if self._open_cases is not None:
            self._open_cases.observe(answer)  # a case that moved on is asked about again
        return await self._answer(route, answer, answer_bytes, purpose, who, entry, _answered_codes.get())

    def _hides_person_id(self, who: caller.Caller) -> bool:
        organization = self._catalogue().organizations.get(who.organization)
        return organization is not None and organization.receives_provisions

    async def _check_suspensions(self, purpose: Purpose, codes: list[str], found: list[message.Message],
                                 entry: LogEntry) -> None:
        """個人情報保護法 98 … 101: an answer carrying records of a person whose 利用停止請求 names this purpose does
        not leave, whichever code found them (住基法 30-4): checked by code and by the person's resource, before
        minimisation, which may cut the 住民票コード and the name that identify the person."""
        if self._suspensions is None or not found:
            return
        try:
            catalogue = self._catalogue()
            persons = (getattr(resource, "name") for resource in found)  # noqa: B009 - lazily: read only if needed
            # stale: read first (no await otherwise)
            if self._suspensions.decide(purpose.code, codes, catalogue, persons):
                await self._suspensions.check(purpose.code, codes, catalogue, persons)
        except JukiError:
            entry.decision = DECISION_DENIED
            raise

    async def _count(self, purpose: Purpose, who: caller.Caller, codes: list[str]) -> None:
        """Volume caps on what is about to leave: per call, then per day (counted across replicas).
        Only answers of record-answering methods count (`contracts.RECORD_METHODS`): a case list or a 12-5
        report names a person without answering the file's record."""
        records = len(set(codes))
        volume.check_per_call(purpose, records)
        await self._counter.reserve(purpose, who.organization, who.operator, records, self._clock())

    async def _handle_stream(self, route: Route, requests: AsyncIterator[bytes],
                             context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        """A stream is authorised once; its answers leave in batches, each logged before it leaves
        (one entry per batch, sharing the call's request id: a log write per item would cap the
        stream at the log's round-trip rate). A message that cannot be decoded or checked ends the
        stream: the backend answers what came before it, then the refusal is logged and answered."""
        entry = self._new_entry(route)
        refused = _StreamRefusal()
        try:
            who, purpose = await self._authorize(route, context, entry)
            assert route.open_stream is not None
            answers = route.open_stream(self._forwarded(route, requests, refused), who)
            async for batch in _batches(answers, STREAM_LOG_BATCH, STREAM_LOG_BATCH_BYTES):
                for data in await self._answer_batch(route, batch, purpose, who, entry):
                    yield data
                entry = dataclasses.replace(entry, time=self._clock(), resident_codes=[], disclosed_fields=[],
                                            disclosed_versions=[])
            if refused.error is not None:
                await self._refuse_message(entry, context, refused.error, refused.number)
        except aio.AbortError:
            raise
        except Exception as exc:
            await self._refuse(route, entry, context, exc)

    async def _forwarded(self, route: Route, requests: AsyncIterator[bytes],
                         refused: _StreamRefusal) -> AsyncIterator[bytes]:
        """The client's messages, each decoded and checked before it goes on; at the first that fails, the
        backend's side of the stream is closed and `refused` says why. (Raising here would not reach
        the client: gRPC swallows a request iterator's exception and cancels the backend call, and the
        client was left waiting for its deadline.)"""
        number = 0
        async for data in requests:
            number += 1
            try:
                self._parse_request(route, data)  # malformed input stops here, not at the backend
            except InvalidArgument as error:
                refused.error, refused.number = error, number
                return
            yield data

    async def _refuse_message(self, entry: LogEntry, context: aio.ServicerContext[Any, Any],
                              error: InvalidArgument, number: int) -> None:
        """Log the gateway's refusal of a stream's `number`th message (its fields named, never its
        values), then end the stream with it."""
        entry.decision, entry.status = DECISION_DENIED, code_name(error.code)
        entry.reason = f"message {number} refused: {error.message}"
        await self._log_refusal(entry, context)
        await abort_with(context, error)

    async def _answer_batch(self, route: Route, batch: list[bytes], purpose: Purpose, who: caller.Caller,
                            entry: LogEntry) -> list[bytes]:
        out, disclosed, answers = [], set(), []
        for data in batch:
            answer = self._parse(route.method.output_type, data, field="answer")
            codes = minimise.resident_codes(answer)
            if route.answers_records:
                volume.check_per_call(purpose, len(set(codes)))
            entry.resident_codes.extend(codes)
            found = minimise.resources(answer)
            await self._check_suspensions(purpose, codes, found, entry)
            entry.disclosed_versions.extend(minimise.record_versions(answer, found))
            answers.append((answer, found))
        if route.answers_records:
            await self._counter.reserve(purpose, who.organization, who.operator, len(set(entry.resident_codes)),
                                        self._clock())
        limits = perimeter(route, purpose)
        for answer, found in answers:
            disclosed.update(minimise.minimise(answer, purpose.fields, overseas_emigrant_only=limits.emigrants_only,
                                               found=found, hide_person_id=self._hides_person_id(who),
                                               no_resident_code=limits.no_resident_code))
            out.append(answer.SerializeToString())
        entry.disclosed_fields, entry.status = sorted(disclosed), "OK"
        await self._log.write(entry)  # before this batch leaves
        return out

    async def _answer(self, route: Route, answer: message.Message, answer_bytes: bytes | None,  # noqa: PLR0917
                      purpose: Purpose, who: caller.Caller, entry: LogEntry, answered: tuple[str, ...] = ()) -> bytes:
        """`answer` counted, minimised and logged; the bytes that leave (the backend's own `answer_bytes`
        when nothing was cut). `answered`: the codes of the persons answered that the backend left out of
        the answer (the annex file, 30-44-6), logged like the answer's own."""
        asked = list(entry.resident_codes)
        codes = [*minimise.resident_codes(answer), *answered]
        entry.resident_codes.extend(codes)
        found = minimise.resources(answer)
        await self._check_suspensions(purpose, codes, found, entry)
        entry.disclosed_versions.extend(minimise.record_versions(answer, found))
        if route.answers_records:
            # An answer naming no code (provision records) is about the person the request names.
            await self._count(purpose, who, codes or asked)
        limits = perimeter(route, purpose)
        entry.disclosed_fields = minimise.minimise(answer, purpose.fields, overseas_emigrant_only=limits.emigrants_only,
                                                   found=found, hide_person_id=self._hides_person_id(who),
                                                   no_resident_code=limits.no_resident_code)
        entry.status = "OK"
        await self._log.write(entry)  # before the answer leaves
        if answer_bytes is not None and purpose.all_fields and not (limits.emigrants_only or limits.no_resident_code):
            return answer_bytes  # nothing was cut: the backend's bytes leave as they came
        return answer.SerializeToString()

    @classmethod
    def _parse_request(cls, route: Route, data: bytes) -> message.Message:
        """A request decoded and its every text checked (`jukilib.boundary`) before anything logs, batches
        or forwards it."""
        parsed = cls._parse(route.method.input_type, data)
        boundary.check_request(parsed)
        return parsed

    @staticmethod
    def _parse(descriptor: Any, data: bytes, field: str = "request") -> message.Message:
        parsed = GetMessageClass(descriptor)()
        try:
            parsed.ParseFromString(data)
        except message.DecodeError:
            raise InvalidArgument([FieldViolation(field, "is not a valid encoded message")]) from None
        return parsed


async def _batches(source: AsyncIterator[bytes], size: int, max_bytes: int) -> AsyncIterator[list[bytes]]:
    """Group what `source` yields: a batch is what is ready now, up to `size` items or `max_bytes` (group
    commit, no waiting). At most `size` items are read ahead: a client that reads slowly slows the
    backend down (flow control) instead of filling the gateway's memory."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=size)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)
            return
        await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        done = False
        while not done:
            batch: list[bytes] = []
            carried = 0
            item = await queue.get()
            while True:
                if item is None:
                    done = True
                    break
                if isinstance(item, BaseException):
                    raise item
                batch.append(item)
                carried += len(item)
                if len(batch) >= size or carried >= max_bytes or queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                yield batch
    finally:
        task.cancel()


@dataclass
class _StreamRefusal:
    """The first message of a stream the gateway refused, and why."""

    error: InvalidArgument | None = None
    number: int = 0


PASSED_THROUGH = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Services registered beside the gateway's routes (health, reflection), left to their own handlers."""


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]],
                 unexposed: Callable[[str], grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._handlers = handlers
        self._unexposed = unexposed

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None and not method.startswith(PASSED_THROUGH):
            return self._unexposed(method)
        return handler
