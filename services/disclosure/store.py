"""SQL of disclosure, correction and usage-suspension cases and their documents. Functions take a connection; the
caller owns the transaction."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki_services.disclosure import rules
from jukilib.keyring import Keyring, Sealed

_COLUMNS = f"""id, request_id, subject_resident_code, requester_kind, requester_name, identity_documents,
    channel, scopes, receive_time, state, deadline, target_date, revision, create_time, update_time,
    identity_verify_time, extension_reason, extension_deadline, extension_time, decide_time,
    coalesce(extension_deadline, deadline) AS effective_deadline,
    ARRAY(SELECT 'disclosureCases/' || d.case_id || '/documents/' || d.id FROM disclosure_document d
          WHERE d.case_kind = 'disclosure' AND d.case_id = disclosure_case.id ORDER BY d.create_time, d.id)
        AS documents,
    (SELECT 'disclosureCases/' || d.case_id || '/documents/' || d.id FROM disclosure_document d
     WHERE d.case_kind = 'disclosure' AND d.case_id = disclosure_case.id
       AND d.kind = {int(pb.DOCUMENT_KIND_EXTENSION_NOTICE)}) AS extension_notice"""

_CORRECTION_COLUMNS = """id, request_id, disclosure_case_id, subject_resident_code, file, items, receive_time, state,
    municipality_report, report_version, report_fields, resolving_version, wrong_value_recipients, revision,
    create_time, update_time,
    ARRAY(SELECT 'correctionCases/' || d.case_id || '/documents/' || d.id FROM disclosure_document d
          WHERE d.case_kind = 'correction' AND d.case_id = correction_case.id ORDER BY d.create_time, d.id)
        AS documents"""
# A document names the resident it concerns (its case's subject): the gateway logs every read under it.
_DOCUMENT_BASIC = """id, case_kind, case_id, kind, addressee, number, pdf_sha256, json_sha256, record_versions,
    create_time,
    coalesce((SELECT c.subject_resident_code FROM disclosure_case c
              WHERE disclosure_document.case_kind = 'disclosure' AND c.id = disclosure_document.case_id),
             (SELECT c.subject_resident_code FROM correction_case c
              WHERE disclosure_document.case_kind = 'correction' AND c.id = disclosure_document.case_id),
             (SELECT c.subject_resident_code FROM usage_suspension_case c
              WHERE disclosure_document.case_kind = 'suspension' AND c.id = disclosure_document.case_id),
             (SELECT n.subject_resident_code FROM organ_notification n
              WHERE disclosure_document.case_kind = 'organ' AND n.id = disclosure_document.case_id))
        AS subject_resident_code"""
_SUSPENSION_COLUMNS = f"""id, request_id, subject_resident_code, resident_codes, persons, requester_kind,
    requester_name, identity_documents, channel, purposes, ground, receive_time, state, decision, decision_reason,
    stopped_purposes,
    deadline, target_date, extension_reason, extension_deadline, extension_time, revision, create_time, update_time,
    coalesce(extension_deadline, deadline) AS effective_deadline,
    ARRAY(SELECT 'usageSuspensionCases/' || d.case_id || '/documents/' || d.id FROM disclosure_document d
          WHERE d.case_kind = 'suspension' AND d.case_id = usage_suspension_case.id ORDER BY d.create_time, d.id)
        AS documents,
    (SELECT 'usageSuspensionCases/' || d.case_id || '/documents/' || d.id FROM disclosure_document d
     WHERE d.case_kind = 'suspension' AND d.case_id = usage_suspension_case.id
       AND d.kind = {int(pb.DOCUMENT_KIND_USAGE_SUSPENSION_EXTENSION_NOTICE)}) AS extension_notice"""

# States of open disclosure cases whose deadline runs, and the at-risk margin (the rules').
RUNNING = sorted(int(state) for state in rules.DEADLINE_RUNNING)
SUSPENSION_RUNNING = sorted(int(state) for state in rules.SUSPENSION_RUNNING)
# Cases that may refuse provisions now: pending or decided not to stop (until notified), or decided to stop.
# The purposes themselves are decided by rules.suspended_purposes; this only narrows the rows read.
SUSPENDING = sorted(int(s) for s in (*rules.SUSPENSION_PENDING, pb.USAGE_SUSPENSION_STATE_DECIDED_NOT_STOP))
AT_RISK_DAYS = rules.AT_RISK_DAYS


@dataclass(frozen=True)
class NewCase:
    id: uuid.UUID
    request_id: str | None
    subject_resident_code: str
    requester_kind: int
    requester_name: str
    identity_documents: list[int]
    channel: int
    scopes: list[int]
    receive_time: dt.datetime
    state: int
    deadline: dt.date
    target_date: dt.date
    opened_by: str


@dataclass(frozen=True)
class NewCorrection:
    id: uuid.UUID
    request_id: str | None
    disclosure_case_id: uuid.UUID
    file: int
    items: list[dict[str, Any]]
    receive_time: dt.datetime
    opened_by: str


async def find_by_request_id(connection: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(f"SELECT {_COLUMNS} FROM disclosure_case WHERE request_id = $1", request_id)


async def insert_case(connection: asyncpg.Connection, case: NewCase) -> asyncpg.Record:
    row = await connection.fetchrow(
        f"""INSERT INTO disclosure_case (id, request_id, subject_resident_code, requester_kind, requester_name,
                identity_documents, channel, scopes, receive_time, state, deadline, target_date, opened_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            RETURNING {_COLUMNS}""",
        case.id, case.request_id, case.subject_resident_code, case.requester_kind, case.requester_name,
        case.identity_documents, case.channel, case.scopes, case.receive_time, case.state, case.deadline,
        case.target_date, case.opened_by,
    )
    assert row is not None
    await add_event(connection, "disclosure", case.id, case.state, case.opened_by)
    return row


async def get_case(connection: asyncpg.Connection, case_id: uuid.UUID, *, lock: bool = False) -> asyncpg.Record | None:
    suffix = " FOR UPDATE" if lock else ""
    return await connection.fetchrow(f"SELECT {_COLUMNS} FROM disclosure_case WHERE id = $1{suffix}", case_id)


async def list_cases(
    connection: asyncpg.Connection, before: tuple[dt.datetime, uuid.UUID] | None, limit: int, *,
    open_only: bool = False, at_risk_on: dt.date | None = None, overdue_on: dt.date | None = None,
) -> list[asyncpg.Record]:
    """Most recently received first; optionally only open, at risk (incl. overdue) or overdue cases."""
    table = _DeadlineTable("disclosure_case", _COLUMNS, int(pb.DISCLOSURE_STATE_CLOSED), RUNNING)
    return await _list_with_deadlines(connection, table, before, limit, open_only=open_only, at_risk_on=at_risk_on,
                                      overdue_on=overdue_on)


@dataclass(frozen=True)
class _DeadlineTable:
    """A table of cases that run against a deadline: its columns, its closed state, its running states."""

    name: str
    columns: str
    closed: int
    running: list[int]


async def _list_with_deadlines(
    connection: asyncpg.Connection, table: _DeadlineTable, before: tuple[dt.datetime, uuid.UUID] | None,
    limit: int, *, open_only: bool, at_risk_on: dt.date | None, overdue_on: dt.date | None,
) -> list[asyncpg.Record]:
    """A page of cases of `table` that run against a deadline (disclosure, usage suspension), most recently
    received first; optionally only open, at risk (incl. overdue) or overdue ones."""
    closed, running, columns = table.closed, table.running, table.columns
    conditions, args = ["TRUE"], []  # type: tuple[list[str], list[Any]]
    if before is not None:
        args += [before[0], before[1]]
        conditions.append(f"(receive_time, id) < (${len(args) - 1}, ${len(args)})")
    if open_only:
        conditions.append(f"state <> {closed}")
    if at_risk_on is not None:
        args += [running, at_risk_on]
        conditions.append(f"""state = ANY(${len(args) - 1}) AND (target_date < ${len(args)}
            OR coalesce(extension_deadline, deadline) - {AT_RISK_DAYS} <= ${len(args)})""")
    if overdue_on is not None:
        args += [running, overdue_on]
        conditions.append(f"state = ANY(${len(args) - 1}) AND coalesce(extension_deadline, deadline) < ${len(args)}")
    args.append(limit)
    return await connection.fetch(
        f"""SELECT {columns} FROM {table.name} WHERE {' AND '.join(conditions)}
            ORDER BY receive_time DESC, id DESC LIMIT ${len(args)}""", *args)


async def deadline_counts(connection: asyncpg.Connection, today: dt.date,
                          at_risk_days: int = AT_RISK_DAYS) -> dict[str, int]:
    """Counts only (no personal data) for the deadline metric."""
    # Disclosure (住基法 30-33) and usage-suspension (個人情報保護法 102) deadlines, counted together.
    row = await connection.fetchrow(
        """SELECT count(*) AS open,
                   count(*) FILTER (WHERE target_date < $2
                       OR coalesce(extension_deadline, deadline) - $4::integer <= $2) AS at_risk,
                   count(*) FILTER (WHERE coalesce(extension_deadline, deadline) < $2) AS overdue
            FROM (SELECT target_date, extension_deadline, deadline FROM disclosure_case WHERE state = ANY($1)
                  UNION ALL
                  SELECT target_date, extension_deadline, deadline FROM usage_suspension_case
                  WHERE state = ANY($3)) AS running""", RUNNING, today, SUSPENSION_RUNNING, at_risk_days)
    assert row is not None
    return {"open": row["open"], "at_risk": row["at_risk"], "overdue": row["overdue"]}


async def running_by_state(connection: asyncpg.Connection) -> list[tuple[str, int, int]]:
    """(table, state, count) of the cases whose deadline runs: counts only, for the metrics."""
    rows = await connection.fetch(
        """SELECT 'disclosure' AS kind, state, count(*) AS n FROM disclosure_case WHERE state = ANY($1) GROUP BY state
           UNION ALL
           SELECT 'usage_suspension', state, count(*) FROM usage_suspension_case WHERE state = ANY($2)
           GROUP BY state""", RUNNING, SUSPENSION_RUNNING)
    return [(row["kind"], row["state"], row["n"]) for row in rows]


async def add_event(connection: asyncpg.Connection, kind: str, case_id: uuid.UUID, state: int, actor: str, *,
                    detail: str = "") -> None:
    table = {"disclosure": "disclosure_case_event", "correction": "correction_case_event",
             "suspension": "usage_suspension_case_event"}[kind]
    await connection.execute(
        f"""INSERT INTO {table} (case_id, seq, state, actor, detail)
            VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM {table} WHERE case_id = $1), $2, $3, $4)""",
        case_id, state, actor, detail)


async def set_state(connection: asyncpg.Connection, case_id: uuid.UUID, state: int, actor: str, detail: str = "",
                    **columns: Any) -> asyncpg.Record:
    """Move a disclosure case to `state` (one new revision), setting `columns`; records the event."""
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=3))
    row = await connection.fetchrow(
        f"""UPDATE disclosure_case SET state = $2, revision = revision + 1, update_time = now()
                {', ' + assignments if assignments else ''}
            WHERE id = $1 RETURNING id""", case_id, state, *columns.values())
    assert row is not None
    await add_event(connection, "disclosure", case_id, state, actor, detail=detail)
    fetched = await get_case(connection, case_id)
    assert fetched is not None
    return fetched


async def next_document_number(connection: asyncpg.Connection, fiscal_year: int) -> int:
    """The next 文書番号 sequence of a fiscal year. The counter row stays locked until the caller's transaction
    ends: concurrent notices are numbered one after another, and a rolled-back notice gives its number back."""
    number: int = await connection.fetchval(
        """INSERT INTO document_number (fiscal_year, last_number) VALUES ($1, 1)
           ON CONFLICT (fiscal_year) DO UPDATE SET last_number = document_number.last_number + 1
           RETURNING last_number""", fiscal_year)
    return number


def _associated(document_id: uuid.UUID, part: str) -> bytes:
    """Binds a sealed part to its document: a ciphertext copied to another row or part does not open."""
    return f"disclosure_document/{document_id}/{part}".encode()


def _seal(keyring: Keyring, document_id: uuid.UUID, pdf: bytes, content: bytes) -> tuple[Sealed, Sealed]:
    sealed_pdf, sealed_json = keyring.seal_bytes_all([(pdf, _associated(document_id, "pdf")),
                                                      (content, _associated(document_id, "json"))])
    return sealed_pdf, sealed_json


async def insert_document(connection: asyncpg.Connection, keyring: Keyring, case_kind: str, case_id: uuid.UUID,
                          notice: Any) -> str:
    """Store a notice, its PDF and JSON sealed (migration 0005); returns its resource name."""
    document_id = uuid.uuid4()
    pdf, content = _seal(keyring, document_id, notice.pdf, notice.json.encode())
    await connection.execute(
        """INSERT INTO disclosure_document (id, case_kind, case_id, kind, addressee, number, pdf, json, pdf_sha256,
               json_sha256, record_versions, key_id, pdf_nonce, json_nonce)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        document_id, case_kind, case_id, notice.kind, notice.addressee, notice.number, pdf.ciphertext,
        content.ciphertext, notice.pdf_sha256, notice.json_sha256, notice.record_versions, pdf.key_id, pdf.nonce,
        content.nonce)
    return f"{COLLECTIONS.get(case_kind, f'{case_kind}Cases')}/{case_id}/documents/{document_id}"


