"""The initial load's JSON (orjson where it agrees) parses and writes exactly what the standard library does."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jukilib import bulkjson

_STD_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _typed(value: Any) -> Any:
    """A value with the type of every part made visible (1 == 1.0 == True in Python), key order kept."""
    if isinstance(value, dict):
        return ("dict", [(key, _typed(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(item) for item in value])
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def _outcome(parse: Any, text: str) -> Any:
    try:
        return _typed(parse(text))
    except ValueError:
        return "refused"


EDGES = [
    '{"a":1,"a":2,"b":3}', '{"a":1e400}', '{"a":-1e400}', '{"a":NaN}', '{"a":Infinity}', '\x0c{}', '{}\x0c',
    '\ufeff{}', '{"a":"\\ud800"}', '{"a":"\\udc00x"}', '{"a":"x\x01"}', '{"a":18446744073709551615}',
    '{"a":18446744073709551616}', '{"a":-9223372036854775808}', '{"a":-9223372036854775809}',
    '123456789012345678901234567890', '{"a":[1,{"b":99999999999999999999999}]}', '{"a":1.5e-400}', '{"a":-0}',
    '{"a":-0.0}', '{"a":0.1}', ' {} \r', '{"a":"\x7f"}', '[1,]', '{"a":1,}', '{"a":"\\u0000"}', '{"a":1E2}',
    '{"\\ud83d\\ude00":1}', '{"a":"\u2028"}', '"x"', "null", "tru", '{"a":true}garbage', '{"a":.5}', "[" * 2000,
    '{"a":01}', '{"a":"\\x"}', "1.0", '{"a":{"b":{"c":1.25}}}', '{"a":true,"b":false,"c":null}',
]


@pytest.mark.parametrize("text", EDGES)
def test_parsing_an_edge_case_gives_what_json_loads_gives(text: str) -> None:
    try:
        expected = _outcome(json.loads, text)
    except RecursionError:
        pytest.skip("json.loads itself gives up")
    assert _outcome(bulkjson.loads, text) == expected


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=400)
@given(_JSON)
def test_parsing_any_json_gives_what_json_loads_gives(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)  # NaN and Infinity included, as json.loads accepts them
    assert _outcome(bulkjson.loads, text) == _outcome(json.loads, text)


@settings(max_examples=400)
@given(st.text(alphabet=st.sampled_from('{}[]",:0123456789.eE-+ \\\tnulltrfasu\x00\ud800é'), max_size=24))
def test_parsing_any_text_gives_what_json_loads_gives(text: str) -> None:
    assert _outcome(bulkjson.loads, text) == _outcome(json.loads, text)


@settings(max_examples=400)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
def test_a_written_record_means_what_the_standard_encoder_writes(record: dict[str, Any]) -> None:
    written = bulkjson.dumps(record)
    standard = _STD_ENCODE(record)
    if written != standard:  # same meaning: a float spelled differently, nothing else
        assert _typed(json.loads(written)) == _typed(json.loads(standard))
        assert not _non_finite_numbers(standard)  # a key may say "NaN"; a number may not differ


def _non_finite_numbers(text: str) -> list[str]:
    """The NaN and ±Infinity numbers in JSON text (not strings that spell them)."""
    found: list[str] = []
    json.loads(text, parse_constant=found.append)
    return found


def test_a_record_with_nan_is_written_by_the_standard_encoder() -> None:
    assert bulkjson.dumps({"a": float("nan"), "b": "x"}) == '{"a":NaN,"b":"x"}'
    assert bulkjson.dumps({"a": 10**30}) == '{"a":1000000000000000000000000000000}'
