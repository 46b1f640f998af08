"""The supervisor of background jobs: restarts, logs without messages, staleness, hung runs."""

from __future__ import annotations

import asyncio
import json
import logging

import asyncpg

from jukilib.retry import RetryPolicy
from jukilib.supervision import Heartbeat, Job, Supervisor, error_label
from tests.conftest import eventually

FAST = RetryPolicy(attempts=None, base_delay=0.01, max_delay=0.02)


class Health:
    """What the supervisor published, by health name."""

    def __init__(self) -> None:
        self.status: dict[str, bool] = {}

    async def publish(self, name: str, serving: bool) -> None:
        self.status[name] = serving


async def _running(supervisor: Supervisor) -> list[asyncio.Task[None]]:
    return supervisor.start()


async def _stop(tasks: list[asyncio.Task[None]], supervisor: Supervisor) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    supervisor.stop()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_job_that_raises_is_restarted_and_logged_without_its_message() -> None:
    runs = 0

    async def flaky(heartbeat: Heartbeat) -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise asyncpg.UniqueViolationError("Key (resident_code)=(12345678901) already exists")
        heartbeat.beat()
        await asyncio.sleep(3600)

    health = Health()
    supervisor = Supervisor("identity", [Job("relay-1", flaky, stale_after=5)], health.publish, backoff=FAST)
    captured = Records()
    logger = logging.getLogger("jukilib.supervision")
    logger.addHandler(captured)
    tasks = await _running(supervisor)
    try:
        await eventually(lambda: _true(runs == 3), timeout=5)
    finally:
        await _stop(tasks, supervisor)
        logger.removeHandler(captured)
    failures = [r for r in captured.records if r.getMessage() == "background job failed; restarting it"]
    assert [(r.job, r.error_type, r.sqlstate) for r in failures] == [  # type: ignore[attr-defined]
        ("relay-1", "UniqueViolationError:23505", "23505")] * 2
    assert not [r for r in captured.records if "12345678901" in r.getMessage() + str(r.__dict__)]


async def test_a_job_without_progress_turns_its_health_not_serving_and_back() -> None:
    progress = asyncio.Event()

    async def waits_for_database(heartbeat: Heartbeat) -> None:
        await progress.wait()  # e.g. a pool that is busy
        while True:
            heartbeat.beat()
            await asyncio.sleep(0.01)

    health = Health()
    supervisor = Supervisor("identity", [Job("relay-1", waits_for_database, stale_after=0.2)], health.publish,
                            backoff=FAST, check_interval=0.02)
    tasks = await _running(supervisor)
    try:
        await eventually(lambda: _true(health.status.get("juki.background.relay-1") is False), timeout=5)
        assert not supervisor.essential_stale  # a relay is not essential: the service keeps answering
        progress.set()
        await eventually(lambda: _true(health.status["juki.background.relay-1"] is True), timeout=5)
    finally:
        await _stop(tasks, supervisor)


async def test_an_idle_job_is_not_stale_and_a_stale_essential_job_is_said_so() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def writer(heartbeat: Heartbeat) -> None:
        while True:
            with heartbeat.idle():
                await queue.get()
            await asyncio.sleep(3600)  # the write never ends

    health = Health()
    supervisor = Supervisor("gateway", [Job("operation-log", writer, stale_after=0.2, essential=True)],
                            health.publish, backoff=FAST, check_interval=0.02)
    tasks = await _running(supervisor)
    try:
        await asyncio.sleep(0.5)
        assert health.status["juki.background.operation-log"] is True and not supervisor.essential_stale
        queue.put_nowait(1)
        await eventually(lambda: _true(supervisor.essential_stale), timeout=5)
    finally:
        await _stop(tasks, supervisor)


async def test_a_hung_run_is_cancelled_and_started_again() -> None:
    runs = 0

    async def hangs_once(heartbeat: Heartbeat) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await asyncio.sleep(3600)  # a call without a deadline
        while True:
            heartbeat.beat()
            await asyncio.sleep(0.01)

    health = Health()
    supervisor = Supervisor("identity", [Job("relay-1", hangs_once, stale_after=0.1)], health.publish,
                            backoff=FAST, check_interval=0.02)
    tasks = await _running(supervisor)
    try:
        await eventually(lambda: _true(runs == 2 and health.status["juki.background.relay-1"]), timeout=5)
    finally:
        await _stop(tasks, supervisor)


async def test_stopping_cancels_the_runs() -> None:
    cancelled = asyncio.Event()

    async def forever(heartbeat: Heartbeat) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    supervisor = Supervisor("identity", [Job("relay-1", forever)], Health().publish)
    tasks = await _running(supervisor)
    await asyncio.sleep(0.05)
    await _stop(tasks, supervisor)
    assert cancelled.is_set() and all(task.done() for task in tasks)


def test_error_labels_carry_no_message() -> None:
    assert error_label(asyncpg.UniqueViolationError("Key (resident_code)=(1) exists")) == "UniqueViolationError:23505"
    assert error_label(ValueError("上野　太郎")) == "ValueError"
    assert json.dumps(error_label(OSError("x")))  # plain text


async def _true(value: object) -> bool:
    return bool(value)
