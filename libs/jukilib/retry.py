"""One retry policy for every retry in juki: how often to try, and how long to wait between tries.

A `RetryPolicy` gives the wait after the n-th failure in a row: `base_delay` doubled per failure up to
`max_delay`, of which the last `jitter` fraction is drawn at random, so that callers who failed together
(two transactions in one serialization failure, every relay worker when the agency comes back) do not
try again together. `retry` runs a coroutine function under a policy; a loop that keeps its state
between tries elsewhere uses `delay` alone (the relay stores the next attempt in the outbox row, the
supervisors restart a job or a process).

Adopting it in a hand-written loop::

    for attempt in range(1, ATTEMPTS + 1):          # before
        try:
            return await work()
        except RETRY_ON:
            if attempt == ATTEMPTS:
                ...                                 # give up
            await asyncio.sleep(0.01 * attempt)

    try:                                            # after
        return await retry(work, retry_on=RETRY_ON, policy=RetryPolicy(attempts=ATTEMPTS, base_delay=0.01))
    except RETRY_ON:
        ...                                         # give up: the last failure, as it came
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_MAX_DOUBLINGS = 60
"""2 ** 60 times any base is past every cap; a larger exponent would overflow a float after days of failures."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try, and how long to wait after each failure."""

    attempts: int | None = 3
    """Tries in all, the first included; None: no limit (the caller's cancellation or `within` ends them)."""
    base_delay: float = 0.01
    """Seconds to wait after the first failure; each further failure in a row doubles it."""
    max_delay: float = 1.0
    """The longest wait between two tries."""
    jitter: float = 0.5
    """The fraction of each wait drawn at random: the wait is uniform between `1 - jitter` and 1 times its
    exponential ceiling. 0: exact waits (a person reads them), 1: anywhere from nothing to the ceiling."""

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction between 0 and 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("delays must satisfy 0 <= base_delay <= max_delay")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1, 2, ...)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(max(failures - 1, 0), _MAX_DOUBLINGS))
        if not self.jitter:
            return float(ceiling)
        return random.uniform(ceiling * (1.0 - self.jitter), ceiling)

    def gives_up_after(self, failures: int) -> bool:
        """No try is left after `failures` failures in a row."""
        return self.attempts is not None and failures >= self.attempts


async def retry(work: Callable[[], Awaitable[T]], *, retry_on: type[BaseException] | tuple[type[BaseException], ...],
                policy: RetryPolicy, within: float | None = None,
                on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """What `work()` returns, tried again after `policy.delay(n)` whenever it raises one of `retry_on`.

    Gives up, raising the last failure as it came, after `policy.attempts` tries or when the next try
    would start more than `within` seconds after the first. Any other exception ends it at once.
    `on_retry(failures, error)` is called before each wait (to log it)."""
    loop = asyncio.get_running_loop()
    give_up_at = None if within is None else loop.time() + within
    failures = 0
    while True:
        try:
            return await work()
        except retry_on as error:
            failures += 1
            wait = policy.delay(failures)
            if policy.gives_up_after(failures) or (give_up_at is not None and loop.time() + wait > give_up_at):
                raise
            if on_retry is not None:
                on_retry(failures, error)
        await asyncio.sleep(wait)
