"""The disclosure desk's work: the transitions of disclosure, correction and usage-suspension cases, each in
its own transaction, with the written notices they produce.

Concurrency (AIP-154): a transition locks the case row (`FOR UPDATE`), compares the caller's etag
(the revision) when one is given, checks the state machine and writes one new revision. Work that
calls other services (gathering records, the 12-5 report) runs between two transactions: the first
moves the case on (e.g. to SEARCHING) and notes its revision, the second finishes only if the case
is still at that revision, so two clerks cannot both decide one case.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from google.protobuf import json_format

from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from juki_services.disclosure import corrections, notices, rules, store
from juki_services.disclosure.records import ANNEX, IDENTITY, REPORTS_PURPOSE, FileRecords, Records
from jukilib import caller
from jukilib.db.pool import Database
from jukilib.domain.dates import JAPAN, fiscal_year
from jukilib.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    TimeWindow,
    Violations,
)
from jukilib.keyring import Keyring

S, C, U = pb.DisclosureState, pb.CorrectionState, pb.UsageSuspensionState
FILES: dict[int, str] = {pb.RECORD_FILE_IDENTITY: IDENTITY, pb.RECORD_FILE_ANNEX: ANNEX}
RECORD_FIELDS: dict[int, frozenset[str]] = {
    pb.RECORD_FILE_IDENTITY: frozenset(identity_pb2.IdentityRecord.DESCRIPTOR.fields_by_name),
    pb.RECORD_FILE_ANNEX: frozenset(annex_pb2.AnnexRecord.DESCRIPTOR.fields_by_name)}
"""The fields of each file's record: what a correction request can be about."""
SCOPES: dict[int, int] = {pb.RECORD_FILE_IDENTITY: pb.DISCLOSURE_SCOPE_IDENTITY_FILE,
                          pb.RECORD_FILE_ANNEX: pb.DISCLOSURE_SCOPE_ANNEX_FILE}


def parse_name(name: str, collection: str, field: str = "name") -> uuid.UUID:
    prefix = f"{collection}/"
    try:
        if not name.startswith(prefix):
            raise ValueError
        return uuid.UUID(name[len(prefix):])
    except ValueError:
        raise InvalidArgument([FieldViolation(field, f"must be of the form {collection}/{{id}}")]) from None


def parse_document_name(name: str, field: str = "name") -> tuple[str, uuid.UUID, uuid.UUID | None]:
    """(case kind, case id, document id or None) of `…Cases/{id}[/documents/{id}]`."""
    parts = name.split("/")
    kinds = {"disclosureCases": "disclosure", "correctionCases": "correction", "usageSuspensionCases": "suspension",
             "organNotifications": "organ"}
    try:
        if parts[0] not in kinds or len(parts) not in (2, 4) or (len(parts) == 4 and parts[2] != "documents"):
            raise ValueError
        return kinds[parts[0]], uuid.UUID(parts[1]), uuid.UUID(parts[3]) if len(parts) == 4 else None
    except (ValueError, IndexError):
        raise InvalidArgument([FieldViolation(
            field, "must be of the form disclosureCases/{id}/documents/{id}, correctionCases/{id}/documents/{id}, "
                   "usageSuspensionCases/{id}/documents/{id} or organNotifications/{id}/documents/{id}")],
        ) from None


def actor_of(who: caller.Caller) -> str:
    """Who acted, as a case's history records it: the organisation and the operator (an opaque staff id)."""
    return "/".join(p for p in (who.organization, who.operator) if p)


def _check_etag(row: asyncpg.Record, etag: str) -> None:
    if etag and etag != etag_of(row):
        raise Aborted("the case changed since it was read; read it again (etag mismatch)", "ETAG_MISMATCH")


def etag_of(row: asyncpg.Record) -> str:
    return f'W/"{row["revision"]}"'


def _date(target: Any, day: dt.date) -> None:
    target.year, target.month, target.day = day.year, day.month, day.day


def case_message(row: asyncpg.Record, today: dt.date) -> pb.DisclosureCase:
    case = pb.DisclosureCase(
        name=f"disclosureCases/{row['id']}", subject_resident_code=row["subject_resident_code"],
        requester_kind=row["requester_kind"], requester_name=row["requester_name"],
        identity_documents=row["identity_documents"], channel=row["channel"], scopes=row["scopes"],
        state=row["state"], etag=etag_of(row), documents=row["documents"],
        deadline_status=rules.deadline_status(row["state"], row["effective_deadline"], row["target_date"], today),
    )
    _timed(case, row)
    return case


def _timed(case: pb.DisclosureCase | pb.UsageSuspensionCase, row: asyncpg.Record) -> None:
    """The times and the deadline (with its extension) of a case that runs against one (30-33, 個人情報保護法 102)."""
    case.receive_time.FromDatetime(row["receive_time"])
    case.create_time.FromDatetime(row["create_time"])
    case.update_time.FromDatetime(row["update_time"])
    _date(case.deadline, row["deadline"])
    _date(case.target_date, row["target_date"])
    if row["extension_deadline"] is not None:
        case.extension.reason = row["extension_reason"]
        _date(case.extension.new_deadline, row["extension_deadline"])
        case.extension.extend_time.FromDatetime(row["extension_time"])
        case.extension.notice = row["extension_notice"] or ""


