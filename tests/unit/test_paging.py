"""AIP-158 pagination helpers (jukilib.paging): page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import json

import pytest

from jukilib.errors import InvalidArgument
from jukilib.paging import decode_token, encode_token, int_at, page_size


def _violated_fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def test_zero_page_size_means_the_default() -> None:
    assert page_size(0) == 50
    assert page_size(0, default=20) == 20


def test_page_size_within_the_maximum_is_kept() -> None:
    assert page_size(1) == 1
    assert page_size(500) == 500


def test_page_size_above_the_maximum_is_capped() -> None:
    assert page_size(501) == 500
    assert page_size(10_000, maximum=100) == 100


def test_default_above_the_maximum_is_capped_too() -> None:
    assert page_size(0, default=1000, maximum=100) == 100


def test_negative_page_size_is_refused_naming_page_size() -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        page_size(-1)

    assert _violated_fields(excinfo.value) == ["page_size"]


@pytest.mark.parametrize(
    "position",
    [
        {"version": 7},
        {"after": "2026-11-26T00:00:00Z", "id": "0b8c3f8e-2a55-4a4f-9d43-1d8d1e0a7c11"},
        {"name": "山田", "n": 0},
    ],
)
def test_token_round_trips(position: dict[str, int | str]) -> None:
    token = encode_token(position)

    assert decode_token(token, keys=tuple(position)) == position


def test_token_is_url_safe_text() -> None:
    token = encode_token({"after": "?>?>?>", "n": 123456789})

    assert all(c.isalnum() or c in "-_=" for c in token)


def test_empty_token_means_the_first_page() -> None:
    assert decode_token("", keys=("version",)) is None


@pytest.mark.parametrize(
    "token",
    [
        "garbage!!",
        "not base64 at all",
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        base64.urlsafe_b64encode(b"{not json").decode(),
        base64.urlsafe_b64encode(json.dumps([1, 2]).encode()).decode(),
    ],
)
def test_garbage_token_is_refused_naming_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        decode_token(token, keys=("version",))

    assert _violated_fields(excinfo.value) == ["page_token"]


def test_token_of_another_method_is_refused_naming_page_token() -> None:
    token = encode_token({"after": "x", "id": "y"})

    with pytest.raises(InvalidArgument) as excinfo:
        decode_token(token, keys=("version",))

    assert _violated_fields(excinfo.value) == ["page_token"]


def test_token_with_extra_keys_is_refused() -> None:
    token = encode_token({"version": 1, "extra": 2})

    with pytest.raises(InvalidArgument):
        decode_token(token, keys=("version",))


@pytest.mark.parametrize("position", [{"offset": -1}, {"offset": 2**63}, {"offset": 10**30}, {"offset": 1.5},
                                      {"offset": None}, {"offset": True}])
def test_forged_integer_positions_are_refused_naming_page_token(position: dict[str, int | str]) -> None:
    # tokens are not signed: a negative or beyond-bigint offset once reached SQL (INTERNAL)
    with pytest.raises(InvalidArgument) as excinfo:
        int_at(decode_token(encode_token(position), keys=("offset",)) or {}, "offset")
    assert _violated_fields(excinfo.value) == ["page_token"]


def test_forged_text_positions_no_store_can_take_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        decode_token(encode_token({"after": "a\x00b"}), keys=("after",))
    assert decode_token(encode_token({"after": "kyoiku-0001"}), keys=("after",)) == {"after": "kyoiku-0001"}
