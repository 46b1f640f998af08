"""Supervised background work: every loop a service runs besides its RPCs survives, is logged and is seen.

A service's background jobs (the register's outbox relays to the agency, its backlog gauge, the gateway's
operation-log writer, catalogue and operator-registry refreshers, the disclosure service's 12-5 report
follower and deadline gauge) are each a `Job`, run by one `Supervisor` that `GrpcService` starts once the
service is ready:

- **Survives.** A job that raises anything (or returns) is started again after a capped, jittered
  exponential backoff; the count of failures in a row resets once it makes progress again. 住基法 30-7 and
  30-42 require every applied change to be forwarded: forwarding must never wait for a restart of the
  process, so no exception ends a relay for good.
- **Logged.** Each failure is one log line naming the job, the error type and, for database errors, the
  SQLSTATE (for gRPC errors the status code, for juki errors the reason): never the message, which for a
  driver can quote row values (a 住民票コード in a unique violation's DETAIL).
- **Seen.** A job calls `Heartbeat.beat()` whenever it has made progress (a pass of its loop completed);
  while it waits for work with nothing to do it says so (`with heartbeat.idle(): …`). A job with no
  progress for longer than its `stale_after` is *stale*: its health entry (`juki.background.<job>`,
  e.g. `juki.background.relay-1`) turns NOT_SERVING and, if it has been stale for three times as long
  with no failure to explain it (a hung call), its run is cancelled and started again. The gauge
  `juki.background.progress_age{juki.service, juki.job}` says how long since each job last made progress
  (0 while it idles), and the counter `juki.background.failures{juki.service, juki.job, error_type}`
  counts its failures, so that an alert needs no log parsing.

Whether a stale job also turns the service's overall health (`""` and its gRPC service names)
NOT_SERVING is the job's `essential` flag. The overall status is what `juki up`, a load balancer and a
readiness probe use to decide whether to send calls here; it must say whether *calls* can be answered
correctly. So:

- a job whose absence makes every call fail is essential: the gateway's operation-log writer (every
  call waits for its log entry and fails closed without it); sending calls to that replica is pointless;
- a job whose absence only delays work that is kept safely is not: a stale relay leaves every applied
  change in the outbox, from which it is forwarded as soon as the relay runs again, and the register
  still answers ingest (30-6) and lookups correctly. Turning identity NOT_SERVING because the agency or
  the relay's pool is slow would stop municipalities' notifications for nothing and could take every
  replica out at once (they share the agency). The relay's staleness is an SRE's page, not a reason to
  refuse calls: it shows on its own health entry, on `progress_age` and on the outbox gauges
  (`juki.outbox.oldest_age`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from jukilib.retry import RetryPolicy
from jukilib.trace_sampling import enter_background_job

logger = logging.getLogger(__name__)

HEALTH_PREFIX = "juki.background."
"""Health-service name of a job: this prefix and the job's name."""

DEFAULT_STALE_AFTER = 30.0
"""Seconds without progress after which a job is stale, unless it says otherwise."""

Clock = Callable[[], float]


