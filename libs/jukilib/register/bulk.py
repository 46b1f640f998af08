"""Initial bulk load of a register (`juki load`): an existing file, checked row by row with the rules of
the RPC path, written with COPY in one transaction.

What a loaded person is: exactly what applying a 記載 notification to an empty register stores — one
`person` row (current version 1, search keys from `RegisterApi.search_keys`), one `person_version`
row (change kind RECORD, reason 改製 (7) unless the row says otherwise, the event date of the row or
the load date in Japan, notify and receive time = the load time, the record's municipality as the
notifying municipality, notification id `load-<line>` unless the row has one), what the register's
hooks keep apart (identity: the encrypted 個人番号, `RegisterHooks.bulk_tables`), and the version's
request digest:

* The version is the receipt of the notification that made it (the engine's invariant), which
  protects the ids: a CS that later sends a notification under an id the file carried gets
  NOTIFICATION_ID_REUSED instead of a second 記載 slipped into history. The digest is a constant no
  real request hashes to (there was no request).
* No outbox rows unless `forward`: the agency already holds the existing file. With `forward` every
  person gets the outbox row that `RegisterEngine.apply` writes (key `<register>/<person>/1`).

Validation: every row goes through the register's `validate_record` and the 住民票コード check of the
configured mode, with the notifying municipality (the record's own) as the caller, plus the rules of
the change information for a 記載 and the uniqueness a later notification would meet (one person per
住民票コード, one use of each notification id). A bad row is reported by line number and field,
never by value. By default one bad row stops the load and nothing is written (the transaction is
rolled back; the rest of the file is still checked so that every bad row is reported at once);
`skip_invalid` loads the good rows and counts the rest.

Fast mode (the default when the register is empty): the loader runs as the schema owner, locks the
tables, drops their foreign keys, primary keys, unique constraints and indexes, loads the bare tables,
then rebuilds everything from the catalog's own definitions (`pg_get_constraintdef`,
`pg_get_indexdef`) and ANALYZEs — all in the one transaction of the load: a failure anywhere leaves
the register exactly as it was, and nobody ever sees it without its keys (they wait on the lock). A
register that already has persons is loaded into its indexed tables instead (`mode="auto"`), or
refused (`mode="fast"`).

Speed: rows are prepared (parsed, validated, encoded as COPY text, 個人番号 sealed) in worker
processes while the main process streams finished chunks to PostgreSQL, in file order. Each chunk is
COPYed once into an unlogged staging table and spread from there into `person` and `person_version`
with INSERT … SELECT, so the record's JSON is parsed once although two tables hold it; the hooks' rows
are COPYed directly.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import functools
import gc
import hashlib
import io
import logging
import multiprocessing
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from google.protobuf import descriptor, json_format, message

from juki.register.v1 import register_pb2
from jukilib import protojson
from jukilib.collector import collect_young_rarely
from jukilib.domain import text
from jukilib.domain.dates import japan_date
from jukilib.errors import Violations
from jukilib.register import bulkjson, validation
from jukilib.register.api import RegisterApi
from jukilib.register.hooks import BulkPerson, RegisterHooks
from jukilib.register.model import ChangeKind, RecordState

logger = logging.getLogger(__name__)

MODES = ("auto", "fast", "indexed")
FORMATS = ("jsonl", "csv")
DEFAULT_REASON = register_pb2.CHANGE_REASON_REISSUE  # 改製
META_FIELDS = ("event_date", "notification_id", "change_reason")
# Receipts of loaded versions: there was no request, so no request hashes to this.
LOAD_DIGEST = hashlib.sha256(b"juki.register.bulk: recorded by the initial load, not by a notification").digest()
_ENGINE_TABLES = ("person", "person_version")
_OTHER_ENGINE_TABLES = ("resident_code_history", "outbox")
_SMALL_FILE = 8 << 20  # below this, rows are prepared in-process (no worker start-up)
_PARTIAL_DATE = "juki.register.v1.PartialDate"
_CALENDAR_DATE = "google.type.Date"


# --- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowProblem:
    """One bad field of one row; the description names the rule, never the value."""

    line: int
    field: str
    description: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.description}"


class BulkLoadError(Exception):
    """The file was not loaded and nothing was written."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = (), invalid_rows: int = 0) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.invalid_rows = invalid_rows


class FastModeRefused(BulkLoadError):
    """Fast mode was required but the register is not empty."""


@dataclass(frozen=True)
class Progress:
    bytes_done: int
    bytes_total: int
    rows: int
    """Rows checked so far (loaded or not)."""
    seconds: float


@dataclass(frozen=True)
class LoadOptions:
    mode: str = "auto"
    """auto: fast when the register is empty, else into the indexed tables; fast: refuse a non-empty
    register; indexed: never drop indexes."""
    skip_invalid: bool = False
    forward: bool = False
    """Write outbox rows, so that the relay sends every loaded person to the agency."""
    file_format: str | None = None
    """jsonl or csv; by default from the file name (.csv is CSV, anything else JSON lines)."""
    id_prefix: str = "load-"
    """Notification id of a row without one: prefix + line number."""
    workers: int | None = None
    """Worker processes preparing rows; None: one per core for large files, none for small ones."""
    chunk_bytes: int = 4 << 20
    max_problems: int = 100
    """Bad rows reported in detail (all are counted)."""
    progress: Callable[[Progress], None] | None = None


@dataclass
class LoadReport:
    persons: int = 0
    skipped: int = 0
    """Bad rows left out (skip_invalid)."""
    problems: list[RowProblem] = field(default_factory=list)
    fast: bool = False
    seconds: float = 0.0
    index_seconds: float = 0.0
    """Of `seconds`: rebuilding keys, indexes and statistics after a fast load."""
    resident_code_warnings: int = 0
    """住民票コード accepted in warn mode although the (UNVERIFIED) check digit did not match."""
    prepare_cpu_seconds: float = 0.0
    """CPU time spent preparing rows (over all workers)."""
    stream_seconds: float = 0.0
    """Of `seconds`: reading, checking and writing the rows (before the rebuild)."""
    database_seconds: float = 0.0
    """Of the streaming time, how long the main process waited on PostgreSQL (COPY and INSERT)."""


