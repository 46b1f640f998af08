"""What every text of a request must be before anything stores, batches or logs it.

PostgreSQL's `text` cannot hold U+0000: one such value in a group commit (the operation log's, a
register's) makes the database refuse the whole batch, failing every other caller's work in it. So a
text that no store can take — U+0000, the noncharacters U+FFFE/U+FFFF, more than `MAX_TEXT_LENGTH`
characters — is refused at the door, naming the field, whatever the field. Other control characters can
be stored; whether a name, an address or a code may hold them is the owning service's rule, checked
with its other rules so that one answer names every bad field. Unpaired surrogates cannot arrive:
protobuf refuses a string that is not valid UTF-8 when it decodes the message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor

from jukilib.errors import FieldViolation, InvalidArgument

MAX_TEXT_LENGTH = 10_000
"""Characters in one string field: far above any name, address, reason or note the contracts carry."""
_FORBIDDEN = re.compile("[\x00\ufffe\uffff]")


def storable(text: str) -> str:
    """`text` cut to the longest length accepted, every character refused replaced by U+FFFD: for what must
    be recorded although its value was refused (the operation log's record of a refused call)."""
    return _FORBIDDEN.sub("\ufffd", text[:MAX_TEXT_LENGTH])


def check_texts(msg: message.Message) -> None:
    """Raise InvalidArgument naming every string field of `msg`, at any depth, that no store can take
    (AIP-193 field paths: `change.record.full_name`, `resident_codes[3]`)."""
    violations = [FieldViolation(path if index is None else f"{path}[{index}]", *problem)
                  for path, index, value in _texts(msg, "") if (problem := _problem(value)) is not None]
    if violations:
        raise InvalidArgument(violations)


def _problem(value: str) -> tuple[str, str] | None:
    """(description, reason) of what makes `value` unacceptable; None when it is acceptable."""
    if len(value) > MAX_TEXT_LENGTH:
        return f"is longer than {MAX_TEXT_LENGTH} characters", "TEXT_TOO_LONG"
    if _FORBIDDEN.search(value):
        return "contains U+0000 or a noncharacter", "TEXT_NOT_STORABLE"
    return None


def _any_problem(values: Sequence[str]) -> bool:
    """Whether one of `values` has a problem: one pass over all of them (a batch of 1,000 codes is
    looked at item by item only when one is bad)."""
    return max(map(len, values), default=0) > MAX_TEXT_LENGTH or _FORBIDDEN.search("".join(values)) is not None


# (field path, index in a repeated field or None, value): the index is put into the path only for a
# violation, so that a batch of 1,000 codes formats no path at all
_Text = tuple[str, int | None, str]


def _texts(msg: message.Message, prefix: str) -> Iterator[_Text]:
    for descriptor, value in msg.ListFields():
        path = f"{prefix}{descriptor.name}"
        if descriptor.type == FieldDescriptor.TYPE_STRING and not descriptor.is_repeated:
            yield path, None, value
        elif descriptor.type == FieldDescriptor.TYPE_STRING and _any_problem(value):
            yield from ((path, i, v) for i, v in enumerate(value))
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _message_texts(descriptor, value, path)


def _message_texts(descriptor: FieldDescriptor, value: Any, path: str) -> Iterator[_Text]:
    if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
        yield from _map_texts(value, path)
    elif descriptor.is_repeated:
        for index, item in enumerate(value):
            yield from _texts(item, f"{path}[{index}].")
    else:
        yield from _texts(value, f"{path}.")


def _map_texts(value: Any, path: str) -> Iterator[_Text]:
    """A map's keys and values, named by the map alone: a key is data and never goes into an error."""
    for key, item in value.items():
        if isinstance(key, str):
            yield path, None, key
        if isinstance(item, str):
            yield path, None, item
        elif isinstance(item, message.Message):
            yield from _texts(item, f"{path}.")
