"""`juki up` on a fresh home directory: the newcomer's first minutes (issue 2, "Done when").

Starts the real command as a child process, waits for `.juki/endpoints.json` (written last, once the demo
data is loaded), checks the gateway's health, makes the printed first call at once, then presses Ctrl-C
and proves that nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ENDPOINTS_WITHIN_SECONDS = 90


def _juki(*args: str) -> list[str]:
    return [sys.executable, "-m", "jukitools.cli", *args]


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for(path: Path, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise AssertionError(f"juki up exited early with {process.returncode}: {output[-3000:]}")
        assert time.monotonic() < deadline, f"{path.name} did not appear within {seconds:.0f}s"
        time.sleep(0.5)


def _postgres_processes(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(home) in cmdline:
            found.append(process)
    return found


def test_juki_up_serves_answers_the_first_call_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "juki-home"
    env = {**os.environ, "JUKI_HOME": str(home)}
    env.pop("JUKI_DATABASE_URL", None)
    process = subprocess.Popen(_juki("up", "--residents", "40", "--annex-residents", "10"), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        _wait_for(home / "endpoints.json", process, ENDPOINTS_WITHIN_SECONDS)
        endpoints = json.loads((home / "endpoints.json").read_text())
        assert set(endpoints["services"]) == {"identity", "annex", "disclosure", "agency", "gateway"}
        assert {"maebashi-cs", "kyoiku-iinkai", "disclosure-desk", "auditor"} <= set(endpoints["client_certs"])
        caller = endpoints["client_certs"]["kyoiku-iinkai"]
        health = subprocess.run(_juki("health", "--target", endpoints["gateway"], "--tls-ca", endpoints["ca_cert"],
                                      "--cert", caller["cert"], "--key", caller["key"]),
                                env=env, capture_output=True, text=True, timeout=30, check=False)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
        # endpoints.json is written last, after the demo data: the first call answers at once.
        login = subprocess.run(_juki("operators", "login", "kyoiku-0001"), env=env, capture_output=True, text=True,
                               timeout=30, check=False)
        assert login.returncode == 0, login.stdout + login.stderr
        first_call = subprocess.run(
            _juki("call", "lookup", "--as", "kyoiku-iinkai", "--operator", "kyoiku-0001",
                  "--purpose", "EDU-SCHOLARSHIP-30-15-2-2", "--demo-resident", "0"),
            env=env, capture_output=True, text=True, timeout=30, check=False)
        assert first_call.returncode == 0, first_call.stdout
        assert '"full_name"' in first_call.stdout and "individual_number" not in first_call.stdout
        children = _descendants(process.pid)
        assert len([c for c in children if "serve" in " ".join(c.cmdline())]) == 5
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode(errors="replace")[-2000:]
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    assert not _postgres_processes(home), "the embedded PostgreSQL is still running"
    assert not (home / "endpoints.json").exists() and not (home / "databases.json").exists()
