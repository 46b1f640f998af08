"""The operation log store and the auditors' query service."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import holidays
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT

from juki.gateway.v1 import operation_log_pb2 as pb
from juki.gateway.v1 import operation_log_pb2_grpc
from juki_services.gateway import metrics
from juki_services.gateway.chain import GENESIS, SigningKey, SigningKeyFile, entry_hash
from juki_services.gateway.checkpoints import CheckpointExporter
from juki_services.gateway.policy import Catalogue
from jukilib import paging
from jukilib.batching import MAX_LINKS
from jukilib.boundary import storable
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.dates import JAPAN
from jukilib.errors import FieldViolation, InvalidArgument, Unavailable, Violations
from jukilib.supervision import Heartbeat

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


@dataclass
class LogEntry:
    """One call, as the gateway decided and answered it."""

    time: dt.datetime
    request_id: str
    trace_id: str
    organization: str
    method: str
    operator: str = ""
    purpose: str = ""
    legal_basis: str = ""
    case_reference: str = ""
    decision: int = pb.DECISION_DENIED
    reason: str = ""
    status: str = ""
    resident_codes: list[str] = field(default_factory=list)
    disclosed_fields: list[str] = field(default_factory=list)
    disclosed_versions: list[str] = field(default_factory=list)
    """Version resource names of the records the answer disclosed."""
    detail: str = ""
    """What the call changed or asked where the method does not say it (migration 0008): canonical JSON."""


# The table's row type as migrations 0001-0008 build it (0002 added prev_hash and entry_hash, 0004
# disclosed_versions, 0008 detail after them): a batch travels as one `operation_log[]` parameter, rows in
# this order.
_ROW = ("sequence", "time", "request_id", "trace_id", "organization", "operator", "method", "purpose",
        "legal_basis", "case_reference", "decision", "reason", "status", "resident_codes", "disclosed_fields",
        "prev_hash", "entry_hash", "disclosed_versions", "detail")
_ENTRY_HASH = _ROW.index("entry_hash")
MAX_BATCH = 1000
# One round trip per batch (migration 0005): the function appends the batch, and its checkpoint when one
# is due, if the log's real tail (read under the chain's advisory lock) is the one the batch was chained
# after; otherwise it writes nothing and answers the real tail.
_APPEND = "SELECT tail_sequence, tail_hash FROM append_operation_log($1::operation_log[], $2, $3, $4, $5, $6)"

Checkpoint = tuple[int, bytes, str, bytes, dt.datetime]
"""(sequence, entry_hash, key_id, signature, signed_at) of a checkpoint to insert."""


class OperationLog:
    """The hash-chained operation log, written by one group-commit task.

    Callers hand their entry to `write` and wait; the writer task takes everything queued, numbers and
    chains it after the last record it committed, and appends it with a checkpoint when one is due, in
    one statement (`append_operation_log`, migration 0005). When another replica appended meanwhile, the
    statement writes nothing and answers the real tail, after which the batch is chained again. Chaining thus
    never serialises the gateway per request (PERFORMANCE.md). A write that fails or takes too long
    fails the call closed (UNAVAILABLE).
    """

    def __init__(self, database: Database, signing_key: SigningKey | SigningKeyFile, *, checkpoint_every: int = 1000,
                 checkpoint_seconds: float = 60.0, write_timeout: float = 5.0,
                 exporter: CheckpointExporter | None = None) -> None:
        self._database = database
        self._keys = signing_key
        self._signed_with = ""
        """The id of the key the last checkpoint was signed with: a change is a rotation, logged."""
        self._exporter = exporter
        self._checkpoint_every = checkpoint_every
        self._checkpoint_seconds = checkpoint_seconds
        self._write_timeout = write_timeout
        self._queue: asyncio.Queue[tuple[LogEntry, asyncio.Future[int]]] = asyncio.Queue()
        self._last_checkpoint: tuple[int, dt.datetime | None] | None = None
        """(sequence, signed at) of the newest checkpoint this writer knows, (0, None) for none: read once,
        then kept. Another replica's newer checkpoint only makes this one sign sooner than needed."""
        self._tail: tuple[int, bytes] | None = None
        """(sequence, entry_hash) of the last record this writer committed; None until first read. Stale
        once another replica appends, which the next append finds out (see _APPEND)."""
        self.stale_appends = 0
        """Appends refused because another replica had appended first (each is followed by another)."""
        self._callers: dict[asyncio.Future[int], trace.SpanContext] = {}
        """The span of the call waiting on each queued entry: the append that writes it links to it."""

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def newest_checkpoint_at(self) -> dt.datetime | None:
        """When the newest checkpoint this writer knows was signed (None before it read or signed one)."""
        return self._last_checkpoint[1] if self._last_checkpoint else None

    async def write(self, entry: LogEntry) -> int:
        """Append `entry`; returns its sequence number once it is committed."""
        metrics.decided(entry.method, entry.organization, entry.decision, entry.reason)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._callers[future] = trace.get_current_span().get_span_context()
        self._queue.put_nowait((entry, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._write_timeout)
        except (TimeoutError, Unavailable):
            metrics.FAILING_CLOSED.set(1)
            raise Unavailable("the operation log cannot be written; nothing was returned",
                              "OPERATION_LOG_UNAVAILABLE") from None

    async def run(self, heartbeat: Heartbeat | None = None) -> None:
        """The writer: one batch per append, until cancelled. Essential (jukilib.supervision): every call
        waits for its entry, so a writer that makes no progress turns the gateway NOT_SERVING."""
        heartbeat = heartbeat or Heartbeat()
        while True:
            heartbeat.beat()
            with heartbeat.idle():
                batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            with self._append_span([self._callers.pop(future, INVALID_SPAN_CONTEXT) for _, future in batch]):
                await self._write_isolating(batch)

    def _append_span(self, callers: list[trace.SpanContext]) -> contextlib.AbstractContextManager[trace.Span]:
        """The span of one group commit: a child of the first sampled call it serves (so a lone call's trace
        shows the append it waited for), linked to every call it serves (jukilib.batching does the same)."""
        valid = [span for span in callers if span.is_valid]
        first = next((span for span in valid if span.trace_flags.sampled), valid[0] if valid else None)
        parent = trace.set_span_in_context(trace.NonRecordingSpan(first)) if first else otel_context.Context()
        return tracer.start_as_current_span("operation_log.append", context=parent,
                                            links=[trace.Link(span) for span in valid[:MAX_LINKS]],
                                            attributes={"juki.batch.size": len(callers)})

    async def _write_isolating(self, batch: list[tuple[LogEntry, asyncio.Future[int]]]) -> None:
        """Commit `batch`. When the database refuses an entry's values (SQLSTATE class 22), the batch is
        split and its halves committed apart, down to the entry at fault, which is stored as a refusal
        instead: one caller's input never fails another caller's call, nor escapes the log."""
        try:
            sequences = await self._commit([entry for entry, _ in batch])
        except asyncpg.DataError as exc:
            if len(batch) == 1:
                await self._store_refusal(*batch[0], exc.sqlstate)
                return
            middle = len(batch) // 2
            await self._write_isolating(batch[:middle])
            await self._write_isolating(batch[middle:])
            return
        except _WRITE_FAILURES as exc:
            self._forget_tail()
            _fail(batch, exc)
            return
        for (_, future), sequence in zip(batch, sequences, strict=True):
            if not future.done():
                future.set_result(sequence)

    async def _store_refusal(self, entry: LogEntry, future: asyncio.Future[int], sqlstate: str) -> None:
        """Log, in place of `entry`, that the call was refused because its entry could not be stored; the
        caller is answered INVALID_ARGUMENT (nothing it asked for leaves)."""
        try:
            (sequence,) = await self._commit([refusal_of(entry, sqlstate)])
        except _WRITE_FAILURES as exc:
            self._forget_tail()
            _fail([(entry, future)], exc)
            return
        if not future.done():
            future.set_exception(LogEntryRefused(sequence))

    def _forget_tail(self) -> None:
        """After a failed append, the tail and the newest checkpoint are read again before the next one: the
        database may not be the one they came from (a failover to a standby that lacked the last records, a
        restore). The append itself would refuse a wrong tail (migration 0005), so the chain cannot fork
        either way; a checkpoint believed newer than the log's would only sign the next one late."""
        self._tail = None
        self._last_checkpoint = None

    async def _commit(self, entries: list[LogEntry]) -> list[int]:
        started = time.perf_counter()
        try:
            sequences = await self._append_batch(entries)
        except _WRITE_FAILURES:
            metrics.append_failed()
            raise
        metrics.appended(started)
        return sequences

    async def _append_batch(self, entries: list[LogEntry]) -> list[int]:
        tail = self._tail or await self._read_tail()
        async with self._database.connection() as connection:
            rows, checkpoint, stale = await self._append(connection, entries, tail)
            if stale is not None:
                # Another replica appended since; nothing was written. In a transaction the chain's lock,
                # once the next append takes it, is held to the commit: after at most one more refusal
                # (a replica that got in between), nobody can append before this batch.
                self.stale_appends += 1
                async with connection.transaction():
                    for _ in range(2):
                        rows, checkpoint, stale = await self._append(connection, entries, stale)
                        if stale is None:
                            break
                    else:
                        raise Unavailable("the operation log's tail moved under its lock", "OPERATION_LOG_UNAVAILABLE")
        return self._committed(rows, checkpoint)

    async def _append(self, connection: asyncpg.Connection, entries: list[LogEntry], tail: tuple[int, bytes],
                      ) -> tuple[list[tuple[Any, ...]], Checkpoint | None, tuple[int, bytes] | None]:
        """`entries` chained after `tail` and appended; the real tail instead when `tail` is not it."""
        rows = _chain(entries, *tail)
        checkpoint = self._checkpoint_if_due(rows[-1])
        signature = checkpoint[2:] if checkpoint else (None, None, None)
        stale = await connection.fetchrow(_APPEND, rows, *tail, *signature)
        if stale is None:
            return rows, checkpoint, None
        return rows, checkpoint, (stale["tail_sequence"],
                                  bytes(stale["tail_hash"]) if stale["tail_hash"] is not None else GENESIS)

    async def _read_tail(self) -> tuple[int, bytes]:
        """The log's tail, and the newest checkpoint, as they are now (once: then this writer keeps them)."""
        async with self._database.connection() as connection:
            tail = await connection.fetchrow(
                "SELECT sequence, entry_hash FROM operation_log ORDER BY sequence DESC LIMIT 1")
            if self._last_checkpoint is None:
                row = await connection.fetchrow("SELECT sequence, signed_at, key_id FROM operation_log_checkpoint "
                                                "ORDER BY sequence DESC LIMIT 1")
                self._last_checkpoint = (row["sequence"], row["signed_at"]) if row else (0, None)
                self._signed_with = row["key_id"] if row else ""
        return (tail["sequence"], bytes(tail["entry_hash"])) if tail else (0, GENESIS)

    def _committed(self, rows: list[tuple[Any, ...]], checkpoint: Checkpoint | None) -> list[int]:
        self._tail = (rows[-1][0], rows[-1][_ENTRY_HASH])
        if self._exporter is not None:
            self._exporter.note_head(*self._tail)
        if checkpoint is not None:  # committed: the newest checkpoint now
            self._last_checkpoint = (checkpoint[0], checkpoint[4])
        return [row[0] for row in rows]

    def _checkpoint_if_due(self, head_row: tuple[Any, ...]) -> Checkpoint | None:
        """The signed checkpoint of the chain head `head_row` when one is due, else None."""
        if self._last_checkpoint is None:
            raise AssertionError("the newest checkpoint is read with the tail before the first append")
        sequence, head = head_row[0], head_row[_ENTRY_HASH]
        last_sequence, signed_at = self._last_checkpoint
        now = dt.datetime.now(dt.UTC)
        if (signed_at is None or sequence - last_sequence >= self._checkpoint_every
                or (now - signed_at).total_seconds() >= self._checkpoint_seconds):
            key = self._current_key()
            return sequence, head, key.key_id, key.sign(sequence, head, now), now
        return None

    def _current_key(self) -> SigningKey:
        """The signing key now; a key other than the last one used is a rotation, put in the chain itself."""
        key = self._keys.current()
        if self._signed_with and key.key_id != self._signed_with:
            rotation = LogEntry(time=dt.datetime.now(dt.UTC), request_id=f"operation-log-key-{key.key_id}",
                                trace_id="", organization="gateway", method="operation-log/rotate-signing-key",
                                decision=pb.DECISION_ALLOWED, status="OK",
                                reason=f"checkpoints signed with key {key.key_id} from now on, before with "
                                       f"{self._signed_with}")
            self._queue.put_nowait((rotation, asyncio.get_running_loop().create_future()))
        self._signed_with = key.key_id
        return key


_WRITE_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, Unavailable)