# --- the file --------------------------------------------------------------------------------------

def file_format_of(path: Path, requested: str | None = None) -> str:
    if requested is not None:
        if requested not in FORMATS:
            raise BulkLoadError(f"unknown file format; expected one of {', '.join(FORMATS)}")
        return requested
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def _read_header(path: Path) -> list[str]:
    with path.open("rb") as stream:
        first = stream.readline().removeprefix(b"\xef\xbb\xbf")
    try:
        return [column.strip() for column in next(csv.reader([first.decode("utf-8")]), [])]
    except (UnicodeDecodeError, csv.Error):
        raise BulkLoadError("line 1: the CSV header cannot be read") from None


def _read_chunks(path: Path, chunk_bytes: int, first_line: int) -> Iterator[tuple[int, bytes, int]]:
    """(number of the first line, whole lines, file offset after them), skipping `first_line - 1` lines."""
    with path.open("rb") as stream:
        for _ in range(first_line - 1):
            stream.readline()
        line, rest = first_line, b""
        while True:
            block = stream.read(chunk_bytes)
            if not block:
                if rest:
                    yield line, rest, stream.tell()
                return
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            chunk, rest = data[:cut], data[cut:]
            yield line, chunk, stream.tell() - len(rest)
            line += chunk.count(b"\n")


# --- from a row to a record message ----------------------------------------------------------------

_PARTIAL = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
_CALENDAR = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_TRUE, _FALSE = frozenset({"true", "1", "t", "yes"}), frozenset({"false", "0", "f", "no", ""})


def _csv_partial_date(value: str) -> dict[str, Any] | None:
    """`YYYY-MM-DD`, `YYYY-MM`, `YYYY` or `unknown` as a PartialDate in proto JSON (non-calendar days
    such as 02-30 are lawful and kept)."""
    if value.lower() in ("unknown", "不詳"):
        return {"precision": "DATE_PRECISION_UNKNOWN"}
    match = _PARTIAL.fullmatch(value)
    if match is None:
        raise ValueError("must be YYYY-MM-DD, YYYY-MM, YYYY or unknown")
    year, month, day = match.groups()
    if day is not None:
        return {"precision": "DATE_PRECISION_DAY", "year": int(year), "month": int(month), "day": int(day)}
    if month is not None:
        return {"precision": "DATE_PRECISION_MONTH", "year": int(year), "month": int(month)}
    return {"precision": "DATE_PRECISION_YEAR", "year": int(year)}


def _csv_calendar_date(value: str) -> dict[str, Any]:
    match = _CALENDAR.fullmatch(value)
    if match is None:
        raise ValueError("must be YYYY-MM-DD")
    year, month, day = (int(part) for part in match.groups())
    return {"year": year, "month": month, "day": day}


def _csv_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