COLLECTIONS = {"organ": "organNotifications"}
"""The collection of a document's parent, where it is not `{case_kind}Cases`."""


_SEALED = "pdf, json, key_id, pdf_nonce, json_nonce"


def _opened(keyring: Keyring, row: asyncpg.Record) -> dict[str, Any]:
    """The row with its PDF and JSON opened (a document from before migration 0005 is still plaintext)."""
    pdf, content = bytes(row["pdf"]), bytes(row["json"])
    if row["key_id"] is not None:
        pdf = keyring.open_bytes(Sealed(row["key_id"], bytes(row["pdf_nonce"]), pdf), _associated(row["id"], "pdf"))
        content = keyring.open_bytes(Sealed(row["key_id"], bytes(row["json_nonce"]), content),
                                     _associated(row["id"], "json"))
    return {**row, "pdf": pdf, "json": content.decode()}


async def get_document(connection: asyncpg.Connection, case_kind: str, case_id: uuid.UUID, document_id: uuid.UUID,
                       *, keyring: Keyring, full: bool) -> Mapping[str, Any] | None:
    columns = f"{_DOCUMENT_BASIC}, {_SEALED}" if full else _DOCUMENT_BASIC
    row = await connection.fetchrow(
        f"SELECT {columns} FROM disclosure_document WHERE case_kind = $1 AND case_id = $2 AND id = $3",
        case_kind, case_id, document_id)
    if row is None:
        return None
    return _opened(keyring, row) if full else dict(row)