class Heartbeat:
    """What a job calls to say it made progress, or that it is waiting for work with nothing to do."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()
        self._idle = 0

    def beat(self) -> None:
        """A pass of the job's loop completed."""
        self._last = self._clock()

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Around a wait for work (e.g. a queue's `get`): no progress is due while there is nothing to do."""
        self._idle += 1
        try:
            yield
        finally:
            self._idle -= 1
        self._last = self._clock()  # work arrived (after a failure while waiting, no progress is claimed)

    @property
    def last(self) -> float:
        return self._last

    def age(self) -> float:
        """Seconds since the last progress; 0 while idle."""
        return 0.0 if self._idle else max(self._clock() - self._last, 0.0)


@dataclass(frozen=True)
class Job:
    """One background loop of a service."""

    name: str
    """Unique within the service; names its health entry and its metrics (`relay-1`, `operation-log`)."""
    run: Callable[[Heartbeat], Coroutine[Any, Any, None]]
    """The loop; runs until cancelled, calling `heartbeat.beat()` on progress."""
    stale_after: float = DEFAULT_STALE_AFTER
    """Seconds without progress (while not idle) after which the job is stale."""
    essential: bool = False
    """The service cannot answer calls without it: stale, it turns the overall health NOT_SERVING too."""


def error_label(exc: BaseException) -> str:
    """What may be said of an error without its message (messages can quote personal data)."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"grpc:{exc.code().name}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return f"{type(exc).__name__}:{sqlstate}"
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason.isupper():
        return f"{type(exc).__name__}:{reason}"
    return type(exc).__name__


RESTART = RetryPolicy(attempts=None, base_delay=0.5, max_delay=10.0)
"""Waits between restarts of a failing job, which is restarted for ever: capped and jittered, so that a
database outage is not hammered and the job comes back soon after it."""


HealthSink = Callable[[str, bool], Awaitable[None]]
"""Publishes a job's health: (health name, serving)."""


class _Supervised:
    """One job's state under supervision."""

    def __init__(self, job: Job, clock: Clock) -> None:
        self.job = job
        self.heartbeat = Heartbeat(clock)
        self.failures = 0
        self.attempt: asyncio.Task[None] | None = None
        self.stale = False
        self.started_at = clock()

    @property
    def health_name(self) -> str:
        return HEALTH_PREFIX + self.job.name


_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()
"""Running supervisors of this process (tests run several services in one), read by the gauge."""
_INSTRUMENTS: dict[str, Any] = {}


def _observe_progress_age(options: CallbackOptions) -> list[Observation]:
    return [Observation(round(entry.heartbeat.age(), 3), {"juki.service": supervisor.service, "juki.job": name})
            for supervisor in list(_LIVE) for name, entry in supervisor.entries.items()]


def _failure_counter() -> Any:
    """The instruments, created once per process (OpenTelemetry keeps one instrument per name)."""
    if not _INSTRUMENTS:
        meter = metrics.get_meter(__name__)
        meter.create_observable_gauge(
            "juki.background.progress_age", [_observe_progress_age], unit="s",
            description="seconds since the background job last made progress (0 while it waits for work)")
        _INSTRUMENTS["failures"] = meter.create_counter(
            "juki.background.failures", unit="{failure}", description="failures of a background job (each restarted)")
    return _INSTRUMENTS["failures"]


class Supervisor:
    """Runs a service's jobs: restarts them on failure, watches their progress, publishes their health."""

    def __init__(self, service: str, jobs: list[Job], publish: HealthSink, *, backoff: RetryPolicy = RESTART,
                 check_interval: float = 0.5, clock: Clock = time.monotonic) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError("background job names must be unique")
        self.service = service
        self.entries = {j.name: _Supervised(j, clock) for j in jobs}
        self._publish = publish
        self._backoff = backoff
        self._check_interval = check_interval
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._failures = _failure_counter()

    @property
    def health_names(self) -> list[str]:
        return [entry.health_name for entry in self.entries.values()]

    @property
    def essential_stale(self) -> bool:
        """An essential job is stale: the service cannot answer calls correctly now."""
        return any(entry.stale and entry.job.essential for entry in self.entries.values())

    def start(self) -> list[asyncio.Task[None]]:
        """Start every job and the watchdog; returns their tasks (the caller cancels them on stop)."""
        _LIVE.add(self)
        self._tasks = [asyncio.create_task(self._keep_running(entry), name=f"job:{name}")
                       for name, entry in self.entries.items()]
        self._tasks.append(asyncio.create_task(self._watch(), name="job-watchdog"))
        return list(self._tasks)

    async def _keep_running(self, entry: _Supervised) -> None:
        enter_background_job(entry.job.name)  # its traces are sampled (jukilib.trace_sampling); its runs inherit it
        while True:
            entry.attempt = asyncio.create_task(entry.job.run(entry.heartbeat), name=f"job:{entry.job.name}:run")
            try:
                await asyncio.shield(entry.attempt)
                self._failed(entry, None)
            except asyncio.CancelledError:
                if not entry.attempt.cancelled() or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    entry.attempt.cancel()  # the service stops: the run goes with it
                    with contextlib.suppress(BaseException):
                        await entry.attempt
                    raise
                self._failed(entry, "hung")  # the watchdog cancelled a hung run
            except Exception as exc:
                self._failed(entry, exc)
            await asyncio.sleep(self._backoff.delay(entry.failures))

    def _failed(self, entry: _Supervised, exc: BaseException | str | None) -> None:
        progressed = entry.heartbeat.last > entry.started_at
        entry.failures = 1 if progressed else entry.failures + 1
        label = "returned" if exc is None else exc if isinstance(exc, str) else error_label(exc)
        entry.started_at = self._clock()
        self._failures.add(1, {"juki.service": self.service, "juki.job": entry.job.name, "error_type": label})
        logger.error("background job failed; restarting it",
                     extra={"service": self.service, "job": entry.job.name, "error_type": label,
                            "sqlstate": getattr(exc, "sqlstate", None), "failures_in_a_row": entry.failures})

    async def _watch(self) -> None:
        """Every `check_interval`: publish each job's health when it changed; restart a hung run."""
        for entry in self.entries.values():
            await self._publish(entry.health_name, True)
        while True:
            await asyncio.sleep(self._check_interval)
            await self.check()

    async def check(self) -> None:
        for entry in self.entries.values():
            age = entry.heartbeat.age()
            stale = age > entry.job.stale_after
            if stale != entry.stale:
                entry.stale = stale
                log = logger.error if stale else logger.info
                log("background job stale" if stale else "background job making progress again",
                    extra={"service": self.service, "job": entry.job.name, "seconds_without_progress": round(age, 1)})
                await self._publish(entry.health_name, not stale)
            hung = age > 3 * entry.job.stale_after and self._clock() - entry.started_at > 3 * entry.job.stale_after
            if hung and entry.attempt is not None and not entry.attempt.done():
                entry.attempt.cancel()

    def stop(self) -> None:
        _LIVE.discard(self)
