"""The restore drill (住基法 30-6 ④, 30-41 ④ with 30-7; issue 20): after a restore, nothing silently lost.

On a suite started by `juki up` (embedded PostgreSQL, WAL archiving on), 前橋市's CS notifies through the gateway:
persons recorded, `juki backup`, changes, all delivered to the agency; the time T; changes delivered to the agency
(lost with the restore, held by the agency), then changes acknowledged while the agency fails (lost to both).
The suite is stopped, its data directory destroyed, `juki restore --to T`, the suite started again,
`juki reconcile --apply`, and 前橋市 sends again every notification it had acknowledged after T, with the same
ids. Then every notification ever acknowledged is in the register exactly once and at the agency exactly once.

The agency stand-in keeps its copy in the suite's database; the real agency (J-LIS) is another system, which a
restore of the prefecture's database does not touch. So the drill keeps the stand-in's table aside before
the data directory is destroyed and puts it back, as it was, once the restored suite runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from google.protobuf import duration_pb2

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from jukilib import caller
from jukilib.config import TlsConfig
from jukilib.grpc.channels import secure_channel
from jukilib.register.rows import outbox_key
from jukitools.client import Endpoints
from tests.e2e.test_juki_up_crash import _wait_until_up, juki_home
from tests.integration.registers import MAEBASHI, REGISTERS, Person, new_person

pytestmark = pytest.mark.timeout(1500)
NOTIFY_PURPOSE = "CS-NOTIFY-30-6"


def _juki(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
    env.update(JUKI_HOME=str(home), JUKI_OPERATOR="admin-0001")
    return subprocess.run([sys.executable, "-m", "jukitools.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _up(home: Path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
    env["JUKI_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "jukitools.cli", "up", "--residents", "3", "--annex-residents", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    assert process.returncode == 0


def _urls(home: Path) -> dict[str, str]:
    data = json.loads((home / "databases.json").read_text(encoding="utf-8"))
    return {service: entry["url"] for service, entry in data.items()}


class Municipality:
    """前橋市's CS: notifies through the gateway and remembers every notification it was answered."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.acknowledged: dict[str, int] = {}
        """notification id → the version number answered."""

    async def notify(self, requests: list[Any]) -> list[identity_pb2.ResidentVersion]:
        endpoints = Endpoints.load(self.home / "endpoints.json")
        answers = []
        async with secure_channel(endpoints.gateway, endpoints.tls_for("maebashi-cs")) as channel:
            stub = identity_pb2_grpc.IdentityServiceStub(channel)
            for request in requests:
                answer = await stub.ApplyNotification(request, metadata=((caller.PURPOSE_KEY, NOTIFY_PURPOSE),),
                                                      timeout=30)
                self.acknowledged[request.notification_id] = answer.resident_version.version
                answers.append(answer.resident_version)
        return answers


def _record(person: Person, notification_id: str) -> Any:
    return REGISTERS["identity"].request(person, notification_id)


def _move(person: Person, notification_id: str, day: int) -> Any:
    person.address = f"群馬県前橋市大手町{day}丁目1番1号"
    return REGISTERS["identity"].request(person, notification_id, kind=rpb.CHANGE_KIND_MODIFY,
                                         reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY,
                                         event=dt.date(2026, 4, day))


async def _drained(home: Path, timeout: float = 120) -> None:
    """Until the identity register's outbox holds nothing undelivered."""
    connection = await asyncpg.connect(_urls(home)["identity"])
    try:
        for _ in range(int(timeout * 4)):
            if not await connection.fetchval("SELECT count(*) FROM outbox WHERE state <> 'delivered'"):
                return
            await asyncio.sleep(0.25)
    finally:
        await connection.close()
    raise AssertionError("the outbox did not drain")


