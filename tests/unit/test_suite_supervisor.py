"""`juki up`'s supervision of its children (jukitools.suite_supervisor), with stand-in children: an exited
child is started again with its environment after a capped, doubling backoff, the event is on the
output, in `logs/up.log` and counted in `services.json`; a stop during a backoff starts nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jukitools.suite import Child
from jukitools.suite_supervisor import EVENTS_LOG, STATUS_FILE, RestartPolicy, Spawn, Supervisor, describe_exit


class StandIns:
    """Spawns children that sleep, remembering the environment each was given."""

    def __init__(self) -> None:
        self.spawned: list[tuple[str, dict[str, str]]] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, service: str, env: dict[str, str], log_dir: Path) -> Child:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        self.spawned.append((service, env))
        self.processes.append(process)
        return Child(service, int(env["JUKI_LISTEN"].rpartition(":")[2]), process)

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@pytest.fixture
def stand_ins() -> Iterator[StandIns]:
    spawner = StandIns()
    try:
        yield spawner
    finally:
        spawner.close()


async def _serving(child: Child) -> str:
    return "SERVING"


def _supervisor(home: Path, stand_ins: StandIns, policy: RestartPolicy, lines: list[str],
                spawn: Spawn | None = None) -> Supervisor:
    environments = {service: {"JUKI_LISTEN": f"127.0.0.1:{port}", "JUKI_HOME": str(home)}
                    for service, port in (("identity", 40001), ("gateway", 40002))}
    children = [stand_ins.spawn(service, env, home) for service, env in environments.items()]
    stand_ins.spawned.clear()
    return Supervisor(home, children, environments, spawn=spawn or stand_ins.spawn, health=_serving,
                      policy=policy, out=lines.append)


async def _until(check: object, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


async def test_an_exited_child_is_started_again_with_its_environment_and_the_restart_is_logged_and_counted(
        tmp_path: Path, stand_ins: StandIns) -> None:
    lines: list[str] = []
    supervisor = _supervisor(tmp_path, stand_ins, RestartPolicy(base_delay=0.1), lines)
    supervisor.start()
    try:
        first = stand_ins.processes[0]
        first.send_signal(signal.SIGKILL)
        status_path = tmp_path / STATUS_FILE
        await _until(lambda: json.loads(status_path.read_text())["identity"]["serving"]
                     and json.loads(status_path.read_text())["identity"]["restarts"] == 1)
    finally:
        await supervisor.stop()
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["identity"]["port"] == 40001 and status["identity"]["pid"] != first.pid
    assert status["identity"]["last_exit"] == "signal SIGKILL"
    assert status["gateway"]["restarts"] == 0
    assert [(service, env["JUKI_LISTEN"]) for service, env in stand_ins.spawned] == [("identity", "127.0.0.1:40001")]
    assert lines[0] == "juki: identity exited (signal SIGKILL); restart 1 in 0.1s"
    assert lines[1].startswith("juki: identity SERVING again")
    events = [json.loads(line) for line in (tmp_path / "logs" / EVENTS_LOG).read_text().splitlines()]
    assert [(e["level"], e["service"], e["restart"]) for e in events] == [("WARNING", "identity", 1),
                                                                          ("INFO", "identity", 1)]
    assert supervisor.restarts() == {"identity": 1, "gateway": 0}


async def test_a_stop_during_the_backoff_starts_nothing(tmp_path: Path, stand_ins: StandIns) -> None:
    lines: list[str] = []
    supervisor = _supervisor(tmp_path, stand_ins, RestartPolicy(base_delay=30.0), lines)
    supervisor.start()
    stand_ins.processes[1].send_signal(signal.SIGKILL)
    await _until(lambda: len(lines) == 1)
    await supervisor.stop()
    await asyncio.sleep(0.2)
    assert stand_ins.spawned == []
    assert lines == ["juki: gateway exited (signal SIGKILL); restart 1 in 30.0s"]


def test_backoff_doubles_while_a_service_keeps_exiting_and_is_capped() -> None:
    policy = RestartPolicy(base_delay=0.5, max_delay=30.0)
    assert [policy.delay(n) for n in range(1, 10)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_exits_are_described_by_code_or_signal() -> None:
    assert (describe_exit(1), describe_exit(-9), describe_exit(-15)) == ("code 1", "signal SIGKILL",
                                                                         "signal SIGTERM")


async def test_a_child_that_cannot_be_started_is_tried_again_and_the_failure_is_said(
        tmp_path: Path, stand_ins: StandIns) -> None:
    lines: list[str] = []
    failures = iter([OSError("no more processes"), RuntimeError("unexpected")])

    def flaky(service: str, env: dict[str, str], log_dir: Path) -> Child:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return stand_ins.spawn(service, env, log_dir)

    supervisor = _supervisor(tmp_path, stand_ins, RestartPolicy(base_delay=0.05, max_delay=0.2), lines, flaky)
    supervisor.start()
    try:
        stand_ins.processes[0].send_signal(signal.SIGKILL)
        await _until(lambda: any("SERVING again" in line for line in lines))
    finally:
        await supervisor.stop()
    assert [line.split(" (")[0] for line in lines] == [
        "juki: identity exited", "juki: identity could not be started", "juki: identity exited",
        "juki: supervising identity failed", "juki: identity exited", "juki: identity SERVING again"]
