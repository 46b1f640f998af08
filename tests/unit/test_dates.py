"""Partial dates of birth (docs/domain.md §4.3)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukilib.domain.dates import DatePrecision, PartialDate, matches, sort_key, validate_partial_date

TODAY = dt.date(2025, 6, 1)


def pd(precision: DatePrecision, year: int | None = None, month: int | None = None,
       day: int | None = None, text: str = "") -> PartialDate:
    return PartialDate(precision=precision, year=year, month=month, day=day, original_text=text)


def problems(d: PartialDate) -> list[str]:
    return validate_partial_date(d, today=TODAY)


def test_full_calendar_date_is_valid() -> None:
    assert problems(pd(DatePrecision.DAY, 1980, 5, 17, "昭和55年5月17日")) == []


def test_non_calendar_29_february_of_a_non_leap_year_is_allowed_for_birth_dates() -> None:
    assert problems(pd(DatePrecision.DAY, 1983, 2, 29)) == []


def test_31_april_is_allowed_but_day_32_is_not() -> None:
    assert problems(pd(DatePrecision.DAY, 1983, 4, 31)) == []
    assert problems(pd(DatePrecision.DAY, 1983, 4, 32)) == ["day must be between 1 and 31"]
    assert problems(pd(DatePrecision.DAY, 1983, 4, 0)) == ["day must be between 1 and 31"]


@pytest.mark.parametrize("month", [0, 13])
def test_month_out_of_range_is_rejected(month: int) -> None:
    assert problems(pd(DatePrecision.MONTH, 1983, month)) == ["month must be between 1 and 12"]


@pytest.mark.parametrize(("year", "ok"), [(1849, False), (1850, True), (2026, True), (2027, False)])
def test_year_must_be_between_1850_and_next_year(year: int, ok: bool) -> None:
    assert (problems(pd(DatePrecision.YEAR, year)) == []) is ok


def test_year_range_follows_the_current_year_by_default() -> None:
    next_year = dt.date.today().year + 1
    assert validate_partial_date(pd(DatePrecision.YEAR, next_year)) == []
    assert validate_partial_date(pd(DatePrecision.YEAR, next_year + 1)) != []


def test_day_precision_requires_year_month_and_day() -> None:
    assert problems(pd(DatePrecision.DAY, 1980, 5)) == ["day is required for precision day"]


def test_month_precision_forbids_a_day() -> None:
    assert "day must be empty for precision month" in problems(pd(DatePrecision.MONTH, 1980, 5, 1))


def test_year_precision_forbids_month_and_day() -> None:
    assert problems(pd(DatePrecision.YEAR, 1980, 5, 1)) == [
        "month must be empty for precision year",
        "day must be empty for precision year",
    ]


def test_approximate_date_needs_a_year_and_may_carry_a_month() -> None:
    assert problems(pd(DatePrecision.APPROXIMATE, 1945, text="昭和20年頃")) == []
    assert problems(pd(DatePrecision.APPROXIMATE, 1935, 5, text="昭和10年5月上旬")) == []
    assert problems(pd(DatePrecision.APPROXIMATE, text="頃")) == [
        "year is required for precision approximate",
    ]


def test_approximate_day_without_month_is_rejected() -> None:
    assert problems(pd(DatePrecision.APPROXIMATE, 1945, None, 15)) == ["day requires a month"]


def test_unknown_date_has_no_parts() -> None:
    assert problems(pd(DatePrecision.UNKNOWN, text="年月日不詳")) == []
    assert problems(pd(DatePrecision.UNKNOWN, 1945)) == ["year must be empty for precision unknown"]


def test_original_text_longer_than_64_characters_is_rejected() -> None:
    assert problems(pd(DatePrecision.UNKNOWN, text="不" * 64)) == []
    too_long = pd(DatePrecision.UNKNOWN, text="不" * 65)
    assert problems(too_long) == ["original text must be at most 64 characters"]


@pytest.mark.parametrize("text", ["昭和\n20年", "\x00", "\x7f", "\ud800"])
def test_original_text_with_control_characters_is_rejected(text: str) -> None:
    assert problems(pd(DatePrecision.UNKNOWN, text=text)) == ["original text contains control characters"]


def test_sort_key_puts_unknown_parts_first() -> None:
    dates = [
        pd(DatePrecision.DAY, 1980, 5, 17),
        pd(DatePrecision.UNKNOWN),
        pd(DatePrecision.YEAR, 1980),
        pd(DatePrecision.MONTH, 1980, 5),
        pd(DatePrecision.DAY, 1979, 12, 31),
    ]
    assert [sort_key(d) for d in sorted(dates, key=sort_key)] == [
        (0, 0, 0), (1979, 12, 31), (1980, 0, 0), (1980, 5, 0), (1980, 5, 17),
    ]


def test_query_matches_stored_date_when_known_parts_agree() -> None:
    query = pd(DatePrecision.DAY, 1980, 5, 17)
    assert matches(query, pd(DatePrecision.DAY, 1980, 5, 17))
    assert matches(query, pd(DatePrecision.MONTH, 1980, 5))
    assert matches(query, pd(DatePrecision.YEAR, 1980))
    assert matches(query, pd(DatePrecision.APPROXIMATE, 1980))
    assert matches(query, pd(DatePrecision.UNKNOWN))


def test_query_does_not_match_when_a_known_part_differs() -> None:
    query = pd(DatePrecision.DAY, 1980, 5, 17)
    assert not matches(query, pd(DatePrecision.DAY, 1980, 5, 18))
    assert not matches(query, pd(DatePrecision.MONTH, 1980, 6))
    assert not matches(query, pd(DatePrecision.YEAR, 1981))
    assert not matches(pd(DatePrecision.YEAR, 1981), pd(DatePrecision.DAY, 1980, 5, 17))


_parts = st.one_of(st.none(), st.integers(1, 12))
_dates = st.builds(pd, st.sampled_from(list(DatePrecision)), st.one_of(st.none(), st.integers(1850, 2026)),
                   _parts, _parts)


@given(_dates, _dates)
def test_matching_is_symmetric(a: PartialDate, b: PartialDate) -> None:
    assert matches(a, b) == matches(b, a)


@given(_dates)
def test_every_date_matches_itself(a: PartialDate) -> None:
    assert matches(a, a)