async def _agency_faults(home: Path, fail_next_calls: int) -> None:
    endpoints = Endpoints.load(home / "endpoints.json")
    pki = home / "pki"
    tls = TlsConfig(cert=pki / "server" / "gateway.crt", key=pki / "server" / "gateway.key", ca=endpoints.ca_cert)
    async with secure_channel(endpoints.services["agency"], tls) as channel:
        await agency_pb2_grpc.AgencyServiceStub(channel).SetFaultInjection(agency_pb2.SetFaultInjectionRequest(
            fault_injection=agency_pb2.FaultInjection(fail_next_calls=fail_next_calls,
                                                      delay=duration_pb2.Duration())), timeout=10)


AGENCY_COLUMNS = "idempotency_key, register, resident_code, version, payload, received_at"


async def _agency_rows(home: Path) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(_urls(home)["agency"])
    try:
        return list(await connection.fetch(f"SELECT {AGENCY_COLUMNS} FROM received_change"))
    finally:
        await connection.close()


async def _put_back(home: Path, rows: list[asyncpg.Record]) -> None:
    """The agency's copy as it was before the prefecture's restore (its own system: not restored)."""
    connection = await asyncpg.connect(_urls(home)["agency"])
    try:
        await connection.executemany(
            f"INSERT INTO received_change ({AGENCY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (idempotency_key) DO NOTHING", [tuple(row) for row in rows])
    finally:
        await connection.close()


async def test_after_a_restore_every_acknowledged_notification_is_in_the_register_and_at_the_agency_once() -> None:
    with juki_home("juki-restore-drill-") as home:
        await _drill(home)


async def _drill(home: Path) -> None:
    cs = Municipality(home)
    persons = [new_person() for _ in range(4)]
    up = _up(home)
    try:
        await asyncio.to_thread(_wait_until_up, home, up)
        await cs.notify([_record(p, f"drill-a-{i}") for i, p in enumerate(persons)])
        backup = _juki(home, "backup")
        assert backup.returncode == 0, backup.stdout + backup.stderr
        await cs.notify([_move(p, f"drill-b-{i}", 2) for i, p in enumerate(persons)])
        await _drained(home)
        await asyncio.sleep(1.5)
        target = dt.datetime.now(dt.UTC)
        await asyncio.sleep(1.5)
        newcomer = new_person()
        # After T, delivered: lost with the restore, held by the agency (a new person among them).
        held_by_agency = await cs.notify([_move(persons[0], "drill-c-0", 3), _move(persons[1], "drill-c-1", 3),
                                          _record(newcomer, "drill-c-new"), _move(persons[0], "drill-c-0b", 4)])
        await _drained(home)
        # After T, acknowledged while the agency fails: lost to both.
        await _agency_faults(home, 1_000_000)
        await cs.notify([_move(persons[2], "drill-d-2", 3), _move(persons[3], "drill-d-3", 3),
                         _move(persons[1], "drill-d-1", 5)])
        agency_copy = await _agency_rows(home)
    finally:
        await asyncio.to_thread(_stop, up)
    after_target = [n for n in cs.acknowledged if n.startswith(("drill-c", "drill-d"))]

    shutil.rmtree(home / "pgdata")  # the data directory lost
    restored = _juki(home, "restore", "--to", target.isoformat())
    assert restored.returncode == 0, restored.stdout + restored.stderr

    up = _up(home)
    try:
        await asyncio.to_thread(_wait_until_up, home, up)
        await _put_back(home, agency_copy)
        reconciled = _juki(home, "reconcile", "--apply", "--register", "identity")
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        # 前橋市 sends again everything it had acknowledged after T, with the same ids.
        resent = {request_id: version for request_id, version in zip(
            after_target, [v.version for v in await cs.notify([_request_again(n, persons, newcomer)
                                                                 for n in after_target])], strict=True)}
        await _drained(home)
        register, agency = await _holdings(home)
        verified = _juki(home, "audit", "verify")
        log = await _reconcile_log(home)
    finally:
        await asyncio.to_thread(_stop, up)

    print(reconciled.stdout)
    print(f"juki audit verify: exit {verified.returncode}\n{verified.stdout}{verified.stderr}")
    _check(cs, reconciled, resent, held_by_agency, register, agency, log, newcomer,
           [p.code for p in [*persons, newcomer]])
    # The chain continues across the restore with its signed record; verify passes and names what was lost.
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "were lost with the restore" in verified.stdout, verified.stdout