class LogEntryRefused(InvalidArgument):
    """The database refused a call's log entry; a refusal was logged in its place (at `sequence`)."""

    def __init__(self, sequence: int) -> None:
        super().__init__([FieldViolation("request", "holds values the operation log cannot store",
                                         "TEXT_NOT_STORABLE")])
        self.sequence = sequence


def refusal_of(entry: LogEntry, sqlstate: str) -> LogEntry:
    """What is logged for a call whose entry the database refused: who, when, which method, denied with the
    SQLSTATE as reason, and none of the values (the codes asked, the references) that could not be stored."""
    return dataclasses.replace(
        entry, request_id=storable(entry.request_id), trace_id=storable(entry.trace_id),
        organization=storable(entry.organization), operator=storable(entry.operator),
        method=storable(entry.method), purpose=storable(entry.purpose), legal_basis=storable(entry.legal_basis),
        case_reference=storable(entry.case_reference), decision=pb.DECISION_DENIED, status="INVALID_ARGUMENT",
        reason=f"the entry could not be stored (SQLSTATE {sqlstate})", resident_codes=[], disclosed_fields=[],
        disclosed_versions=[])


def _fail(batch: list[tuple[LogEntry, asyncio.Future[int]]], exc: BaseException) -> None:
    logger.error("operation log batch not written", extra={"entries": len(batch), "error_type": type(exc).__name__})
    for _, future in batch:
        if not future.done():
            future.set_exception(Unavailable("operation log unavailable", "OPERATION_LOG_UNAVAILABLE"))


