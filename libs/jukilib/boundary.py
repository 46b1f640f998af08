"""What every request must be before anything stores, batches or logs it, whatever its contract.

- Texts: PostgreSQL's `text` cannot hold U+0000: one such value in a group commit (the operation log's,
  a register's) makes the database refuse the whole batch, failing every other caller's work in it. So a
  text that no store can take — U+0000, the noncharacters U+FFFE/U+FFFF, more than `MAX_TEXT_LENGTH`
  characters — is refused at the door, naming the field. Other control characters can be stored; whether
  a name, an address or a code may hold them is the owning service's rule, checked with its other rules
  so that one answer names every bad field. Unpaired surrogates cannot arrive: protobuf refuses a string
  that is not valid UTF-8 when it decodes the message.
- Enums: proto3 enums are open, so a decoded message can carry any int32; only the values the contract
  defines are accepted (a value beyond them reached SQL as an out-of-range smallint).
- Timestamps and durations: a `google.protobuf.Timestamp` outside what the contract defines (years
  0001-9999, nanos below one second), or a `google.protobuf.Duration` outside its (±10,000 years, nanos
  below one second and of the seconds' sign), cannot be converted to a time or an interval. Whether a
  valid one is plausible for its field (a notification's time, a status window) is the owning service's
  rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import message
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from jukilib.errors import FieldViolation, InvalidArgument

MAX_TEXT_LENGTH = 10_000
"""Characters in one string field: far above any name, address, reason or note the contracts carry."""
_FORBIDDEN = re.compile("[\x00\ufffe\uffff]")
# google.protobuf.Timestamp's defined range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z
_TIMESTAMP = "google.protobuf.Timestamp"
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
# google.protobuf.Duration's defined range: ±315,576,000,000 seconds (about 10,000 years)
_DURATION = "google.protobuf.Duration"
_MAX_DURATION_SECONDS = 315_576_000_000


def storable(text: str) -> str:
    """`text` cut to the longest length accepted, every character refused replaced by U+FFFD: for what must
    be recorded although its value was refused (the operation log's record of a refused call)."""
    return _FORBIDDEN.sub("\ufffd", text[:MAX_TEXT_LENGTH])


def acceptable_text(value: str) -> bool:
    """Whether every service can take `value` (for texts that come from elsewhere than a request field, e.g.
    a decoded page token)."""
    return _text_problem(value) is None


def check_request(msg: message.Message) -> None:
    """Raise InvalidArgument naming every field of `msg`, at any depth, that no service can take (AIP-193
    field paths: `change.record.full_name`, `resident_codes[3]`, `change.notify_time`)."""
    violations = list(_violations(msg, ""))
    if violations:
        raise InvalidArgument(violations)


def _violations(msg: message.Message, prefix: str) -> Iterator[FieldViolation]:
    for descriptor, value in msg.ListFields():
        path = f"{prefix}{descriptor.name}"
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            yield from _text_violations(descriptor, value, path)
        elif descriptor.type == FieldDescriptor.TYPE_ENUM:
            yield from _enum_violations(descriptor, value, path)
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE and descriptor.message_type is not None:
            yield from _message_violations(descriptor.message_type, descriptor.is_repeated, value, path)


def _text_violations(descriptor: FieldDescriptor, value: Any, path: str) -> Iterator[FieldViolation]:
    if not descriptor.is_repeated:
        if (problem := _text_problem(value)) is not None:
            yield FieldViolation(path, *problem)
    elif _any_text_problem(value):  # a batch of 1,000 codes is looked at item by item only when one is bad
        yield from (FieldViolation(f"{path}[{i}]", *problem) for i, v in enumerate(value)
                    if (problem := _text_problem(v)) is not None)


def _text_problem(value: str) -> tuple[str, str] | None:
    """(description, reason) of what makes `value` unacceptable; None when it is acceptable."""
    if len(value) > MAX_TEXT_LENGTH:
        return f"is longer than {MAX_TEXT_LENGTH} characters", "TEXT_TOO_LONG"
    if _FORBIDDEN.search(value):
        return "contains U+0000 or a noncharacter", "TEXT_NOT_STORABLE"
    return None


def _any_text_problem(values: Sequence[str]) -> bool:
    return max(map(len, values), default=0) > MAX_TEXT_LENGTH or _FORBIDDEN.search("".join(values)) is not None


def _enum_violations(descriptor: FieldDescriptor, value: Any, path: str) -> Iterator[FieldViolation]:
    assert descriptor.enum_type is not None
    defined = descriptor.enum_type.values_by_number
    for index, number in enumerate(value) if descriptor.is_repeated else ((None, value),):
        if number not in defined:
            yield FieldViolation(path if index is None else f"{path}[{index}]",
                                 f"is not a value of {descriptor.enum_type.name}", "UNKNOWN_ENUM_VALUE")


def _message_violations(message_type: Descriptor, repeated: bool, value: Any, path: str
                        ) -> Iterator[FieldViolation]:
    if message_type.GetOptions().map_entry:  # named by the map alone: a key is data, never put in an error
        for key, item in value.items():
            yield from (FieldViolation(path, *p) for t in (key, item) if isinstance(t, str)
                        if (p := _text_problem(t)) is not None)
            if isinstance(item, message.Message):
                yield from _violations(item, f"{path}.")
        return
    for item_path, item in ((f"{path}[{i}]", v) for i, v in enumerate(value)) if repeated else ((path, value),):
        if message_type.full_name == _TIMESTAMP:
            if not (_MIN_SECONDS <= item.seconds <= _MAX_SECONDS and 0 <= item.nanos < 1_000_000_000):
                yield FieldViolation(item_path, "is not a time between the years 1 and 9999", "TIMESTAMP_OUT_OF_RANGE")
        elif message_type.full_name == _DURATION:
            if not _is_duration(item.seconds, item.nanos):
                yield FieldViolation(item_path, "is not a duration of at most 10,000 years", "DURATION_OUT_OF_RANGE")
        else:
            yield from _violations(item, f"{item_path}.")


def _is_duration(seconds: int, nanos: int) -> bool:
    """Whether (seconds, nanos) is a `google.protobuf.Duration` as its definition allows."""
    return (abs(seconds) <= _MAX_DURATION_SECONDS and abs(nanos) < 1_000_000_000
            and not (seconds > 0 > nanos or seconds < 0 < nanos))
