"""`juki retention purge` builds its request: the options, else JUKI_RETENTION_*_YEARS, else nothing (the
register's default, 150 years); the register alone judges the periods (住基法 30-6 ③ / 30-41 ③)."""

from __future__ import annotations

import argparse

import pytest

from jukilib.config import Env, UsageError
from jukitools.cli_retention import request_for


def _args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"dry_run": False, "superseded_years": None, "removed_years": None, **given})


def test_an_unset_period_is_left_to_the_register() -> None:
    request = request_for(_args(), Env({}), "r-1")
    assert not request.HasField("superseded_years") and not request.HasField("removed_years")
    assert request.request_id == "r-1" and not request.dry_run


def test_an_option_wins_over_the_variable_and_a_zero_is_sent_for_the_register_to_refuse() -> None:
    env = Env({"JUKI_RETENTION_SUPERSEDED_YEARS": "200", "JUKI_RETENTION_REMOVED_YEARS": "180"})
    request = request_for(_args(removed_years=0.0, dry_run=True), env, "r-2")
    assert (request.superseded_years, request.removed_years, request.dry_run) == (200.0, 0.0, True)
    assert request.HasField("removed_years")


def test_a_variable_that_is_not_a_number_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match="JUKI_RETENTION_REMOVED_YEARS"):
        request_for(_args(), Env({"JUKI_RETENTION_REMOVED_YEARS": "forever"}), "r-3")
