"""Reports to municipalities (住基法 12-5): made, listed, acknowledged, and resolved by the
municipality's correcting notification. Shared by both registers."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from juki.register.v1 import register_pb2 as pb
from jukilib import paging
from jukilib.db.pool import Database
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violations,
)
from jukilib.register import store
from jukilib.register.validation import FIELD_PATH, REASON_CODE

_SOURCE_OF_CALLER = {"agency": pb.REPORT_SOURCE_AGENCY_ERROR_REPORT, "disclosure": pb.REPORT_SOURCE_CORRECTION_REQUEST}
"""Where a report comes from, by the organisation that made it: the agency (30-8), the disclosure service
(a correction request found justified, 30-35); any other caller is the prefecture's own staff."""


def source_of(organization: str) -> int:
    """A report's source, from who made it: never from what the request says."""
    return _SOURCE_OF_CALLER.get(organization, pb.REPORT_SOURCE_PREFECTURE_FINDING)
OMISSION = "OMISSION"
"""The reason of a report of 脱漏: a person missing from the file. It names the municipality that should have
recorded them and resolves on that municipality's 記載 of the 住民票コード."""
_FORWARDED = (pb.REPORT_STATE_OPEN, pb.REPORT_STATE_ACKNOWLEDGED, pb.REPORT_STATE_RESOLVED)
"""States of a report its municipality sees: an agency's report under the desk's review is not one (30-8)."""
_FORWARDED_SQL = ", ".join(str(int(state)) for state in _FORWARDED)
_CLOSED = (pb.REPORT_STATE_RESOLVED, pb.REPORT_STATE_DISMISSED)
_CLOSED_SQL = ", ".join(str(int(state)) for state in _CLOSED)
_COLUMNS = """id, person_id, coalesce(version, 0) AS version, municipality_code, source, reason_code, fields,
    origin_reference, state, create_time, acknowledge_time, resolve_time, resolving_version, outcome,
    answer_reason_code, dismiss_reason_code,
    coalesce((SELECT resident_code FROM person p WHERE p.id = municipality_report.person_id),
             municipality_report.resident_code) AS resident_code"""


@dataclass(frozen=True)
class NewReport:
    resident_code: str
    source: int
    reason_code: str
    fields: list[str]
    origin_reference: str
    request_id: str | None
    municipality_code: str = ""
    """Only for an omission (`OMISSION`): the municipality that should have recorded the person."""


def validate_new_report(report: Any, request_id: str, record_fields: frozenset[str], source: int) -> NewReport:
    """Boundary checks of a report to make (paths under `municipality_report.`); `record_fields`: the
    fields of the register's record, the only ones a report can name; `source`: from the caller."""
    violations = Violations()
    violations.resident_code("municipality_report.resident_code", report.resident_code, CheckDigitMode.OFF)
    if not REASON_CODE.match(report.reason_code):
        violations.add("municipality_report.reason_code", "must be an UPPER_SNAKE_CASE code of at most 64 characters")
    omission = report.reason_code == OMISSION
    if omission != bool(report.municipality_code):
        violations.add("municipality_report.municipality_code",
                       "must name the municipality that should have recorded the person" if omission else
                       "must be empty: the report goes to the municipality that notified the version found wrong")
    if (not omission and not report.fields) or not all(FIELD_PATH.match(f) for f in report.fields):
        violations.add("municipality_report.fields", "must list record field paths such as record.full_name")
    elif unknown := [f for f in report.fields if f.removeprefix("record.") not in record_fields]:
        violations.add("municipality_report.fields", f"names no field of the record: {', '.join(unknown)[:200]}")
    if len(report.origin_reference) > 128 or len(request_id) > 64:
        violations.add("municipality_report.origin_reference" if len(report.origin_reference) > 128
                       else "request_id", "is too long")
    violations.raise_if_any()
    return NewReport(report.resident_code, source, report.reason_code, list(report.fields),
                     report.origin_reference, request_id or None, report.municipality_code)


def _addressed(row: asyncpg.Record, municipality: str) -> bool:
    """Whether the report is one `municipality` has: addressed to it, and forwarded to it."""
    return bool(row["municipality_code"] == municipality and row["state"] in _FORWARDED)


