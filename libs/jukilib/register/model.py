"""The engine's data: notifications in, stored versions out. Records are plain JSON objects whose
shape belongs to the service (the engine reads only the 住民票コード)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

Record = dict[str, Any]


class ChangeKind(enum.IntEnum):
    """Values of `juki.register.v1.ChangeKind`."""

    RECORD = 1  # 記載
    REMOVE = 2  # 消除
    MODIFY = 3  # 修正


class RecordState(enum.IntEnum):
    """Values of `juki.register.v1.RecordState`."""

    ACTIVE = 1
    REMOVED = 2


@dataclass(frozen=True)
class Change:
    """The change information (変更情報) of one version."""

    kind: ChangeKind
    reason: int
    event_date: date
    notify_time: datetime
    receive_time: datetime
    municipality_code: str
    notification_id: str


@dataclass(frozen=True)
class Notification:
    """A validated change notification, ready to apply."""

    change: Change
    resident_code: str
    record: Record
    digest: bytes
    """Hash of the canonical request: the same id with other content is refused."""


@dataclass(frozen=True)
class StoredVersion:
    """One version of a person as stored."""

    person_id: uuid.UUID
    version: int
    resident_code: str
    state: RecordState
    record: Record
    change: Change
    created_at: datetime


@dataclass(frozen=True)
class CurrentRecord:
    """A person with the version that is current."""

    person_id: uuid.UUID
    current: StoredVersion
    updated_at: datetime
