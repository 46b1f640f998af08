"""The stand-in agency: records forwarded changes idempotently, answers queries, injects faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib import caller, paging
from jukilib.config import DEFAULT_CALL_TIMEOUT
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violations,
    relayed,
)
from jukilib.grpc import deadlines, tracing


def event_order(version: identity_pb2.ResidentVersion) -> tuple[tuple[int, int, int], int, int, str, str]:
    """The register's order of a person's versions (event date, notification time, municipality,
    notification id): the current record is the last in it, whatever order the changes arrived in (a
    late 修正 takes its place in history and does not overwrite newer data)."""
    change = version.change
    return ((change.event_date.year, change.event_date.month, change.event_date.day), change.notify_time.seconds,
            change.notify_time.nanos, change.municipality_code, change.notification_id)


MAX_BATCH = 1000
"""Changes one batch call may carry."""
LIST_DEFAULT, LIST_MAX = 500, 1000
"""Changes per page of ListReceivedChanges: by default, at most (AIP-158: larger sizes are capped)."""
LISTING_PEERS = {agency_pb2.FILE_IDENTITY: "identity", agency_pb2.FILE_ANNEX: "annex"}
"""Who may list the changes of each file: that file's register (its client certificate), and nobody else."""
VERSION_TYPES = {"identity": identity_pb2.ResidentVersion, "annex": annex_pb2.AnnexResidentVersion}
_LIST_POSITION = ("xid", "key")

# A change's place is the transaction that recorded it (migration 0002); only transactions older than every
# one still running are answered, so a change committed after a page was read comes after its token. The
# first page starts at the oldest transaction holding a change received since the time.
_START = """SELECT min(commit_xid)::text FROM received_change WHERE register = $1 AND received_at >= $2"""
_LIST = """
SELECT idempotency_key, resident_code, received_at, payload, commit_xid::text AS xid FROM received_change
WHERE register = $1 AND received_at >= $2 AND (commit_xid, idempotency_key) > ($3::text::xid8, $4::text)
  AND commit_xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY commit_xid, idempotency_key
LIMIT $5
"""

_RECORD_MANY = """
WITH incoming AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[]) WITH ORDINALITY
        AS i (idempotency_key, resident_code, version, payload, n)),
inserted AS (
    INSERT INTO received_change (idempotency_key, register, resident_code, version, payload)
    SELECT idempotency_key, $5, resident_code, version, payload FROM incoming ORDER BY n
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING idempotency_key, received_at)
SELECT i.idempotency_key, coalesce(ins.received_at, earlier.received_at) AS received_at,
       ins.idempotency_key IS NULL AS duplicate
FROM incoming i
LEFT JOIN inserted ins ON ins.idempotency_key = i.idempotency_key
LEFT JOIN received_change earlier ON earlier.idempotency_key = i.idempotency_key
ORDER BY i.n
"""


@dataclass(frozen=True)
class Incoming:
    """One change as received: its key, whose it is, and the version as the prefecture sent it."""

    key: str
    resident_code: str
    version: int
    payload: bytes


@dataclass
class Faults:
    """Faults applied to incoming changes (stand-in control)."""

    fail_next_calls: int = 0
    delay_seconds: float = 0.0


