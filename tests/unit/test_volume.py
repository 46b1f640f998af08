"""Volume caps decided without a database (juki_services.gateway.volume): the per-call cap and the retry
delay of a reached daily cap (until the next Japanese calendar day)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from juki_services.gateway.policy import DEFAULT_CATALOGUE, load_catalogue
from juki_services.gateway.volume import check_per_call, seconds_until_next_day
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.errors import PermissionDenied

PURPOSE = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities()).purposes["PASSPORT-SEARCH-30-15-1-1"]


def test_answer_within_the_per_call_cap_passes() -> None:
    check_per_call(dataclasses.replace(PURPOSE, max_records_per_call=3), 3)


def test_answer_over_the_per_call_cap_is_denied_with_its_reason() -> None:
    with pytest.raises(PermissionDenied) as refused:
        check_per_call(dataclasses.replace(PURPOSE, max_records_per_call=3), 4)
    assert refused.value.reason == "VOLUME_CAP_PER_CALL"


def test_purpose_without_a_per_call_cap_allows_any_answer() -> None:
    check_per_call(dataclasses.replace(PURPOSE, max_records_per_call=None), 10_000)


def test_daily_cap_resets_at_midnight_in_japan_not_utc() -> None:
    # 14:30 UTC is 23:30 in Japan: the next day begins in 30 minutes.
    assert seconds_until_next_day(dt.datetime(2026, 11, 26, 14, 30, tzinfo=dt.UTC)) == 1800
    assert seconds_until_next_day(dt.datetime(2026, 11, 26, 15, 0, tzinfo=dt.UTC)) == 86400