def correction_message(row: asyncpg.Record, steps: list[asyncpg.Record],
                       items: list[dict[str, Any]] | None = None) -> pb.CorrectionCase:
    """The case as answered; `items`: the request's items with their values opened (else the row's)."""
    case = pb.CorrectionCase(
        name=f"correctionCases/{row['id']}", disclosure_case=f"disclosureCases/{row['disclosure_case_id']}",
        file=row["file"], subject_resident_code=row["subject_resident_code"], state=row["state"],
        municipality_report=row["municipality_report"] or "", resolving_version=row["resolving_version"] or 0,
        documents=row["documents"], etag=etag_of(row),
        items=[pb.CorrectionItem(field=i["field"], action=i["action"], requested_value=i["requested_value"])
               for i in (row["items"] if items is None else items)],
    )
    for step in steps:
        added = case.investigation_steps.add(description=step["description"], actor=step["actor"])
        added.create_time.FromDatetime(step["at"])
    for recipient in row["wrong_value_recipients"]:
        added_recipient = case.wrong_value_recipients.add(
            organization=recipient["organization"], purposes=recipient["purposes"], fields=recipient["fields"],
            record_versions=sorted({p["record_version"] for p in recipient["provisions"]}),
            notice=recipient.get("notice", ""))
        for provision in recipient["provisions"]:
            added_recipient.provision_times.add().FromDatetime(dt.datetime.fromisoformat(provision["time"]))
    case.receive_time.FromDatetime(row["receive_time"])
    case.create_time.FromDatetime(row["create_time"])
    case.update_time.FromDatetime(row["update_time"])
    return case


def suspension_message(row: asyncpg.Record, today: dt.date) -> pb.UsageSuspensionCase:
    case = pb.UsageSuspensionCase(
        name=f"usageSuspensionCases/{row['id']}", subject_resident_code=row["subject_resident_code"],
        requester_kind=row["requester_kind"], requester_name=row["requester_name"],
        identity_documents=row["identity_documents"], channel=row["channel"], purposes=row["purposes"],
        ground=row["ground"], state=row["state"], resident_codes=row["resident_codes"],
        suspended_purposes=rules.suspended_purposes(row["state"], row["decision"], row["purposes"],
                                                    row["stopped_purposes"]),
        decision=row["decision"], decision_reason=row["decision_reason"], stopped_purposes=row["stopped_purposes"],
        etag=etag_of(row), documents=row["documents"],
        deadline_status=rules.deadline_status(row["state"], row["effective_deadline"], row["target_date"], today,
                                              rules.SUSPENSION_RUNNING),
    )
    _timed(case, row)
    return case


