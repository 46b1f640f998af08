"""`juki up` keeps its services running: a service child that exits while the suite runs is started again.

Each child is watched by its own task. When it exits (a crash, an OOM kill, `kill -9` by an SRE), it is
started again with the environment it had (same port, database role, certificates), so `endpoints.json`
stays true, after a backoff that doubles from `RestartPolicy.base_delay` up to `max_delay` while it keeps
failing and starts again from the base once it ran `stable_after` seconds. Every event is one line on
`juki up`'s output and one JSON line in `.juki/logs/up.log`, and `.juki/services.json` says, per service,
its pid, port, restarts so far, last exit and whether it is SERVING (rewritten at every event, removed
when the suite stops). Lines name services, pids and exit codes only.

The watchers run on the main thread's event loop: a restarted child gets the same PR_SET_PDEATHSIG as the
first (`jukitools.suite.spawn` must be called from the thread that lives as long as `juki up`). Stopping is
`Supervisor.stop()`: it cancels the watchers and waits for them, and only then may the children be
stopped; a watcher never awaits between starting a child and recording it, so none is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jukilib.retry import RetryPolicy

if TYPE_CHECKING:
    from jukitools.suite import Child

STATUS_FILE = "services.json"
EVENTS_LOG = "up.log"
POLL_SECONDS = 0.5
SERVING_WITHIN_SECONDS = 120.0

Spawn = Callable[[str, dict[str, str], Path], "Child"]
Health = Callable[["Child"], Awaitable[str]]


@dataclass(frozen=True)
class RestartPolicy:
    """How soon an exited service is started again."""

    base_delay: float = 0.5
    """Seconds before the first restart after a stable run."""
    max_delay: float = 30.0
    """The longest wait between restarts of a service that keeps exiting."""
    stable_after: float = 60.0
    """A child that ran this long is restarted after `base_delay` again."""

    @property
    def backoff(self) -> RetryPolicy:
        """Restarts go on for ever, after exact waits: each is printed on `juki up`'s output, and one
        machine's children have no shared server to spare from restarts in step."""
        return RetryPolicy(attempts=None, base_delay=self.base_delay, max_delay=self.max_delay, jitter=0.0)

    def delay(self, consecutive: int) -> float:
        """The wait before the `consecutive`th restart in a row (1, 2, ...)."""
        return self.backoff.delay(consecutive)


@dataclass
class _Record:
    """What the status file says of one service."""

    restarts: int = 0
    consecutive: int = 0
    last_exit: str = ""
    last_exit_time: str = ""
    serving: bool = True