class AgencyServicer(agency_pb2_grpc.AgencyServiceServicer):
    def __init__(self, database: Database, gateway: aio.Channel | None = None, *,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._database = database
        self._call_timeout = call_timeout
        """Seconds a call to the gateway may take when the call being served has no deadline."""
        self._faults = Faults()
        self._gateway = gateway

    async def _inject_faults(self) -> None:
        if self._faults.delay_seconds:
            await asyncio.sleep(self._faults.delay_seconds)
        if self._faults.fail_next_calls > 0:
            self._faults.fail_next_calls -= 1
            raise Unavailable("the agency stand-in was told to fail this call", "INJECTED_FAULT")

    async def _record(self, register: str, key: str, resident_code: str, version: int,
                      payload: bytes) -> agency_pb2.ChangeReceipt:
        if not key:
            raise InvalidArgument([FieldViolation("idempotency_key", "is required", "REQUIRED_FIELD")])
        await self._inject_faults()
        async with self._database.transaction() as connection:
            inserted = await connection.fetchval(
                """INSERT INTO received_change (idempotency_key, register, resident_code, version, payload)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING RETURNING received_at""",
                key, register, resident_code, version, payload,
            )
            received_at = inserted or await connection.fetchval(
                "SELECT received_at FROM received_change WHERE idempotency_key = $1", key)
        receipt = agency_pb2.ChangeReceipt(idempotency_key=key, duplicate=inserted is None)
        receipt.receive_time.FromDatetime(received_at)
        return receipt

    async def _record_many(self, register: str, changes: Sequence[Incoming]) -> list[agency_pb2.ChangeReceipt]:
        """Record `changes` in one transaction, in order; a key seen before is answered as a duplicate."""
        _check_batch(changes)
        await self._inject_faults()
        async with self._database.transaction() as connection:
            rows = await connection.fetch(_RECORD_MANY, [c.key for c in changes], [c.resident_code for c in changes],
                                          [c.version for c in changes], [c.payload for c in changes], register)
            # A key a concurrent call was inserting is neither inserted here nor visible to this statement.
            late = [row["idempotency_key"] for row in rows if row["received_at"] is None]
            found: dict[str, dt.datetime] = {} if not late else {
                row["idempotency_key"]: row["received_at"] for row in await connection.fetch(
                    "SELECT idempotency_key, received_at FROM received_change WHERE idempotency_key = ANY($1::text[])",
                    late)}
        receipts = []
        for row in rows:
            receipt = agency_pb2.ChangeReceipt(idempotency_key=row["idempotency_key"], duplicate=row["duplicate"])
            receipt.receive_time.FromDatetime(row["received_at"] or found[row["idempotency_key"]])
            receipts.append(receipt)
        return receipts

    async def BatchRecordIdentityChanges(
        self, request: agency_pb2.BatchRecordIdentityChangesRequest, context: aio.ServicerContext[Any, Any]
    ) -> agency_pb2.BatchRecordIdentityChangesResponse:
        changes = [Incoming(r.idempotency_key, r.resident_version.record.resident_code, r.resident_version.version,
                            r.resident_version.SerializeToString()) for r in request.requests]
        return agency_pb2.BatchRecordIdentityChangesResponse(
            change_receipts=await self._record_many("identity", changes))

    async def BatchRecordAnnexChanges(
        self, request: agency_pb2.BatchRecordAnnexChangesRequest, context: aio.ServicerContext[Any, Any]
    ) -> agency_pb2.BatchRecordAnnexChangesResponse:
        changes = [Incoming(r.idempotency_key, r.annex_resident_version.record.resident_code,
                            r.annex_resident_version.version, r.annex_resident_version.SerializeToString())
                   for r in request.requests]
        return agency_pb2.BatchRecordAnnexChangesResponse(change_receipts=await self._record_many("annex", changes))

    async def RecordIdentityChange(
        self, request: agency_pb2.RecordIdentityChangeRequest, context: aio.ServicerContext[Any, Any]
    ) -> agency_pb2.ChangeReceipt:
        version = request.resident_version
        return await self._record("identity", request.idempotency_key, version.record.resident_code,
                                  version.version, version.SerializeToString())

    async def RecordAnnexChange(
        self, request: agency_pb2.RecordAnnexChangeRequest, context: aio.ServicerContext[Any, Any]
    ) -> agency_pb2.ChangeReceipt:
        version = request.annex_resident_version
        return await self._record("annex", request.idempotency_key, version.record.resident_code,
                                  version.version, version.SerializeToString())

    async def ListReceivedChanges(
        self, request: agency_pb2.ListReceivedChangesRequest, context: aio.ServicerContext[Any, Any]
    ) -> agency_pb2.ListReceivedChangesResponse:
        """The changes of a file received since a time (reconciliation after a restore), for its register only."""
        peer = caller.current().peer
        if peer not in LISTING_PEERS.values():
            raise PermissionDenied("only the prefecture's registers may list the changes the agency holds",
                                   "NOT_A_REGISTER")
        register, since, size, position = _list_request(request)
        if register != peer:
            raise PermissionDenied("a register may list the changes of its own file only", "NOT_THE_FILES_REGISTER")
        async with self._database.connection() as connection:
            if position is None:
                start = await connection.fetchval(_START, register, since)
                if start is None:
                    return agency_pb2.ListReceivedChangesResponse()
                position = (start, "")
            rows = await connection.fetch(_LIST, register, since, position[0], position[1], size)
        response = agency_pb2.ListReceivedChangesResponse()
        for row in rows:
            change = response.received_changes.add(idempotency_key=row["idempotency_key"],
                                                   resident_code=row["resident_code"])
            change.receive_time.FromDatetime(row["received_at"])
            version = change.resident_version if register == "identity" else change.annex_resident_version
            version.ParseFromString(row["payload"])
        if len(rows) == size:
            response.next_page_token = paging.encode_token({"xid": rows[-1]["xid"], "key": rows[-1]["idempotency_key"]})
        return response

    async def QueryResident(
        self, request: agency_pb2.QueryResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.ResidentVersion:
        violations = Violations()
        violations.resident_code("resident_code", request.resident_code, CheckDigitMode.OFF)
        violations.raise_if_any()
        async with self._database.connection() as connection:
            payloads = await connection.fetch(
                "SELECT payload FROM received_change WHERE register = 'identity' AND resident_code = $1",
                request.resident_code,
            )
        if not payloads:
            raise NotFound("the agency holds no record with this resident code", "PERSON_NOT_FOUND")
        return max((identity_pb2.ResidentVersion.FromString(row["payload"]) for row in payloads), key=event_order)

    async def SendErrorReport(
        self, request: agency_pb2.SendErrorReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        """住基法 30-8: the agency reports an error in the prefecture's record, through the gateway."""
        if self._gateway is None:
            raise FailedPrecondition("the stand-in does not know the prefecture's gateway (JUKI_GATEWAY_TARGET)",
                                     "GATEWAY_NOT_CONFIGURED")
        stubs = {agency_pb2.FILE_IDENTITY: identity_pb2_grpc.IdentityServiceStub,
                 agency_pb2.FILE_ANNEX: annex_pb2_grpc.AnnexServiceStub}
        if request.file not in stubs:
            raise InvalidArgument([FieldViolation("file", "is required", "REQUIRED_FIELD")])
        report = register_pb2.MunicipalityReport(
            resident_code=request.resident_code, reason_code=request.reason_code, fields=request.fields,
            origin_reference=f"agency/{uuid.uuid4()}")
        create = stubs[request.file](self._gateway).CreateMunicipalityReport
        with tracing.outgoing(tracing.method_name(create), ((caller.PURPOSE_KEY, "AGENCY-ERROR-REPORT-30-8"),)
                              ) as metadata:
            try:
                answer: register_pb2.MunicipalityReport = await create(
                    register_pb2.CreateMunicipalityReportRequest(municipality_report=report,
                                                                 request_id=report.origin_reference),
                    metadata=metadata, timeout=deadlines.timeout(self._call_timeout))
            except grpc.aio.AioRpcError as error:
                raise relayed(error) from None  # e.g. a field the record lacks: the agency learns which
        return answer

    async def SetFaultInjection(
        self, request: agency_pb2.SetFaultInjectionRequest, context: aio.ServicerContext[Any, Any]
    ) -> agency_pb2.FaultInjection:
        faults = request.fault_injection
        if faults.fail_next_calls < 0:
            raise InvalidArgument([FieldViolation("fault_injection.fail_next_calls", "must not be negative")])
        self._faults = Faults(faults.fail_next_calls, faults.delay.ToTimedelta().total_seconds())
        return faults


def _list_request(request: agency_pb2.ListReceivedChangesRequest
                  ) -> tuple[str, dt.datetime, int, tuple[str, str] | None]:
    """(register, since, page size, position after which to list) of a request; every bad field named."""
    violations = Violations()
    register = LISTING_PEERS.get(request.file)
    if register is None:
        violations.add("file", "is required: FILE_IDENTITY or FILE_ANNEX", "REQUIRED_FIELD")
    since = None
    if not request.HasField("received_since"):
        violations.add("received_since", "is required", "REQUIRED_FIELD")
    else:
        try:
            since = request.received_since.ToDatetime(dt.UTC)
        except (ValueError, OverflowError):
            violations.add("received_since", "must be a time between the years 1 and 9999")
    if request.page_size < 0:
        violations.add("page_size", "must not be negative")
    position = None
    try:
        decoded = paging.decode_token(request.page_token, keys=_LIST_POSITION)
        if decoded is not None:
            xid, key = decoded["xid"], decoded["key"]
            if not isinstance(xid, str) or not xid.isdigit() or len(xid) > 20 or not isinstance(key, str):
                raise paging.invalid_token()
            position = (xid, key)
    except InvalidArgument as error:
        violations.items.extend(error.violations)
    violations.raise_if_any()
    assert register is not None and since is not None
    return register, since, min(request.page_size or LIST_DEFAULT, LIST_MAX), position


def _check_batch(changes: Sequence[Incoming]) -> None:
    """1 to MAX_BATCH changes, each with its key; violations name the request (`requests[3].idempotency_key`)."""
    if not 1 <= len(changes) <= MAX_BATCH:
        raise InvalidArgument([FieldViolation("requests", f"must hold 1 to {MAX_BATCH} changes", "BATCH_SIZE")])
    missing = [FieldViolation(f"requests[{i}].idempotency_key", "is required", "REQUIRED_FIELD")
               for i, change in enumerate(changes) if not change.key]
    if missing:
        raise InvalidArgument(missing)
