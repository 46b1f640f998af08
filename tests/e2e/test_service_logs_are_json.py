"""Every line of every service's log is JSON (issue 21, trace hygiene), on `juki up`'s real processes.

The services' logs (`.juki/logs/<service>.log`) used to mix in plain lines that gRPC's C core writes to
stderr, e.g. `I1207 … ssl_transport_security.cc:2563] Handshake failed …` whenever a client without a valid
certificate knocks. The suite is started, called (a lookup, a call refused PERMISSION_DENIED, a plain-text
connection and a TLS connection without a client certificate to the gateway), stopped, and every line of
every log must parse as a JSON object naming its service and level, the C core's among them; the resident
looked up appears in none.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

ENDPOINTS_WITHIN_SECONDS = 90
SERVICES = {"identity", "annex", "disclosure", "agency", "gateway"}


def _juki(*args: str) -> list[str]:
    return [sys.executable, "-m", "jukitools.cli", *args]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_juki(*args), env=env, capture_output=True, text=True, timeout=60, check=False)


def _knock(address: str, ca_cert: str) -> None:
    """Two connections the gateway refuses in its TLS handshake: plain text, and TLS with no certificate."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: juki\r\n\r\n")
        plain.recv(1024)
    context = ssl.create_default_context(cafile=ca_cert)
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="gateway") as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            tls.recv(1024)
    except (ssl.SSLError, OSError):
        pass  # refused, as it should be


def test_every_service_log_line_is_json_with_the_c_cores_lines_among_them(tmp_path: Path) -> None:
    home = tmp_path / "juki-home"
    env = {**os.environ, "JUKI_HOME": str(home)}
    env.pop("JUKI_DATABASE_URL", None)
    process = subprocess.Popen(_juki("up", "--residents", "20", "--annex-residents", "5"), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ENDPOINTS_WITHIN_SECONDS
        while not (home / "endpoints.json").exists():
            assert process.poll() is None, f"juki up exited with {process.returncode}"
            assert time.monotonic() < deadline, "juki up did not start in time"
            time.sleep(0.5)
        endpoints = json.loads((home / "endpoints.json").read_text())
        login = _run(env, "operators", "login", "kyoiku-0001")
        assert login.returncode == 0, login.stdout + login.stderr
        answer = _run(env, "call", "lookup", "--as", "kyoiku-iinkai", "--operator", "kyoiku-0001",
                      "--purpose", "EDU-SCHOLARSHIP-30-15-2-2", "--demo-resident", "0")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        record = json.loads(answer.stdout)["record"]
        refused = _run(env, "call", "lookup", "--as", "kyoiku-iinkai", "--operator", "kyoiku-0001",
                       "--demo-resident", "0")  # no purpose
        assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stdout + refused.stderr
        _knock(endpoints["gateway"], endpoints["ca_cert"])
        time.sleep(1.0)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    logs = {path.stem: path.read_text(encoding="utf-8").splitlines() for path in (home / "logs").glob("*.log")}
    assert set(logs) >= SERVICES
    loggers = set()
    for service in SERVICES:
        assert logs[service], f"{service}.log is empty"
        for number, line in enumerate(logs[service], 1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"{service}.log line {number} is not JSON: {line[:200]}") from None
            assert isinstance(entry, dict) and entry["service"] == service and entry["level"], line[:200]
            loggers.add((service, entry["logger"]))
            for value in (record["resident_code"], record["full_name"]):
                assert value not in line, f"{service}.log line {number} carries personal data"
    # The gateway's refusals of the handshakes came through as JSON, from the C core's own lines.
    assert ("gateway", "grpc.core") in loggers