async def list_documents(connection: asyncpg.Connection, case_kind: str, case_id: uuid.UUID, offset: int, limit: int,
                         *, keyring: Keyring, full: bool) -> list[Mapping[str, Any]]:
    columns = f"{_DOCUMENT_BASIC}, {_SEALED}" if full else _DOCUMENT_BASIC
    rows = await connection.fetch(
        f"""SELECT {columns} FROM disclosure_document WHERE case_kind = $1 AND case_id = $2
            ORDER BY create_time, id OFFSET $3 LIMIT $4""", case_kind, case_id, offset, limit)
    return [_opened(keyring, row) if full else dict(row) for row in rows]


async def reseal_documents(connection: asyncpg.Connection, keyring: Keyring, batch: int = 100) -> int:
    """Seal every document not sealed under the active key (from before migration 0005, or under an older
    key), in batches, each its own transaction (run as the schema owner: the service only inserts documents,
    and keeps answering meanwhile, since it opens either). Returns the count."""
    total = 0
    while True:
        async with connection.transaction():
            rows = await connection.fetch(
                f"""SELECT id, {_SEALED} FROM disclosure_document WHERE key_id IS DISTINCT FROM $1
                    LIMIT $2 FOR UPDATE SKIP LOCKED""", keyring.active, batch)
            for row in rows:
                opened = _opened(keyring, row)
                pdf, content = _seal(keyring, row["id"], opened["pdf"], opened["json"].encode())
                await connection.execute(
                    """UPDATE disclosure_document SET pdf = $2, json = $3, key_id = $4, pdf_nonce = $5,
                           json_nonce = $6 WHERE id = $1""",
                    row["id"], pdf.ciphertext, content.ciphertext, pdf.key_id, pdf.nonce, content.nonce)
        total += len(rows)
        if len(rows) < batch:
            return total