def describe_exit(returncode: int) -> str:
    """'code 1', 'signal SIGKILL'."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
        return f"signal {-returncode}"
    return f"code {returncode}"


class Supervisor:
    """Watches `children` (the list is updated in place as children are replaced)."""

    def __init__(self, home: Path, children: list[Child], environments: dict[str, dict[str, str]], *,
                 spawn: Spawn, health: Health, policy: RestartPolicy = RestartPolicy(),
                 out: Callable[[str], None] = lambda line: print(line, flush=True),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._home = home
        self._children = children
        self._environments = environments
        self._spawn = spawn
        self._health = health
        self._policy = policy
        self._out = out
        self._clock = clock
        self._records = {child.service: _Record() for child in children}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def status_path(self) -> Path:
        return self._home / STATUS_FILE

    def start(self) -> None:
        """Begin watching every child (call from the main thread's running loop)."""
        self._write_status()
        self._tasks = [asyncio.create_task(self._watch(child.service), name=f"supervise-{child.service}")
                       for child in self._children]

    async def stop(self) -> None:
        """Stop watching; after this no child is started again."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # nothing may keep the suite running
                await task
        self._tasks = []

    def restarts(self) -> dict[str, int]:
        return {service: record.restarts for service, record in self._records.items()}

    async def _watch(self, service: str) -> None:
        while True:
            try:
                await self._watch_once(service)
            except Exception as exc:  # supervision never ends silently: said, then tried again
                self._event("ERROR", service, f"supervising {service} failed ({type(exc).__name__}); trying again "
                                              f"in {self._policy.max_delay:.0f}s")
                await asyncio.sleep(self._policy.max_delay)

    async def _watch_once(self, service: str) -> None:
        """Until the current child of `service` exits, then start it again."""
        child = self._child(service)
        started = self._clock()
        # A child's exit is no event the loop can await without a thread blocked in wait() per child;
        # a poll every half second costs nothing and is as soon as a restart needs.
        while child.process.poll() is None:  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        await self._restart(service, child, ran=self._clock() - started)

    async def _restart(self, service: str, exited: Child, ran: float) -> None:
        record = self._records[service]
        record.consecutive = 1 if ran >= self._policy.stable_after else record.consecutive + 1
        record.restarts += 1
        record.last_exit = describe_exit(exited.process.returncode)
        record.last_exit_time = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        record.serving = False
        delay = self._policy.delay(record.consecutive)
        self._event("WARNING", service, f"{service} exited ({record.last_exit}); restart {record.restarts} "
                                        f"in {delay:.1f}s", exit=record.last_exit, restart=record.restarts,
                    delay_seconds=delay, pid=exited.process.pid)
        await asyncio.sleep(delay)
        try:  # no await from here until the new child is recorded: a stop cannot leave it unrecorded
            child = self._spawn(service, self._environments[service], self._home / "logs")
        except OSError as exc:
            self._event("ERROR", service, f"{service} could not be started ({type(exc).__name__})",
                        restart=record.restarts)
            return  # the old child stays recorded, exited: the watcher tries again after a longer wait
        self._replace(child)
        self._write_status()
        await self._until_serving(service, child, record)

    async def _until_serving(self, service: str, child: Child, record: _Record) -> None:
        deadline = self._clock() + SERVING_WITHIN_SECONDS
        while child.process.poll() is None and self._clock() < deadline:
            if await self._health(child) == "SERVING":
                record.serving = True
                self._write_status()
                self._event("INFO", service, f"{service} SERVING again (pid {child.process.pid}, restart "
                                             f"{record.restarts})", restart=record.restarts, pid=child.process.pid)
                return
            await asyncio.sleep(POLL_SECONDS)
        if child.process.poll() is None:
            self._event("ERROR", service, f"{service} not SERVING {SERVING_WITHIN_SECONDS:.0f}s after restart "
                                          f"{record.restarts}", restart=record.restarts, pid=child.process.pid)

    def _child(self, service: str) -> Child:
        return next(child for child in self._children if child.service == service)

    def _replace(self, child: Child) -> None:
        index = next(i for i, old in enumerate(self._children) if old.service == child.service)
        self._children[index] = child

    def _event(self, level: str, service: str, line: str, **fields: Any) -> None:
        """One line on `juki up`'s output, one JSON line in `logs/up.log`."""
        self._out(f"juki: {line}")
        payload = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "level": level,
                   "logger": "juki.up", "message": line, "service": service, **fields}
        logs = self._home / "logs"
        with contextlib.suppress(OSError):  # a full disk must not stop the supervision the line reports
            logs.mkdir(parents=True, exist_ok=True)
            with (logs / EVENTS_LOG).open("a", encoding="utf-8") as log:
                log.write(json.dumps(payload, ensure_ascii=False) + "\n")

    def _write_status(self) -> None:
        status = {child.service: {"pid": child.process.pid, "port": child.port,
                                  "restarts": self._records[child.service].restarts,
                                  "last_exit": self._records[child.service].last_exit,
                                  "last_exit_time": self._records[child.service].last_exit_time,
                                  "serving": self._records[child.service].serving}
                  for child in self._children}
        temporary = self.status_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status, indent=2), encoding="utf-8")
        temporary.replace(self.status_path)
