"""A purpose of use is in effect on Japanese days (住基法 30-15: a purpose's validity period is the
prefecture's, set in its 条例 and catalogue in Japan time). From 00:00 to 09:00 JST the UTC date is still the
day before, so a gateway deciding on the UTC date let a purpose start nine hours late and end nine hours
late (issue 16)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc

from juki_services.gateway.policy import DEFAULT_CATALOGUE
from jukilib.domain.dates import JAPAN, japan_date
from jukitools.suite import DEMO_OPERATORS, SAMPLE_CALLERS
from tests.conftest import RunningSuite, issue_credential
from tests.e2e.test_operators import PASSPORT, _lookup, gateway_replica

# Tomorrow (Japan time), 01:30 JST: the UTC date is still today. Tomorrow, not a fixed date: the demo
# operator was registered today and is in the registry from now on.
TOMORROW = japan_date(dt.datetime.now(dt.UTC)) + dt.timedelta(days=1)
EARLY_MORNING = dt.datetime.combine(TOMORROW, dt.time(1, 30), JAPAN).astimezone(dt.UTC)  # as a clock tells it


def _catalogue(tmp_path: Path, validity: str) -> Path:
    """The shipped catalogue with PASSPORT-30-15-1-1 in effect only as `validity` says."""
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    start = text.index(f'code = "{PASSPORT}"')
    end = text.index("valid_from = ", start)
    line_end = text.index("\n", end)
    path = tmp_path / "purposes.toml"
    path.write_text(text[:end] + validity + text[line_end:], encoding="utf-8")
    return path


async def _decision(suite: RunningSuite, home: Path, tmp_path: Path, validity: str, now: dt.datetime
                    ) -> grpc.StatusCode:
    operator_id, roles = DEMO_OPERATORS["kikaku-bu"]
    credential = issue_credential(home, operator_id, SAMPLE_CALLERS["kikaku-bu"], roles, now=now)
    async with gateway_replica(suite, home, _catalogue(tmp_path, validity), now) as gateway:
        code, _ = await _lookup(suite, gateway, "kikaku-bu", credential)
    return code


async def test_a_purpose_starting_today_in_japan_is_in_effect_before_9_am(
        suite: RunningSuite, home: Path, tmp_path: Path) -> None:
    code = await _decision(suite, home, tmp_path, f"valid_from = {TOMORROW}", EARLY_MORNING)
    assert code == grpc.StatusCode.NOT_FOUND  # allowed: identity answers that nobody has this code


async def test_a_purpose_that_ended_yesterday_in_japan_is_refused_before_9_am(
        suite: RunningSuite, home: Path, tmp_path: Path) -> None:
    yesterday = TOMORROW - dt.timedelta(days=1)
    code = await _decision(suite, home, tmp_path, f"valid_from = 2015-06-01\nvalid_until = {yesterday}", EARLY_MORNING)
    assert code == grpc.StatusCode.PERMISSION_DENIED