_ITEMS_NOT_UNDER = """(EXISTS (SELECT 1 FROM jsonb_array_elements(items) AS item WHERE NOT item ? 'sealed_value'
                               OR item -> 'sealed_value' ->> 'key_id' <> ALL($1::text[]))
    OR EXISTS (SELECT 1 FROM jsonb_array_elements(wrong_value_recipients) AS r
               WHERE NOT r ? 'sealed_received_values'
                  OR r -> 'sealed_received_values' ->> 'key_id' <> ALL($1::text[])))"""


async def reseal_corrections(connection: asyncpg.Connection, keyring: Keyring, batch: int = 100) -> int:
    """Seal the requested values and the values organs received of every correction case not sealed under
    the active key (from before migration 0005, or under an older key), in batches (as `reseal_documents`).
    Returns the count."""
    total = 0
    while True:
        async with connection.transaction():
            rows = await connection.fetch(
                # As text, whether or not the connection has the service's jsonb codec (the command's has not).
                f"""SELECT id, items::text AS items, wrong_value_recipients::text AS recipients FROM correction_case
                    WHERE {_ITEMS_NOT_UNDER} LIMIT $2 FOR UPDATE SKIP LOCKED""", [keyring.active], batch)
            for row in rows:
                items = seal_items(keyring, row["id"], open_items(keyring, row["id"], json.loads(row["items"])))
                recipients = seal_recipients(keyring, row["id"],
                                             open_recipients(keyring, row["id"], json.loads(row["recipients"])))
                await connection.execute(
                    "UPDATE correction_case SET items = $2::text::jsonb, wrong_value_recipients = $3::text::jsonb"
                    " WHERE id = $1", row["id"], json.dumps(items, ensure_ascii=False),
                    json.dumps(recipients, ensure_ascii=False))
        total += len(rows)
        if len(rows) < batch:
            return total


