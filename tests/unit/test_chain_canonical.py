"""The operation log's canonical JSON (`juki_services.gateway.chain.canonical_json`) is byte for byte what the
standard library writes, so every record keeps the hash it was chained with."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from juki_services.gateway.chain import canonical_json

# Any code point but the surrogates, which no record can hold (UTF-8 cannot carry them).
TEXT = st.text(st.characters(blacklist_categories=["Cs"]))
RECORDS = st.dictionaries(
    st.sampled_from(["sequence", "time", "reason", "resident_codes", "decision", "method", "operator"]),
    st.one_of(TEXT, st.integers(min_value=-(2**70), max_value=2**70), st.lists(TEXT, max_size=4), st.none()))


def _standard(hashed: dict[str, Any]) -> bytes:
    return json.dumps(hashed, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


@given(RECORDS)
def test_canonical_json_is_what_the_standard_encoder_writes(hashed: dict[str, Any]) -> None:
    assert canonical_json(hashed) == _standard(hashed)


def test_every_code_point_is_written_as_the_standard_encoder_writes_it() -> None:
    for start in range(0, 0x110000, 0x1000):
        text = "".join(chr(c) for c in range(start, start + 0x1000) if not 0xD800 <= c <= 0xDFFF)
        hashed = {"reason": text, "resident_codes": [text[:7], text[-7:]]}
        assert canonical_json(hashed) == _standard(hashed)
