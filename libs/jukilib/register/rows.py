"""The rows a set of decisions writes (`build`), whatever writes them: the SQL of online ingest
(`jukilib.register.store.write`) or the COPY of the initial load (`jukilib.register.load.copy`).

Per decision: its version (the receipt of the notification, with its request digest), its outbox row
(住基法 30-7 / 30-42: what the relay forwards to the agency), a former 住民票コード it leaves behind, and
what the register's hooks keep apart (`RegisterHooks.rows`, e.g. the sealed 個人番号). Per person: the
current record when a decision of the batch became current (a new person, or an advanced one), or only
the new last version number when the batch brought late versions only. Per 修正: the 12-5 reports it
resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from jukilib.register.decide import Decision
from jukilib.register.model import REVIEW_CHARACTERS, REVIEW_MOVE_HALF, ChangeKind, PersonId


class Kept(NamedTuple):
    """What the hooks kept apart from one version's record (`RegisterHooks.prepare`)."""

    person_id: PersonId
    version: int
    secret: Any


class TableRows(NamedTuple):
    """Rows for one of the register's own tables (`RegisterHooks.rows`)."""

    table: str
    columns: tuple[tuple[str, str], ...]
    """(column, PostgreSQL type) in the order of the values of each row."""
    records: list[tuple[Any, ...]]


class ReportFix(NamedTuple):
    """A notification that became the person's current record and may fix what the notifying
    municipality was told in a 12-5 report: the writer resolves the reports it does fix."""

    person_id: PersonId
    municipality_code: str
    version: int
    kind: ChangeKind
    keys_changed: bool
    """The current record's unique keys changed (the fields kept apart from the record, e.g. 個人番号)."""
    current: bool = True
    """It became the current record (else a late 修正: it fixes a report only on a removed person)."""


class ReviewRow(NamedTuple):
    """An accepted notification the review queue lists (`jukilib.register.review`): characters to identify,
    or a 転入 whose 転出 half is awaited."""

    kind: int
    rule: str
    decision: Decision
    field_paths: tuple[str, ...] = ()
    awaited_municipality: str | None = None


class PersonRow(NamedTuple):
    decision: Decision
    """The decision that made the current record."""
    last_version: int
    record_json: str


class VersionRow(NamedTuple):
    decision: Decision
    record_json: str


@dataclass
class Rows:
    new_persons: list[PersonRow] = field(default_factory=list)
    advanced_persons: list[PersonRow] = field(default_factory=list)
    late_only: list[tuple[PersonId, int]] = field(default_factory=list)
    """Stored persons that got late versions only: (person id, last version); their current record stays."""
    versions: list[VersionRow] = field(default_factory=list)
    outbox: list[tuple[PersonId, int, str]] = field(default_factory=list)
    """(person id, version, idempotency key) in decision order: the relay delivers a person's changes in it."""
    former_codes: list[tuple[str, PersonId]] = field(default_factory=list)
    claimed_keys: list[tuple[bytes, PersonId, bool]] = field(default_factory=list)
    """(unique key, person id, whether it is a key of the person's current record) of keys nobody held."""
    current_keys: list[tuple[PersonId, bytes]] = field(default_factory=list)
    """(person id, key) of the current record's keys of stored persons whose current record advanced (a
    person with none is listed with an empty key, so that their former keys stop being current)."""
    report_fixes: list[ReportFix] = field(default_factory=list)
    """Notifications that may fix what a 12-5 report says (`ReportFix`), in decision order."""
    review: list[ReviewRow] = field(default_factory=list)
    departures: list[tuple[PersonId, str]] = field(default_factory=list)
    """(person, municipality) of late 消除: the 転出 half of a move whose 転入 came first settles its review item."""
    kept: list[TableRows] = field(default_factory=list)


def outbox_key(register: str, municipality_code: str, notification_id: str) -> str:
    """The idempotency key of a version's change at the agency (住基法 30-7 / 30-42): the notification that
    made it, which `person_version` keeps unique per register ((municipality, notification id)).

    Not the person and version number: after a restore to a time T, a version made after T is lost, and the
    person's next notification gets the same version number again; under a key of (person, version) the
    agency would answer that other change "duplicate" and it would never be delivered. A notification id is
    never reused with other content (`batch`: NOTIFICATION_ID_REUSED), so one key names one change. The
    municipality code has a fixed six digits: the key splits back at its first two slashes."""
    return f"{register}/{municipality_code}/{notification_id}"


