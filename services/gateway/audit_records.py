"""AuditRecordService: reviews of the operation log and the incident register (issue 19).

The seed's 自己点検 and 内部監査 leave evidence here (who reviewed which period, what they found, what follows),
and incidents are kept with the items a report to the Personal Information Protection Commission asks for
(個人情報の保護に関する法律 第68条, 施行規則 第43条: 概要, 項目, 本人の数, 原因, 二次被害, 本人への対応, 公表,
再発防止策). `juki pia report` counts the serious ones of the past year for the PIA threshold judgement.
Reached through the gateway (purpose AUDIT-RECORDS, role auditor): each call is in the hash-chained log.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg

from juki.gateway.v1 import audit_records_pb2 as pb
from juki_services.gateway.oplog import record_detail
from jukilib import caller, paging
from jukilib.db.pool import Database
from jukilib.errors import FieldViolation, InvalidArgument, NotFound, Violations

MAX_TEXT = 4000
STATES = {pb.INCIDENT_STATE_OPEN: "open", pb.INCIDENT_STATE_REPORTED: "reported", pb.INCIDENT_STATE_CLOSED: "closed"}
STATE_VALUES = {name: value for value, name in STATES.items()}
TEXTS = ("summary", "cause", "secondary_damage", "persons_notified", "publication", "prevention_measures")
UPDATABLE = frozenset({"state", "occur_time", "discover_time", "data_items", "persons_affected", "serious",
                       "commission_report_time", *TEXTS})
TIMES = ("occur_time", "discover_time", "commission_report_time")


def _time(message: Any, field: str) -> dt.datetime | None:
    return getattr(message, field).ToDatetime(dt.UTC) if message.HasField(field) else None


def review_message(row: asyncpg.Record) -> pb.AuditReview:
    review = pb.AuditReview(name=f"auditReviews/{row['id']}", reviewer=row["reviewer"], findings=row["findings"],
                            follow_up=row["follow_up"], entry_sequences=row["entry_sequences"])
    for field in ("start_time", "end_time", "create_time"):
        getattr(review, field).FromDatetime(row[field])
    return review


def incident_message(row: asyncpg.Record) -> pb.Incident:
    incident = pb.Incident(name=f"incidents/{row['id']}", state=STATE_VALUES[row["state"]],
                           data_items=row["data_items"], persons_affected=row["persons_affected"],
                           serious=row["serious"], recorded_by=row["recorded_by"],
                           **{field: row[field] for field in TEXTS})
    for field in (*TIMES, "create_time", "update_time"):
        if row[field] is not None:
            getattr(incident, field).FromDatetime(row[field])
    return incident


def _check_review(review: pb.AuditReview) -> tuple[dt.datetime, dt.datetime]:
    violations = Violations()
    start, end = _time(review, "start_time"), _time(review, "end_time")
    if start is None or end is None:
        violations.add("audit_review.start_time" if start is None else "audit_review.end_time", "is required",
                       "REQUIRED_FIELD")
    elif end <= start:
        violations.add("audit_review.end_time", "must be after start_time")
    violations.required_text("audit_review.findings", review.findings, max_length=MAX_TEXT)
    violations.required_text("audit_review.follow_up", review.follow_up, max_length=MAX_TEXT)
    if any(sequence < 1 for sequence in review.entry_sequences):
        violations.add("audit_review.entry_sequences", "must be sequence numbers of the operation log (1 or more)")
    violations.raise_if_any()
    assert start is not None and end is not None
    return start, end


def _text(incident: pb.Incident, field: str, violations: Violations) -> str:
    value: str = getattr(incident, field)
    if field == "summary":
        violations.required_text(f"incident.{field}", value, max_length=MAX_TEXT)
    else:
        violations.optional_text(f"incident.{field}", value, max_length=MAX_TEXT)
    return value


def _when(incident: pb.Incident, field: str, violations: Violations) -> dt.datetime | None:
    value = _time(incident, field)
    if value is None and field != "commission_report_time":
        violations.add(f"incident.{field}", "is required", "REQUIRED_FIELD")
    return value


def _items(incident: pb.Incident, field: str, violations: Violations) -> list[str]:
    if not incident.data_items or any(not item.strip() or len(item) > 100 for item in incident.data_items):
        violations.add(f"incident.{field}", "must list one or more items (e.g. 氏名, 個人番号), each at most "
                                            "100 characters")
    return list(incident.data_items)


def _count(incident: pb.Incident, field: str, violations: Violations) -> int:
    if incident.persons_affected < 0:
        violations.add(f"incident.{field}", "must not be negative")
    return incident.persons_affected


def _state(incident: pb.Incident, field: str, violations: Violations) -> str:
    if incident.state not in STATES:
        violations.add(f"incident.{field}", "must be OPEN, REPORTED or CLOSED")
    return STATES.get(incident.state, "open")


def _flag(incident: pb.Incident, field: str, violations: Violations) -> bool:
    return incident.serious


CHECKS: dict[str, Any] = {**dict.fromkeys(TEXTS, _text), **dict.fromkeys(TIMES, _when), "data_items": _items,
                          "persons_affected": _count, "state": _state, "serious": _flag}


def _check_incident(incident: pb.Incident, paths: frozenset[str]) -> dict[str, Any]:
    """The columns to write for `paths` of `incident`; INVALID_ARGUMENT naming every bad field."""
    violations = Violations()
    values = {field: CHECKS[field](incident, field, violations) for field in sorted(paths)}
    violations.raise_if_any()
    return values


def _id(name: str, collection: str, field: str) -> uuid.UUID:
    prefix, _, raw = name.partition("/")
    try:
        if prefix != collection:
            raise ValueError(name)
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, f"must be {collection}/{{id}}")]) from None


class AuditRecords:
    """The methods of AuditRecordService; `who` is the caller the gateway authenticated."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def CreateAuditReview(self, request: pb.CreateAuditReviewRequest, who: caller.Caller) -> pb.AuditReview:
        start, end = _check_review(request.audit_review)
        review = request.audit_review
        async with self._database.connection() as connection:
            row = await connection.fetchrow(
                """INSERT INTO audit_review (id, reviewer, start_time, end_time, findings, follow_up, entry_sequences)
                   VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
                uuid.uuid4(), who.operator, start, end, review.findings, review.follow_up,
                sorted(set(review.entry_sequences)))
        record_detail(target=f"auditReviews/{row['id']}", period=[start.isoformat(), end.isoformat()],
                      entry_sequences=row["entry_sequences"])
        return review_message(row)

    async def ListAuditReviews(self, request: pb.ListAuditReviewsRequest,
                               who: caller.Caller) -> pb.ListAuditReviewsResponse:
        rows, token = await self._page("audit_review", "create_time", request.page_size, request.page_token)
        return pb.ListAuditReviewsResponse(audit_reviews=[review_message(r) for r in rows], next_page_token=token)

    async def CreateIncident(self, request: pb.CreateIncidentRequest, who: caller.Caller) -> pb.Incident:
        incident = pb.Incident()
        incident.CopyFrom(request.incident)
        incident.state = incident.state or pb.INCIDENT_STATE_OPEN
        values = _check_incident(incident, UPDATABLE)
        columns = ", ".join(values)
        placeholders = ", ".join(f"${i}" for i in range(3, len(values) + 3))
        async with self._database.connection() as connection:
            row = await connection.fetchrow(
                f"INSERT INTO incident (id, recorded_by, {columns}) VALUES ($1, $2, {placeholders}) RETURNING *",
                uuid.uuid4(), who.operator, *values.values())
        record_detail(target=f"incidents/{row['id']}", before=None, after=_incident_state(row))
        return incident_message(row)

    async def GetIncident(self, request: pb.GetIncidentRequest, who: caller.Caller) -> pb.Incident:
        incident_id = _id(request.name, "incidents", "name")
        async with self._database.connection() as connection:
            row = await connection.fetchrow("SELECT * FROM incident WHERE id = $1", incident_id)
        if row is None:
            raise NotFound("no such incident", "INCIDENT_NOT_FOUND")
        return incident_message(row)

    async def ListIncidents(self, request: pb.ListIncidentsRequest, who: caller.Caller) -> pb.ListIncidentsResponse:
        rows, token = await self._page("incident", "discover_time", request.page_size, request.page_token)
        return pb.ListIncidentsResponse(incidents=[incident_message(r) for r in rows], next_page_token=token)

    async def UpdateIncident(self, request: pb.UpdateIncidentRequest, who: caller.Caller) -> pb.Incident:
        incident_id = _id(request.incident.name, "incidents", "incident.name")
        paths = frozenset(request.update_mask.paths)
        if not paths or not paths <= UPDATABLE:
            raise InvalidArgument([FieldViolation("update_mask", f"must name some of {', '.join(sorted(UPDATABLE))}")])
        values = _check_incident(request.incident, paths)
        sets = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=2))
        async with self._database.connection() as connection, connection.transaction():
            before = await connection.fetchrow("SELECT * FROM incident WHERE id = $1 FOR UPDATE", incident_id)
            if before is None:
                raise NotFound("no such incident", "INCIDENT_NOT_FOUND")
            row = await connection.fetchrow(
                f"UPDATE incident SET {sets}, update_time = now() WHERE id = $1 RETURNING *",
                incident_id, *values.values())
        record_detail(target=f"incidents/{incident_id}", before=_incident_state(before), after=_incident_state(row))
        return incident_message(row)

    async def _page(self, table: str, newest: str, size: int, token: str) -> tuple[list[asyncpg.Record], str]:
        """A page of `table`, newest first by `newest`, then id (keyset pagination)."""
        limit = paging.page_size(size)
        position = paging.decode_token(token, keys=("time", "id"))
        try:
            after = ((dt.datetime.fromisoformat(str(position["time"])), uuid.UUID(str(position["id"])))
                     if position else None)
        except ValueError:
            raise paging.invalid_token() from None
        async with self._database.connection() as connection:
            rows = await connection.fetch(
                f"""SELECT * FROM {table} WHERE $1::timestamptz IS NULL OR ({newest}, id) < ($1, $2)
                    ORDER BY {newest} DESC, id DESC LIMIT $3""",
                after[0] if after else None, after[1] if after else None, limit + 1)
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        next_token = paging.encode_token({"time": last[newest].isoformat(), "id": str(last["id"])}) if last else ""
        return list(rows[:limit]), next_token


def _incident_state(row: asyncpg.Record) -> dict[str, Any]:
    """What the log keeps of an incident's change: its state, seriousness, count and report time (the texts
    stay in the register)."""
    report = row["commission_report_time"]
    return {"state": row["state"], "serious": row["serious"], "persons_affected": row["persons_affected"],
            "commission_report_time": report.isoformat() if report else None}