class CsvColumns:
    """How the flat columns of a CSV file map to the record (and the change information)."""

    def __init__(self, header: list[str], record_type: type[message.Message]) -> None:
        fields = record_type.DESCRIPTOR.fields_by_name
        problems: list[str] = []
        self.columns: list[tuple[str, str, Callable[[str], Any] | None]] = []
        """(column, record field or meta name or `<date field>.original_text`, converter)."""
        if len(set(header)) != len(header):
            problems.append("a column appears twice")
        for column in header:
            if column in META_FIELDS:
                self.columns.append((column, column, None))
            elif column in fields:
                self.columns.append((column, column, self._converter(fields[column], problems)))
            elif column.endswith("_original_text") and _is_message(fields.get(column[:-14]), _PARTIAL_DATE):
                self.columns.append((column, f"{column[:-14]}.original_text", None))
            else:
                problems.append(f"column {column!r} is not a field of the record")
        if problems:
            raise BulkLoadError("line 1: the CSV header is not usable: " + "; ".join(problems))

    @staticmethod
    def _converter(field_descriptor: Any, problems: list[str]) -> Callable[[str], Any] | None:
        """How a cell becomes the field's proto JSON value (None: the text as is)."""
        if field_descriptor.is_repeated:
            problems.append(f"column {field_descriptor.name!r}: repeated fields need JSON lines")
            return None
        if _is_message(field_descriptor, _PARTIAL_DATE):
            return _csv_partial_date
        if _is_message(field_descriptor, _CALENDAR_DATE):
            return _csv_calendar_date
        converters: dict[int, Callable[[str], Any] | None] = {
            descriptor.FieldDescriptor.TYPE_STRING: None, descriptor.FieldDescriptor.TYPE_BOOL: _csv_bool,
            descriptor.FieldDescriptor.TYPE_INT32: int, descriptor.FieldDescriptor.TYPE_INT64: int}
        if field_descriptor.type not in converters:
            problems.append(f"column {field_descriptor.name!r}: this type needs JSON lines")
        return converters.get(field_descriptor.type)

    def row(self, values: list[str], problems: list[tuple[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(record fields in proto JSON, change information) of one row; empty cells are absent."""
        if len(values) != len(self.columns):
            problems.append(("row", f"has {len(values)} cells, the header {len(self.columns)}"))
            return {}, {}
        fields: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for (column, target, convert), value in zip(self.columns, values, strict=True):
            if not value:
                continue
            if target in META_FIELDS:
                meta[target] = value
            elif target.endswith(".original_text"):
                texts[target[:-14]] = value
            elif convert is None:
                fields[target] = value
            else:
                try:
                    fields[target] = convert(value)
                except ValueError as error:
                    problems.append((column, str(error) if str(error).startswith("must") else "has a bad value"))
        for name, original in texts.items():
            fields.setdefault(name, {})["original_text"] = original
        return fields, meta


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_message(field_descriptor: Any, full_name: str) -> bool:
    return bool(field_descriptor is not None and field_descriptor.message_type is not None
                and field_descriptor.message_type.full_name == full_name)


def record_dict(record: message.Message, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record as the RPC path stores it (`protojson.message_to_dict`), taken as is from `fields` (the
    proto JSON the message was built from) when that is already in this form."""
    plan = protojson.plan_of(record.DESCRIPTOR)
    if plan is not None and fields is not None and protojson.is_canonical(fields, plan):
        return fields
    return protojson.message_to_dict(record)


# --- validation ------------------------------------------------------------------------------------

class _Memo:
    __slots__ = ("calls", "kept", "off")

    def __init__(self) -> None:
        self.calls = 0
        self.kept = 0
        self.off = False


_Outcome = tuple[tuple[Any, ...], Any]
"""(the violations a check added, what it returned)."""


class _MemoViolations(Violations):
    """The register's own validators, with each check's outcome on one value remembered for the rest of
    the load: names, dates of birth, municipalities and sex codes repeat across millions of rows. The
    rules are the validators'; only repeated evaluation is saved. A check whose values hardly repeat
    (addresses) stops being remembered after a while: remembering would only cost.

    Every outcome lives in one dictionary keyed by (check, field, value...): the look-up is most of the
    cost of a remembered check, which runs ten times a row."""

    SAMPLE = 50_000
    LIMIT = 500_000

    def __init__(self) -> None:
        super().__init__()
        self._outcomes: dict[tuple[Any, ...], _Outcome] = {}
        self._memos: dict[tuple[Any, ...], _Memo] = {}

    def _replay(self, found: _Outcome) -> Any:
        if found[0]:
            self.items.extend(found[0])
        return found[1]

    def _check(self, key: tuple[Any, ...], check: Callable[..., Any], *args: Any) -> Any:
        """Run a check not remembered yet (its violations are added), and remember its outcome."""
        kind = key[:2]
        memo = self._memos.get(kind)
        if memo is None:
            memo = self._memos[kind] = _Memo()
        start = len(self.items)
        result = check(self, *args)
        if memo.off:
            return result
        memo.calls += 1
        if memo.calls == self.SAMPLE and memo.kept > self.SAMPLE * 9 // 10:  # mostly distinct values
            memo.off = True
            for stale in [other for other in self._outcomes if other[:2] == kind]:
                del self._outcomes[stale]
        elif memo.kept < self.LIMIT:
            memo.kept += 1
            self._outcomes[key] = (tuple(self.items[start:]), result)
        return result

    def _remembered(self, key: tuple[Any, ...], check: Callable[..., Any], *args: Any) -> Any:
        found = self._outcomes.get(key)
        return self._check(key, check, *args) if found is None else self._replay(found)

    def required_text(self, field: str, value: str, *, max_length: int) -> None:
        self._remembered(("required_text", field, value, max_length), _required_text, field, value, max_length)

    def optional_text(self, field: str, value: str, *, max_length: int) -> None:
        self._remembered(("optional_text", field, value, max_length), _optional_text, field, value, max_length)

    def kana(self, field: str, value: str) -> None:
        self._remembered(("kana", field, value), Violations.kana, field, value)

    def sex_code(self, field: str, value: str) -> None:
        self._remembered(("sex_code", field, value), Violations.sex_code, field, value)

    def municipality(self, field: str, value: str, table: Any = None) -> None:
        self._remembered(("municipality", field, value, id(table)), Violations.municipality, field, value, table)

    def partial_date(self, field: str, value: Any) -> None:
        key = ("partial_date", field, value.precision, value.year, value.month, value.day, value.original_text)
        self._remembered(key, Violations.partial_date, field, value)

    def calendar_date(self, field: str, value: Any) -> dt.date | None:
        result: dt.date | None = self._remembered(("calendar_date", field, value.year, value.month, value.day),
                                                  Violations.calendar_date, field, value)
        return result


def _required_text(violations: Violations, field: str, value: str, max_length: int) -> None:
    Violations.required_text(violations, field, value, max_length=max_length)


def _optional_text(violations: Violations, field: str, value: str, max_length: int) -> None:
    Violations.optional_text(violations, field, value, max_length=max_length)


class _CountingFilter(logging.Filter):
    """Counts (and holds back) the per-row warning of a 住民票コード accepted in warn mode: one line per
    row would flood the log on a file of millions; the load reports the count instead."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("resident code check digit mismatch"):
            self.count += 1
            return False
        return True


_VALIDATION_LOGGER = logging.getLogger(Violations.__module__)
FieldProblem = tuple[str, str]
"""(field or column of the file, what is wrong)."""


# --- preparing chunks (in worker processes) --------------------------------------------------------

@dataclass(frozen=True)
class _Task:
    index: int
    first_line: int
    data: bytes
    offset: int
    """File offset after the chunk (progress)."""
    exclude: frozenset[int] = frozenset()
    """Lines to leave out (rows found bad by a later check, re-prepared under skip_invalid)."""
    check_only: bool = False
    """The load has failed already: check the rows, prepare nothing."""


@dataclass
class _Prepared:
    index: int
    rows: int = 0
    """Rows seen (good and bad)."""
    lines: list[int] = field(default_factory=list)
    """Line of every prepared person, in order."""
    resident_codes: list[str] = field(default_factory=list)
    receipts: list[tuple[str, str]] = field(default_factory=list)
    """(municipality, notification id) of every prepared person."""
    problems: list[RowProblem] = field(default_factory=list)
    invalid: int = 0
    secrets_kept: int = 0
    code_warnings: int = 0
    staging: bytes = b""
    """COPY text of the staging table: one row per person."""
    payloads: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    """(table, columns, COPY text) of the hooks' tables."""
    cpu_seconds: float = 0.0


_STAGING = "juki_bulk_load_staging"
_STAGING_COLUMNS = ("person_id", "resident_code", "event_date", "record", "name_key", "kana_key", "birth_year",
                    "birth_month", "birth_day", "sex_code", "search_municipality_code", "change_reason",
                    "municipality_code", "notification_id")
_CREATE_STAGING = f"""
CREATE UNLOGGED TABLE {_STAGING} (
    person_id uuid NOT NULL, resident_code text NOT NULL, event_date date NOT NULL, record jsonb NOT NULL,
    name_key text, kana_key text, birth_year integer, birth_month integer, birth_day integer, sex_code text,
    search_municipality_code text, change_reason smallint NOT NULL, municipality_code text NOT NULL,
    notification_id text NOT NULL)"""
# What RegisterEngine.apply stores for a 記載 of a new person (store.insert_person, insert_version,
# insert_outbox), at the time of the load's transaction (now()).
_INSERT_PERSONS = f"""
INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record, updated_at,
                    name_key, kana_key, birth_year, birth_month, birth_day, sex_code, municipality_code)
SELECT person_id, resident_code, {int(RecordState.ACTIVE)}, 1, 1, event_date, record, now(), name_key, kana_key,
       birth_year, birth_month, birth_day, sex_code, search_municipality_code
FROM {_STAGING}"""
_INSERT_VERSIONS = f"""
INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind, change_reason,
                            event_date, notify_time, receive_time, municipality_code, notification_id,
                            request_digest)
SELECT person_id, 1, resident_code, {int(RecordState.ACTIVE)}, record, {int(ChangeKind.RECORD)}, change_reason,
       event_date, now(), now(), municipality_code, notification_id, $1
FROM {_STAGING}"""
_INSERT_OUTBOX = f"""
INSERT INTO outbox (person_id, version, idempotency_key)
SELECT person_id, 1, $1 || person_id::text || '/1' FROM {_STAGING}"""
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str) -> str:
    """A text value in PostgreSQL's COPY text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return copy_text(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, int | uuid.UUID):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"no COPY text form for {type(value).__name__}")


NULL = "\\N"


def _nullable(value: int | str | None) -> str:
    return NULL if value is None else str(value)


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _new_ids(count: int) -> list[str]:
    """Random (version 4) UUIDs like the engine's `uuid.uuid4()`, as text, from one read of the system's
    random source."""
    digits = os.urandom(16 * count).hex()
    variant = _VARIANT
    return [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:]}"
            for h in (digits[i:i + 32] for i in range(0, 32 * count, 32))]


_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: copy_text, int: str, bool: lambda value: "t" if value else "f", type(None): lambda _: "\\N",
    bytes: lambda value: "\\\\x" + value.hex(), uuid.UUID: str, dt.date: dt.date.isoformat,
    dt.datetime: dt.datetime.isoformat,
}


def _copy_rows(records: list[tuple[Any, ...]]) -> str:
    """Rows of Python values in COPY text format."""
    encoders = _ENCODERS
    try:
        return "".join(["\t".join([encoders[type(value)](value) for value in row]) + "\n" for row in records])
    except KeyError:  # a subclass or another type: the general way
        return "".join(["\t".join([_copy_value(value) for value in row]) + "\n" for row in records])


_NO_CHANGE_INFORMATION: tuple[Any, ...] = ()
_KEYABLE = frozenset({str, int, bool, type(None)})


def _change_key(meta: dict[str, Any]) -> tuple[Any, ...]:
    """What the outcome of `RowPreparer._change` depends on: whether each item is present, its type and
    its value (true is not 1 and null is not absent, although Python's equality says otherwise)."""
    if not meta:
        return _NO_CHANGE_INFORMATION  # nearly every row of a file: no per-row look-ups
    key: list[Any] = []
    for name in ("event_date", "change_reason"):
        if name not in meta:
            key.append(None)
        elif type(meta[name]) in _KEYABLE:
            key.append((type(meta[name]), meta[name]))
        else:
            key.append(repr(meta[name]))  # e.g. a JSON list: wrong, and not hashable
    return tuple(key)


class RowPreparer:
    """Turns chunks of the file into COPY text for the engine's tables and the hooks' tables."""

    def __init__(self, api: RegisterApi, *, file_format: str, header: list[str] | None, load_time: dt.datetime,
                 options: LoadOptions, warnings: _CountingFilter | None = None) -> None:
        self._api = api
        self._binding = api.binding
        self._hooks: RegisterHooks = api.engine.hooks
        self._record_type = api.binding.record_type
        self._fields = frozenset(self._record_type.DESCRIPTOR.fields_by_name)
        self._csv = CsvColumns(header or [], self._record_type) if file_format == "csv" else None
        self._load_time = load_time
        self._load_day = japan_date(load_time)
        self._options = options
        self._violations = _MemoViolations()
        self._changes: dict[tuple[Any, Any], tuple[str, int, list[tuple[str, str]]]] = {}
        self.warnings = warnings or _CountingFilter()
        """Counts the validators' warnings (installed on their logger by `load_file`)."""

    @property
    def register(self) -> str:
        return self._binding.register

    @property
    def hooks_have_tables(self) -> bool:
        """Whether what the hooks keep apart from records has somewhere to go in a bulk load."""
        return bool(self._hooks.bulk_table_names())

    # One row ------------------------------------------------------------------------------------

    def _rows(self, task: _Task) -> Iterator[_Row]:
        """(line, record message or None, the record as stored, change information, problems) of every
        non-blank row."""
        data = task.data.removeprefix(b"\xef\xbb\xbf") if task.first_line == 1 else task.data
        if self._csv is not None:
            for line, fields, meta, problems in self._csv_rows(task, data.split(b"\n")):
                yield (line, *self._record(fields, problems), meta, problems)
            return
        for line, content in self._json_lines(task, data):
            if content is None:
                yield line, None, None, {}, [("row", "is not UTF-8")]
                continue
            # orjson's value is json's unless it holds a float (bulkjson). A canonical record (`record_dict`
            # returned the fields themselves) holds none: only other rows are searched for floats, and a
            # row with one is parsed again by json, before anything is checked.
            fields, meta, problems = self._json_row(content, bulkjson.loads_unchecked)
            record, stored = self._record(fields, problems)
            if not ((stored is fields or fields is None or bulkjson.float_free(fields)) and bulkjson.float_free(meta)):
                fields, meta, problems = self._json_row(content, bulkjson.loads)
                record, stored = self._record(fields, problems)
            yield line, record, stored, meta, problems

    def _record(self, fields: dict[str, Any] | None, problems: list[tuple[str, str]]
                ) -> tuple[Any, dict[str, Any] | None]:
        """(record message, the record as the RPC path stores it), or (None, None) for a bad row."""
        record = self._message(fields, problems) if fields is not None and not problems else None
        return (None, None) if record is None else (record, record_dict(record, fields))

    @staticmethod
    def _json_lines(task: _Task, data: bytes) -> Iterator[tuple[int, str | None]]:
        """(line, text or None when not UTF-8) of every non-blank line not excluded."""
        try:
            lines: list[str | None] = list(data.decode("utf-8").split("\n"))
        except UnicodeDecodeError:
            lines = [_utf8(raw) for raw in data.split(b"\n")]
        for offset, content in enumerate(lines):
            line = task.first_line + offset
            if content is None or (content and not content.isspace() and line not in task.exclude):
                yield line, content

    def _json_row(self, text: str, loads: Callable[[str], Any]
                  ) -> tuple[dict[str, Any] | None, dict[str, Any], list[tuple[str, str]]]:
        try:
            row = loads(text)
        except ValueError:
            return None, {}, [("row", "is not a JSON object")]
        if type(row) is not dict:
            return None, {}, [("row", "is not a JSON object")]
        if row.keys() <= self._fields:
            return row, {}, []
        meta = {name: row.pop(name) for name in META_FIELDS if name in row}
        unknown = [name for name in row if name not in self._fields]
        if unknown:
            return None, meta, [(name[:64], "is not a field of the record") for name in unknown]
        return row, meta, []

    def _csv_rows(self, task: _Task, lines: list[bytes]
                  ) -> Iterator[tuple[int, dict[str, Any] | None, dict[str, Any], list[tuple[str, str]]]]:
        assert self._csv is not None
        texts: list[str] = []
        for raw in lines:
            try:
                texts.append(raw.decode("utf-8").rstrip("\r"))
            except UnicodeDecodeError:
                texts.append("\x00")  # marks the line; reported below
        reader = csv.reader(texts, strict=True)
        consumed = 0
        while True:
            start = consumed
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error:
                consumed = reader.line_num
                yield task.first_line + start, None, {}, [("row", "is not a well-formed CSV record")]
                continue
            consumed = reader.line_num
            line = task.first_line + start
            if line in task.exclude or not any(values):
                continue
            if consumed - start > 1:
                yield line, None, {}, [("row", "a record must not span lines")]
            elif "\x00" in texts[start]:
                yield line, None, {}, [("row", "is not UTF-8")]
            else:
                problems: list[tuple[str, str]] = []
                fields, meta = self._csv.row(values, problems)
                yield line, (None if problems else fields), meta, problems

    def _message(self, fields: dict[str, Any], problems: list[tuple[str, str]]) -> Any:
        try:
            return self._record_type(**fields)
        except (TypeError, ValueError):
            pass
        try:  # what proto JSON accepts beyond the constructor (e.g. numbers as strings)
            return json_format.ParseDict(fields, self._record_type())
        except (json_format.ParseError, TypeError, ValueError):
            for name, value in fields.items():
                try:
                    json_format.ParseDict({name: value}, self._record_type())
                except (json_format.ParseError, TypeError, ValueError):
                    problems.append((name, "does not have the type or shape of the field"))
            return None

    def _change(self, meta: dict[str, Any]) -> tuple[str, int, list[tuple[str, str]]]:
        """(event date, reason, problems) of a 記載 by the load; the rules of `RegisterApi._check_change`."""
        found = self._changes.get(_change_key(meta))
        if found is not None:
            return found
        problems: list[tuple[str, str]] = []
        reason_value = meta.get("change_reason", DEFAULT_REASON)
        reason = 0
        try:
            if isinstance(reason_value, str) and not reason_value.isdigit():
                reason = register_pb2.ChangeReason.Value(reason_value)
            elif isinstance(reason_value, int | str) and not isinstance(reason_value, bool):
                reason = int(reason_value)
        except ValueError:
            pass
        if reason not in validation.REASONS_BY_KIND[ChangeKind.RECORD]:
            problems.append(("change_reason", "is not a reason of a record (記載)"))
        event_date = self._load_day
        if "event_date" in meta:
            value = meta["event_date"]
            match = _CALENDAR.fullmatch(value) if isinstance(value, str) else None
            try:
                if match is None:
                    raise ValueError
                event_date = dt.date(*(int(part) for part in match.groups()))
            except ValueError:
                problems.append(("event_date", "must be a valid calendar date (YYYY-MM-DD)"))
        if event_date > self._load_day and reason not in validation.FUTURE_DATED_REASONS:
            problems.append(("event_date", "must not be after the day of the load for this reason"))
        found = (event_date.isoformat(), reason, problems)
        self._changes[_change_key(meta)] = found
        return found

    def _validate(self, record: Any) -> list[FieldProblem]:
        violations = self._violations
        violations.items = []
        municipality = getattr(record, self._binding.municipality_field)  # the record's is the notifying one
        violations.resident_code("record.resident_code", record.resident_code, self._api.resident_code_check)
        self._binding.validate_record(record, violations, self._api.municipalities, municipality)
        return [(item.field.removeprefix("record."), item.description) for item in violations.items]

    # One chunk ----------------------------------------------------------------------------------

    def prepare(self, task: _Task) -> _Prepared:
        started = time.process_time()
        warnings_before = self.warnings.count
        result = _Prepared(task.index)
        persons: list[tuple[str, str, dict[str, Any], str, int, str]] = []
        for line, record, stored, meta, problems in self._rows(task):
            result.rows += 1
            event_date, reason, change_problems = self._change(meta)
            problems.extend(change_problems)
            notification_id = meta.get("notification_id")
            if notification_id is None:
                notification_id = f"{self._options.id_prefix}{line}"
            elif not isinstance(notification_id, str):
                problems.append(("notification_id", "must be a string"))
            else:
                problems.extend(("notification_id", p) for p in validation.notification_id_problems(notification_id))
            if record is not None:
                problems.extend(self._validate(record))
            if problems or record is None or stored is None:
                result.invalid += 1
                result.problems.extend(RowProblem(line, name, text) for name, text in problems)
                del result.problems[self._options.max_problems:]
                continue
            municipality = getattr(record, self._binding.municipality_field)
            result.lines.append(line)
            result.resident_codes.append(record.resident_code)
            result.receipts.append((municipality, str(notification_id)))
            if not task.check_only:
                persons.append((record.resident_code, municipality, stored, event_date, reason, str(notification_id)))
        result.code_warnings = self.warnings.count - warnings_before
        if persons:
            result.staging, result.payloads, result.secrets_kept = self._encode_persons(persons)
        result.cpu_seconds = time.process_time() - started
        return result

    def _encode_persons(self, persons: list[tuple[str, str, dict[str, Any], str, int, str]]
                        ) -> tuple[bytes, list[tuple[str, tuple[str, ...], bytes]], int]:
        """(staging COPY text, the hooks' COPY payloads, how many persons had something kept apart)."""
        search_keys, split, encode = self._api.search_keys, self._hooks.prepare, bulkjson.dumps
        lines: list[str] = []
        bulk: list[BulkPerson] = []
        kept = 0
        for person_id, (code, municipality, record, event_date, reason, notification_id) in zip(
                _new_ids(len(persons)), persons, strict=True):
            keys = search_keys(record)
            stored, secret = split(record)
            if secret is not None:
                kept += 1
            bulk.append(BulkPerson(person_id, 1, secret))
            kana = keys.kana_key
            lines.append(
                f"{person_id}\t{code}\t{event_date}\t{copy_text(encode(stored))}\t{copy_text(keys.name_key)}\t"
                f"{NULL if kana is None else copy_text(kana)}\t{_nullable(keys.birth_year)}\t"
                f"{_nullable(keys.birth_month)}\t{_nullable(keys.birth_day)}\t{copy_text(keys.sex_code)}\t"
                f"{copy_text(keys.municipality_code)}\t{reason}\t{municipality}\t{copy_text(notification_id)}\n")
        payloads = [(table.table, table.columns, _copy_rows(table.records).encode())
                    for table in self._hooks.bulk_tables(bulk) if table.records]
        return "".join(lines).encode(), payloads, kept


_Row = tuple[int, Any, dict[str, Any] | None, dict[str, Any], list[FieldProblem]]
"""(line, record message or None, the record as stored or None, change information, problems)."""
_INSTALLED: list[RowPreparer] = []


def _install(preparer: RowPreparer) -> None:
    """Worker initialiser (fork: the preparer is inherited, not pickled). A worker makes millions of
    short-lived acyclic objects (freed by reference counting) while holding large long-lived memos:
    what it inherited is frozen out of the collector, and collections run far less often."""
    _INSTALLED[:] = [preparer]
    gc.freeze()
    collect_young_rarely()
    # RegisterApi.search_keys derives the keys of every name and reading with `text.search_key`, a pure
    # function of its argument whose values repeat across the file: memoised here, in a process that
    # only prepares rows, so that the keys are exactly the RPC path's at a fraction of the cost.
    text.search_key = functools.lru_cache(maxsize=1 << 17)(text.search_key)


def _prepare_installed(task: _Task) -> _Prepared:
    return _INSTALLED[0].prepare(task)


# --- the database side -----------------------------------------------------------------------------

@dataclass
class _Plan:
    fast: bool
    filled: list[str]
    constraints: list[tuple[str, str, str]] = field(default_factory=list)
    """(table, constraint, definition) of primary keys and unique constraints."""
    indexes: list[str] = field(default_factory=list)
    """Definitions of the other indexes."""
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)


async def _is_empty(connection: asyncpg.Connection, tables: Sequence[str]) -> bool:
    for table in tables:
        if await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            return False
    return True


async def _plan(connection: asyncpg.Connection, hooks: RegisterHooks, options: LoadOptions) -> _Plan:
    filled = [*_ENGINE_TABLES, *hooks.bulk_table_names()]
    if options.forward:
        filled.append("outbox")
    involved = list(dict.fromkeys([*filled, *_OTHER_ENGINE_TABLES]))
    quoted = await connection.fetch("SELECT quote_ident(name) AS name FROM unnest($1::text[]) AS name", involved)
    if [row["name"] for row in quoted] != involved:
        raise BulkLoadError("table names of the register must be plain identifiers")
    await connection.execute("SET LOCAL lock_timeout = '30s'")
    wants_fast = options.mode != "indexed" and await _is_empty(connection, involved)
    # Fast mode drops indexes: nobody may read meanwhile. Otherwise writers are kept out (a concurrent
    # 記載 of the same 住民票コード would make the load fail at its end).
    lock = "ACCESS EXCLUSIVE" if wants_fast or options.mode == "fast" else "SHARE ROW EXCLUSIVE"
    await connection.execute(f"LOCK TABLE {', '.join(involved)} IN {lock} MODE")
    fast = wants_fast and await _is_empty(connection, involved)
    if options.mode == "fast" and not fast:
        raise FastModeRefused("fast mode loads only into an empty register; this one has persons "
                              "(use --mode auto or indexed to load into the indexed tables)")
    plan = _Plan(fast=fast, filled=filled)
    if fast:
        await _drop_keys_and_indexes(connection, plan)
    await connection.execute(_CREATE_STAGING)  # dropped before the load commits
    return plan


async def _drop_keys_and_indexes(connection: asyncpg.Connection, plan: _Plan) -> None:
    tables = plan.filled
    foreign = await connection.fetch(
        """SELECT c.conrelid::regclass::text AS table_name, quote_ident(c.conname) AS name,
                  pg_get_constraintdef(c.oid) AS definition
           FROM pg_constraint c
           WHERE c.contype = 'f'
             AND (c.conrelid = ANY($1::text[]::regclass[]) OR c.confrelid = ANY($1::text[]::regclass[]))
           ORDER BY c.conrelid::regclass::text, c.conname""", tables)
    keys = await connection.fetch(
        """SELECT c.conrelid::regclass::text AS table_name, quote_ident(c.conname) AS name,
                  pg_get_constraintdef(c.oid) AS definition
           FROM pg_constraint c
           WHERE c.contype IN ('p', 'u') AND c.conrelid = ANY($1::text[]::regclass[])
           ORDER BY c.contype, c.conname""", tables)
    indexes = await connection.fetch(
        """SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
           FROM pg_index i
           WHERE i.indrelid = ANY($1::text[]::regclass[])
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                             WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                               AND c.contype IN ('p', 'u', 'x'))
           ORDER BY 1""", tables)
    unsupported = await connection.fetchval(
        """SELECT (SELECT count(*) FROM pg_constraint c
                   WHERE c.conrelid = ANY($1::text[]::regclass[])
                     AND (c.contype = 'x' OR obj_description(c.oid, 'pg_constraint') IS NOT NULL))
                + (SELECT count(*) FROM pg_index i
                   WHERE i.indrelid = ANY($1::text[]::regclass[])
                     AND (i.indisclustered OR i.indisreplident
                          OR obj_description(i.indexrelid, 'pg_class') IS NOT NULL))
        """, tables)
    if unsupported:
        # What pg_get_constraintdef / pg_get_indexdef do not carry would be lost on the rebuild.
        raise BulkLoadError("the register's tables have exclusion constraints, clustered or replica-identity "
                            "indexes, or comments on keys or indexes, which fast mode would not rebuild; use "
                            "--mode indexed")
    plan.foreign_keys = [(r["table_name"], r["name"], r["definition"]) for r in foreign]
    plan.constraints = [(r["table_name"], r["name"], r["definition"]) for r in keys]
    plan.indexes = [r["definition"] for r in indexes]
    for table, name, _ in plan.foreign_keys:
        await connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for table, name, _ in plan.constraints:
        await connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for row in indexes:
        await connection.execute(f"DROP INDEX {row['name']}")


async def _rebuild_keys_and_indexes(connection: asyncpg.Connection, plan: _Plan) -> None:
    """Keys and indexes first (parallel index builds), then statistics (the plans of the foreign-key
    checks depend on them), then the foreign keys (each checked with one anti-join)."""
    await connection.execute("SET LOCAL maintenance_work_mem = '1GB'")
    statements = [f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for table, name, definition in
                  plan.constraints] + plan.indexes + [f"ANALYZE {', '.join(plan.filled)}"] + [
        f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for table, name, definition in plan.foreign_keys]
    for statement in statements:
        started = time.perf_counter()
        await connection.execute(statement)
        logger.info("rebuilt", extra={"statement": statement, "seconds": round(time.perf_counter() - started, 3)})


async def _already_known(connection: asyncpg.Connection, prepared: _Prepared) -> list[RowProblem]:
    """Rows whose 住民票コード or notification id the register already holds (indexed mode)."""
    taken = set(await connection.fetchval(
        """SELECT coalesce(array_agg(code), '{}') FROM (
               SELECT resident_code AS code FROM person WHERE resident_code = ANY($1::text[])
               UNION ALL
               SELECT resident_code FROM resident_code_history WHERE resident_code = ANY($1::text[])) AS known""",
        prepared.resident_codes))
    used = {(row["municipality_code"], row["notification_id"]) for row in await connection.fetch(
        """SELECT r.municipality_code, r.notification_id
           FROM unnest($1::text[], $2::text[]) AS wanted (municipality_code, notification_id)
           JOIN person_version r USING (municipality_code, notification_id)""",
        [m for m, _ in prepared.receipts], [n for _, n in prepared.receipts])}
    problems = [RowProblem(line, "resident_code", "is already recorded in the register")
                for line, code in zip(prepared.lines, prepared.resident_codes, strict=True) if code in taken]
    problems += [RowProblem(line, "notification_id", "was already used by this municipality")
                 for line, receipt in zip(prepared.lines, prepared.receipts, strict=True) if receipt in used]
    return problems


# --- the load --------------------------------------------------------------------------------------

class _Loader:
    """Streams prepared chunks into the database in file order, keeping a few chunks in preparation."""

    def __init__(self, connection: asyncpg.Connection, preparer: RowPreparer, *, plan: _Plan, options: LoadOptions,
                 report: LoadReport, bytes_total: int) -> None:
        self._connection = connection
        self._preparer = preparer
        self._plan = plan
        self._options = options
        self._report = report
        self._codes: set[str] = set()
        self._receipts: set[tuple[str, str]] = set()
        self._invalid = 0
        self._rows = 0
        self._failed = False
        self._started = time.perf_counter()
        self._bytes_total = bytes_total
        self._executor: ProcessPoolExecutor | None = None

    def _submit(self, task: _Task) -> asyncio.Future[_Prepared]:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            done: asyncio.Future[_Prepared] = loop.create_future()
            try:
                done.set_result(self._preparer.prepare(task))
            except Exception as error:  # handed to the awaiting side, as from a worker
                done.set_exception(error)
            return done
        return asyncio.wrap_future(self._executor.submit(_prepare_installed, task))

    async def run(self, chunks: Iterator[tuple[int, bytes, int]], workers: int) -> None:
        if workers:
            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                 initializer=_install, initargs=(self._preparer,))
        try:
            window: deque[tuple[_Task, asyncio.Future[_Prepared]]] = deque()
            for index, (first_line, data, offset) in enumerate(chunks):
                task = _Task(index, first_line, data, offset, check_only=self._failed)
                window.append((task, self._submit(task)))
                if len(window) > max(2 * workers, 1):
                    await self._handle(*window.popleft())
            while window:
                await self._handle(*window.popleft())
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)

    async def _handle(self, task: _Task, pending: asyncio.Future[_Prepared]) -> None:
        prepared = await pending
        self._rows += prepared.rows
        self._invalid += prepared.invalid
        self._report.resident_code_warnings += prepared.code_warnings
        self._report.prepare_cpu_seconds += prepared.cpu_seconds
        self._problems(prepared.problems)
        writing = time.perf_counter()
        duplicates = self._duplicates(prepared)
        if not self._plan.fast and prepared.resident_codes:
            duplicates += await _already_known(self._connection, prepared)
        if duplicates:
            self._invalid += len({problem.line for problem in duplicates})
            self._problems(duplicates)
            if self._options.skip_invalid and not self._failed:
                prepared = await self._submit(dataclasses.replace(
                    task, exclude=task.exclude | {problem.line for problem in duplicates}))
        if (prepared.invalid or duplicates) and not self._options.skip_invalid:
            self._failed = True
        if prepared.secrets_kept and not self._preparer.hooks_have_tables:
            raise BulkLoadError("the register keeps data apart from its records but its hooks cannot bulk load it")
        if not self._failed and prepared.staging:
            await self._write(prepared)
            self._report.persons += len(prepared.lines)
        self._report.database_seconds += time.perf_counter() - writing
        self._progress(task.offset)

    async def _write(self, prepared: _Prepared) -> None:
        connection = self._connection
        await connection.copy_to_table(_STAGING, source=io.BytesIO(prepared.staging), columns=list(_STAGING_COLUMNS),
                                       format="text")
        await connection.execute(_INSERT_PERSONS)
        await connection.execute(_INSERT_VERSIONS, LOAD_DIGEST)
        if self._options.forward:
            await connection.execute(_INSERT_OUTBOX, f"{self._preparer.register}/")
        await connection.execute(f"TRUNCATE {_STAGING}")
        for table, columns, payload in prepared.payloads:
            await connection.copy_to_table(table, source=io.BytesIO(payload), columns=list(columns), format="text")

    def _duplicates(self, prepared: _Prepared) -> list[RowProblem]:
        """Rows that repeat an earlier row's 住民票コード or notification id (a later notification would be
        refused as ALREADY_RECORDED or NOTIFICATION_ID_REUSED); the first occurrence stays."""
        problems: list[RowProblem] = []
        codes, receipts = self._codes, self._receipts
        for line, code, receipt in zip(prepared.lines, prepared.resident_codes, prepared.receipts, strict=True):
            if code in codes:
                problems.append(RowProblem(line, "resident_code", "appears on an earlier line"))
            else:
                codes.add(code)
            if receipt in receipts:
                problems.append(RowProblem(line, "notification_id", "appears on an earlier line"))
            else:
                receipts.add(receipt)
        return problems

    def _problems(self, problems: list[RowProblem]) -> None:
        room = self._options.max_problems - len(self._report.problems)
        if room > 0:
            self._report.problems.extend(problems[:room])

    def _progress(self, offset: int) -> None:
        if self._options.progress is not None:
            self._options.progress(Progress(offset, self._bytes_total, self._rows,
                                            time.perf_counter() - self._started))

    def finish(self) -> None:
        if self._invalid and not self._options.skip_invalid:
            raise BulkLoadError(f"{self._invalid} of {self._rows} rows are invalid; nothing was loaded",
                                self._report.problems, self._invalid)
        self._report.skipped = self._invalid


