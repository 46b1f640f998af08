"""The operation log store and the auditors' query service."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from grpc import aio

from juki.gateway.v1 import operation_log_pb2 as pb
from juki.gateway.v1 import operation_log_pb2_grpc
from jukilib import paging
from jukilib.db.pool import Database
from jukilib.errors import FieldViolation, InvalidArgument, Unavailable


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


_INSERT = """
INSERT INTO operation_log (time, request_id, trace_id, organization, operator, method, purpose, legal_basis,
    case_reference, decision, reason, status, resident_codes, disclosed_fields)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""


class OperationLog:
    """Writes entries; a write that fails makes the call fail closed (UNAVAILABLE, nothing returned)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def write(self, entry: LogEntry) -> None:
        try:
            async with self._database.connection() as connection:
                await connection.execute(
                    _INSERT, entry.time, entry.request_id, entry.trace_id, entry.organization, entry.operator,
                    entry.method, entry.purpose, entry.legal_basis, entry.case_reference, entry.decision,
                    entry.reason, entry.status, sorted(set(entry.resident_codes)), entry.disclosed_fields,
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, Unavailable):
            raise Unavailable("the operation log cannot be written; nothing was returned",
                              "OPERATION_LOG_UNAVAILABLE") from None


def entry_message(row: asyncpg.Record) -> pb.OperationLogEntry:
    entry = pb.OperationLogEntry(
        name=f"operationLogEntries/{row['sequence']}", sequence=row["sequence"], request_id=row["request_id"],
        trace_id=row["trace_id"], organization=row["organization"], operator=row["operator"],
        method=row["method"], purpose=row["purpose"], legal_basis=row["legal_basis"],
        case_reference=row["case_reference"], decision=row["decision"], reason=row["reason"],
        status=row["status"], resident_codes=row["resident_codes"], disclosed_fields=row["disclosed_fields"],
    )
    entry.time.FromDatetime(row["time"])
    return entry


class OperationLogServicer(operation_log_pb2_grpc.OperationLogServiceServicer):
    """Auditor queries (reached through the gateway's own purpose check and logging)."""

    def __init__(self, database: Database) -> None:
        self._database = database

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