async def documents_under_other_keys(connection: asyncpg.Connection, keep: frozenset[str]) -> int:
    """How many documents and correction requests are in clear or sealed under a key not in `keep`."""
    count: int = await connection.fetchval(
        f"""SELECT (SELECT count(*) FROM disclosure_document WHERE key_id IS NULL OR key_id <> ALL($1::text[]))
                 + (SELECT count(*) FROM correction_case WHERE {_ITEMS_NOT_UNDER})""", sorted(keep))
    return count


# --- correction cases ---------------------------------------------------------------------------------

async def find_correction_by_request_id(connection: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT {_CORRECTION_COLUMNS} FROM correction_case WHERE request_id = $1", request_id)


def _item_associated(case_id: uuid.UUID, index: int) -> bytes:
    return f"correction_case/{case_id}/items/{index}".encode()


def seal_items(keyring: Keyring, case_id: uuid.UUID, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A correction request's items as stored: the field and action in clear (the investigation works on
    them), the requested value (a 個人番号, a name, ...) sealed, bound to the case and the item's place."""
    sealed = keyring.seal_all([(str(item.get("requested_value", "")), _item_associated(case_id, index))
                               for index, item in enumerate(items)])
    return [{**{k: v for k, v in item.items() if k != "requested_value"}, "sealed_value": _envelope(s)}
            for item, s in zip(items, sealed, strict=True)]


def open_items(keyring: Keyring, case_id: uuid.UUID, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items with their requested values (an item stored before they were sealed is in clear)."""
    opened = []
    for index, item in enumerate(items):
        sealed = item.get("sealed_value")
        if sealed is None:
            opened.append(item)
            continue
        value = keyring.open(_sealed(sealed), _item_associated(case_id, index))
        opened.append({**{k: v for k, v in item.items() if k != "sealed_value"}, "requested_value": value})
    return opened


def _recipient_associated(case_id: uuid.UUID, index: int) -> bytes:
    return f"correction_case/{case_id}/wrong_value_recipients/{index}".encode()


def seal_recipients(keyring: Keyring, case_id: uuid.UUID, recipients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The organs that received a corrected value, as stored: the values each received (a 個人番号 among them)
    sealed, bound to the case and the recipient's place; the rest (organisation, purposes, fields) in clear."""
    sealed = keyring.seal_all([(json.dumps(r.get("received_values", {}), ensure_ascii=False),
                                _recipient_associated(case_id, index)) for index, r in enumerate(recipients)])
    return [{**{k: v for k, v in r.items() if k != "received_values"}, "sealed_received_values": _envelope(s)}
            for r, s in zip(recipients, sealed, strict=True)]


def open_recipients(keyring: Keyring, case_id: uuid.UUID, recipients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recipients with the values they received (stored before they were sealed: in clear)."""
    opened = []
    for index, recipient in enumerate(recipients):
        envelope = recipient.get("sealed_received_values")
        if envelope is None:
            opened.append(recipient)
            continue
        values = json.loads(keyring.open(_sealed(envelope), _recipient_associated(case_id, index)))
        opened.append({**{k: v for k, v in recipient.items() if k != "sealed_received_values"},
                       "received_values": values})
    return opened


def _envelope(sealed: Sealed) -> dict[str, str]:
    return {"key_id": sealed.key_id, "nonce": base64.b64encode(sealed.nonce).decode(),
            "ciphertext": base64.b64encode(sealed.ciphertext).decode()}


def _sealed(envelope: dict[str, str]) -> Sealed:
    return Sealed(envelope["key_id"], base64.b64decode(envelope["nonce"]), base64.b64decode(envelope["ciphertext"]))


async def insert_correction(connection: asyncpg.Connection, new: NewCorrection, subject_resident_code: str,
                            state: int, *, keyring: Keyring) -> asyncpg.Record:
    """Store a correction request, its requested values sealed (migration 0005)."""
    new = dataclasses.replace(new, items=seal_items(keyring, new.id, new.items))
    row = await connection.fetchrow(
        f"""INSERT INTO correction_case (id, request_id, disclosure_case_id, subject_resident_code, file, items,
                receive_time, state, opened_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_CORRECTION_COLUMNS}""",
        new.id, new.request_id, new.disclosure_case_id, subject_resident_code, new.file,
        new.items, new.receive_time, state, new.opened_by)
    assert row is not None
    await add_event(connection, "correction", new.id, state, new.opened_by)
    return row


async def get_correction(connection: asyncpg.Connection, case_id: uuid.UUID, *,
                         lock: bool = False) -> asyncpg.Record | None:
    suffix = " FOR UPDATE" if lock else ""
    return await connection.fetchrow(
        f"SELECT {_CORRECTION_COLUMNS} FROM correction_case WHERE id = $1{suffix}", case_id)


async def list_corrections(connection: asyncpg.Connection, before: tuple[dt.datetime, uuid.UUID] | None, limit: int,
                           *, open_only: bool = False) -> list[asyncpg.Record]:
    conditions, args = ["TRUE"], []  # type: tuple[list[str], list[Any]]
    if before is not None:
        args += [before[0], before[1]]
        conditions.append("(receive_time, id) < ($1, $2)")
    if open_only:
        conditions.append(f"state <> {int(pb.CORRECTION_STATE_CLOSED)}")
    args.append(limit)
    return await connection.fetch(
        f"""SELECT {_CORRECTION_COLUMNS} FROM correction_case WHERE {' AND '.join(conditions)}
            ORDER BY receive_time DESC, id DESC LIMIT ${len(args)}""", *args)


async def retention_holds(connection: asyncpg.Connection, after: str, limit: int) -> list[str]:
    """住民票コード of the subjects of disclosure and correction cases not closed, each once, in code order,
    after `after` (住基法 30-6 ③ / 30-41 ③: the registers keep these persons' records while a case is open)."""
    rows = await connection.fetch(
        f"""SELECT code FROM (
                SELECT subject_resident_code AS code FROM disclosure_case
                WHERE state <> {int(pb.DISCLOSURE_STATE_CLOSED)}
                UNION
                SELECT subject_resident_code FROM correction_case WHERE state <> {int(pb.CORRECTION_STATE_CLOSED)}
                UNION
                SELECT subject_resident_code FROM usage_suspension_case
                WHERE state <> {int(pb.USAGE_SUSPENSION_STATE_CLOSED)}
            ) AS open_case WHERE code > $1 ORDER BY code LIMIT $2""", after, limit)
    return [row["code"] for row in rows]


async def awaiting_update(connection: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Correction cases waiting for the municipality's 修正, least recently checked first."""
    return await connection.fetch(
        f"""SELECT {_CORRECTION_COLUMNS} FROM correction_case
            WHERE state = {int(pb.CORRECTION_STATE_AWAITING_CS_UPDATE)}
            ORDER BY check_time NULLS FIRST, id LIMIT $1""", limit)


async def steps(connection: asyncpg.Connection, case_id: uuid.UUID) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT description, actor, at FROM correction_step WHERE case_id = $1 ORDER BY seq", case_id)


async def steps_of(connection: asyncpg.Connection, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[asyncpg.Record]]:
    """The investigation steps of several cases, in order."""
    found: dict[uuid.UUID, list[asyncpg.Record]] = {case_id: [] for case_id in case_ids}
    for row in await connection.fetch(
            "SELECT case_id, description, actor, at FROM correction_step WHERE case_id = ANY($1) ORDER BY case_id, seq",
            case_ids):
        found[row["case_id"]].append(row)
    return found


async def add_step(connection: asyncpg.Connection, case_id: uuid.UUID, description: str, actor: str) -> None:
    await connection.execute(
        """INSERT INTO correction_step (case_id, seq, description, actor)
           VALUES ($1, (SELECT coalesce(max(seq), 0) + 1 FROM correction_step WHERE case_id = $1), $2, $3)""",
        case_id, description, actor)


async def set_correction_state(connection: asyncpg.Connection, case_id: uuid.UUID, state: int, actor: str,
                               detail: str = "", **columns: Any) -> None:
    """Move a correction case to `state` (one new revision), setting `columns`; records the event."""
    values = list(columns.values())  # jsonb columns take Python values (the pool's codec encodes them)
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=3))
    status = await connection.execute(
        f"""UPDATE correction_case SET state = $2, revision = revision + 1, update_time = now()
                {', ' + assignments if assignments else ''} WHERE id = $1""", case_id, state, *values)
    assert status == "UPDATE 1"
    await add_event(connection, "correction", case_id, state, actor, detail=detail)


async def touch_correction(connection: asyncpg.Connection, case_id: uuid.UUID) -> None:
    """Mark a waiting case checked (the poller visits the least recently checked first)."""
    await connection.execute(
        f"""UPDATE correction_case SET check_time = now()
            WHERE id = $1 AND state = {int(pb.CORRECTION_STATE_AWAITING_CS_UPDATE)}""", case_id)


# --- usage-suspension cases ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NewSuspension:
    id: uuid.UUID
    request_id: str | None
    subject_resident_code: str
    resident_codes: list[str]
    requester_kind: int
    requester_name: str
    identity_documents: list[int]
    channel: int
    purposes: list[str]
    ground: int
    receive_time: dt.datetime
    deadline: dt.date
    target_date: dt.date
    opened_by: str


async def find_suspension_by_request_id(connection: asyncpg.Connection, request_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT {_SUSPENSION_COLUMNS} FROM usage_suspension_case WHERE request_id = $1", request_id)


async def insert_suspension(connection: asyncpg.Connection, case: NewSuspension) -> asyncpg.Record:
    state = int(pb.USAGE_SUSPENSION_STATE_RECEIVED)
    row = await connection.fetchrow(
        f"""INSERT INTO usage_suspension_case (id, request_id, subject_resident_code, resident_codes, requester_kind,
                requester_name, identity_documents, channel, purposes, ground, receive_time, state, deadline,
                target_date, opened_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
            RETURNING {_SUSPENSION_COLUMNS}""",
        case.id, case.request_id, case.subject_resident_code, case.resident_codes, case.requester_kind,
        case.requester_name, case.identity_documents, case.channel, case.purposes, case.ground, case.receive_time,
        state, case.deadline, case.target_date, case.opened_by)
    assert row is not None
    await add_event(connection, "suspension", case.id, state, case.opened_by)
    return row


async def get_suspension(connection: asyncpg.Connection, case_id: uuid.UUID, *,
                         lock: bool = False) -> asyncpg.Record | None:
    suffix = " FOR UPDATE" if lock else ""
    return await connection.fetchrow(
        f"SELECT {_SUSPENSION_COLUMNS} FROM usage_suspension_case WHERE id = $1{suffix}", case_id)


async def set_suspension_state(connection: asyncpg.Connection, case_id: uuid.UUID, state: int, actor: str,
                               detail: str = "", **columns: Any) -> asyncpg.Record:
    """Move a usage-suspension case to `state` (one new revision), setting `columns`; records the event."""
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=3))
    status = await connection.execute(
        f"""UPDATE usage_suspension_case SET state = $2, revision = revision + 1, update_time = now()
                {', ' + assignments if assignments else ''} WHERE id = $1""", case_id, state, *columns.values())
    assert status == "UPDATE 1"
    await add_event(connection, "suspension", case_id, state, actor, detail=detail)
    fetched = await get_suspension(connection, case_id)
    assert fetched is not None
    return fetched


async def set_suspension_person(connection: asyncpg.Connection, case_id: uuid.UUID, resident_codes: list[str],
                                persons: list[str]) -> asyncpg.Record | None:
    """Record every code and resource of the case's person (no new revision: the request is unchanged)."""
    return await connection.fetchrow(
        f"""UPDATE usage_suspension_case SET resident_codes = $2, persons = $3 WHERE id = $1
            RETURNING {_SUSPENSION_COLUMNS}""", case_id, resident_codes, persons)


async def list_suspensions(
    connection: asyncpg.Connection, before: tuple[dt.datetime, uuid.UUID] | None, limit: int, *,
    open_only: bool = False, at_risk_on: dt.date | None = None, overdue_on: dt.date | None = None,
) -> list[asyncpg.Record]:
    """Most recently received first; optionally only open, at risk (incl. overdue) or overdue cases."""
    table = _DeadlineTable("usage_suspension_case", _SUSPENSION_COLUMNS, int(pb.USAGE_SUSPENSION_STATE_CLOSED),
                           SUSPENSION_RUNNING)
    return await _list_with_deadlines(connection, table, before, limit, open_only=open_only, at_risk_on=at_risk_on,
                                      overdue_on=overdue_on)


async def suspending(connection: asyncpg.Connection, after: uuid.UUID | None, limit: int) -> list[asyncpg.Record]:
    """Cases that may refuse provisions now, in id order after `after` (the gateway's list)."""
    return await connection.fetch(
        f"""SELECT {_SUSPENSION_COLUMNS} FROM usage_suspension_case
            WHERE (state = ANY($1) OR decision = {int(pb.USAGE_SUSPENSION_DECISION_STOP)})
              AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3""", SUSPENDING, after, limit)


# --- notices to organs for a municipality's 修正 (organ_notices) ------------------------------------------------

_ORGAN_COLUMNS = """id, file, person, version, previous_version, state, subject_resident_code, field_paths,
    recipients, correction_case_id, create_time,
    ARRAY(SELECT 'organNotifications/' || d.case_id || '/documents/' || d.id FROM disclosure_document d
          WHERE d.case_kind = 'organ' AND d.case_id = organ_notification.id ORDER BY d.create_time, d.id)
        AS documents"""


async def modification_cursor(connection: asyncpg.Connection, file: int) -> str:
    token: str | None = await connection.fetchval("SELECT page_token FROM modification_cursor WHERE file = $1", file)
    return token or ""


async def move_modification_cursor(connection: asyncpg.Connection, file: int, token: str) -> None:
    await connection.execute(
        """INSERT INTO modification_cursor (file, page_token) VALUES ($1, $2)
           ON CONFLICT (file) DO UPDATE SET page_token = $2, update_time = now()""", file, token)


ORGAN_FOLLOWING, ORGAN_DONE = 1, 2
"""States of an organ notification: open while its reads are made, done once its notices are issued."""


@dataclass(frozen=True)
class NewOrganNotification:
    id: uuid.UUID
    file: int
    person: str
    version: int
    previous_version: int
    field_paths: list[str]


async def open_organ_notification(connection: asyncpg.Connection, new: NewOrganNotification) -> asyncpg.Record:
    """The follow-up of one 修正, opened once (a replica that loses the race gets the winner's row)."""
    await connection.execute(
        """INSERT INTO organ_notification (id, file, person, version, previous_version, field_paths)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (file, person, version) DO NOTHING""",
        new.id, new.file, new.person, new.version, new.previous_version, new.field_paths)
    row: asyncpg.Record | None = await connection.fetchrow(
        "SELECT id, state FROM organ_notification WHERE file = $1 AND person = $2 AND version = $3",
        new.file, new.person, new.version)
    assert row is not None  # inserted above, or by another replica: rows are never deleted
    return row


async def correction_case_of_reports(connection: asyncpg.Connection,
                                     reports: list[str]) -> tuple[uuid.UUID, list[str]] | None:
    """The correction case whose 12-5 report one of `reports` is, with the fields it reported: its completion
    notifies the organs of those fields itself."""
    row = await connection.fetchrow(
        """SELECT id, coalesce(report_fields, '{}') AS fields FROM correction_case
           WHERE municipality_report = ANY($1::text[]) ORDER BY id LIMIT 1""", reports)
    return None if row is None else (row["id"], list(row["fields"]))


async def complete_organ_notification(connection: asyncpg.Connection, notification_id: uuid.UUID, *,
                                      subject_resident_code: str, recipients: list[str],
                                      correction_case_id: uuid.UUID | None) -> bool:
    """Close the follow-up in the caller's transaction (which issues its notices); False when another replica
    already did (nothing to issue then)."""
    state = await connection.fetchval("SELECT state FROM organ_notification WHERE id = $1 FOR UPDATE",
                                      notification_id)
    if state != ORGAN_FOLLOWING:
        return False
    await connection.execute(
        f"""UPDATE organ_notification SET state = {ORGAN_DONE}, subject_resident_code = $2, recipients = $3,
                   correction_case_id = $4, complete_time = now()
            WHERE id = $1""", notification_id, subject_resident_code, recipients, correction_case_id)
    return True


async def list_organ_notifications(connection: asyncpg.Connection, before: tuple[dt.datetime, uuid.UUID] | None,
                                   limit: int) -> list[asyncpg.Record]:
    """Newest first; only those that issued notices."""
    rows: list[asyncpg.Record] = await connection.fetch(
        f"""SELECT {_ORGAN_COLUMNS} FROM organ_notification
            WHERE state = {ORGAN_DONE} AND cardinality(recipients) > 0
              AND ($1::timestamptz IS NULL OR (create_time, id) < ($1, $2::uuid))
            ORDER BY create_time DESC, id DESC LIMIT $3""",
        before[0] if before else None, before[1] if before else None, limit)
    return rows


async def get_organ_notification(connection: asyncpg.Connection, notification_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {_ORGAN_COLUMNS} FROM organ_notification WHERE id = $1", notification_id)
    return row