def _deadline_filter(status: int, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """(at risk on, overdue on) of a list request's deadline status."""
    if status not in (pb.DEADLINE_STATUS_UNSPECIFIED, pb.DEADLINE_STATUS_AT_RISK, pb.DEADLINE_STATUS_OVERDUE):
        raise InvalidArgument([FieldViolation("deadline_status", "must be AT_RISK or OVERDUE when set")])
    return (today if status == pb.DEADLINE_STATUS_AT_RISK else None,
            today if status == pb.DEADLINE_STATUS_OVERDUE else None)


class Desk:
    """Disclosure (30-32 … 30-34), correction (30-35) and usage-suspension (個人情報保護法 98 … 102) cases."""

    def __init__(self, database: Database, records: Records, target_days: int,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC), *, keyring: Keyring,
                 receipt_window: TimeWindow = rules.DEFAULT_RECEIPT_WINDOW,
                 office: notices.Office = notices.DEFAULT_OFFICE) -> None:
        self._database = database
        self._keyring = keyring  # seals the written notices at rest (store.insert_document)
        self._office = office
        self._records = records
        self._target_days = target_days
        self._clock = clock
        self._receipt_window = receipt_window

    def today(self) -> dt.date:
        return rules.japan_today(self._clock())

    def now(self) -> dt.datetime:
        return self._clock()

    async def issue(self, connection: asyncpg.Connection, case_kind: str, case_id: uuid.UUID,
                    draft: notices.Draft) -> str:
        """`_issue` for the organ notices (organ_notices.OrganNotices), numbered in the same sequence."""
        return await self._issue(connection, case_kind, case_id, draft)

    async def _issue(self, connection: asyncpg.Connection, case_kind: str, case_id: uuid.UUID,
                     draft: notices.Draft) -> str:
        """Number, render and store a notice in the caller's transaction; returns the document's name. The
        文書番号 is taken in the transaction that stores the notice: one rolled back leaves no gap."""
        year = fiscal_year(draft.issued.astimezone(JAPAN).date())
        sequence = await store.next_document_number(connection, year)
        notice = notices.issue(draft, self._office.document_number(year, sequence), self._office)
        return await store.insert_document(connection, self._keyring, case_kind, case_id, notice)

    # --- disclosure ----------------------------------------------------------------------------------

    def _received(self, request: Any, field: str, validate: Callable[..., None]) -> tuple[Any, dt.datetime]:
        """(the new case of `request.<field>`, when it was received), validated at the boundary: every bad
        field named at once (INVALID_ARGUMENT)."""
        now = self._clock()
        violations = Violations()
        if not request.HasField(field):
            violations.add(field, "is required", "REQUIRED_FIELD")
            violations.raise_if_any()
        case = getattr(request, field)
        validate(case, now, violations, self._receipt_window)
        if len(request.request_id) > 64:
            violations.add("request_id", "must be at most 64 characters")
        violations.raise_if_any()
        return case, case.receive_time.ToDatetime(dt.UTC) if case.HasField("receive_time") else now

    def new_case(self, request: pb.CreateDisclosureCaseRequest, actor: str) -> store.NewCase:
        case, received = self._received(request, "disclosure_case", rules.validate_new_case)
        return store.NewCase(
            id=uuid.uuid4(), request_id=request.request_id or None, subject_resident_code=case.subject_resident_code,
            requester_kind=case.requester_kind, requester_name=case.requester_name,
            identity_documents=list(case.identity_documents), channel=case.channel, scopes=list(case.scopes),
            receive_time=received, state=S.DISCLOSURE_STATE_RECEIVED,
            # 住基法 30-33: 30 days from receipt; the local target is tracked beside it.
            deadline=rules.deadline_from(received, rules.STATUTORY_DAYS),
            target_date=rules.deadline_from(received, self._target_days), opened_by=actor,
        )

    async def _create_once(self, request_id: str | None, find: Callable[[asyncpg.Connection, str], Awaitable[Any]],
                           insert: Callable[[asyncpg.Connection], Awaitable[asyncpg.Record]]) -> asyncpg.Record:
        """Insert a case once per request id (AIP-155): a repeat answers the case it made; a concurrent
        twin loses on the unique key, and its retry finds the winner's case."""

        async def work(connection: asyncpg.Connection) -> asyncpg.Record:
            if request_id:
                existing: asyncpg.Record | None = await find(connection, request_id)
                if existing is not None:
                    return existing
            return await insert(connection)

        row: asyncpg.Record = await self._database.run_in_transaction(
            work, retry_on=(asyncpg.UniqueViolationError, asyncpg.SerializationError))
        return row

    async def create(self, request: pb.CreateDisclosureCaseRequest, actor: str) -> asyncpg.Record:
        new_case = self.new_case(request, actor)
        return await self._create_once(new_case.request_id, store.find_by_request_id,
                                       lambda connection: store.insert_case(connection, new_case))

    async def get(self, case_id: uuid.UUID) -> asyncpg.Record:
        async with self._database.connection() as connection:
            row = await store.get_case(connection, case_id)
        if row is None:
            raise NotFound("no such disclosure case", "CASE_NOT_FOUND")
        return row

    async def _locked(self, connection: asyncpg.Connection, case_id: uuid.UUID, etag: str) -> asyncpg.Record:
        row = await store.get_case(connection, case_id, lock=True)
        if row is None:
            raise NotFound("no such disclosure case", "CASE_NOT_FOUND")
        _check_etag(row, etag)
        return row

    async def move(self, case_id: uuid.UUID, etag: str, target: int, actor: str, **columns: Any) -> asyncpg.Record:
        """A plain transition (verify, notify, close)."""
        async with self._database.transaction() as connection:
            row = await self._locked(connection, case_id, etag)
            rules.check_transition(row["state"], target)
            result: asyncpg.Record = await store.set_state(connection, case_id, target, actor, **columns)
            return result

    async def verify(self, case_id: uuid.UUID, etag: str, verified: bool, actor: str,
                     rejection_reason: str = "") -> asyncpg.Record:
        if verified:
            return await self.move(case_id, etag, S.DISCLOSURE_STATE_IDENTITY_VERIFIED, actor,
                                   identity_verify_time=self._clock())
        # A refusal is a 処分: the requester gets it in writing, with the reason and how to object.
        now = self._clock()
        async with self._database.transaction() as connection:
            row = await self._locked(connection, case_id, etag)
            rules.check_transition(row["state"], S.DISCLOSURE_STATE_REJECTED_IDENTITY)
            notice = notices.rejection_notice(case_message(row, rules.japan_today(now)), rejection_reason, now)
            document = await self._issue(connection, "disclosure", case_id, notice)
            result: asyncpg.Record = await store.set_state(
                connection, case_id, S.DISCLOSURE_STATE_REJECTED_IDENTITY, actor, document)
            return result

    async def extend(self, case_id: uuid.UUID, etag: str, extension: pb.DeadlineExtension,
                     actor: str) -> asyncpg.Record:
        """住基法 30-33 ②: once, before the deadline, with a reason, a new date and a written notice."""
        now = self._clock()
        async with self._database.transaction() as connection:
            row = await self._locked(connection, case_id, etag)
            after = rules.extended_state(row["state"])
            new_deadline = rules.validate_extension(extension, row["deadline"], row["extension_deadline"] is not None,
                                                    rules.japan_today(now))
            notice = notices.extension_notice(case_message(row, rules.japan_today(now)), row["deadline"],
                                              new_deadline, extension.reason, now)
            document = await self._issue(connection, "disclosure", case_id, notice)
            result: asyncpg.Record = await store.set_state(
                connection, case_id, after, actor, document, extension_reason=extension.reason,
                extension_deadline=new_deadline, extension_time=now)
            return result

    async def decide(self, case_id: uuid.UUID, etag: str, actor: str) -> asyncpg.Record:
        """Gather the records in scope through the gateway and issue the decision notice (30-32 ②)."""
        async with self._database.transaction() as connection:
            row = await self._locked(connection, case_id, etag)
            rules.check_transition(row["state"], S.DISCLOSURE_STATE_SEARCHING)
            searching = await store.set_state(connection, case_id, S.DISCLOSURE_STATE_SEARCHING, actor)
        case = case_message(searching, self.today())
        name, code, scopes = case.name, case.subject_resident_code, set(case.scopes)
        identity = await self._records.file_records(IDENTITY, code, name) \
            if pb.DISCLOSURE_SCOPE_IDENTITY_FILE in scopes else None
        # 住基法 30-44-13: the annex record is disclosed to the person in full, 国外転出者 or not.
        annex = await self._records.file_records(ANNEX, code, name) \
            if pb.DISCLOSURE_SCOPE_ANNEX_FILE in scopes else None
        provisions = None
        if pb.DISCLOSURE_SCOPE_PROVISION_STATUS in scopes:
            # 提供状況 under every 住民票コード the person has had (30-4: a new code does not hide what was
            # provided under the old one); the identity file's history names them.
            history = identity or await self._records.file_records(IDENTITY, code, name)
            provisions = await self._records.provisions(history.resident_codes(code), name)
        now = self._clock()
        notice, found = notices.decision_notice(case, identity, annex, provisions, now)
        decided = S.DISCLOSURE_STATE_DECIDED_DISCLOSE if found else S.DISCLOSURE_STATE_DECIDED_NOT_EXIST
        async with self._database.transaction() as connection:
            row = await self._locked(connection, case_id, "")
            if row["revision"] != searching["revision"]:
                raise Aborted("the case changed during the search; read it again", "CASE_CHANGED")
            document = await self._issue(connection, "disclosure", case_id, notice)
            result: asyncpg.Record = await store.set_state(connection, case_id, decided, actor, document,
                                                           decide_time=now)
            return result

    async def list_cases(self, request: pb.ListDisclosureCasesRequest,
                         before: tuple[dt.datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
        at_risk_on, overdue_on = _deadline_filter(request.deadline_status, self.today())
        async with self._database.connection() as connection:
            rows: list[asyncpg.Record] = await store.list_cases(
                connection, before, limit, open_only=request.open_only, at_risk_on=at_risk_on, overdue_on=overdue_on)
        return rows

    # --- documents -----------------------------------------------------------------------------------

    async def document(self, name: str, full: bool) -> Mapping[str, Any]:
        kind, case_id, document_id = parse_document_name(name)
        if document_id is None:
            raise InvalidArgument([FieldViolation("name", "must name a document")])
        async with self._database.connection() as connection:
            row = await store.get_document(connection, kind, case_id, document_id, keyring=self._keyring, full=full)
        if row is None:
            raise NotFound("no such document", "DOCUMENT_NOT_FOUND")
        return row

    async def documents(self, parent: str, offset: int, limit: int, full: bool) -> list[Mapping[str, Any]]:
        kind, case_id, document_id = parse_document_name(parent, "parent")
        if document_id is not None:
            raise InvalidArgument([FieldViolation("parent", "must name a case")])
        async with self._database.connection() as connection:
            return await store.list_documents(connection, kind, case_id, offset, limit, keyring=self._keyring,
                                              full=full)

    # --- correction ----------------------------------------------------------------------------------

    def correction_message(self, row: asyncpg.Record, steps: list[asyncpg.Record]) -> pb.CorrectionCase:
        """A correction case as answered, its requested values opened (stored sealed: store.seal_items)."""
        return correction_message(row, steps, store.open_items(self._keyring, row["id"], row["items"]))

    def _new_correction(self, request: pb.CreateCorrectionCaseRequest, actor: str) -> store.NewCorrection:
        violations = Violations()
        if not request.HasField("correction_case"):
            violations.add("correction_case", "is required", "REQUIRED_FIELD")
            violations.raise_if_any()
        case = request.correction_case
        disclosure_id = parse_name(case.disclosure_case, "disclosureCases", "correction_case.disclosure_case")
        if case.file not in FILES:
            violations.add("correction_case.file", "is required", "REQUIRED_FIELD")
        rules.validate_correction_items(case.items, violations, RECORD_FIELDS.get(case.file, frozenset()))
        now = self._clock()
        if case.HasField("receive_time"):
            violations.time_within("correction_case.receive_time", case.receive_time, now, self._receipt_window)
        if len(request.request_id) > 64:
            violations.add("request_id", "must be at most 64 characters")
        violations.raise_if_any()
        return store.NewCorrection(
            id=uuid.uuid4(), request_id=request.request_id or None, disclosure_case_id=disclosure_id, file=case.file,
            items=[{"field": i.field, "action": int(i.action), "requested_value": i.requested_value}
                   for i in case.items],
            receive_time=case.receive_time.ToDatetime(dt.UTC) if case.HasField("receive_time") else now,
            opened_by=actor)

    async def create_correction(self, request: pb.CreateCorrectionCaseRequest, actor: str) -> asyncpg.Record:
        new = self._new_correction(request, actor)

        async def insert(connection: asyncpg.Connection) -> asyncpg.Record:
            disclosure = await store.get_case(connection, new.disclosure_case_id)
            if disclosure is None:
                raise NotFound("no such disclosure case", "CASE_NOT_FOUND")
            # 住基法 30-35: only a person who received a disclosure of the file may ask for its correction.
            scope = SCOPES[new.file]
            disclosed = await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM disclosure_case_event WHERE case_id = $1 AND state = $2)",
                new.disclosure_case_id, S.DISCLOSURE_STATE_DECIDED_DISCLOSE)
            if disclosure["state"] not in rules.DISCLOSED or not disclosed or scope not in disclosure["scopes"]:
                raise FailedPrecondition("a correction needs a disclosure of this file to the person first",
                                         "NOT_DISCLOSED",
                                         {"disclosure_state": rules.state_name(disclosure["state"])})
            row: asyncpg.Record = await store.insert_correction(connection, new, disclosure["subject_resident_code"],
                                                                C.CORRECTION_STATE_RECEIVED, keyring=self._keyring)
            return row

        return await self._create_once(new.request_id, store.find_correction_by_request_id, insert)

    async def list_corrections(self, before: tuple[dt.datetime, uuid.UUID] | None, limit: int,
                               open_only: bool) -> list[tuple[asyncpg.Record, list[asyncpg.Record]]]:
        """Cases with their investigation steps."""
        async with self._database.connection() as connection:
            rows: list[asyncpg.Record] = await store.list_corrections(connection, before, limit, open_only=open_only)
            steps = await store.steps_of(connection, [r["id"] for r in rows])
        return [(row, steps[row["id"]]) for row in rows]

    async def retention_holds(self, after: str, limit: int) -> list[str]:
        """The subjects of open cases, for the registers' retention purge (store.retention_holds)."""
        async with self._database.connection() as connection:
            return await store.retention_holds(connection, after, limit)

    async def correction(self, case_id: uuid.UUID) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
        async with self._database.connection() as connection:
            row = await store.get_correction(connection, case_id)
            if row is None:
                raise NotFound("no such correction case", "CASE_NOT_FOUND")
            return row, await store.steps(connection, case_id)

    async def _locked_correction(self, connection: asyncpg.Connection, case_id: uuid.UUID,
                                 etag: str) -> asyncpg.Record:
        row = await store.get_correction(connection, case_id, lock=True)
        if row is None:
            raise NotFound("no such correction case", "CASE_NOT_FOUND")
        _check_etag(row, etag)
        return row

    async def record_step(self, case_id: uuid.UUID, etag: str, description: str, actor: str) -> None:
        violations = Violations()
        violations.required_text("step.description", description, max_length=rules.STEP_MAX)
        violations.raise_if_any()
        async with self._database.transaction() as connection:
            row = await self._locked_correction(connection, case_id, etag)
            rules.check_transition(row["state"], C.CORRECTION_STATE_INVESTIGATING, correction=True)
            await store.add_step(connection, case_id, description, actor)
            await store.set_correction_state(connection, case_id, C.CORRECTION_STATE_INVESTIGATING, actor)

    async def close_correction(self, case_id: uuid.UUID, etag: str, actor: str) -> None:
        async with self._database.transaction() as connection:
            row = await self._locked_correction(connection, case_id, etag)
            rules.check_transition(row["state"], C.CORRECTION_STATE_CLOSED, correction=True)
            await store.set_correction_state(connection, case_id, C.CORRECTION_STATE_CLOSED, actor)

    async def conclude(self, case_id: uuid.UUID, request: pb.ConcludeCorrectionInvestigationRequest,
                       actor: str) -> None:
        """No error → the written result. Error → a 12-5 report to the municipality, and the case waits."""
        target = C.CORRECTION_STATE_ERROR_FOUND if request.error_found else C.CORRECTION_STATE_NO_ERROR
        async with self._database.transaction() as connection:
            row = await self._locked_correction(connection, case_id, request.etag)
            rules.check_transition(row["state"], target, correction=True)
            items = row["items"]
            fields = rules.validate_conclusion(request.error_found, request.reason_code, list(request.fields),
                                               [i["field"] for i in items])
            await store.set_correction_state(connection, case_id, target, actor)
            steps = await store.steps(connection, case_id)
            concluded = await store.get_correction(connection, case_id)
        assert concluded is not None
        case = self.correction_message(concluded, steps)
        file = FILES[case.file]
        if request.error_found:
            # 住基法 12-5 (30-35): the governor cannot amend the 住民票; the municipality is told, and its
            # 修正 notification is what corrects the file (the background task follows the report).
            report = await self._records.create_report(file, case.subject_resident_code, request.reason_code, fields,
                                                       case.name)
            async with self._database.transaction() as connection:
                await self._finish(connection, case_id, concluded["revision"])
                await store.set_correction_state(connection, case_id, C.CORRECTION_STATE_MUNICIPALITY_NOTIFIED,
                                                 actor, report.name, municipality_report=report.name,
                                                 report_version=report.version, report_fields=fields)
                await store.set_correction_state(connection, case_id, C.CORRECTION_STATE_AWAITING_CS_UPDATE, actor)
            return
        notice = await self._no_error_notice(case, concluded["disclosure_case_id"])
        async with self._database.transaction() as connection:
            await self._finish(connection, case_id, concluded["revision"])
            document = await self._issue(connection, "correction", case_id, notice)
            await store.set_correction_state(connection, case_id, C.CORRECTION_STATE_RESULT_NOTIFIED, actor, document)

    async def _no_error_notice(self, case: Any, disclosure_case_id: uuid.UUID,
                               municipality_answer: str | None = None) -> notices.Draft:
        """The written result saying no error was found (30-35), with the record as it stands."""
        file = FILES[case.file]
        records = await self._records.file_records(file, case.subject_resident_code, case.name, REPORTS_PURPOSE)
        current = records.current
        versions = [f"{file}:{current.name}/versions/{current.version}"] if current is not None else []
        requester = await self._requester_name(disclosure_case_id)
        return notices.correction_result_notice(
            case, requester, outcome="NO_ERROR", steps=[s.description for s in case.investigation_steps],
            corrected={}, versions=versions, issued=self._clock(), municipality_answer=municipality_answer)

    async def _finish(self, connection: asyncpg.Connection, case_id: uuid.UUID, revision: int) -> None:
        row = await self._locked_correction(connection, case_id, "")
        if row["revision"] != revision:
            raise Aborted("the case changed meanwhile; read it again", "CASE_CHANGED")

    async def _requester_name(self, disclosure_case_id: uuid.UUID) -> str:
        async with self._database.connection() as connection:
            name: str = await connection.fetchval(
                "SELECT requester_name FROM disclosure_case WHERE id = $1", disclosure_case_id)
        return name

    # --- usage suspension (利用停止請求, 個人情報保護法 98 … 102; 番号法 30) ----------------------------------

    def _new_suspension(self, request: pb.CreateUsageSuspensionCaseRequest, actor: str) -> store.NewSuspension:
        case, received = self._received(request, "usage_suspension_case", rules.validate_new_suspension)
        return store.NewSuspension(
            id=uuid.uuid4(), request_id=request.request_id or None, subject_resident_code=case.subject_resident_code,
            resident_codes=[case.subject_resident_code], requester_kind=case.requester_kind,
            requester_name=case.requester_name, identity_documents=list(case.identity_documents),
            channel=case.channel, purposes=list(case.purposes), ground=case.ground, receive_time=received,
            # 個人情報保護法 102 ①: 30 days from the request, counted like a disclosure's; the target beside it.
            deadline=rules.deadline_from(received, rules.STATUTORY_DAYS),
            target_date=rules.deadline_from(received, self._target_days), opened_by=actor)

    async def _person(self, code: str, case: str) -> tuple[list[str], list[str]]:
        """(every 住民票コード the person named by `code` has had in either file, `code` first; the person's
        resources in the files) (30-4: a change of code does not make another person); read through the gateway
        under the case, which must be open (the gateway checks it)."""
        codes, persons = [code], []
        for file in (IDENTITY, ANNEX):
            records = await self._records.file_records(file, code, case)
            codes += records.resident_codes(code)
            if records.current is not None:
                persons.append(records.current.name)
        return list(dict.fromkeys(codes)), persons

    async def create_suspension(self, request: pb.CreateUsageSuspensionCaseRequest, actor: str) -> asyncpg.Record:
        """Open the case, then record every code and resource of the person before answering. From its insertion
        the gateway refuses the named purposes for the subject's code; the person's records are read under the
        case only once it exists and is open (issue 19), and from then on the refusal follows the person to
        every code they had or will have (`persons`, 住基法 30-4). Should the read fail, the case stays with the
        subject's code alone (refusing, never providing) and a repeat of the request (same request id)
        completes it."""
        new = self._new_suspension(request, actor)
        row = await self._create_once(new.request_id, store.find_suspension_by_request_id,
                                      lambda connection: store.insert_suspension(connection, new))
        if row["persons"]:
            return row  # a repeated request whose case is complete
        codes, persons = await self._person(row["subject_resident_code"], f"usageSuspensionCases/{row['id']}")
        async with self._database.connection() as connection:
            updated = await store.set_suspension_person(connection, row["id"], codes, persons)
        assert updated is not None
        return updated

    async def suspension(self, case_id: uuid.UUID) -> asyncpg.Record:
        async with self._database.connection() as connection:
            row = await store.get_suspension(connection, case_id)
        if row is None:
            raise NotFound("no such usage-suspension case", "CASE_NOT_FOUND")
        return row

    async def list_suspensions(self, request: pb.ListUsageSuspensionCasesRequest,
                               before: tuple[dt.datetime, uuid.UUID] | None, limit: int) -> list[asyncpg.Record]:
        at_risk_on, overdue_on = _deadline_filter(request.deadline_status, self.today())
        async with self._database.connection() as connection:
            rows: list[asyncpg.Record] = await store.list_suspensions(
                connection, before, limit, open_only=request.open_only, at_risk_on=at_risk_on, overdue_on=overdue_on)
        return rows

    async def _locked_suspension(self, connection: asyncpg.Connection, case_id: uuid.UUID,
                                 etag: str) -> asyncpg.Record:
        row = await store.get_suspension(connection, case_id, lock=True)
        if row is None:
            raise NotFound("no such usage-suspension case", "CASE_NOT_FOUND")
        _check_etag(row, etag)
        return row

    async def move_suspension(self, case_id: uuid.UUID, etag: str, target: int, actor: str) -> asyncpg.Record:
        """A plain transition (verify, notify, close)."""
        async with self._database.transaction() as connection:
            row = await self._locked_suspension(connection, case_id, etag)
            rules.check_transition(row["state"], target, suspension=True)
            result: asyncpg.Record = await store.set_suspension_state(connection, case_id, target, actor)
            return result

    async def verify_suspension(self, case_id: uuid.UUID, etag: str, verified: bool, actor: str,
                                rejection_reason: str = "") -> asyncpg.Record:
        """Identity verified, or the request rejected (identity not verified, not the person's own data): a 処分,
        in writing with the reason and the 教示; the named purposes are no longer refused."""
        if verified:
            return await self.move_suspension(case_id, etag, U.USAGE_SUSPENSION_STATE_IDENTITY_VERIFIED, actor)
        now = self._clock()
        async with self._database.transaction() as connection:
            row = await self._locked_suspension(connection, case_id, etag)
            rules.check_transition(row["state"], U.USAGE_SUSPENSION_STATE_REJECTED, suspension=True)
            notice = notices.usage_suspension_notice(suspension_message(row, rules.japan_today(now)), "REJECTED",
                                                     rejection_reason, now)
            document = await self._issue(connection, "suspension", case_id, notice)
            result: asyncpg.Record = await store.set_suspension_state(
                connection, case_id, U.USAGE_SUSPENSION_STATE_REJECTED, actor, document,
                decision_reason=rejection_reason)
            return result

    async def extend_suspension(self, case_id: uuid.UUID, etag: str, extension: pb.DeadlineExtension,
                                actor: str) -> asyncpg.Record:
        """個人情報保護法 102 ②: once, by at most 30 days, before the deadline, with a written reason."""
        now = self._clock()
        async with self._database.transaction() as connection:
            row = await self._locked_suspension(connection, case_id, etag)
            if row["state"] not in rules.SUSPENSION_RUNNING:
                name = rules.state_name(row["state"], pb.UsageSuspensionState)
                raise FailedPrecondition(f"the case is in state {name}; only a case whose deadline runs can be "
                                         "extended", "INVALID_STATE_TRANSITION", {"current_state": name})
            new_deadline = rules.validate_extension(extension, row["deadline"], row["extension_deadline"] is not None,
                                                    rules.japan_today(now), rules.SUSPENSION_EXTENSION_DAYS)
            notice = notices.usage_suspension_notice(suspension_message(row, rules.japan_today(now)), "EXTENDED",
                                                     extension.reason, now, deadline=row["deadline"],
                                                     new_deadline=new_deadline)
            document = await self._issue(connection, "suspension", case_id, notice)
            result: asyncpg.Record = await store.set_suspension_state(
                connection, case_id, row["state"], actor, document, extension_reason=extension.reason,
                extension_deadline=new_deadline, extension_time=now)
            return result

    async def decide_suspension(self, case_id: uuid.UUID, request: pb.DecideUsageSuspensionCaseRequest,
                                actor: str) -> asyncpg.Record:
        """個人情報保護法 101: stop (the purposes decided, for good) or not stop, with the reason, in writing."""
        now = self._clock()
        stop = request.decision == pb.USAGE_SUSPENSION_DECISION_STOP
        target = U.USAGE_SUSPENSION_STATE_DECIDED_STOP if stop else U.USAGE_SUSPENSION_STATE_DECIDED_NOT_STOP
        async with self._database.transaction() as connection:
            row = await self._locked_suspension(connection, case_id, request.etag)
            stopped = rules.validate_suspension_decision(request.decision, request.reason,
                                                         list(request.stopped_purposes), row["purposes"])
            rules.check_transition(row["state"], target, suspension=True)
            notice = notices.usage_suspension_notice(suspension_message(row, rules.japan_today(now)),
                                                     "STOP" if stop else "NOT_STOP", request.reason, now,
                                                     purposes=stopped)
            document = await self._issue(connection, "suspension", case_id, notice)
            result: asyncpg.Record = await store.set_suspension_state(
                connection, case_id, target, actor, document, decision=int(request.decision),
                decision_reason=request.reason, stopped_purposes=stopped)
            return result

    async def active_suspensions(self, after: uuid.UUID | None,
                                 limit: int) -> list[tuple[uuid.UUID, list[str], list[str], list[str]]]:
        """(case id, every code of the person, purposes refused now, the person's resources) of each case
        refusing provisions."""
        async with self._database.connection() as connection:
            rows = await store.suspending(connection, after, limit)
        return [(row["id"], list(row["resident_codes"]),
                 rules.suspended_purposes(row["state"], row["decision"], row["purposes"], row["stopped_purposes"]),
                 list(row["persons"])) for row in rows]

    async def case_status(self, name: str) -> tuple[bool, str]:
        """(open, state name) of the case `name` (disclosureCases/…, correctionCases/…, usageSuspensionCases/…, or
        a 修正's follow-up, organNotifications/…); NotFound when there is none. What the gateway asks before
        disclosure and correction work reads."""
        kind, case_id, document_id = parse_document_name(name)
        if document_id is not None:
            raise InvalidArgument([FieldViolation("name", "must name a case, not a document")])
        if kind == "organ":  # open while it reads, until its notices are issued (organ_notices)
            async with self._database.connection() as connection:
                follow_up = await store.get_organ_notification(connection, case_id)
            if follow_up is None:
                raise NotFound("no such case", "CASE_NOT_FOUND")
            following = follow_up["state"] == store.ORGAN_FOLLOWING
            return following, "FOLLOWING" if following else "NOTIFIED"
        fetch = {"disclosure": store.get_case, "correction": store.get_correction,
                 "suspension": store.get_suspension}[kind]
        async with self._database.connection() as connection:
            row = await fetch(connection, case_id)
        if row is None:
            raise NotFound("no such case", "CASE_NOT_FOUND")
        return rules.case_open(kind, row["state"]), rules.state_name(row["state"], rules.STATE_ENUMS[kind])

    # --- the municipality's 修正 closes the case by itself -----------------------------------------------

    async def follow_reports(self, limit: int = 50) -> int:
        """One pass over cases waiting for the municipality's 修正; returns how many moved on.

        Design: the owning register resolves a 12-5 report when the addressed municipality's 修正 for
        the person arrives (jukilib.register.rows, 12-5 resolutions). The disclosure service
        asks the register for the report's state (GetMunicipalityReport, through the gateway) in a
        background task, and once it is resolved completes the case with CompleteCorrectionCase, also
        through the gateway, so that this transition is in the operation log like a clerk's. Polling
        keeps the register free of any knowledge of disclosure cases, needs no callback into this
        service, survives restarts of either side (the waiting state is in this service's table), and
        is safe with several replicas (the completing transaction checks the case is still waiting).
        """
        async with self._database.connection() as connection:
            waiting = await store.awaiting_update(connection, limit)
        moved = 0
        for row in waiting:
            async with self._database.connection() as connection:
                await store.touch_correction(connection, row["id"])
            case = self.correction_message(row, [])
            report = await self._records.get_report(FILES[case.file], case.municipality_report, case.name)
            if report.state == register_pb2.REPORT_STATE_RESOLVED:
                await self._records.complete_correction(case.name)
                moved += 1
        return moved

    async def complete(self, case_id: uuid.UUID, actor: str) -> None:
        """AWAITING_CS_UPDATE → UPDATED → RESULT_NOTIFIED once the municipality's notification resolved the
        12-5 report, or → NO_ERROR → RESULT_NOTIFIED when the municipality answered that it found no error."""
        async with self._database.connection() as connection:
            row = await store.get_correction(connection, case_id)
        if row is None:
            raise NotFound("no such correction case", "CASE_NOT_FOUND")
        rules.check_transition(row["state"], C.CORRECTION_STATE_UPDATED, correction=True)
        case = self.correction_message(row, [])
        # The report's state comes from the register, never from the caller.
        report = await self._records.get_report(FILES[case.file], case.municipality_report, case.name)
        if report.state != register_pb2.REPORT_STATE_RESOLVED:
            raise FailedPrecondition("the municipality has not yet corrected the record (12-5 report unresolved)",
                                     "REPORT_NOT_RESOLVED")
        if report.outcome == register_pb2.REPORT_OUTCOME_NO_ERROR:
            await self._municipality_found_no_error(row, report.answer_reason_code, actor)
            return
        await self._complete(row, report.resolving_version, actor)

    async def _municipality_found_no_error(self, row: asyncpg.Record, reason_code: str, actor: str) -> None:
        """AWAITING_CS_UPDATE → NO_ERROR → RESULT_NOTIFIED: the municipality investigated the 12-5 report and
        found no error; the resident is told so in writing (30-35), never that the record was corrected."""
        async with self._database.connection() as connection:
            steps = await store.steps(connection, row["id"])
        notice = await self._no_error_notice(self.correction_message(row, steps), row["disclosure_case_id"],
                                             reason_code)
        async with self._database.transaction() as connection:
            current = await store.get_correction(connection, row["id"], lock=True)
            if current is None or current["state"] != C.CORRECTION_STATE_AWAITING_CS_UPDATE:
                return  # another replica finished it
            await store.set_correction_state(connection, row["id"], C.CORRECTION_STATE_NO_ERROR, actor,
                                             f"municipality found no error: {reason_code}")
            document = await self._issue(connection, "correction", row["id"], notice)
            await store.set_correction_state(connection, row["id"], C.CORRECTION_STATE_RESULT_NOTIFIED, actor,
                                             document)

    async def _complete(self, row: asyncpg.Record, resolving: int, actor: str) -> None:
        """UPDATED → RESULT_NOTIFIED: the result notice, and a notice to every organ given the wrong value."""
        async with self._database.connection() as connection:
            steps = await store.steps(connection, row["id"])
        case = self.correction_message(row, steps)
        file = FILES[case.file]
        records = await self._records.file_records(file, case.subject_resident_code, case.name, REPORTS_PURPOSE)
        # Every organ given the wrong value, under whichever 住民票コード the person had then (30-4).
        provisions = await self._records.provisions(records.resident_codes(case.subject_resident_code), case.name,
                                                    REPORTS_PURPOSE)
        fields = list(row["report_fields"])
        wrong = row["report_version"]
        recipients = corrections.wrong_value_recipients(file, records.versions, wrong=wrong, resolving=resolving,
                                                        fields=fields, provisions=provisions)
        resolved = next((v for v in records.versions if v.version == resolving), None)
        corrected = _fields_of(resolved, fields) if resolved is not None else {}
        now = self._clock()
        versions = [f"{file}:{v.name}" for v in records.versions if v.version in (wrong, resolving)]
        requester = await self._requester_name(row["disclosure_case_id"])
        result = notices.correction_result_notice(case, requester, outcome="CORRECTED",
                                                  steps=[s["description"] for s in steps], corrected=corrected,
                                                  versions=versions, issued=now)
        organ_notices = [notices.recipient_notice(case, r, corrected, now) for r in recipients]
        async with self._database.transaction() as connection:
            current = await store.get_correction(connection, row["id"], lock=True)
            if current is None or current["state"] != C.CORRECTION_STATE_AWAITING_CS_UPDATE:
                return  # another replica finished it
            await store.set_correction_state(connection, row["id"], C.CORRECTION_STATE_UPDATED, actor,
                                             f"version {resolving}", resolving_version=resolving)
            for recipient, notice in zip(recipients, organ_notices, strict=True):
                recipient["notice"] = await self._issue(connection, "correction", row["id"], notice)
            document = await self._issue(connection, "correction", row["id"], result)
            await store.set_correction_state(connection, row["id"], C.CORRECTION_STATE_RESULT_NOTIFIED, actor,
                                             document, wrong_value_recipients=store.seal_recipients(
                                                 self._keyring, row["id"], recipients))


def _fields_of(version: Any, fields: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = json_format.MessageToDict(version.record, always_print_fields_with_no_presence=True)
    wanted = {notices.camel(f) for f in fields}
    return {key: value for key, value in record.items() if key in wanted}


__all__ = ["Desk", "FileRecords", "case_message", "correction_message", "parse_document_name", "parse_name",
           "suspension_message"]
