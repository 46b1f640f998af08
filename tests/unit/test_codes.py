"""Check digits of 個人番号, 住民票コード and 団体コード (docs/domain.md §2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukilib.domain.codes import (
    CheckDigitMode,
    CodeCheck,
    check_resident_code,
    individual_number_check_digit,
    individual_number_problems,
    is_valid_individual_number,
    is_valid_municipality_code,
    municipality_check_digit,
    resident_code_check_digit,
)


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789", min_size=n, max_size=n)


def _mod11_remainder(base: str) -> int:
    weights = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)  # DOMAIN §2.1, left to right
    return sum(int(d) * w for d, w in zip(base, weights, strict=True)) % 11


# --- 個人番号 ---------------------------------------------------------------------------------------


def test_individual_number_worked_example_is_valid() -> None:
    assert is_valid_individual_number("983205673214")


def test_individual_number_with_wrong_check_digit_is_invalid() -> None:
    assert not is_valid_individual_number("983205673210")


@pytest.mark.parametrize(("base", "expected"), [("98320567321", 4), ("12345678901", 8), ("00000000001", 9)])
def test_individual_number_check_digit_matches_domain_examples(base: str, expected: int) -> None:
    assert individual_number_check_digit(base) == expected


@pytest.mark.parametrize("value", [
    "", "98320567321", "9832056732140", "98320567321a", "９８３２０５６７３２１４",
    "983205673214\n", " 983205673214",
])
def test_individual_number_with_bad_format_is_invalid(value: str) -> None:
    assert not is_valid_individual_number(value)


def test_individual_number_check_digit_rejects_bad_base_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="11 ASCII digits") as info:
        individual_number_check_digit("1234567890X")
    assert "1234567890X" not in str(info.value)


def test_individual_number_problems_do_not_contain_the_value() -> None:
    assert individual_number_problems("983205673214") == []
    for value in ("983205673210", "98320"):
        problems = individual_number_problems(value)
        assert problems
        assert all(value not in p for p in problems)


@given(digits(11))
def test_any_base_with_computed_check_digit_is_a_valid_individual_number(base: str) -> None:
    assert is_valid_individual_number(base + str(individual_number_check_digit(base)))


@given(digits(11), st.integers(0, 11), st.integers(1, 9))
def test_single_digit_change_is_detected_unless_remainders_are_zero_and_one(
    base: str, position: int, delta: int
) -> None:
    # Weights 2..7 are coprime to 11, so a single-digit change always changes the remainder; but
    # remainders 0 and 1 share check digit 0, so a change between them goes undetected.
    valid = base + str(individual_number_check_digit(base))
    changed_digit = (int(valid[position]) + delta) % 10
    changed = valid[:position] + str(changed_digit) + valid[position + 1:]
    undetectable = position < 11 and {_mod11_remainder(base), _mod11_remainder(changed[:11])} == {0, 1}
    assert is_valid_individual_number(changed) == undetectable


def test_single_digit_change_between_remainders_zero_and_one_is_not_detected() -> None:
    # 00000000000 → remainder 0 → CD 0; 20000000000 → 2×6 = 12 → remainder 1 → CD 0 as well.
    assert is_valid_individual_number("000000000000")
    assert is_valid_individual_number("200000000000")


# --- 住民票コード ----------------------------------------------------------------------------------


@given(digits(10))
def test_resident_code_with_computed_check_digit_passes_in_every_mode(base: str) -> None:
    code = base + str(resident_code_check_digit(base))
    for mode in CheckDigitMode:
        assert check_resident_code(code, mode) == CodeCheck(ok=True)


def test_resident_code_check_digit_uses_individual_number_weights_from_the_right() -> None:
    # weights from the right 2,3,4,5,6,7,2,3,4,5 → "0000000001" → 2 → CD 9
    assert resident_code_check_digit("0000000001") == 9
    assert resident_code_check_digit("1000000000") == 11 - 5
    assert resident_code_check_digit("0000000000") == 0


def _with_wrong_check_digit(base: str) -> str:
    return base + str((resident_code_check_digit(base) + 1) % 10)


def test_resident_code_with_wrong_check_digit_is_rejected_in_reject_mode() -> None:
    result = check_resident_code(_with_wrong_check_digit("1234567890"), CheckDigitMode.REJECT)
    assert not result.ok
    assert result.error is not None and "check digit" in result.error
    assert result.warning is None


def test_resident_code_with_wrong_check_digit_only_warns_in_warn_mode() -> None:
    result = check_resident_code(_with_wrong_check_digit("1234567890"), CheckDigitMode.WARN)
    assert result.ok
    assert result.error is None
    assert result.warning is not None and "check digit" in result.warning


def test_resident_code_with_wrong_check_digit_passes_silently_in_off_mode() -> None:
    result = check_resident_code(_with_wrong_check_digit("1234567890"), CheckDigitMode.OFF)
    assert result == CodeCheck(ok=True)


@pytest.mark.parametrize("mode", list(CheckDigitMode))
@pytest.mark.parametrize("value", ["", "1234567890", "123456789012", "1234567890a", "１２３４５６７８９０１"])
def test_resident_code_with_bad_format_is_an_error_in_every_mode(value: str, mode: CheckDigitMode) -> None:
    result = check_resident_code(value, mode)
    assert not result.ok
    assert result.error == "must be 11 digits"


@given(digits(11), st.sampled_from(list(CheckDigitMode)))
def test_resident_code_messages_never_contain_the_code(code: str, mode: CheckDigitMode) -> None:
    result = check_resident_code(code, mode)
    for message in (result.warning, result.error):
        assert message is None or code not in message


def test_check_digit_mode_values_are_configuration_strings() -> None:
    assert [m.value for m in CheckDigitMode] == ["off", "warn", "reject"]
    assert CheckDigitMode("warn") is CheckDigitMode.WARN


# --- 団体コード ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code6", ["100005", "102024"])
def test_verified_municipality_codes_are_valid(code6: str) -> None:
    assert is_valid_municipality_code(code6)


def test_municipality_check_digit_maps_remainder_zero_to_one_and_one_to_zero() -> None:
    assert municipality_check_digit("00000") == 1  # remainder 0 → last digit of 11
    assert municipality_check_digit("00003") == 5  # 3×2 = 6 → 11 − 6
    assert municipality_check_digit("00006") == 0  # 6×2 = 12 → remainder 1 → last digit of 10


@pytest.mark.parametrize("code6", ["100004", "102025", "10002", "1000050", "10000５", ""])
def test_municipality_code_with_wrong_check_digit_or_format_is_invalid(code6: str) -> None:
    assert not is_valid_municipality_code(code6)


@given(digits(5))
def test_any_municipality_base_with_computed_check_digit_is_valid(base5: str) -> None:
    assert is_valid_municipality_code(base5 + str(municipality_check_digit(base5)))
