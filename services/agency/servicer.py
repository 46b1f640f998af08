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
from juki.annex.v1 import annex_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib import caller
from jukilib.config import DEFAULT_CALL_TIMEOUT
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
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


def _check_batch(changes: Sequence[Incoming]) -> None:
    """1 to MAX_BATCH changes, each with its key; violations name the request (`requests[3].idempotency_key`)."""
    if not 1 <= len(changes) <= MAX_BATCH:
        raise InvalidArgument([FieldViolation("requests", f"must hold 1 to {MAX_BATCH} changes", "BATCH_SIZE")])
    missing = [FieldViolation(f"requests[{i}].idempotency_key", "is required", "REQUIRED_FIELD")
               for i, change in enumerate(changes) if not change.key]
    if missing:
        raise InvalidArgument(missing)