def report_id(name: str) -> uuid.UUID:
    prefix = "municipalityReports/"
    try:
        if not name.startswith(prefix):
            raise ValueError
        return uuid.UUID(name[len(prefix):])
    except ValueError:
        raise InvalidArgument([FieldViolation("name", "must be of the form municipalityReports/{id}")]) from None


class MunicipalityReports:
    """12-5 reports of one register."""

    def __init__(self, database: Database, municipalities: MunicipalityTable, record_type: Any,
                 overdue_after: dt.timedelta = dt.timedelta(days=30)) -> None:
        self._database = database
        self._municipalities = municipalities
        self.overdue_after = overdue_after
        """An open report older than this is overdue (`RegisterConfig.report_overdue_days`)."""
        self.record_fields = frozenset(record_type.DESCRIPTOR.fields_by_name)
        """The fields of the register's record: a report names only these."""

    async def create(self, new: NewReport) -> asyncpg.Record:
        async def work(connection: asyncpg.Connection) -> asyncpg.Record:
            if new.request_id:
                existing = await connection.fetchrow(
                    f"SELECT {_COLUMNS} FROM municipality_report WHERE request_id = $1", new.request_id)
                if existing is not None:
                    return existing
            person_id = await store.person_of_code(connection, new.resident_code)
            if new.reason_code == OMISSION:
                return await self._omission(connection, new, person_id)
            current = await store.current_by_id(connection, person_id) if person_id else None
            if current is None:
                raise NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")
            # Addressed to the municipality that notified the version found wrong (the current one). 住基法
            # 30-8: the agency's report is received for the desk's review; the municipality learns of it only
            # when the desk forwards it (12-5).
            received = new.source == pb.REPORT_SOURCE_AGENCY_ERROR_REPORT
            row = await connection.fetchrow(
                f"""INSERT INTO municipality_report (id, request_id, person_id, version, municipality_code, source,
                        reason_code, fields, origin_reference, state)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLUMNS}""",
                uuid.uuid4(), new.request_id, current.person_id, current.current.version,
                current.current.change.municipality_code, new.source, new.reason_code, new.fields,
                new.origin_reference, int(pb.REPORT_STATE_RECEIVED if received else pb.REPORT_STATE_OPEN),
            )
            assert row is not None
            return row

        return await self._database.run_in_transaction(
            work, retry_on=(asyncpg.UniqueViolationError, asyncpg.SerializationError))

    async def _omission(self, connection: asyncpg.Connection, new: NewReport, person_id: Any) -> asyncpg.Record:
        """住基法 12-5 (脱漏): a person missing from the file, reported to the municipality that should have
        recorded them; resolved by its 記載 of the 住民票コード (`store.write`, `load`)."""
        if person_id is not None:
            raise FailedPrecondition("the person is in the file: report what is wrong in their record",
                                     "PERSON_IN_FILE")
        if new.municipality_code not in self._municipalities:
            raise InvalidArgument([FieldViolation("municipality_report.municipality_code",
                                                  "is not a municipality of the prefecture")])
        row = await connection.fetchrow(
            f"""INSERT INTO municipality_report (id, request_id, resident_code, municipality_code, source,
                    reason_code, fields, origin_reference)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}""",
            uuid.uuid4(), new.request_id, new.resident_code, new.municipality_code, new.source, new.reason_code,
            new.fields, new.origin_reference)
        assert row is not None
        return row

    def _own_municipality(self, organization: str) -> str | None:
        """The caller's municipality, when it is one: a municipality's CS sees and acknowledges only what is
        addressed to it; the prefecture's own organs see every report."""
        return organization if organization in self._municipalities else None

    async def list(self, state: int, size: int, token: str, organization: str, *,
                   overdue_only: bool = False) -> tuple[list[asyncpg.Record], str]:
        limit = paging.page_size(size)
        position = paging.decode_token(token, keys=("offset",))
        offset = paging.int_at(position, "offset") if position else 0
        municipality = self._own_municipality(organization)
        # One statement per shape, no `$1 IS NULL OR …`: the registers run with generic plans, which could
        # not use the (municipality_code, create_time) index for such a filter.
        where = (f"municipality_code = $1 AND state IN ({_FORWARDED_SQL})" if municipality is not None
                 else "$1::text IS NULL")
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM municipality_report
                    WHERE {where} AND ($2::smallint = {int(pb.REPORT_STATE_UNSPECIFIED)} OR state = $2)
                      AND (NOT $5 OR (state NOT IN ({_CLOSED_SQL}) AND create_time < now() - $6::interval))
                    ORDER BY create_time, id OFFSET $3 LIMIT $4""",
                municipality, state, offset, limit + 1, overdue_only, self.overdue_after,
            )
        token = paging.encode_token({"offset": offset + limit}) if len(rows) > limit else ""
        return list(rows[:limit]), token

    async def get(self, name: str, organization: str) -> asyncpg.Record:
        """One report; a municipality's CS sees only those addressed to it."""
        identifier = report_id(name)
        municipality = self._own_municipality(organization)
        async with self._database.connection() as connection:
            row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM municipality_report WHERE id = $1", identifier)
        if row is None or (municipality is not None and not _addressed(row, municipality)):
            raise NotFound("no such report", "REPORT_NOT_FOUND")
        found: asyncpg.Record = row
        return found

    async def acknowledge(self, name: str, organization: str) -> asyncpg.Record:
        identifier = report_id(name)
        municipality = self._own_municipality(organization)
        if municipality is None:
            raise PermissionDenied("only the municipality a report is addressed to may acknowledge it",
                                   "NOT_THE_ADDRESSEE")
        async with self._database.transaction() as connection:
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM municipality_report WHERE id = $1 FOR UPDATE", identifier)
            if row is None or not _addressed(row, municipality):
                raise NotFound("no such report addressed to this municipality", "REPORT_NOT_FOUND")
            if row["state"] == pb.REPORT_STATE_RESOLVED:
                raise FailedPrecondition("the report is already resolved", "REPORT_RESOLVED")
            if row["state"] == pb.REPORT_STATE_ACKNOWLEDGED:
                return row
            updated = await connection.fetchrow(
                f"""UPDATE municipality_report SET state = {int(pb.REPORT_STATE_ACKNOWLEDGED)}, acknowledge_time = now()
                    WHERE id = $1 RETURNING {_COLUMNS}""", identifier)
            assert updated is not None
            return updated


    async def review(self, name: str, organization: str, target: int, reason_code: str = "") -> asyncpg.Record:
        """住基法 30-8: the prefecture's desk reviews an agency's report: RECEIVED → INVESTIGATING, then
        INVESTIGATING → OPEN (reported to the municipality, 12-5) or → DISMISSED with a reason."""
        if self._own_municipality(organization) is not None:
            raise PermissionDenied("only the prefecture reviews the agency's reports", "NOT_THE_PREFECTURE")
        identifier = report_id(name)
        if target == pb.REPORT_STATE_DISMISSED and not REASON_CODE.match(reason_code):
            raise InvalidArgument([FieldViolation("reason_code", "must be an UPPER_SNAKE_CASE code of at most 64 "
                                                                 "characters saying why nothing is reported")])
        async with self._database.transaction() as connection:
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM municipality_report WHERE id = $1 FOR UPDATE", identifier)
            if row is None:
                raise NotFound("no such report", "REPORT_NOT_FOUND")
            if row["state"] not in _REVIEW_STEPS.get(target, ()):
                raise FailedPrecondition(
                    f"the report is in state {row['state']}, which does not lead to state {target}",
                    "REPORT_STATE_CONFLICT")
            updated = await connection.fetchrow(
                f"""UPDATE municipality_report
                    SET state = $2::smallint, dismiss_reason_code = nullif($3::text, ''),
                        forward_time = CASE WHEN $2::smallint = {int(pb.REPORT_STATE_OPEN)} THEN now()
                                            ELSE forward_time END
                    WHERE id = $1 RETURNING {_COLUMNS}""", identifier, target, reason_code)
            assert updated is not None
            return updated

    async def answer(self, answer: Answer, organization: str) -> asyncpg.Record:
        """住基法 12-5: the addressed municipality closes a report: no error found (with its reason), or
        corrected by a notification of its own for the person, after the reported version."""
        municipality = self._own_municipality(organization)
        if municipality is None:
            raise PermissionDenied("only the municipality a report is addressed to may answer it", "NOT_THE_ADDRESSEE")
        async with self._database.transaction() as connection:
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM municipality_report WHERE id = $1 FOR UPDATE", answer.report_id)
            if row is None or not _addressed(row, municipality):
                raise NotFound("no such report addressed to this municipality", "REPORT_NOT_FOUND")
            if row["state"] == pb.REPORT_STATE_RESOLVED:
                raise FailedPrecondition("the report is already resolved", "REPORT_RESOLVED")
            resolving = None
            if answer.outcome == pb.REPORT_OUTCOME_CORRECTED:
                resolving = await connection.fetchval(
                    """SELECT version FROM person_version
                       WHERE person_id = $1 AND municipality_code = $2 AND notification_id = $3 AND version > $4""",
                    row["person_id"], municipality, answer.notification_id, row["version"])
                if resolving is None:
                    raise FailedPrecondition("no notification of this municipality with this id follows the reported "
                                             "version of the person", "FIXING_NOTIFICATION_NOT_FOUND")
            updated = await connection.fetchrow(
                f"""UPDATE municipality_report
                    SET state = {int(pb.REPORT_STATE_RESOLVED)}, outcome = $2, answer_reason_code = $3,
                        resolving_version = $4, resolve_time = now()
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                answer.report_id, answer.outcome, answer.reason_code or None, resolving)
            assert updated is not None
            return updated


_REVIEW_STEPS: dict[int, tuple[int, ...]] = {
    pb.REPORT_STATE_INVESTIGATING: (pb.REPORT_STATE_RECEIVED,),
    pb.REPORT_STATE_OPEN: (pb.REPORT_STATE_INVESTIGATING,),
    pb.REPORT_STATE_DISMISSED: (pb.REPORT_STATE_RECEIVED, pb.REPORT_STATE_INVESTIGATING),
}
"""The desk's steps on an agency's report: the states each target state may be reached from."""


@dataclass(frozen=True)
class Answer:
    report_id: uuid.UUID
    outcome: int
    reason_code: str
    notification_id: str


def validate_answer(request: Any) -> Answer:
    """Boundary checks of AnswerMunicipalityReport: no error needs its reason, corrected its notification."""
    violations = Violations()
    try:
        identifier = report_id(request.name)
    except InvalidArgument as error:
        violations.items.extend(error.violations)
        identifier = uuid.UUID(int=0)
    if request.outcome == pb.REPORT_OUTCOME_NO_ERROR:
        if not REASON_CODE.match(request.reason_code):
            violations.add("reason_code", "must be an UPPER_SNAKE_CASE code of at most 64 characters saying why "
                           "no error was found")
        if request.notification_id:
            violations.add("notification_id", "must be empty when no error was found")
    elif request.outcome == pb.REPORT_OUTCOME_CORRECTED:
        if not request.notification_id or len(request.notification_id) > 64:
            violations.add("notification_id", "must name the notification that corrected the record")
        if request.reason_code:
            violations.add("reason_code", "must be empty when the record was corrected")
    else:
        violations.add("outcome", "must be REPORT_OUTCOME_NO_ERROR or REPORT_OUTCOME_CORRECTED", "REQUIRED_FIELD")
    violations.raise_if_any()
    return Answer(identifier, int(request.outcome), request.reason_code, request.notification_id)


def report_message(row: asyncpg.Record, target: Any, overdue_after: dt.timedelta | None = None,
                   now: dt.datetime | None = None) -> Any:
    """Fill a `juki.register.v1.MunicipalityReport`; `overdue` from `overdue_after` (None: not said)."""
    target.name = f"municipalityReports/{row['id']}"
    target.resident_code = row["resident_code"]
    target.source = row["source"]
    target.reason_code = row["reason_code"]
    target.fields.extend(row["fields"])
    target.municipality_code = row["municipality_code"]
    target.version = row["version"]
    target.state = row["state"]
    target.origin_reference = row["origin_reference"]
    target.create_time.FromDatetime(row["create_time"])
    for field, value in (("acknowledge_time", row["acknowledge_time"]), ("resolve_time", row["resolve_time"])):
        if value is not None:
            getattr(target, field).FromDatetime(value)
    if row["resolving_version"] is not None:
        target.resolving_version = row["resolving_version"]
    if row["outcome"] is not None:
        target.outcome = row["outcome"]
    target.answer_reason_code = row["answer_reason_code"] or ""
    target.dismiss_reason_code = row["dismiss_reason_code"] or ""
    if overdue_after is not None and row["state"] not in _CLOSED:
        target.overdue = row["create_time"] < (now or dt.datetime.now(dt.UTC)) - overdue_after
    return target