def _check(cs: Municipality, reconciled: subprocess.CompletedProcess[str], resent: dict[str, int],
           held_by_agency: list[identity_pb2.ResidentVersion], register: dict[str, tuple[int, int, str]],
           agency: dict[str, list[str]], log: list[str], newcomer: Person, codes: list[str]) -> None:
    assert "lost with the restore, held by the agency: 4 changes of 3 persons; applied again: 4" in reconciled.stdout
    # A notification re-applied from the agency's copy, resent: answered with its version, not applied again.
    assert all(resent[n.change.notification_id] == n.version for n in held_by_agency)
    # Every notification ever acknowledged: once in the register, once at the agency, under its key.
    assert {n: register[n][:2] if n in register else None for n in cs.acknowledged} == {
        n: (1, cs.acknowledged[n]) for n in cs.acknowledged}
    assert {n: agency.get(n) for n in cs.acknowledged} == {
        n: [outbox_key("identity", MAEBASHI, n)] for n in cs.acknowledged}
    # The newcomer recorded after T keeps the reference the register had given (and the agency holds).
    newcomer_at_agency = next(v for v in held_by_agency if v.change.notification_id == "drill-c-new")
    assert newcomer_at_agency.name == f"{register['drill-c-new'][2]}/versions/{register['drill-c-new'][1]}"
    assert log and all(newcomer.code not in entry for entry in log)
    # Counts on the terminal, the persons' references in a file for the operator alone: no 住民票コード anywhere.
    listing = Path(reconciled.stdout.split("the persons' references: ", 1)[1].split(" (readable", 1)[0])
    assert listing.stat().st_mode & 0o777 == 0o600
    written = listing.read_text(encoding="utf-8")
    assert register["drill-c-new"][2] in written
    assert not any(code in reconciled.stdout or code in written for code in codes)


def _request_again(notification_id: str, persons: list[Person], newcomer: Person) -> Any:
    """The very notification 前橋市 sent (its CS keeps what it sent): rebuilt the same way, same content."""
    sent = {"drill-c-0": (persons[0], 3), "drill-c-1": (persons[1], 3), "drill-c-0b": (persons[0], 4),
            "drill-d-2": (persons[2], 3), "drill-d-3": (persons[3], 3), "drill-d-1": (persons[1], 5)}
    if notification_id == "drill-c-new":
        return _record(newcomer, notification_id)
    person, day = sent[notification_id]
    return _move(person, notification_id, day)


async def _holdings(home: Path) -> tuple[dict[str, tuple[int, int, str]], dict[str, list[str]]]:
    """Per notification id of 前橋市: (versions in the register, the version, the person), and the agency's keys
    for it."""
    urls = _urls(home)
    connection = await asyncpg.connect(urls["identity"])
    try:
        rows = await connection.fetch(
            "SELECT notification_id, count(*) OVER (PARTITION BY notification_id) AS n, version, person_id"
            " FROM person_version"
            " WHERE municipality_code = $1 AND notification_id LIKE 'drill-%'", MAEBASHI)
    finally:
        await connection.close()
    register = {row["notification_id"]: (row["n"], row["version"], f"residents/{row['person_id']}") for row in rows}
    agency: dict[str, list[str]] = {}
    for row in await _agency_rows(home):
        if row["register"] != "identity":
            continue
        change = identity_pb2.ResidentVersion.FromString(row["payload"]).change
        if change.municipality_code == MAEBASHI and change.notification_id.startswith("drill-"):
            agency.setdefault(change.notification_id, []).append(row["idempotency_key"])
    return register, agency


async def _reconcile_log(home: Path) -> list[str]:
    """The operation log's entries of the reconciliation (its detail)."""
    endpoints = json.loads((home / "databases.json").read_text(encoding="utf-8"))
    connection = await asyncpg.connect(endpoints["gateway"]["url"])
    try:
        return [row["detail"] for row in await connection.fetch(
            "SELECT detail FROM operation_log WHERE method = 'maintenance/reconcile' ORDER BY sequence")]
    finally:
        await connection.close()

