"""The failover drill (issue 20): kill -9 the primary PostgreSQL under load, promote the standby, lose nothing.

住基法 30-6 ④ / 30-41 ④: the governor must be able to keep the identity file however its database is lost. With
`juki up --standby --synchronous`, a notification the gateway acknowledged to a municipality is on the
standby's disk before the answer leaves (`synchronous_commit = on`), so the loss of the primary loses none.

The real command runs as a child process. One task submits 30-6 notifications as 前橋市's CS through the
gateway, resending each unanswered one with the same notification id until it is acknowledged (what a
municipality's CS does, 30-6 being idempotent); another looks a resident up as an executive organ (30-15 ②).
Then the primary's postmaster is killed with SIGKILL and `juki failover` promotes the standby. The drill
measures the time from the kill to the first acknowledged notification and the first answered lookup, stops
the load, and proves: every acknowledged notification is in the register exactly once, the operation log's
chain verifies (`juki audit verify`), the relay delivers every one of them to the agency (30-7), and
`juki rejoin` makes the old primary the standby again. The times are printed (`-s`), not asserted: a loaded
CI machine must not fail the drill; docs/operations figures come from this output.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.db.embedded import running_postmaster
from jukitools import standby
from jukitools.client import Endpoints, gateway_channel, load_credential, purpose_metadata
from jukitools.demo.load import DEMO_SEED
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import generate_residents
from tests.e2e.test_juki_up import _juki
from tests.e2e.test_juki_up_crash import _wait_until_up, juki_home

MAEBASHI = "102016"
NOTIFY_PURPOSE = "CS-NOTIFY-30-6"
LOOKUP_PURPOSE = "EDU-SCHOLARSHIP-30-15-2-2"
LOAD_BEFORE_KILL = 4.0
"""Seconds of load before the primary is killed, and after the suite serves again."""
DELIVERED_WITHIN = 120.0
"""The relay waits out the lease of the changes it claimed on the dead primary (30 s) before sending them again."""


@dataclass
class Load:
    """What the load saw: every acknowledged notification, and when calls succeeded."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    """notification id → resident code, once the gateway answered OK."""
    notified_at: list[float] = field(default_factory=list)
    looked_up_at: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    failed_at: dict[str, list[float]] = field(default_factory=lambda: {"notify": [], "lookup": []})
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def failed(self, task: str, error: grpc.aio.AioRpcError) -> None:
        key = f"{task}:{error.code().name}"
        self.failures[key] = self.failures.get(key, 0) + 1
        self.failed_at[task].append(time.monotonic())

    def served_again(self, task: str, killed: float) -> float | None:
        """When `task` succeeded again after the outage that followed the kill (a call in flight may still have
        been answered just after it)."""
        succeeded = self.notified_at if task == "notify" else self.looked_up_at
        outage = _first_after(self.failed_at[task], killed) or killed
        return _first_after(succeeded, outage)


async def _notify(endpoints: Endpoints, load: Load) -> None:
    residents = generate_residents(400, seed=20_261_207, municipality_code=MAEBASHI)
    async with gateway_channel(endpoints, "maebashi-cs") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        for resident in residents:
            notification_id = f"drill-{uuid.uuid4().hex[:16]}"
            request = birth_notification(resident, notification_id, dt.date.today())
            while not load.stop.is_set():  # resent with the same id until answered, as a CS does (30-6)
                try:
                    await stub.ApplyNotification(request, metadata=purpose_metadata(
                        NOTIFY_PURPOSE, request_id=str(uuid.uuid4())), timeout=5)
                except grpc.aio.AioRpcError as error:
                    load.failed("notify", error)
                    await asyncio.sleep(0.1)
                    continue
                load.acknowledged[notification_id] = resident.resident_code
                load.notified_at.append(time.monotonic())
                break
            if load.stop.is_set():
                return
            await asyncio.sleep(0.02)


async def _look_up(endpoints: Endpoints, credential: str, load: Load) -> None:
    code = generate_residents(1, seed=DEMO_SEED)[0].resident_code
    async with gateway_channel(endpoints, "kyoiku-iinkai") as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        while not load.stop.is_set():
            try:
                await stub.LookupResident(identity_pb2.LookupResidentRequest(resident_code=code), metadata=
                                          purpose_metadata(LOOKUP_PURPOSE, credential=credential,
                                                           request_id=str(uuid.uuid4())), timeout=5)
            except grpc.aio.AioRpcError as error:
                load.failed("lookup", error)
            else:
                load.looked_up_at.append(time.monotonic())
            await asyncio.sleep(0.1)


async def _juki_run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """A `juki` command as an operator runs it, off the event loop that carries the load."""
    return await asyncio.to_thread(subprocess.run, _juki(*args), env=env, capture_output=True, text=True,
                                   timeout=timeout, check=False)


def _first_after(moments: list[float], moment: float) -> float | None:
    return next((m for m in moments if m > moment), None)


async def _drill(home: Path, env: dict[str, str]) -> tuple[Load, str, float, float, float]:
    """Load, kill, failover; returns the load, what `juki failover` printed and seconds from the kill to the end
    of `juki failover`, the first notification and the first lookup."""
    endpoints = Endpoints.load(home / "endpoints.json")
    login = await _juki_run(env, "operators", "login", "kyoiku-0001")
    assert login.returncode == 0, login.stdout + login.stderr
    load = Load()
    tasks = [asyncio.create_task(_notify(endpoints, load)),
             asyncio.create_task(_look_up(endpoints, load_credential(home, "kyoiku-0001"), load))]
    try:
        await asyncio.sleep(LOAD_BEFORE_KILL)
        assert load.acknowledged and load.looked_up_at, f"no load before the kill: {load.failures}"
        primary_dir = home / json.loads((home / "replication.json").read_text())["primary"]
        # The guarantee under test: the primary waits for the standby on every commit.
        assert standby._psql(primary_dir, "SELECT sync_state FROM pg_stat_replication") == "sync"
        primary = running_postmaster(primary_dir)
        assert primary is not None
        primary.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        failover = await _juki_run(env, "failover")
        promoted = time.monotonic() - killed
        assert failover.returncode == 0, failover.stdout + failover.stderr
        deadline = time.monotonic() + 60
        while load.served_again("notify", killed) is None or load.served_again("lookup", killed) is None:
            assert time.monotonic() < deadline, f"the suite does not serve 60 s after the failover: {load.failures}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(LOAD_BEFORE_KILL)
    finally:
        load.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    notified, looked_up = load.served_again("notify", killed), load.served_again("lookup", killed)
    assert notified is not None and looked_up is not None
    return load, failover.stdout.strip(), promoted, notified - killed, looked_up - killed


async def _versions_in_register(home: Path, load: Load) -> dict[str, int]:
    """notification id → how many versions of the register it produced."""
    url = json.loads((home / "databases.json").read_text())["identity"]["url"]
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT notification_id, count(*) AS versions FROM identity.person_version "
                                      "WHERE notification_id = ANY($1::text[]) GROUP BY notification_id",
                                      list(load.acknowledged))
    finally:
        await connection.close()
    return {row["notification_id"]: row["versions"] for row in rows}


async def _at_agency(home: Path, load: Load, within: float) -> set[str]:
    """The acknowledged residents the agency holds, once it holds all of them or `within` seconds passed."""
    url = json.loads((home / "databases.json").read_text())["agency"]["url"]
    wanted = set(load.acknowledged.values())
    deadline = time.monotonic() + within
    connection = await asyncpg.connect(url)
    try:
        while True:
            held = {row["resident_code"] for row in await connection.fetch(
                "SELECT DISTINCT resident_code FROM agency.received_change WHERE register = 'identity' "
                "AND resident_code = ANY($1::text[])", list(wanted))}
            if held == wanted or time.monotonic() > deadline:
                return held
            await asyncio.sleep(1.0)
    finally:
        await connection.close()


async def test_failover_drill_loses_no_acknowledged_notification_and_serves_again() -> None:
    with juki_home("juki-failover-") as home:
        env = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")}
        env["JUKI_HOME"] = str(home)
        up = await asyncio.to_thread(
            subprocess.Popen, _juki("up", "--standby", "--synchronous", "--residents", "3", "--annex-residents", "0"),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            await asyncio.to_thread(_wait_until_up, home, up)
            load, said, promoted, notified, looked_up = await _drill(home, env)
            print(f"\nfailover drill: {len(load.acknowledged)} notifications acknowledged; kill -9 → `juki failover` "
                  f"done {promoted:.1f} s, → first notification {notified:.1f} s, → first lookup {looked_up:.1f} s; "
                  f"failed calls meanwhile: {load.failures}\njuki failover: {said}")

            # 住基法 30-6: every notification acknowledged to the municipality is in the register, once.
            versions = await _versions_in_register(home, load)
            assert set(versions) == set(load.acknowledged), "acknowledged notifications lost with the primary"
            assert set(versions.values()) == {1}, "a notification applied more than once"

            verify = await _juki_run(env, "audit", "verify")
            assert verify.returncode == 0, verify.stdout + verify.stderr

            # 住基法 30-7: the relay forwards the backlog, including what it had claimed on the dead primary.
            held = await _at_agency(home, load, DELIVERED_WITHIN)
            assert held == set(load.acknowledged.values()), f"{len(set(load.acknowledged.values()) - held)} " \
                                                            "acknowledged changes never reached the agency"

            rejoin = await _juki_run(env, "rejoin")
            assert rejoin.returncode == 0, rejoin.stdout + rejoin.stderr
            state = json.loads((home / "replication.json").read_text())
            assert state == {**state, "primary": "pgdata-standby", "standby": "pgdata", "rejoin_needed": False}
            assert running_postmaster(home / "pgdata") is not None, "the old primary does not run as the standby"
        finally:
            up.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                up.communicate(timeout=90)
        assert up.returncode == 0
        assert running_postmaster(home / "pgdata") is None and running_postmaster(home / "pgdata-standby") is None, \
            "a server of the suite was left running"
