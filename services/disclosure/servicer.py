"""DisclosureService: opening and reading disclosure cases."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from grpc import aio

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.disclosure.v1 import disclosure_pb2_grpc
from jukilib import caller, paging
from jukilib.db.pool import Database
from jukilib.errors import FieldViolation, InvalidArgument, NotFound
from jukilib.register.validation import Violations
from services.disclosure import rules, store


def case_message(row: asyncpg.Record) -> pb.DisclosureCase:
    case = pb.DisclosureCase(
        name=f"disclosureCases/{row['id']}",
        subject_resident_code=row["subject_resident_code"],
        requester_kind=row["requester_kind"],
        requester_name=row["requester_name"],
        identity_documents=row["identity_documents"],
        channel=row["channel"],
        scopes=row["scopes"],
        state=row["state"],
        etag=f'W/"{row["revision"]}"',
    )
    case.receive_time.FromDatetime(row["receive_time"])
    case.create_time.FromDatetime(row["create_time"])
    case.update_time.FromDatetime(row["update_time"])
    for target, day in ((case.deadline, row["deadline"]), (case.target_date, row["target_date"])):
        target.year, target.month, target.day = day.year, day.month, day.day
    return case


def _case_id(name: str) -> uuid.UUID:
    prefix = "disclosureCases/"
    try:
        if not name.startswith(prefix):
            raise ValueError
        return uuid.UUID(name[len(prefix):])
    except ValueError:
        raise InvalidArgument([FieldViolation("name", "must be of the form disclosureCases/{id}")]) from None


class DisclosureServicer(disclosure_pb2_grpc.DisclosureServiceServicer):
    def __init__(self, database: Database, target_days: int,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._database = database
        self._target_days = target_days
        self._clock = clock

    def _new_case(self, request: pb.CreateDisclosureCaseRequest) -> store.NewCase:
        now = self._clock()
        violations = Violations()
        if not request.HasField("disclosure_case"):
            violations.add("disclosure_case", "is required", "REQUIRED_FIELD")
            violations.raise_if_any()
        case = request.disclosure_case
        rules.validate_new_case(case, now, violations)
        if len(request.request_id) > 64:
            violations.add("request_id", "must be at most 64 characters")
        violations.raise_if_any()
        received = case.receive_time.ToDatetime(dt.UTC) if case.HasField("receive_time") else now
        who = caller.current()
        return store.NewCase(
            id=uuid.uuid4(),
            request_id=request.request_id or None,
            subject_resident_code=case.subject_resident_code,
            requester_kind=case.requester_kind,
            requester_name=case.requester_name,
            identity_documents=list(case.identity_documents),
            channel=case.channel,
            scopes=list(case.scopes),
            receive_time=received,
            state=pb.DISCLOSURE_STATE_RECEIVED,
            deadline=rules.deadline_from(received, rules.STATUTORY_DAYS),
            target_date=rules.deadline_from(received, self._target_days),
            opened_by="/".join(p for p in (who.organization, who.operator) if p),
        )

    async def CreateDisclosureCase(
        self, request: pb.CreateDisclosureCaseRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DisclosureCase:
        new_case = self._new_case(request)

        async def create(connection: asyncpg.Connection) -> asyncpg.Record:
            if new_case.request_id:
                existing = await store.find_by_request_id(connection, new_case.request_id)
                if existing is not None:
                    return existing
            return await store.insert_case(connection, new_case)

        row = await self._database.run_in_transaction(
            create, retry_on=(asyncpg.UniqueViolationError, asyncpg.SerializationError))
        return case_message(row)

    async def GetDisclosureCase(
        self, request: pb.GetDisclosureCaseRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DisclosureCase:
        case_id = _case_id(request.name)
        async with self._database.connection() as connection:
            row = await store.get_case(connection, case_id)
        if row is None:
            raise NotFound("no such disclosure case", "CASE_NOT_FOUND")
        return case_message(row)

    async def ListDisclosureCases(
        self, request: pb.ListDisclosureCasesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListDisclosureCasesResponse:
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token, keys=("time", "id"))
        before = None
        if position:
            try:
                before = (dt.datetime.fromisoformat(str(position["time"])), uuid.UUID(str(position["id"])))
            except ValueError:
                raise paging.invalid_token() from None
        async with self._database.connection() as connection:
            rows = await store.list_cases(connection, before, limit + 1)
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = paging.encode_token({"time": last["receive_time"].isoformat(), "id": str(last["id"])})
        return pb.ListDisclosureCasesResponse(disclosure_cases=[case_message(r) for r in rows[:limit]],
                                              next_page_token=token)
