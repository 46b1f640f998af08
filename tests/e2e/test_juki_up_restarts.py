"""`juki up` supervises its services (issue 15): a service killed with SIGKILL is started again on its port,
turns SERVING and answers a call through the gateway; the restart is on juki up's output, in
`.juki/logs/up.log` and counted in `.juki/services.json`; Ctrl-C still stops everything, and a restarted
service still dies with a killed `juki up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.test_juki_up import _juki, _postgres_processes
from tests.e2e.test_juki_up_crash import _services, _up, _wait_gone, _wait_until_up, juki_home

SERVING_AGAIN_WITHIN_SECONDS = 90


def test_a_killed_service_is_restarted_answers_through_the_gateway_and_ctrl_c_stops_everything() -> None:
    with juki_home("juki-restart-") as home:
        _kill_a_service_and_stop(home)


def test_a_restarted_service_dies_with_a_killed_juki_up() -> None:
    with juki_home("juki-restart-") as home:  # the embedded PostgreSQL outlives a killed juki up: stopped after
        up = _up(home)
        try:
            _wait_until_up(home, up)
            os.kill(int(str(_status(home)["annex"]["pid"])), signal.SIGKILL)
            _wait_serving_again(home, "annex", up)
            restarted = int(str(_status(home)["annex"]["pid"]))
        finally:
            up.kill()
            up.communicate(timeout=30)
        # spawned again from juki up's main thread: PR_SET_PDEATHSIG holds for the new child too
        assert not _wait_gone(lambda: [p for p in _services(home) if p.pid == restarted], 30)


def _status(home: Path) -> dict[str, dict[str, object]]:
    status: dict[str, dict[str, object]] = json.loads((home / "services.json").read_text())
    return status


def _wait_serving_again(home: Path, service: str, up: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVING_AGAIN_WITHIN_SECONDS
    while not (_status(home)[service]["restarts"] == 1 and _status(home)[service]["serving"]):
        assert up.poll() is None, "juki up exited"
        assert time.monotonic() < deadline, f"{service} not SERVING again within {SERVING_AGAIN_WITHIN_SECONDS}s"
        time.sleep(0.5)


def _environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
    env["JUKI_HOME"] = str(home)
    return env


def _lookup_through_the_gateway(home: Path) -> None:
    """The demo lookup (gateway → identity) answers; the gateway's channel may take a moment to reconnect."""
    env = _environment(home)
    login = subprocess.run(_juki("operators", "login", "kyoiku-0001"), env=env, capture_output=True, text=True,
                           timeout=60, check=False)
    assert login.returncode == 0, login.stdout + login.stderr
    deadline = time.monotonic() + 30
    while True:
        call = subprocess.run(_juki("call", "lookup", "--as", "kyoiku-iinkai", "--operator", "kyoiku-0001",
                                    "--purpose", "EDU-SCHOLARSHIP-30-15-2-2", "--demo-resident", "0"),
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        if call.returncode == 0:
            assert '"full_name"' in call.stdout
            return
        assert time.monotonic() < deadline, call.stdout + call.stderr
        time.sleep(1)


def _kill_a_service_and_stop(home: Path) -> None:
    up = _up(home)
    try:
        _wait_until_up(home, up)
        killed = int(str(_status(home)["identity"]["pid"]))
        os.kill(killed, signal.SIGKILL)
        _wait_serving_again(home, "identity", up)
        status = _status(home)
        assert status["identity"]["pid"] != killed and status["identity"]["last_exit"] == "signal SIGKILL"
        assert json.loads((home / "endpoints.json").read_text())["services"]["identity"] == \
            f"localhost:{status['identity']['port']}"  # the same port: endpoints.json stays true
        _lookup_through_the_gateway(home)
        assert len(_services(home)) == 5
        assert {s: status[s]["restarts"] for s in status} == {
            "agency": 0, "identity": 1, "annex": 0, "disclosure": 0, "gateway": 0}
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=90)
    text = output.decode(errors="replace")
    assert up.returncode == 0, text[-2000:]
    assert "juki: identity exited (signal SIGKILL); restart 1 in 0.5s" in text
    assert "juki: identity SERVING again" in text
    events = [json.loads(line) for line in (home / "logs" / "up.log").read_text().splitlines()]
    assert [(e["service"], e["level"], e["restart"]) for e in events] == [("identity", "WARNING", 1),
                                                                          ("identity", "INFO", 1)]
    assert not _wait_gone(lambda: _services(home), 5), "juki serve left running"
    assert not _wait_gone(lambda: _postgres_processes(home), 5), "the embedded PostgreSQL is still running"
    assert not (home / "services.json").exists()
