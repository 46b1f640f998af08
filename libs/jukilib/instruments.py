"""The suite's OpenTelemetry instruments, made once per process, and the runtime measurements every
service exports (event-loop lag, database pool use).

OpenTelemetry names map to the Prometheus names of the metrics contract (README, "Metrics"): dots become
underscores, the unit becomes a suffix (`s` → `_seconds`, `ms` → `_milliseconds`; a `{...}` annotation
adds nothing) and a counter gains `_total`. Attributes are bounded sets (codes, enum names, registers,
organisations of the catalogue): never a resident code, name, address, date of birth, 個人番号, case
reference or notification id.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0, 900.0, 3600.0)
"""Latencies and lags in seconds: a lookup's milliseconds up to an agency outage's hour."""
MILLISECONDS_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                        10000.0, 30000.0)
"""RPC durations (the OpenTelemetry RPC conventions measure them in milliseconds)."""

_lock = threading.Lock()
_made: dict[str, Any] = {}


def _once(name: str, make: Callable[[metrics.Meter], Any]) -> Any:
    """One instrument per name in the process (tests run every service in one process)."""
    with _lock:
        if name not in _made:
            _made[name] = make(metrics.get_meter("juki"))
        return _made[name]


def counter(name: str, unit: str, description: str) -> metrics.Counter:
    found: metrics.Counter = _once(name, lambda m: m.create_counter(name, unit=unit, description=description))
    return found


def histogram(name: str, unit: str, description: str, buckets: Iterable[float] = SECONDS_BUCKETS) -> metrics.Histogram:
    found: metrics.Histogram = _once(name, lambda m: m.create_histogram(
        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(buckets)))
    return found


def gauge(name: str, unit: str, description: str) -> Any:
    """A gauge set by its owner (a refresher, a state change): a scrape reads the last value set."""
    found = _once(name, lambda m: m.create_gauge(name, unit=unit, description=description))
    return found


def observable_counter(name: str, unit: str, description: str,
                       callback: Callable[[CallbackOptions], Iterable[Observation]]) -> None:
    """A counter whose cumulative totals `callback` reports at each collection (kept in memory by its owner)."""
    _once(name, lambda m: m.create_observable_counter(name, [callback], unit=unit, description=description))


def observable_gauge(name: str, unit: str, description: str,
                     callback: Callable[[CallbackOptions], Iterable[Observation]]) -> None:
    """A gauge computed at each scrape by `callback`, which must be cheap (no I/O)."""
    _once(name, lambda m: m.create_observable_gauge(name, [callback], unit=unit, description=description))


# --- runtime -----------------------------------------------------------------------------------------

class _Pool(Protocol):
    def usage(self) -> tuple[int, int]: ...


_pools: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_lag = [0.0]


def _observe_pools(attribute: int) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(_: CallbackOptions) -> list[Observation]:
        return [Observation(pool.usage()[attribute], {"pool": name}) for name, pool in list(_pools.items())]

    return observe


def watch_pool(name: str, pool: _Pool) -> None:
    """Export `pool`'s connections in use and tasks waiting for one (label `pool`: the service's name)."""
    _pools[name] = pool
    observable_gauge("juki.db_pool.in_use", "{connection}", "database connections taken from the pool",
                     _observe_pools(0))
    observable_gauge("juki.db_pool.waiting", "{task}", "tasks waiting for a database connection",
                     _observe_pools(1))


async def measure_event_loop_lag(interval: float = 0.5) -> None:
    """How late the event loop wakes a sleeper (seconds), every `interval`, until cancelled: a loop busy
    with CPU work or blocked by a synchronous call shows here before its latencies do."""
    observable_gauge("juki.event_loop.lag", "s", "how late the event loop ran a timer, last measured",
                     lambda _: [Observation(_lag[0])])
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        _lag[0] = max(0.0, loop.time() - started - interval)
