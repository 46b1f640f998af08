"""The engine's data: notifications in, stored versions out. Records are plain JSON objects whose
shape belongs to the service (the engine reads only the 住民票コード and the derived search keys)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple, TypeAlias

from juki.register.v1 import register_pb2

Record = dict[str, Any]
PersonId: TypeAlias = uuid.UUID | str
"""A person's id: a UUID as PostgreSQL reads it back, or its canonical text where the initial load makes
the ids of new persons (it only writes them, and text goes into COPY as it is)."""
OrderKey = tuple[date, datetime, str, str]


REPORT_RESOLVED = int(register_pb2.REPORT_STATE_RESOLVED)
REPORT_AT_MUNICIPALITY = (int(register_pb2.REPORT_STATE_OPEN), int(register_pb2.REPORT_STATE_ACKNOWLEDGED))
"""States of a report the municipality has and may fix (an agency's report under review is not one)."""
REPORT_AT_MUNICIPALITY_SQL = ", ".join(str(state) for state in REPORT_AT_MUNICIPALITY)
REPORT_CORRECTED = int(register_pb2.REPORT_OUTCOME_CORRECTED)
REVIEW_REFUSED = int(register_pb2.REVIEW_ITEM_KIND_REFUSED_NOTIFICATION)
REVIEW_CHARACTERS = int(register_pb2.REVIEW_ITEM_KIND_CHARACTER_IDENTIFICATION)
REVIEW_MOVE_HALF = int(register_pb2.REVIEW_ITEM_KIND_LONE_MOVE_HALF)
REVIEW_OPEN = int(register_pb2.REVIEW_ITEM_STATE_OPEN)
REVIEW_SETTLED = int(register_pb2.REVIEW_ITEM_STATE_SETTLED)
REPORTS_FIXED_BY_REMOVAL = ("DUPLICATE_RECORD", "ERRONEOUS_RECORD")
"""Reasons of 12-5 reports that a 消除 fixes: 誤載, a record that should not be in the file (removed ex officio)."""


class ChangeKind(enum.IntEnum):
    """Values of `juki.register.v1.ChangeKind`."""

    RECORD = register_pb2.CHANGE_KIND_RECORD  # 記載
    REMOVE = register_pb2.CHANGE_KIND_REMOVE  # 消除
    MODIFY = register_pb2.CHANGE_KIND_MODIFY  # 修正


class RecordState(enum.IntEnum):
    """Values of `juki.register.v1.RecordState`."""

    ACTIVE = register_pb2.RECORD_STATE_ACTIVE
    REMOVED = register_pb2.RECORD_STATE_REMOVED


class Change(NamedTuple):
    """The change information (変更情報) of one version. Named tuples, like the other records of a version
    read back (`StoredVersion`, `CurrentRecord`): a batch lookup builds three per resident, and a frozen
    dataclass costs several times more to build."""

    kind: ChangeKind
    reason: int
    event_date: date
    notify_time: datetime
    receive_time: datetime
    municipality_code: str
    notification_id: str

    @property
    def order_key(self) -> OrderKey:
        """Position in a person's history: event date, then notification time, then the id."""
        return (self.event_date, self.notify_time, self.municipality_code, self.notification_id)


class SearchKeys(NamedTuple):
    """Derived keys of the 4-item search (degraded forms, never shown). A named tuple: an initial load
    derives millions, and a frozen dataclass costs several times more to build."""

    name_key: str
    kana_key: str | None
    birth_year: int | None
    birth_month: int | None
    birth_day: int | None
    sex_code: str
    municipality_code: str


class Notification(NamedTuple):
    """A validated change notification, ready to apply (a named tuple: a load makes millions)."""

    change: Change
    resident_code: str
    record: Record
    """The record as stored (a register may have taken secrets out of it; see RegisterHooks)."""
    digest: bytes
    """Hash of the canonical request: the same id with other content is refused."""
    search: SearchKeys
    previous_resident_code: str | None = None
    secret: Any = None
    """What the register's hooks keep apart from the record (identity: the 個人番号)."""
    unique_keys: tuple[bytes, ...] = ()
    unidentified: tuple[str, ...] = ()
    """Paths of record fields holding characters to identify (文字同定, `validation.unidentified_fields`)."""
    """Keyed hashes of the identifier the register keeps unique among persons (`RegisterHooks.unique_key`): one
    per HMAC key of the register's keyring (two during a rotation; `decide.same_identifier`)."""
    person_id: PersonId | None = None
    """The id the register gave the person before, for a 記載 re-applied from the agency's copy after a restore
    (`juki reconcile --apply`): the person keeps their resource name (`residents/{id}`). None: a new id."""
    agency_key: str | None = None
    """The key the agency already holds this change under, for a change re-applied from its copy: the outbox row
    keeps it, so the agency answers the relay's delivery duplicate whatever form the key has (`rows.outbox_key`,
    or the (person, version) form of changes sent before). None: the key of the notification."""


class UniqueKey(NamedTuple):
    """An identifier a register keeps unique among persons beside the 住民票コード, by keyed hash (identity:
    the 個人番号): the current record's may change only under `change_reasons`."""

    name: str
    """Names the refusals (`<NAME>_IN_USE`, `<NAME>_CHANGE_REFUSED`), e.g. INDIVIDUAL_NUMBER."""
    label: str
    """What it is, in error messages (never its value)."""
    change_reasons: frozenset[int]


class StoredVersion(NamedTuple):
    """One version of a person as stored."""

    person_id: PersonId
    version: int
    resident_code: str
    state: RecordState
    record: Record
    change: Change
    created_at: datetime


class CurrentRecord(NamedTuple):
    """A person with the version that is current (or that stood on an as-of date)."""

    person_id: PersonId
    current: StoredVersion
    updated_at: datetime


@dataclass(frozen=True)
class SearchCriteria:
    """A 4-item search in search-key form: name or reading key, birth parts (None = any)."""

    name_key: str | None
    kana_key: str | None
    birth: tuple[int | None, int | None, int | None]
    sex_code: str | None
    municipality_code: str | None
    limit: int


@dataclass(frozen=True)
class Candidate:
    """A search hit: the person's current record and which query items matched."""

    person: CurrentRecord
    matched_fields: tuple[str, ...]