def _chain(entries: list[LogEntry], sequence: int, previous: bytes) -> list[tuple[Any, ...]]:
    """`entries` numbered after `sequence` and chained after `previous`, as `_ROW` tuples."""
    rows = []
    for entry in entries:
        sequence += 1
        values = _values(entry, sequence)
        digest = entry_hash(previous, values)
        values["prev_hash"], values["entry_hash"] = previous, digest
        rows.append(tuple(values[c] for c in _ROW))
        previous = digest
    return rows


def _values(entry: LogEntry, sequence: int) -> dict[str, Any]:
    return {
        "sequence": sequence, "time": entry.time, "request_id": entry.request_id, "trace_id": entry.trace_id,
        "organization": entry.organization, "operator": entry.operator, "method": entry.method,
        "purpose": entry.purpose, "legal_basis": entry.legal_basis, "case_reference": entry.case_reference,
        "decision": entry.decision, "reason": entry.reason, "status": entry.status,
        "resident_codes": sorted(set(entry.resident_codes)), "disclosed_fields": list(entry.disclosed_fields),
        "disclosed_versions": sorted(set(entry.disclosed_versions)), "detail": entry.detail,
    }


def detail_text(detail: Mapping[str, Any]) -> str:
    """The canonical JSON of an entry's detail (sorted keys, no spaces)."""
    return json.dumps(detail, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


_DETAIL: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("juki_oplog_detail", default=None)


def record_detail(**items: Any) -> None:
    """Add to the detail of the call being served (a handler of the gateway's own services says what it changed);
    nothing outside a call."""
    detail = _DETAIL.get()
    if detail is not None:
        detail.update(items)


def collecting_detail() -> contextvars.Token[dict[str, Any] | None]:
    return _DETAIL.set({})


def collected_detail(token: contextvars.Token[dict[str, Any] | None]) -> str:
    detail = _DETAIL.get()
    _DETAIL.reset(token)
    return detail_text(detail) if detail else ""


async def append_entry(connection: asyncpg.Connection, entry: LogEntry) -> int:
    """Append one entry from a tool outside the gateway (an owner or maintenance action: the first
    administrator, a log-in, a load), in the same chain, under the chain's lock; no checkpoint (the
    gateway signs the next one, which covers it). Returns its sequence number."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('juki.operation_log'))")
        tail = await connection.fetchrow(
            "SELECT sequence, entry_hash FROM operation_log ORDER BY sequence DESC LIMIT 1")
        after = (tail["sequence"], bytes(tail["entry_hash"])) if tail else (0, GENESIS)
        rows = _chain([entry], *after)
        stale = await connection.fetchrow(_APPEND, rows, *after, None, None, None)
        if stale is not None:  # impossible under the lock: the chain would fork
            raise Unavailable("the operation log's tail moved under its lock", "OPERATION_LOG_UNAVAILABLE")
    sequence: int = rows[0][0]
    return sequence


STATUS_WINDOW = dt.timedelta(minutes=5)
MAX_STATUS_WINDOW = dt.timedelta(hours=1)


def status_window(request: pb.GetOperationLogStatusRequest) -> dt.timedelta:
    """The window GetOperationLogStatus counts: default 5 minutes, at most an hour (a bounded scan)."""
    if not request.HasField("window"):
        return STATUS_WINDOW
    window = request.window.ToTimedelta()
    if window <= dt.timedelta(0) or window > MAX_STATUS_WINDOW:
        raise InvalidArgument([FieldViolation("window", "must be more than 0 and at most 1 hour")])
    return window


def entry_message(row: asyncpg.Record) -> pb.OperationLogEntry:
    entry = pb.OperationLogEntry(
        name=f"operationLogEntries/{row['sequence']}", sequence=row["sequence"], request_id=row["request_id"],
        trace_id=row["trace_id"], organization=row["organization"], operator=row["operator"],
        method=row["method"], purpose=row["purpose"], legal_basis=row["legal_basis"],
        case_reference=row["case_reference"], decision=row["decision"], reason=row["reason"],
        status=row["status"], resident_codes=row["resident_codes"], disclosed_fields=row["disclosed_fields"],
        disclosed_versions=row["disclosed_versions"], detail=row["detail"],
    )
    entry.time.FromDatetime(row["time"])
    return entry


class OperationLogServicer(operation_log_pb2_grpc.OperationLogServiceServicer):
    """Auditor queries (reached through the gateway's own purpose check and logging)."""

    def __init__(self, database: Database, catalogue: Callable[[], Catalogue] | None = None) -> None:
        self._database = database
        self._catalogue = catalogue

    async def ListOperationLogEntries(
        self, request: pb.ListOperationLogEntriesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListOperationLogEntriesResponse:
        limit = paging.page_size(request.page_size, maximum=1000)
        position = paging.decode_token(request.page_token, keys=("before",))
        if request.resident_code and (len(request.resident_code) != 11 or not request.resident_code.isdigit()):
            raise InvalidArgument([FieldViolation("resident_code", "must be 11 digits")])
        conditions, args = ["TRUE"], []  # type: tuple[list[str], list[object]]
        for column, value, operator in (
            ("sequence", paging.int_at(position, "before") if position else None, "<"),
            ("organization", request.organization or None, "="),
            ("operator", request.operator or None, "="),
            ("purpose", request.purpose or None, "="),
            ("time", request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time") else None, ">="),
            ("time", request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time") else None, "<"),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} {operator} ${len(args)}")
        if request.resident_code:
            args.append([request.resident_code])
            conditions.append(f"resident_codes @> ${len(args)}")
        args.append(limit + 1)
        query = (f"SELECT * FROM operation_log WHERE {' AND '.join(conditions)} "
                 f"ORDER BY sequence DESC LIMIT ${len(args)}")
        async with self._database.connection() as connection:
            rows = await connection.fetch(query, *args)
        token = paging.encode_token({"before": rows[limit - 1]["sequence"]}) if len(rows) > limit else ""
        return pb.ListOperationLogEntriesResponse(
            operation_log_entries=[entry_message(r) for r in rows[:limit]], next_page_token=token)

    async def GetMisuseReport(
        self, request: pb.GetMisuseReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.MisuseReport:
        review = _review(request)
        async with self._database.connection() as connection:
            return await misuse_report(connection, review)

    async def GetOperationLogStatus(
        self, request: pb.GetOperationLogStatusRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.OperationLogStatus:
        """Counts of the window's calls and the log's positions: what monitoring needs, no entry."""
        window = status_window(request)
        async with self._database.connection() as connection:
            tail = await connection.fetchval("SELECT max(sequence) FROM operation_log")
            checkpoint = await connection.fetchrow(
                "SELECT sequence, signed_at FROM operation_log_checkpoint ORDER BY sequence DESC LIMIT 1")
            # Bounded by the window (at most an hour) on operation_log_by_time; grouped to a few rows.
            counts = await connection.fetch(
                """SELECT method, decision, status, count(*) AS n FROM operation_log
                   WHERE time >= now() - $1::interval GROUP BY method, decision, status
                   ORDER BY n DESC, method LIMIT 1000""", window)
        status = pb.OperationLogStatus(tail_sequence=tail or 0,
                                       checkpoint_sequence=checkpoint["sequence"] if checkpoint else 0)
        if checkpoint is not None:
            status.checkpoint_sign_time.FromDatetime(checkpoint["signed_at"])
        status.window.FromTimedelta(window)
        status.method_call_counts.extend(
            pb.MethodCallCount(method=row["method"], decision=row["decision"], status=row["status"], count=row["n"])
            for row in counts)
        return status

    async def ListProvisionRecords(
        self, request: pb.ListProvisionRecordsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListProvisionRecordsResponse:
        violations = Violations()
        violations.resident_code("resident_code", request.resident_code, CheckDigitMode.OFF)
        violations.raise_if_any()
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token, keys=("before",))
        before = paging.int_at(position, "before") if position else None
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT * FROM operation_log
                    WHERE resident_codes @> $1 AND decision = {int(pb.DECISION_ALLOWED)} AND status = 'OK'
                      AND method ~ $2 AND ($3::bigint IS NULL OR sequence < $3)
                    ORDER BY sequence DESC LIMIT $4""",
                [request.resident_code], PROVISION_METHODS, before, limit + 1)
        records = []
        catalogue = self._catalogue() if self._catalogue is not None else None
        for row in rows[:limit]:
            record = pb.ProvisionRecord(recipient=row["organization"], purpose=row["purpose"],
                                        legal_basis=row["legal_basis"], method=row["method"],
                                        fields=row["disclosed_fields"], record_versions=row["disclosed_versions"])
            if catalogue is not None:  # names for the resident's notice (30-32: 提供先, 利用事務 in words)
                organization, purpose = catalogue.organizations.get(row["organization"]), \
                    catalogue.purposes.get(row["purpose"])
                record.recipient_name = organization.name if organization is not None else ""
                record.affair = purpose.affair if purpose is not None else ""
            record.time.FromDatetime(row["time"])
            records.append(record)
        token = paging.encode_token({"before": rows[limit - 1]["sequence"]}) if len(rows) > limit else ""
        return pb.ListProvisionRecordsResponse(provision_records=records, next_page_token=token)


# Methods that hand a resident's data to the caller (provision, transfer, ⑤ queries), as opposed to
# municipalities notifying their own changes.
PROVISION_METHODS = (r"^/juki\.(identity|annex)\.v1\.[A-Za-z]+/((BatchLookup|Lookup|Get|Search)[A-Za-z]*"
                     r"|List[A-Za-z]*Versions)$"
                     r"|^/juki\.agency\.v1\.AgencyService/QueryResident$")


@dataclass(frozen=True)
class Review:
    """What `misuse_report` reviews: a period, office hours in Japan time and the attention thresholds."""

    start: dt.datetime
    end: dt.datetime
    office_start: int
    """First office hour, Japan time; a human operator's call before it is off-hours."""
    office_end: int
    """End of office hours (exclusive), Japan time."""
    many_operators: int
    many_candidates: int


def _review(request: pb.GetMisuseReportRequest) -> Review:
    violations = Violations()
    if not request.HasField("start_time") or not request.HasField("end_time"):
        violations.add("start_time" if not request.HasField("start_time") else "end_time", "is required",
                       "REQUIRED_FIELD")
    violations.raise_if_any()
    start, end = request.start_time.ToDatetime(dt.UTC), request.end_time.ToDatetime(dt.UTC)
    office_start = request.office_start_hour if request.HasField("office_start_hour") else 8
    office_end = request.office_end_hour if request.HasField("office_end_hour") else 19
    if end <= start:
        violations.add("end_time", "must be after start_time")
    if not 0 <= office_start < office_end <= 24:
        violations.add("office_end_hour", "office hours must satisfy 0 <= start < end <= 24")
    if request.many_operators < 0 or request.many_candidates < 0:
        violations.add("many_operators" if request.many_operators < 0 else "many_candidates", "must not be negative")
    violations.raise_if_any()
    return Review(start, end, office_start, office_end, request.many_operators or 3, request.many_candidates or 10)


# Human work carries an operator (from the operator credential); calls without one are systems: a
# municipality's CS notifying (住基法 30-6, 30-41), the disclosure service reading for its cases, the
# agency. Systems run at any hour, so only operators' calls are volumes and off-hours use. The
# gateway's own entries (catalogue loads) are neither.
_HUMAN = "operator <> ''"
_SYSTEM = "operator = '' AND organization <> 'gateway'"


SECTION_ROWS = 200
SECTION_ENTRIES = 500


def closed_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """The prefecture's closed days from `start` to `end` that are not weekends: national holidays (国民の祝日に
    関する法律, substitute holidays included; the `holidays` package) and the year-end closure 12月29日-1月3日
    (地方自治法 4条の2, 群馬県の休日を定める条例)."""
    national = holidays.country_holidays("JP", years=range(start.year, end.year + 1))
    days = []
    day = start
    while day <= end:
        if day in national or (day.month, day.day) >= (12, 29) or (day.month, day.day) <= (1, 3):
            days.append(day)
        day += dt.timedelta(days=1)
    return days


async def _section(connection: asyncpg.Connection, name: str, query: str, *args: Any, limit: int,
                   omitted: list[pb.OmittedEntries]) -> list[asyncpg.Record]:
    """At most `limit` rows of `query` (which orders them); how many more there were goes into `omitted`."""
    rows = await connection.fetch(f"SELECT *, count(*) OVER () AS section_total FROM ({query}) AS s LIMIT {limit}",
                                  *args)
    total = rows[0]["section_total"] if rows else 0
    if total > len(rows):
        omitted.append(pb.OmittedEntries(section=name, count=total - len(rows)))
    return rows


async def misuse_report(connection: asyncpg.Connection, review: Review) -> pb.MisuseReport:
    """The misuse review of a period, from the operation log alone; a section too long to list says how many
    it left out (`omitted`), never shortening silently."""
    period = (review.start, review.end)
    omitted: list[pb.OmittedEntries] = []
    japan_days = (review.start.astimezone(JAPAN).date(), review.end.astimezone(JAPAN).date())
    volumes = await _section(connection, "volumes",
        f"""SELECT organization, operator, date_trunc('hour', time AT TIME ZONE '{JAPAN.key}') AS hour,
                   count(DISTINCT sequence) AS calls, count(DISTINCT code) AS residents
            FROM operation_log LEFT JOIN LATERAL unnest(resident_codes) AS code ON TRUE
            WHERE time >= $1 AND time < $2 AND {_HUMAN}
            GROUP BY 1, 2, 3 ORDER BY calls DESC, hour""", *period, limit=SECTION_ROWS, omitted=omitted)
    off_hours = await _section(connection, "off_hours",
        f"""SELECT * FROM operation_log WHERE time >= $1 AND time < $2 AND {_HUMAN}
              AND (extract(hour FROM time AT TIME ZONE '{JAPAN.key}') < $3
                   OR extract(hour FROM time AT TIME ZONE '{JAPAN.key}') >= $4
                   OR extract(isodow FROM time AT TIME ZONE '{JAPAN.key}') >= 6
                   OR (time AT TIME ZONE '{JAPAN.key}')::date = ANY($5::date[]))
            ORDER BY sequence""", *period, review.office_start, review.office_end, closed_days(*japan_days),
        limit=SECTION_ENTRIES, omitted=omitted)
    systems = await _section(connection, "system_calls",
        f"""SELECT organization, method, count(DISTINCT sequence) AS calls, count(DISTINCT code) AS residents,
                   min(time) AS first_time, max(time) AS last_time
            FROM operation_log LEFT JOIN LATERAL unnest(resident_codes) AS code ON TRUE
            WHERE time >= $1 AND time < $2 AND {_SYSTEM}
            GROUP BY 1, 2 ORDER BY calls DESC, organization, method""", *period, limit=SECTION_ROWS,
        omitted=omitted)
    residents = await _section(connection, "residents_of_interest",
        f"""SELECT code, count(DISTINCT organization || '/' || operator) AS operators, count(*) AS calls
           FROM operation_log, unnest(resident_codes) AS code
           WHERE time >= $1 AND time < $2 AND decision = {int(pb.DECISION_ALLOWED)} AND method ~ $3
           GROUP BY code HAVING count(DISTINCT organization || '/' || operator) >= $4
           ORDER BY operators DESC, code""", *period, PROVISION_METHODS, review.many_operators,
        limit=SECTION_ROWS, omitted=omitted)
    broad = await _section(connection, "broad_searches",
        """SELECT * FROM operation_log WHERE time >= $1 AND time < $2 AND method ~ '/Search[A-Za-z]*$'
             AND cardinality(resident_codes) >= $3 ORDER BY sequence""", *period, review.many_candidates,
        limit=SECTION_ENTRIES, omitted=omitted)
    empty = await _section(connection, "empty_searches",
        f"""SELECT * FROM operation_log WHERE time >= $1 AND time < $2 AND method ~ '/Search[A-Za-z]*$'
             AND decision = {int(pb.DECISION_ALLOWED)} AND status = 'OK' AND cardinality(resident_codes) = 0
            ORDER BY sequence""", *period, limit=SECTION_ENTRIES, omitted=omitted)
    denied = await _section(connection, "denied",
        f"""SELECT * FROM operation_log WHERE time >= $1 AND time < $2 AND decision = {int(pb.DECISION_DENIED)}
            ORDER BY sequence""", *period, limit=SECTION_ENTRIES, omitted=omitted)
    report = pb.MisuseReport(
        off_hours=[entry_message(r) for r in off_hours], broad_searches=[entry_message(r) for r in broad],
        empty_searches=[entry_message(r) for r in empty], denied=[entry_message(r) for r in denied],
        omitted=omitted,
        residents_of_interest=[pb.ResidentAttention(resident_code=r["code"], operators=r["operators"],
                                                    calls=r["calls"]) for r in residents])
    for row in systems:
        system = report.system_calls.add(organization=row["organization"], method=row["method"],
                                         calls=row["calls"], residents=row["residents"])
        system.first_time.FromDatetime(row["first_time"])
        system.last_time.FromDatetime(row["last_time"])
    for row in volumes:
        volume = report.volumes.add(organization=row["organization"], operator=row["operator"], calls=row["calls"],
                                    residents=row["residents"])
        volume.hour.FromDatetime(row["hour"].replace(tzinfo=JAPAN))
    return report
