"""The register's RPC logic, shared by the identity and annex servicers.

A `RegisterBinding` declares which messages a register uses and how to validate its record;
`RegisterApi` does the rest the same way for both: caller and envelope checks, conversion between
protobuf and the engine's JSON records, resource names, as-of reads, search, pagination.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import descriptor, message

from juki.register.v1 import register_pb2 as pb
from jukilib import caller, paging, protojson
from jukilib.domain import text
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.dates import japan_date
from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import FieldViolation, InvalidArgument, PermissionDenied, TimeWindow, Violations
from jukilib.register import validation
from jukilib.register.engine import RegisterEngine
from jukilib.register.holdings import Holdings
from jukilib.register.model import (
    Change,
    ChangeKind,
    CurrentRecord,
    Notification,
    SearchCriteria,
    SearchKeys,
    StoredVersion,
)
from jukilib.register.modifications import Modifications
from jukilib.register.reports import MunicipalityReports
from jukilib.register.review import ReviewQueue

RESIDENT_CODE_CHANGE_REASONS = frozenset({pb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST,  # 住民票コードの変更請求
                                          pb.CHANGE_REASON_RESIDENT_CODE_EX_OFFICIO_RECORD})  # 職権記載
SEARCH_DEFAULT_CANDIDATES, SEARCH_MAX_CANDIDATES = 20, 100
BATCH_LOOKUP_MAX = 1000
"""Most 住民票コード in one batch lookup (AIP-231: a documented maximum; beyond it INVALID_ARGUMENT)."""

T = TypeVar("T")

_CHANGE_KINDS = frozenset(int(kind) for kind in ChangeKind)

_RESIDENT_CODE = re.compile(r"\d{11}", re.ASCII)
"""A well-formed 住民票コード at a glance (the check-digit mode OFF accepts exactly these); anything else
goes through `Violations.resident_code` for its precise problem."""

RecordValidator = Callable[[Any, Violations, MunicipalityTable, str], None]
"""Checks a notified record: (record, violations, the prefecture's municipalities, the notifying one)."""


@dataclass(frozen=True)
class Wanted:
    """What the resources of an answer carry for the caller's field mask (`caller.Caller.fields`): the
    register leaves out what the gateway would cut anyway, which the gateway still does for every
    answer. `name`, `version` and `record.resident_code` are always there: the gateway's operation log
    records them (resident codes touched, record versions disclosed) before it minimises."""

    fields: frozenset[str] | None = None
    """Top-level fields of the resource (None: all)."""
    record: frozenset[str] | None = None
    """Keys of the record (None: all)."""

    @classmethod
    def of(cls, who: caller.Caller | None) -> Wanted:
        return EVERYTHING if who is None or who.fields is None else _wanted_for(who.fields)

    def has(self, field: str) -> bool:
        return self.fields is None or field in self.fields

    def record_of(self, stored: StoredVersion) -> dict[str, Any]:
        if self.record is None:
            return stored.record
        return {key: value for key, value in stored.record.items() if key in self.record}


EVERYTHING = Wanted()


@functools.lru_cache(maxsize=256)
def _wanted_for(mask: tuple[str, ...]) -> Wanted:
    """`Wanted` of one mask, worked out once (a purpose's mask comes with every call made for it)."""
    fields, record, whole_record = {"name", "version"}, {"resident_code"}, False
    for path in mask:
        head, _, rest = path.partition(".")
        fields.add(head)
        if head == "record":
            whole_record = whole_record or not rest
            record.add(rest.partition(".")[0])
    return Wanted(frozenset(fields), None if whole_record else frozenset(record))


def follows_former(who: caller.Caller | None) -> bool:
    """Whether a former 住民票コード or 個人番号 finds the person for this caller: only for the purposes whose
    affairs need the link (the gateway says so, `Caller.follows_former`), and inside the service."""
    return who is None or who.follows_former


def _change_fields(change: Change) -> dict[str, Any]:
    """ChangeInfo as constructor arguments."""
    event = change.event_date
    return {"kind": int(change.kind), "reason": change.reason,
            "event_date": {"year": event.year, "month": event.month, "day": event.day},
            "notify_time": protojson.timestamp_value(change.notify_time),
            "receive_time": protojson.timestamp_value(change.receive_time),
            "municipality_code": change.municipality_code, "notification_id": change.notification_id}


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
    municipality_field: str
    """The record field searched as `municipality_code` (address or 本籍地 municipality)."""

    @functools.cached_property
    def text_fields(self) -> tuple[str, ...]:
        """The record's text fields (names, readings, address...), checked for characters to identify."""
        string = descriptor.FieldDescriptor.TYPE_STRING
        return tuple(f.name for f in self.record_type.DESCRIPTOR.fields if f.type == string)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _birth_parts(record: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    birth = record.get("birth_date") or {}
    return (birth.get("year") or None, birth.get("month") or None, birth.get("day") or None)


DEFAULT_NOTIFY_WINDOW = TimeWindow(dt.timedelta(days=3650))


class RegisterApi:
    """Apply, get, lookup, search and history for one register."""

    def __init__(self, engine: RegisterEngine, binding: RegisterBinding, *, municipalities: MunicipalityTable,
                 resident_code_check: CheckDigitMode, clock: Callable[[], dt.datetime] = utc_now,
                 notify_window: TimeWindow = DEFAULT_NOTIFY_WINDOW,
                 report_overdue: dt.timedelta = dt.timedelta(days=30),
                 move_half_wait: dt.timedelta = dt.timedelta(days=3)) -> None:
        self.engine = engine
        self.binding = binding
        self.municipalities = municipalities
        self.resident_code_check = resident_code_check
        self.notify_window = notify_window
        self._clock = clock
        self.reports = MunicipalityReports(engine.database, municipalities, binding.record_type, report_overdue)
        self.review = ReviewQueue(engine.database, engine.keyring, self.reports, move_half_wait)
        self.modifications = Modifications(engine.database, binding.collection, binding.record_type.DESCRIPTOR,
                                           engine.hooks)
        self.holdings = Holdings(engine.database, binding.register)
        """What the register holds since a point, by notification (the reconciliation after a restore)."""

    # --- ingest (30-6 / 30-41) -------------------------------------------------------------------

    async def apply(self, request: Any, municipality: str) -> message.Message:
        """Apply `request`, notified by `municipality` (the caller's organisation)."""
        notification = self.notification(request, municipality)
        return self.version_message(await self.engine.apply_grouped(notification))

    def notification(self, request: Any, municipality: str) -> Notification:
        """Validate a request notified by `municipality` at the boundary (every bad field named) and build
        the notification."""
        # 住基法 30-6 ① / 30-41 ①: the notifying party is a municipality of this prefecture.
        if municipality not in self.municipalities:
            raise PermissionDenied("only a municipality of this prefecture may notify changes",
                                   "NOT_A_NOTIFYING_MUNICIPALITY")
        received = self._clock()
        violations = Violations()
        violations.extend("notification_id", validation.notification_id_problems(request.notification_id))
        event_date = self._check_change(request, violations, received)
        notify_time = violations.time_within("change.notify_time", request.change.notify_time, received,
                                             self.notify_window) if request.change.HasField("notify_time") else None
        self._check_record(request, violations, municipality)
        if event_date is not None and request.HasField("record"):
            # nobody is born after the event notified about them (a 出生's event date is the birth itself)
            violations.not_after("record.birth_date", request.record.birth_date, event_date, "the event date")
        violations.raise_if_any()
        assert event_date is not None and notify_time is not None
        change = Change(
            kind=ChangeKind(request.change.kind), reason=int(request.change.reason), event_date=event_date,
            notify_time=notify_time, receive_time=received,
            municipality_code=municipality, notification_id=request.notification_id,
        )
        record = protojson.message_to_dict(request.record)
        stored_record, secret = self.engine.hooks.prepare(record)
        return Notification(
            change=change, resident_code=request.record.resident_code, record=stored_record,
            digest=hashlib.sha256(request.SerializeToString(deterministic=True)).digest(),
            search=self.search_keys(record), previous_resident_code=request.previous_resident_code or None,
            secret=secret, unique_keys=self.engine.hooks.unique_keys(secret),
            unidentified=validation.unidentified_fields(record, self.binding.text_fields),
        )

    def _check_record(self, request: Any, violations: Violations, municipality: str) -> None:
        if not request.HasField("record"):
            violations.add("record", "is required", "REQUIRED_FIELD")
            return
        violations.resident_code("record.resident_code", request.record.resident_code, self.resident_code_check)
        self.binding.validate_record(request.record, violations, self.municipalities, municipality)
        changes_code = request.change.reason in RESIDENT_CODE_CHANGE_REASONS
        if changes_code and not request.previous_resident_code:
            violations.add("previous_resident_code", "is required for a change of resident code", "REQUIRED_FIELD")
        elif request.previous_resident_code:
            violations.resident_code("previous_resident_code", request.previous_resident_code, CheckDigitMode.OFF)
            if not changes_code:
                violations.add("previous_resident_code", "is only for a change of resident code")
            elif request.previous_resident_code == request.record.resident_code:
                violations.add("previous_resident_code", "must differ from the new resident code")

    @staticmethod
    def _check_change(request: Any, violations: Violations, received: dt.datetime) -> dt.date | None:
        if not request.HasField("change"):
            violations.add("change", "is required", "REQUIRED_FIELD")
            return None
        change = request.change
        kind = ChangeKind(change.kind) if change.kind in _CHANGE_KINDS else None
        if kind is None:
            violations.add("change.kind", "must be RECORD, REMOVE or MODIFY")
        if not change.HasField("notify_time"):
            violations.add("change.notify_time", "is required", "REQUIRED_FIELD")
        event_date = None
        if not change.HasField("event_date"):
            violations.add("change.event_date", "is required", "REQUIRED_FIELD")
        else:
            event_date = violations.calendar_date("change.event_date", change.event_date)
        if kind is not None:
            for field, problem in validation.change_problems(kind, change.reason, event_date, japan_date(received)):
                violations.add(field, problem)
        return event_date

    def search_keys(self, record: dict[str, Any], key_of: Callable[[str], str] = text.search_key) -> SearchKeys:
        """The derived keys of the 4-item search; `key_of` is `text.search_key` or a memo of it (the initial
        load's, where names repeat across millions of rows)."""
        year, month, day = _birth_parts(record)
        kana = record.get("full_name_kana") or ""
        return SearchKeys(
            name_key=key_of(record.get("full_name", "")), kana_key=key_of(kana) if kana else None,
            birth_year=year, birth_month=month, birth_day=day, sex_code=record.get("sex_code", ""),
            municipality_code=record.get(self.binding.municipality_field, ""),
        )

    # --- reads -----------------------------------------------------------------------------------

    def person_id(self, name: str, field: str) -> uuid.UUID:
        prefix = f"{self.binding.collection}/"
        try:
            if not name.startswith(prefix) or "/" in name[len(prefix):]:
                raise ValueError
            return uuid.UUID(name[len(prefix):])
        except ValueError:
            raise InvalidArgument([FieldViolation(field, f"must be of the form {prefix}{{id}}")]) from None

    def _reveals(self, who: caller.Caller | None) -> bool:
        """Whether `who` may receive what the hooks keep apart (`secret_paths`): its field mask covers one
        of them. No caller (a command, a loader) reads everything."""
        paths = self.engine.hooks.secret_paths
        return who is None or not paths or any(who.may_receive(path) for path in paths)

    async def get(self, name: str, who: caller.Caller | None = None) -> message.Message:
        return self.resource_message(await self.engine.get(self.person_id(name, "name"), reveal=self._reveals(who)),
                                     self.wanted(who))

    async def get_by_person_id(self, person_id: uuid.UUID) -> message.Message:
        return self.resource_message(await self.engine.get(person_id))

    async def lookup(self, request: Any, who: caller.Caller | None = None) -> message.Message:
        violations = Violations()
        violations.resident_code("resident_code", request.resident_code, CheckDigitMode.OFF)
        as_of = violations.calendar_date("as_of_date", request.as_of_date) if request.HasField("as_of_date") else None
        violations.raise_if_any()
        found = await self.engine.lookup(request.resident_code, as_of,
                                          by_receipt=request.as_of_basis == pb.AS_OF_BASIS_RECEIPT,
                                          reveal=self._reveals(who), follow_former=follows_former(who))
        return self.resource_message(found, self.wanted(who))

    async def batch_lookup(self, resident_codes: Sequence[str], who: caller.Caller | None = None
                           ) -> list[CurrentRecord | None]:
        """The current record of each code's person, in request order, None for a code nobody has or had
        (`resource_fields` makes the answer). Every code is checked first (`resident_codes[i]` names a bad
        one); an empty list or more than `BATCH_LOOKUP_MAX` codes is refused naming `resident_codes`."""
        violations = Violations()
        if not resident_codes:
            violations.add("resident_codes", "at least one resident code is required", "REQUIRED_FIELD")
        elif len(resident_codes) > BATCH_LOOKUP_MAX:
            violations.add("resident_codes", f"at most {BATCH_LOOKUP_MAX:,} resident codes per call")
        else:
            for index, code in enumerate(resident_codes):
                if not _RESIDENT_CODE.fullmatch(code):
                    violations.resident_code(f"resident_codes[{index}]", code, CheckDigitMode.OFF)
        violations.raise_if_any()
        return await self.engine.lookup_many(resident_codes, reveal=self._reveals(who),
                                             follow_former=follows_former(who))

    async def search(self, query: Any, who: caller.Caller | None = None
                     ) -> tuple[list[tuple[message.Message, tuple[str, ...]]], bool]:
        """Candidates (resource, matched fields) and whether the cap cut the list."""
        violations = Violations()
        if not (query.full_name or query.full_name_kana):
            violations.add("query.full_name", "a name or a reading is required", "REQUIRED_FIELD")
        violations.optional_text("query.full_name", query.full_name, max_length=100)
        violations.kana("query.full_name_kana", query.full_name_kana)
        if not query.HasField("birth_date"):
            violations.add("query.birth_date", "is required", "REQUIRED_FIELD")
        else:
            violations.partial_date("query.birth_date", query.birth_date)
        if query.sex_code:
            violations.sex_code("query.sex_code", query.sex_code)
        if query.municipality_code:
            violations.municipality("query.municipality_code", query.municipality_code)
        if not 0 <= query.max_candidates <= SEARCH_MAX_CANDIDATES:
            violations.add("query.max_candidates", f"must be between 0 and {SEARCH_MAX_CANDIDATES}")
        violations.raise_if_any()
        cap = query.max_candidates or SEARCH_DEFAULT_CANDIDATES
        birth = (query.birth_date.year or None, query.birth_date.month or None, query.birth_date.day or None)
        candidates = await self.engine.search(SearchCriteria(
            name_key=text.search_key(query.full_name) if query.full_name else None,
            kana_key=text.search_key(query.full_name_kana) if query.full_name_kana else None,
            birth=birth, sex_code=query.sex_code or None, municipality_code=query.municipality_code or None,
            limit=cap + 1), reveal=self._reveals(who))
        wanted = self.wanted(who)
        return ([(self.resource_message(c.person, wanted), c.matched_fields) for c in candidates[:cap]],
                len(candidates) > cap)

    async def list_versions(self, parent: str, size: int, token: str, who: caller.Caller | None = None
                            ) -> tuple[list[message.Message], str]:
        person_id = self.person_id(parent, "parent")
        limit = paging.page_size(size)
        position = paging.decode_token(token, keys=("offset",))
        offset = paging.int_at(position, "offset") if position else 0
        versions = await self.engine.versions(person_id, offset, limit + 1, reveal=self._reveals(who))
        next_token = paging.encode_token({"offset": offset + limit}) if len(versions) > limit else ""
        wanted = self.wanted(who)
        return [self.version_message(v, wanted) for v in versions[:limit]], next_token

    # --- conversion ------------------------------------------------------------------------------

    @staticmethod
    def wanted(who: caller.Caller | None = None) -> Wanted:
        """What an answer to `who` carries (everything for no caller, or for a purpose with every field)."""
        return Wanted.of(who)

    # Answers are built as constructor arguments (dicts the protobuf constructor reads in C): a batch
    # answer of 1,000 resources is then one constructor call (`resource_fields`).
    #
    # Records go in as stored: every writer stores a record in the form `protojson.message_to_dict` writes
    # (ingest converts the request's message, `juki load` checks or converts each row), and that form is
    # what the constructor reads, so it is not checked first (`protojson.constructor_value` would cost half
    # of building a batch answer, docs/performance.md). A record not in that form (a value of the wrong type, a
    # name the message does not have) makes the constructor raise: `construct` then builds the answer
    # again with every record checked, read through json_format where it must be.

    @staticmethod
    def construct(build: Callable[[bool], T]) -> T:
        """`build(checked)`: with records as stored first, with every record checked if that raises."""
        try:
            return build(False)
        except (TypeError, ValueError):
            return build(True)

    def _common_fields(self, fields: dict[str, Any], stored: StoredVersion, wanted: Wanted,
                       checked: bool) -> dict[str, Any]:
        record = wanted.record_of(stored)
        fields["record"] = protojson.constructor_value(record, self.binding.record_type) if checked else record
        fields["version"] = stored.version
        if wanted.has("state"):
            fields["state"] = int(stored.state)
        if wanted.has("change"):
            fields["change"] = _change_fields(stored.change)
        return fields

    def version_message(self, stored: StoredVersion, wanted: Wanted = EVERYTHING) -> message.Message:
        return self.construct(lambda checked: self.binding.version_type(**self.version_fields(stored, wanted,
                                                                                               checked)))

    def version_fields(self, stored: StoredVersion, wanted: Wanted = EVERYTHING, checked: bool = False,
                       ) -> dict[str, Any]:
        """The version `stored`, with what `wanted` asks for, as constructor arguments (records as stored
        unless `checked`: build inside `construct`)."""
        name = f"{self.binding.collection}/{stored.person_id}/versions/{stored.version}"
        fields = self._common_fields({"name": name}, stored, wanted, checked)
        if wanted.has("create_time"):
            fields["create_time"] = protojson.timestamp_value(stored.created_at)
        return fields

    def resource_message(self, current: CurrentRecord, wanted: Wanted = EVERYTHING) -> message.Message:
        return self.construct(lambda checked: self.binding.resource_type(**self.resource_fields(current, wanted,
                                                                                                 checked)))

    def resource_fields(self, current: CurrentRecord, wanted: Wanted = EVERYTHING, checked: bool = False,
                        ) -> dict[str, Any]:
        """The resource of `current`, with what `wanted` asks for, as constructor arguments (records as
        stored unless `checked`: build inside `construct`)."""
        fields = self._common_fields({"name": f"{self.binding.collection}/{current.person_id}"}, current.current,
                                     wanted, checked)
        if wanted.has("update_time"):
            fields["update_time"] = protojson.timestamp_value(current.updated_at)
        return fields