def _dumps(record: dict[str, Any]) -> str:
    return orjson.dumps(record).decode()


def build(decisions: Sequence[Decision], register: str, kept: Sequence[TableRows], *, outbox: bool = True,
          dumps: Callable[[dict[str, Any]], str] = _dumps) -> Rows:
    """The rows of `decisions` (in decision order); `kept` is what the hooks made of them. `dumps` writes a
    record as JSON (the initial load's keeps to the standard library's output where orjson differs)."""
    rows = Rows(kept=[table for table in kept if table.records])
    versions, outbox_rows = rows.versions, rows.outbox
    current: dict[PersonId, PersonRow] = {}
    """Per person, the decision of the batch that made the current record (the last one that did)."""
    last: dict[PersonId, int] = {}
    claims: list[Decision] = []
    for decision in decisions:
        # Each record as JSON once (with orjson, as the pool's jsonb encoder), for its version and for the
        # person when it becomes current. PostgreSQL parses it into jsonb, so only the values matter.
        record_json = dumps(decision.notification.record)
        person_id, version, change = decision.person_id, decision.version, decision.notification.change
        versions.append(VersionRow(decision, record_json))
        if outbox:
            outbox_rows.append((person_id, version, decision.notification.agency_key
                                or outbox_key(register, change.municipality_code, change.notification_id)))
        if decision.former_code is not None:
            rows.former_codes.append((decision.former_code, person_id))
        if decision.becomes_current:
            current[person_id] = PersonRow(decision, version, record_json)
        last[person_id] = version
        if decision.claimed_keys:
            claims.append(decision)
        if change.kind == ChangeKind.MODIFY or (decision.becomes_current and change.kind == ChangeKind.REMOVE):
            # 住基法 12-5: a 修正 or 消除 now current, or a 修正 of a removed person's history, may fix what its
            # municipality was told; the writer resolves only the reports it does fix (`store._resolve_reports`).
            rows.report_fixes.append(ReportFix(person_id, change.municipality_code, version, change.kind,
                                               decision.keys_changed, decision.becomes_current))
        if decision.notification.unidentified or decision.move_from or (
                change.kind == ChangeKind.REMOVE and not decision.becomes_current):
            _for_review(rows, decision)
    _persons(rows, decisions, current, last)
    for decision in claims:
        final = current.get(decision.person_id)
        keys = final.decision.notification.unique_keys if final else ()
        rows.claimed_keys.extend((key, decision.person_id, key in keys) for key in decision.claimed_keys)
    return rows


def _for_review(rows: Rows, decision: Decision) -> None:
    """DOMAIN §B, §C: what the review queue lists of an accepted notification, and the 転出 that completes a move."""
    if decision.notification.unidentified:
        rows.review.append(ReviewRow(REVIEW_CHARACTERS, "UNIDENTIFIED_CHARACTERS", decision,
                                     field_paths=decision.notification.unidentified))
    if decision.move_from:
        rows.review.append(ReviewRow(REVIEW_MOVE_HALF, "MOVE_HALF_ALONE", decision,
                                     awaited_municipality=decision.move_from))
    if decision.notification.change.kind == ChangeKind.REMOVE and not decision.becomes_current:
        rows.departures.append((decision.person_id, decision.notification.change.municipality_code))


def _persons(rows: Rows, decisions: Sequence[Decision], current: dict[PersonId, PersonRow],
             last: dict[PersonId, int]) -> None:
    """Person rows: the current record of new and advanced persons (with their last version), the last
    version of persons with late versions only, and the keys of current records that changed."""
    new = {decision.person_id for decision in decisions if decision.new_person}
    keys_changed = {decision.person_id for decision in decisions if decision.keys_changed}
    for person_id, version in last.items():
        row = current.get(person_id)
        if row is None:
            rows.late_only.append((person_id, version))
            continue
        if row.last_version != version:
            row = row._replace(last_version=version)
        (rows.new_persons if person_id in new else rows.advanced_persons).append(row)
        if person_id in keys_changed:
            rows.current_keys.extend((person_id, key) for key in row.decision.notification.unique_keys or (b"",))
