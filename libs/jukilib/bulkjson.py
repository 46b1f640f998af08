"""JSON of the initial load (`jukilib.register.load`), through orjson where it gives exactly what the
standard library gives.

Parsing a row with `json.loads` and writing its record with `json.JSONEncoder` took about a sixth of
the preparation of a row; orjson does both several times faster. The two libraries differ at the
edges, so orjson's answer is used only where it is the standard library's:

* parsing: orjson refuses what `json.loads` accepts beyond RFC 8259 (NaN, Infinity, numbers beyond
  the float range, escaped lone surrogates, deep nesting): those rows are parsed again by `json.loads`,
  which decides (accepts, or refuses with the same error). orjson also turns integers beyond 64 bits
  into floats, which `json.loads` keeps as integers: a parse that yields any float is redone by
  `json.loads` too (the records of the registers hold no floats, so this costs nothing in practice).
  Both keep the last of repeated keys, and both refuse control characters in strings.
* writing: the text goes into a jsonb column, which keeps the value, not the spelling, so orjson's
  compact UTF-8 output stores what the standard encoder's (`ensure_ascii=False`, no spaces) stores
  (both write a float as its shortest round-trip digits). orjson writes NaN and ±Infinity as null
  and refuses integers beyond 64 bits: a record whose orjson text holds a null, or that orjson
  refuses, is written by the standard encoder, as before.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _floatless(value: dict[str, Any] | list[Any]) -> bool:
    """Whether a parsed JSON object or array holds no float at any depth."""
    values = value.values() if type(value) is dict else value
    kinds = set(map(type, values))
    if float in kinds:
        return False
    if dict in kinds or list in kinds:
        for item in values:
            if (type(item) is dict or type(item) is list) and not _floatless(item):
                return False
    return True


def loads_unchecked(text: str) -> Any:
    """`json.loads(text)` unless the value holds a float (see the module docstring): a caller that finds
    no float in what it uses (`float_free`) has json's value; otherwise it parses again with `loads`."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def float_free(value: dict[str, Any]) -> bool:
    """Whether a JSON object parsed by `loads_unchecked` holds no float, so that it is json's value."""
    return not value or _floatless(value)


def loads(text: str) -> Any:
    """`json.loads(text)`: the same value, or the same ValueError."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    kind = type(value)
    if kind is float or ((kind is dict or kind is list) and not _floatless(value)):
        return json.loads(text)
    return value


def dumps(record: dict[str, Any]) -> str:
    """A record as compact JSON text, meaning what `json.dumps(record, ensure_ascii=False,
    separators=(",", ":"))` means (see the module docstring)."""
    try:
        text = orjson.dumps(record)
    except TypeError:  # an integer beyond 64 bits (or a type orjson does not write)
        return _ENCODE(record)
    # A finite float means the same number in both spellings; orjson writes NaN and ±Infinity as null
    # where the standard encoder writes NaN (which PostgreSQL refuses): any null, let the latter write.
    return _ENCODE(record) if b"null" in text else text.decode()
