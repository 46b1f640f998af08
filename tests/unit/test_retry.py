"""The one retry policy (jukilib.retry): its waits, and `retry` giving up as the policy says."""

from __future__ import annotations

import asyncio

import pytest

from jukilib.retry import RetryPolicy, retry


class Lost(Exception):
    """A race lost (stands for a serialization failure)."""


def test_waits_double_from_the_base_up_to_the_cap_when_exact() -> None:
    policy = RetryPolicy(attempts=None, base_delay=0.5, max_delay=30.0, jitter=0.0)

    assert [policy.delay(n) for n in range(1, 10)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_jittered_waits_stay_within_their_fraction_of_the_ceiling() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=0.5)

    for failures, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (8, 1.0)):
        waits = [policy.delay(failures) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1


def test_a_job_failing_for_days_still_gets_a_capped_wait() -> None:
    assert RetryPolicy(attempts=None, base_delay=0.5, max_delay=10.0, jitter=0.0).delay(100_000) == 10.0


@pytest.mark.parametrize("settings", [{"attempts": 0}, {"jitter": 1.5}, {"base_delay": 2.0, "max_delay": 1.0}])
def test_a_policy_that_cannot_work_is_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**settings)  # type: ignore[arg-type]


async def test_work_that_fails_then_succeeds_is_answered_by_its_success() -> None:
    calls: list[int] = []
    seen: list[int] = []

    async def work() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Lost()
        return "done"

    answer = await retry(work, retry_on=Lost, policy=RetryPolicy(attempts=3, base_delay=0.001),
                         on_retry=lambda failures, _: seen.append(failures))

    assert (answer, len(calls), seen) == ("done", 3, [1, 2])


async def test_the_last_failure_is_raised_after_the_last_attempt() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)
        raise Lost(len(calls))

    with pytest.raises(Lost) as raised:
        await retry(work, retry_on=(Lost, OSError), policy=RetryPolicy(attempts=4, base_delay=0.001))

    assert len(calls) == 4
    assert raised.value.args == (4,)


async def test_an_error_not_named_is_raised_at_once() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)
        raise KeyError("other")

    with pytest.raises(KeyError):
        await retry(work, retry_on=Lost, policy=RetryPolicy(attempts=5, base_delay=0.001))

    assert len(calls) == 1


async def test_no_try_starts_after_the_time_given() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)
        raise Lost()

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Lost):
        await retry(work, retry_on=Lost, policy=RetryPolicy(attempts=None, base_delay=0.02, max_delay=0.02,
                                                            jitter=0.0), within=0.1)

    assert loop.time() - started < 0.1
    assert 3 <= len(calls) <= 6
