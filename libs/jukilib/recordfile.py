"""Reading the file of an initial load: its chunks of whole lines, and each row as a record message
and the record as the RPC path stores it (JSON lines, or CSV with one column per field)."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from google.protobuf import descriptor, json_format, message

from jukilib import bulkjson, protojson

FORMATS = ("jsonl", "csv")
META_FIELDS = ("event_date", "notification_id", "change_reason")
_PARTIAL_DATE = "juki.register.v1.PartialDate"
CALENDAR_DATE = "google.type.Date"
FieldProblem = tuple[str, str]
"""(field or column of the file, what is wrong)."""


class Chunk(NamedTuple):
    first_line: int
    data: bytes
    offset: int
    """File offset after the chunk (progress)."""


class Row(NamedTuple):
    line: int
    record: Any
    """The record message, or None for a bad row."""
    stored: dict[str, Any] | None
    """The record as the RPC path stores it."""
    meta: dict[str, Any]
    """Change information given with the row (META_FIELDS)."""
    problems: list[FieldProblem]


class RecordFileError(ValueError):
    """The file cannot be read as records at all (its format or its CSV header); says why, never a value."""


class CellError(ValueError):
    """A CSV cell that does not convert; the message says what the column must hold."""


def file_format_of(path: Path, requested: str | None = None) -> str:
    if requested is not None:
        if requested not in FORMATS:
            raise RecordFileError(f"unknown file format; expected one of {', '.join(FORMATS)}")
        return requested
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def read_header(path: Path) -> list[str]:
    with path.open("rb") as stream:
        first = stream.readline().removeprefix(b"\xef\xbb\xbf")
    try:
        return [column.strip() for column in next(csv.reader([first.decode("utf-8")]), [])]
    except (UnicodeDecodeError, csv.Error):
        raise RecordFileError("line 1: the CSV header cannot be read") from None


def read_chunks(path: Path, chunk_bytes: int, first_line: int) -> Iterator[Chunk]:
    """(number of the first line, whole lines, file offset after them), skipping `first_line - 1` lines."""
    with path.open("rb") as stream:
        for _ in range(first_line - 1):
            stream.readline()
        line, rest = first_line, b""
        while True:
            block = stream.read(chunk_bytes)
            if not block:
                if rest:
                    yield Chunk(line, rest, stream.tell())
                return
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            chunk, rest = data[:cut], data[cut:]
            yield Chunk(line, chunk, stream.tell() - len(rest))
            line += chunk.count(b"\n")


_PARTIAL = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
CALENDAR = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_TRUE, _FALSE = frozenset({"true", "1", "t", "yes"}), frozenset({"false", "0", "f", "no", ""})


def _csv_partial_date(value: str) -> dict[str, Any] | None:
    """`YYYY-MM-DD`, `YYYY-MM`, `YYYY` or `unknown` as a PartialDate in proto JSON (non-calendar days
    such as 02-30 are lawful and kept)."""
    if value.lower() in ("unknown", "不詳"):
        return {"precision": "DATE_PRECISION_UNKNOWN"}
    match = _PARTIAL.fullmatch(value)
    if match is None:
        raise CellError("must be YYYY-MM-DD, YYYY-MM, YYYY or unknown")
    year, month, day = match.groups()
    if day is not None:
        return {"precision": "DATE_PRECISION_DAY", "year": int(year), "month": int(month), "day": int(day)}
    if month is not None:
        return {"precision": "DATE_PRECISION_MONTH", "year": int(year), "month": int(month)}
    return {"precision": "DATE_PRECISION_YEAR", "year": int(year)}


def _csv_calendar_date(value: str) -> dict[str, Any]:
    match = CALENDAR.fullmatch(value)
    if match is None:
        raise CellError("must be YYYY-MM-DD")
    year, month, day = (int(part) for part in match.groups())
    return {"year": year, "month": month, "day": day}


def _csv_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise CellError("must be true or false")


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
            raise RecordFileError("line 1: the CSV header is not usable: " + "; ".join(problems))

    @staticmethod
    def _converter(field_descriptor: Any, problems: list[str]) -> Callable[[str], Any] | None:
        """How a cell becomes the field's proto JSON value (None: the text as is)."""
        if field_descriptor.is_repeated:
            problems.append(f"column {field_descriptor.name!r}: repeated fields need JSON lines")
            return None
        if _is_message(field_descriptor, _PARTIAL_DATE):
            return _csv_partial_date
        if _is_message(field_descriptor, CALENDAR_DATE):
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
                except CellError as error:
                    problems.append((column, str(error)))
                except ValueError:  # e.g. int() of a cell that is not a number
                    problems.append((column, "has a bad value"))
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


class RowReader:
    """The rows of a chunk, for one record type and file format."""

    def __init__(self, record_type: type[message.Message], file_format: str, header: list[str] | None) -> None:
        self._record_type = record_type
        self._fields = frozenset(record_type.DESCRIPTOR.fields_by_name)
        self._csv = CsvColumns(header or [], record_type) if file_format == "csv" else None

    def rows(self, chunk: Chunk, exclude: frozenset[int] = frozenset()) -> Iterator[Row]:
        """Every non-blank row of `chunk` whose line is not in `exclude`."""
        data = chunk.data.removeprefix(b"\xef\xbb\xbf") if chunk.first_line == 1 else chunk.data
        if self._csv is not None:
            for line, fields, meta, problems in self._csv_rows(chunk.first_line, exclude, data.split(b"\n")):
                yield Row(line, *self._record(fields, problems), meta, problems)
            return
        for line, content in self._json_lines(chunk.first_line, exclude, data):
            if content is None:
                yield Row(line, None, None, {}, [("row", "is not UTF-8")])
                continue
            # orjson's value is json's unless it holds a float (bulkjson). A canonical record (`record_dict`
            # returned the fields themselves) holds none: only other rows are searched for floats, and a
            # row with one is parsed again by json, before anything is checked.
            fields, meta, problems = self._json_row(content, bulkjson.loads_unchecked)
            record, stored = self._record(fields, problems)
            if not ((stored is fields or fields is None or bulkjson.float_free(fields)) and bulkjson.float_free(meta)):
                fields, meta, problems = self._json_row(content, bulkjson.loads)
                record, stored = self._record(fields, problems)
            yield Row(line, record, stored, meta, problems)

    def _record(self, fields: dict[str, Any] | None, problems: list[tuple[str, str]]
                ) -> tuple[Any, dict[str, Any] | None]:
        """(record message, the record as the RPC path stores it), or (None, None) for a bad row."""
        record = self._message(fields, problems) if fields is not None and not problems else None
        return (None, None) if record is None else (record, record_dict(record, fields))

    @staticmethod
    def _json_lines(first_line: int, exclude: frozenset[int], data: bytes) -> Iterator[tuple[int, str | None]]:
        """(line, text or None when not UTF-8) of every non-blank line not excluded."""
        try:
            lines: list[str | None] = list(data.decode("utf-8").split("\n"))
        except UnicodeDecodeError:
            lines = [_utf8(raw) for raw in data.split(b"\n")]
        for offset, content in enumerate(lines):
            line = first_line + offset
            if content is None or (content and not content.isspace() and line not in exclude):
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

    def _csv_rows(self, first_line: int, exclude: frozenset[int], lines: list[bytes]
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
                yield first_line + start, None, {}, [("row", "is not a well-formed CSV record")]
                continue
            consumed = reader.line_num
            line = first_line + start
            if line in exclude or not any(values):
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