def _file_size(path: Path) -> int:
    return path.stat().st_size


def worker_count(path: Path, requested: int | None) -> int:
    """Worker processes for a file: as requested, else one per core unless the file is small."""
    if requested is not None:
        return max(requested, 0)
    return (os.cpu_count() or 1) if _file_size(path) >= _SMALL_FILE else 0


async def load_file(owner_url: str, api: RegisterApi, path: Path, options: LoadOptions | None = None) -> LoadReport:
    """Load every row of `path` into the register of `api` as newly recorded persons (see the module
    docstring), connecting as the schema owner. Raises BulkLoadError (nothing written) when a row is bad
    and `skip_invalid` is off, FastModeRefused when fast mode was required for a non-empty register."""
    options = options or LoadOptions()
    if options.mode not in MODES:
        raise BulkLoadError(f"unknown mode; expected one of {', '.join(MODES)}")
    started = time.perf_counter()
    file_format = file_format_of(path, options.file_format)
    header = _read_header(path) if file_format == "csv" else None
    size, workers = _file_size(path), worker_count(path, options.workers)
    if header is not None:
        CsvColumns(header, api.binding.record_type)  # a bad header fails before connecting
    report = LoadReport()
    counting = _CountingFilter()
    connection = await asyncpg.connect(owner_url)
    try:
        async with connection.transaction():
            plan = await _plan(connection, api.engine.hooks, options)
            report.fast = plan.fast
            load_time: dt.datetime = await connection.fetchval("SELECT now()")
            preparer = RowPreparer(api, file_format=file_format, header=header, load_time=load_time,
                                   options=options, warnings=counting)
            _VALIDATION_LOGGER.addFilter(counting)
            try:
                loader = _Loader(connection, preparer, plan=plan, options=options, report=report,
                                 bytes_total=size)
                chunks = _read_chunks(path, options.chunk_bytes, 2 if header is not None else 1)
                await loader.run(chunks, workers)
            finally:
                _VALIDATION_LOGGER.removeFilter(counting)
            loader.finish()
            await connection.execute(f"DROP TABLE {_STAGING}")
            report.stream_seconds = time.perf_counter() - started
            rebuilding = time.perf_counter()
            if plan.fast:
                await _rebuild_keys_and_indexes(connection, plan)
            else:
                await connection.execute(f"ANALYZE {', '.join(plan.filled)}")
            report.index_seconds = time.perf_counter() - rebuilding
    finally:
        await connection.close()
    if report.resident_code_warnings:
        logger.warning("resident code check digit mismatches accepted (warn mode)",
                       extra={"count": report.resident_code_warnings})
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["BulkLoadError", "FastModeRefused", "LoadOptions", "LoadReport", "Progress", "RowProblem", "load_file",
           "record_dict", "worker_count"]
