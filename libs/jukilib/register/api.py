"""The register's RPC logic, shared by the identity and annex servicers.

A `RegisterBinding` says which messages a register uses and how to validate its record; `RegisterApi`
does the rest the same way for both: caller and envelope checks, conversion between protobuf and the
engine's JSON records, resource names, pagination.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import json_format, message

from jukilib import caller, paging
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import FieldViolation, InvalidArgument, PermissionDenied
from jukilib.register import validation
from jukilib.register.engine import RegisterEngine
from jukilib.register.model import Change, ChangeKind, CurrentRecord, Notification, StoredVersion
from jukilib.register.validation import Violations

JAPAN = ZoneInfo("Asia/Tokyo")

RecordValidator = Callable[[Any, Violations, "RegisterBinding"], None]


@dataclass(frozen=True)
class RegisterBinding:
    """What distinguishes one register from the other."""

    register: str
    """`identity` or `annex`: names the register in outbox keys and traces."""
    collection: str
    """Resource collection id, e.g. `residents`."""
    record_type: type[message.Message]
    resource_type: type[message.Message]
    version_type: type[message.Message]
    validate_record: RecordValidator
    """Adds the violations of the register's own record fields (paths under `record.`)."""
    municipalities: MunicipalityTable
    resident_code_check: CheckDigitMode


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RegisterApi:
    """Apply, get, lookup and history for one register."""

    def __init__(self, engine: RegisterEngine, binding: RegisterBinding,
                 clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._engine = engine
        self.binding = binding
        self._clock = clock

    # --- ingest (30-6 / 30-41) -------------------------------------------------------------------

    async def apply(self, request: Any) -> message.Message:
        notification = self._notification(request)
        stored = await self._engine.apply(notification)
        return self.version_message(stored)

    def _notifying_municipality(self) -> str:
        organization = caller.current().organization
        # 住基法 30-6 ①: the notifying party is a municipality of this prefecture.
        if organization not in self.binding.municipalities:
            raise PermissionDenied("only a municipality of this prefecture may notify changes",
                                   "NOT_A_NOTIFYING_MUNICIPALITY")
        return organization

    def _notification(self, request: Any) -> Notification:
        municipality = self._notifying_municipality()
        received = self._clock()
        violations = Violations()
        violations.extend("notification_id", validation.notification_id_problems(request.notification_id))
        event_date = self._check_change(request, violations, received)
        if not request.HasField("record"):
            violations.add("record", "is required", "REQUIRED_FIELD")
        else:
            violations.resident_code("record.resident_code", request.record.resident_code,
                                     self.binding.resident_code_check)
            self.binding.validate_record(request.record, violations, self.binding)
        violations.raise_if_any()
        assert event_date is not None
        change = Change(
            kind=ChangeKind(request.change.kind),
            reason=int(request.change.reason),
            event_date=event_date,
            notify_time=request.change.notify_time.ToDatetime(dt.UTC),
            receive_time=received,
            municipality_code=municipality,
            notification_id=request.notification_id,
        )
        return Notification(
            change=change,
            resident_code=request.record.resident_code,
            record=json_format.MessageToDict(request.record, preserving_proto_field_name=True),
            digest=hashlib.sha256(request.SerializeToString(deterministic=True)).digest(),
        )

    @staticmethod
    def _check_change(request: Any, violations: Violations, received: dt.datetime) -> dt.date | None:
        if not request.HasField("change"):
            violations.add("change", "is required", "REQUIRED_FIELD")
            return None
        change = request.change
        kind = ChangeKind(change.kind) if change.kind in ChangeKind._value2member_map_ else None
        if kind is None:
            violations.add("change.kind", "must be RECORD, REMOVE or MODIFY")
        elif change.reason not in validation.REASONS_BY_KIND[kind]:
            violations.add("change.reason", "is not a reason of this kind of change")
        if not change.HasField("notify_time"):
            violations.add("change.notify_time", "is required", "REQUIRED_FIELD")
        if not change.HasField("event_date"):
            violations.add("change.event_date", "is required", "REQUIRED_FIELD")
            return None
        event_date = violations.calendar_date("change.event_date", change.event_date)
        # Only 転出 and 国外転出 may be notified ahead of the event (異動日 ≤ 処理日 otherwise).
        if event_date and event_date > received.astimezone(JAPAN).date() and (
                change.reason not in validation.FUTURE_DATED_REASONS):
            violations.add("change.event_date", "must not be after the day of receipt for this reason")
        return event_date

    # --- reads -----------------------------------------------------------------------------------

    def _person_id(self, name: str, field: str) -> uuid.UUID:
        prefix = f"{self.binding.collection}/"
        try:
            if not name.startswith(prefix) or "/" in name[len(prefix):]:
                raise ValueError
            return uuid.UUID(name[len(prefix):])
        except ValueError:
            raise InvalidArgument([FieldViolation(field, f"must be of the form {prefix}{{id}}")]) from None

    async def get(self, name: str) -> message.Message:
        return self.resource_message(await self._engine.get(self._person_id(name, "name")))

    async def lookup(self, resident_code: str) -> message.Message:
        violations = Violations()
        violations.resident_code("resident_code", resident_code, CheckDigitMode.OFF)
        violations.raise_if_any()
        return self.resource_message(await self._engine.lookup(resident_code))

    async def list_versions(self, parent: str, size: int, token: str) -> tuple[list[message.Message], str]:
        person_id = self._person_id(parent, "parent")
        limit = paging.page_size(size)
        position = paging.decode_token(token, keys=("after",))
        after = paging.int_at(position, "after") if position else 0
        versions = await self._engine.versions(person_id, after, limit + 1)
        next_token = paging.encode_token({"after": versions[limit - 1].version}) if len(versions) > limit else ""
        return [self.version_message(v) for v in versions[:limit]], next_token

    # --- conversion ------------------------------------------------------------------------------

    def _record(self, record: dict[str, Any]) -> message.Message:
        return json_format.ParseDict(record, self.binding.record_type(), ignore_unknown_fields=True)

    def _fill_common(self, target: Any, stored: StoredVersion) -> None:
        target.record.CopyFrom(self._record(stored.record))
        target.state = int(stored.state)
        target.version = stored.version
        source, change = stored.change, target.change
        change.kind = int(source.kind)
        change.reason = source.reason
        change.event_date.year = source.event_date.year
        change.event_date.month = source.event_date.month
        change.event_date.day = source.event_date.day
        change.notify_time.FromDatetime(source.notify_time)
        change.receive_time.FromDatetime(source.receive_time)
        change.municipality_code = source.municipality_code
        change.notification_id = source.notification_id

    def version_message(self, stored: StoredVersion) -> message.Message:
        result: Any = self.binding.version_type()
        result.name = f"{self.binding.collection}/{stored.person_id}/versions/{stored.version}"
        self._fill_common(result, stored)
        result.create_time.FromDatetime(stored.created_at)
        return result  # type: ignore[no-any-return]

    def resource_message(self, current: CurrentRecord) -> message.Message:
        result: Any = self.binding.resource_type()
        result.name = f"{self.binding.collection}/{current.person_id}"
        self._fill_common(result, current.current)
        result.update_time.FromDatetime(current.updated_at)
        return result  # type: ignore[no-any-return]
