"""Every documented `juki` command against a real `juki up`, with no JUKI_* variable set: each finds the
suite in `.juki/` of the current directory by itself (issue 14), and a user's mistake is one line on
stderr with exit 2, never a traceback.

One `juki up` for the module (its cwd a temporary directory), stopped with Ctrl-C at the end. The tests
run in file order: the operator and call examples first, the commands that change keys and load data
last.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from jukitools.demo.fast import write_jsonl

READY_WITHIN_SECONDS = 180


@dataclass(frozen=True)
class Suite:
    directory: Path
    """The cwd of `juki up` (and of every command): the suite is in `directory/.juki`."""

    @property
    def home(self) -> Path:
        return self.directory / ".juki"


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}


def juki(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`juki ARGS` in `cwd` with no JUKI_* variable; no output may carry a traceback."""
    result = subprocess.run([sys.executable, "-m", "jukitools.cli", *args], cwd=cwd, env=_environment(),
                            capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    directory = tmp_path_factory.mktemp("juki-local")
    process = subprocess.Popen([sys.executable, "-m", "jukitools.cli", "up", "--residents", "40",
                                "--annex-residents", "10"], cwd=directory, env=_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    running = Suite(directory)
    try:
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        while not (running.home / "endpoints.json").exists():
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise AssertionError(f"juki up exited early with {process.returncode}: {output[-3000:]}")
            assert time.monotonic() < deadline, "endpoints.json did not appear"
            time.sleep(0.5)
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=90)
    assert process.returncode == 0, output.decode(errors="replace")[-2000:]


def test_endpoints_hold_localhost_and_absolute_paths_and_no_database_url(suite: Suite) -> None:
    endpoints = json.loads((suite.home / "endpoints.json").read_text())
    assert re.fullmatch(r"localhost:\d+", endpoints["gateway"])
    assert all(address.startswith("localhost:") for address in endpoints["services"].values())
    assert Path(endpoints["ca_cert"]).is_absolute()
    assert all(Path(pair["cert"]).is_absolute() for pair in endpoints["client_certs"].values())
    assert "postgresql://" not in json.dumps(endpoints)
    assert (suite.home / "databases.json").stat().st_mode & 0o777 == 0o600


def test_operators_examples(suite: Suite) -> None:
    assert "admin-0001 (admin-office; administrator) logged in" in _ok(
        juki(suite.directory, "operators", "login", "admin-0001"))
    added = _ok(juki(suite.directory, "operators", "add", "kyoiku-0002", "--organization", "kyoiku-iinkai",
                     "--role", "provision_clerk", "--operator", "admin-0001"))
    assert '"operators/kyoiku-0002"' in added and "REGISTRATION_STATE_ACTIVE" in added
    disabled = _ok(juki(suite.directory, "operators", "disable", "kyoiku-0002", "--operator", "admin-0001"))
    assert "REGISTRATION_STATE_DISABLED" in disabled
    listed = _ok(juki(suite.directory, "operators", "list", "--operator", "admin-0001"))
    assert '"operators/kyoiku-0001"' in listed and '"operators/kyoiku-0002"' in listed


def test_call_examples(suite: Suite) -> None:
    _ok(juki(suite.directory, "operators", "login", "kyoiku-0001"))
    lookup = _ok(juki(suite.directory, "call", "lookup", "--as", "kyoiku-iinkai", "--operator", "kyoiku-0001",
                      "--demo-resident", "0", "--purpose", "EDU-SCHOLARSHIP-30-15-2-2"))
    assert '"full_name"' in lookup and "individual_number" not in lookup
    refused = juki(suite.directory, "call", "lookup", "--as", "kyoiku-iinkai", "--demo-resident", "0")
    assert refused.returncode == 1 and refused.stdout.startswith("PERMISSION_DENIED"), refused.stdout
    assert '"resident_version"' in _ok(juki(suite.directory, "call", "notify", "--as", "maebashi-cs"))
    _ok(juki(suite.directory, "operators", "login", "kansa-0001"))
    assert '"operation_log_entries"' in _ok(
        juki(suite.directory, "call", "oplog", "--as", "auditor", "--operator", "kansa-0001"))
    _ok(juki(suite.directory, "operators", "login", "kaiji-0001"))
    assert '"disclosureCases/' in _ok(juki(suite.directory, "call", "disclosure", "--as", "disclosure-desk",
                                           "--operator", "kaiji-0001", "--demo-resident", "0"))
    assert re.search(r"^[1-9]\d* case\(s\)$", _ok(juki(suite.directory, "cases", "list")), re.MULTILINE)
    assert _ok(juki(suite.directory, "health")).strip() == "SERVING"


def test_audit_examples(suite: Suite) -> None:
    assert "operation log intact" in _ok(juki(suite.directory, "audit", "verify"))
    assert "Misuse review" in _ok(juki(suite.directory, "audit", "report"))


def test_audit_verify_finds_the_suite_named_by_home(suite: Suite, tmp_path: Path) -> None:
    assert "operation log intact" in _ok(juki(tmp_path, "--home", str(suite.home), "audit", "verify"))


def test_outbox_examples(suite: Suite) -> None:
    listed = _ok(juki(suite.directory, "outbox", "list"))
    assert re.search(r"^identity: undelivered: \d+", listed, re.MULTILINE)
    assert re.search(r"^annex: undelivered: \d+", listed, re.MULTILINE)
    assert "identity: 0 dead-lettered change(s) queued again" in _ok(
        juki(suite.directory, "outbox", "retry", "--register", "identity"))
    # A maintenance action: its intent and its outcome are in the operation log (issue 19).
    url = json.loads((suite.home / "databases.json").read_text())["gateway"]["url"]

    async def logged() -> list[tuple[str, str]]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch("SELECT reason, detail FROM operation_log "
                                          "WHERE method = 'maintenance/outbox-retry' ORDER BY sequence")
        finally:
            await connection.close()
        return [(r["reason"], json.loads(r["detail"]).get("queued_again", "-")) for r in rows]

    loop = asyncio.new_event_loop()  # not asyncio.run: it would leave the main thread without a default loop
    try:
        assert loop.run_until_complete(logged())[-2:] == [("started", "-"), ("done", 0)]
    finally:
        loop.close()


def test_retention_example(suite: Suite) -> None:
    _ok(juki(suite.directory, "operators", "login", "shichoson-0001"))
    dry = _ok(juki(suite.directory, "retention", "purge", "--register", "identity", "--dry-run"))
    assert re.search(r"^identity: would purge \d+ superseded version\(s\)", dry, re.MULTILINE)
    assert re.search(r"\(periods 150 / 150 years; request [0-9a-f-]{36}\)$", dry.strip())
    refused = juki(suite.directory, "retention", "purge", "--register", "annex", "--removed-years", "0")
    assert refused.returncode == 1 and refused.stdout.startswith("INVALID_ARGUMENT"), refused.stdout
    assert "removed_years" in refused.stdout


def test_load_into_the_live_register(suite: Suite, tmp_path: Path) -> None:
    data = tmp_path / "existing.jsonl"
    write_jsonl(data, 5, seed=914, register="identity")
    assert "identity: loaded 5 person(s)" in _ok(
        juki(suite.directory, "load", str(data), "--register", "identity", "--no-progress"))


def _key_material(suite: Suite) -> set[str]:
    data = json.loads((suite.home / "keyring.json").read_text())
    return {*data.get("keys", {}).values(), *data.get("hmac_keys", {}).values()}


def test_keys_examples(suite: Suite) -> None:
    material = _key_material(suite)
    assert "new active key" in _ok(juki(suite.directory, "keys", "new"))
    material |= _key_material(suite)
    rotated = _ok(juki(suite.directory, "keys", "rotate")).strip().splitlines()
    assert re.fullmatch(r"re-encrypted [1-9]\d* row\(s\) under key \S+", rotated[0])
    assert re.fullmatch(r"retired key\(s\) \S+", rotated[1])  # every row is under the new key
    rehashed = _ok(juki(suite.directory, "keys", "rotate", "--hmac")).strip().splitlines()
    assert rehashed[0].startswith("new HMAC key ") and rehashed[-1].startswith("retired HMAC key(s) h0;")
    # Maintenance actions (issue 19): each rotation's intent and outcome are in the operation log, by key id and
    # count, never a key.
    url = json.loads((suite.home / "databases.json").read_text())["gateway"]["url"]
    material |= _key_material(suite)

    async def logged() -> list[tuple[str, str, dict[str, Any]]]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch("SELECT method, reason, detail FROM operation_log "
                                          "WHERE method LIKE 'maintenance/keys-%' ORDER BY sequence")
        finally:
            await connection.close()
        return [(r["method"], r["reason"], json.loads(r["detail"])) for r in rows]

    entries = asyncio.run(logged())
    assert [(m, r) for m, r, _ in entries][-6:] == [
        ("maintenance/keys-new", "started"), ("maintenance/keys-new", "done"),
        ("maintenance/keys-rotate", "started"), ("maintenance/keys-rotate", "done"),
        ("maintenance/keys-rotate-hmac", "started"), ("maintenance/keys-rotate-hmac", "done")]
    new_done, rotate_done, hmac_done = entries[-5][2], entries[-3][2], entries[-1][2]
    assert new_done["after"]["active_key"] not in new_done["keys"]  # the new key, by id
    assert rotate_done["resealed_rows"] > 0 and rotate_done["retired_keys"]
    assert hmac_done["retired_hmac_keys"] == ["h0"] and hmac_done["after"]["hmac_keys"] == [hmac_done["hmac_key"]]
    assert material and not [key for key in material if key in json.dumps(entries)]


# --- mistakes --------------------------------------------------------------------------------------

def test_unknown_caller_is_one_line_naming_the_known_ones(suite: Suite) -> None:
    line = _one_line_error(juki(suite.directory, "call", "notify", "--as", "maebashi"))
    assert "unknown caller 'maebashi' (--as); known:" in line and "maebashi-cs" in line


def test_missing_credential_is_one_line_saying_to_log_in(suite: Suite) -> None:
    line = _one_line_error(juki(suite.directory, "call", "lookup", "--as", "kikaku-bu", "--operator", "kikaku-0001"))
    assert "run `juki operators login kikaku-0001`" in line


def test_too_long_a_log_in_is_one_line(suite: Suite) -> None:
    assert "--hours must be more than 0 and at most 8" in _one_line_error(
        juki(suite.directory, "operators", "login", "kyoiku-0001", "--hours", "9"))


def test_missing_file_is_one_line(suite: Suite) -> None:
    line = _one_line_error(juki(suite.directory, "load", "absent.jsonl", "--register", "identity"))
    assert "no such file: absent.jsonl" in line


def test_unreachable_gateway_is_one_line_exit_1(suite: Suite, tmp_path: Path) -> None:
    (tmp_path / ".juki").mkdir()
    endpoints = json.loads((suite.home / "endpoints.json").read_text())
    (tmp_path / ".juki" / "endpoints.json").write_text(json.dumps({**endpoints, "gateway": "localhost:1"}))
    assert "UNAVAILABLE" in _one_line_error(juki(tmp_path, "call", "notify", "--as", "maebashi-cs"), code=1)


@pytest.mark.parametrize(("args", "missing"), [
    (("audit", "verify"), "JUKI_DATABASE_URL is not set"),
    (("outbox", "list"), "JUKI_DATABASE_URL is not set"),
    (("retention", "purge", "--register", "annex"), "no running suite"),
    (("call", "notify", "--as", "maebashi-cs"), "no running suite"),
    (("operators", "list", "--operator", "admin-0001"), "no running suite"),
    (("keys", "new"), "JUKI_KEYRING_FILE is not set"),
])
def test_a_command_in_an_empty_directory_names_what_is_missing(tmp_path: Path, args: tuple[str, ...],
                                                               missing: str) -> None:
    line = _one_line_error(juki(tmp_path, *args))
    assert line.startswith("juki: ") and missing in line
    if missing.endswith("URL is not set"):
        assert f"no running suite in {tmp_path / '.juki'}" in line


def test_outbox_retry_without_a_register_is_one_line(suite: Suite) -> None:
    assert "--register" in _one_line_error(juki(suite.directory, "outbox", "retry"))


def test_unreachable_database_is_one_line_exit_1(tmp_path: Path) -> None:
    (tmp_path / ".juki").mkdir()
    url = "postgresql://juki_gateway:secret-password@localhost:1/juki"
    (tmp_path / ".juki" / "databases.json").write_text(json.dumps({"gateway": {"url": url, "migration_url": url}}))
    line = _one_line_error(juki(tmp_path, "audit", "report"), code=1)
    assert "the database at localhost:1 cannot be reached" in line and "secret-password" not in line
