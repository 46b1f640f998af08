"""The operation log nobody can bend: hash-chained, signed checkpoints, `juki audit verify` names the
first bad record after an edit, a deletion or an insertion; and the gateway fails closed when it
cannot write the log."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from juki.gateway.v1 import operation_log_pb2
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki_services.gateway.chain import SigningKey, ensure_signing_key
from juki_services.gateway.oplog import _ROW, LogEntry, LogEntryRefused, OperationLog
from jukilib.config import DatabaseConfig
from jukilib.db.pool import Database
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from tests.conftest import RunningSuite, fresh_database

ENTRIES = 30


def _entry(index: int) -> LogEntry:
    return LogEntry(time=dt.datetime.now(dt.UTC), request_id=f"r-{index}", trace_id="0" * 32,
                    organization="kyoiku-iinkai", method="/juki.identity.v1.IdentityService/LookupResident",
                    purpose="EDU-SCHOLARSHIP-30-15-2-2", decision=operation_log_pb2.DECISION_ALLOWED,
                    reason="purpose granted", status="OK",
                    resident_codes=[f"{70000000000 + index}"], disclosed_fields=["record.full_name"],
                    disclosed_versions=[f"residents/{index:08d}-0000-4000-8000-000000000000/versions/1"]
                    if index else [])  # the first without: rows from before the column


@pytest.fixture
async def written_log(admin_url: str, home: Path) -> AsyncIterator[tuple[str, str]]:
    """A fresh gateway schema holding a log of ENTRIES records written by the real writer, concurrently."""
    databases = await fresh_database(admin_url)
    database = Database(DatabaseConfig(url=databases["gateway"].url, migration_url=None))
    await database.connect()
    log = OperationLog(database, SigningKey.load(ensure_signing_key(home / "operation-log.key")),
                       checkpoint_every=7)
    writer = asyncio.create_task(log.run())
    try:
        sequences: list[int] = []
        for start in range(0, ENTRIES, 5):  # concurrent writers, several group commits
            sequences += await asyncio.gather(*(log.write(_entry(i)) for i in range(start, start + 5)))
        assert sorted(sequences) == list(range(1, ENTRIES + 1))
        yield databases["gateway"].url, databases["gateway"].migration_url
    finally:
        writer.cancel()
        await database.close()


def _verify(url: str, home: Path, journal: Path | None = None, keys: Path | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """`juki audit verify` as an auditor runs it, with the log's keys and the journal of checkpoints kept
    outside the database (an empty one when the test wrote none)."""
    if journal is None:
        journal = home / f"no-journal-{uuid.uuid4()}"
        journal.mkdir()
    env = {**os.environ, "JUKI_DATABASE_URL": url,
           "JUKI_OPERATION_LOG_PUBLIC_KEY": str(keys or home / "operation-log.pub"),
           "JUKI_CHECKPOINT_DIR": str(journal)}
    return subprocess.run([sys.executable, "-m", "jukitools.cli", "audit", "verify"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


async def test_intact_log_verifies_with_its_signed_checkpoints(written_log: tuple[str, str], home: Path) -> None:
    result = _verify(written_log[0], home)
    assert result.returncode == 0, result.stderr
    # Batches of 5 with a checkpoint due every 7 records: after records 5, 15 and 25.
    assert f"{ENTRIES} record(s), 3 signed checkpoint(s)" in result.stdout


@pytest.fixture
async def replicas(admin_url: str, home: Path) -> AsyncIterator[tuple[str, list[tuple[Database, OperationLog]]]]:
    """A fresh gateway schema and two writers on it, each with its own pool, as two replicas have."""
    url = (await fresh_database(admin_url))["gateway"].url
    key = SigningKey.load(ensure_signing_key(home / "operation-log.key"))
    pairs, writers = [], []
    try:
        for _ in range(2):
            database = Database(DatabaseConfig(url=url, migration_url=None))
            await database.connect()
            log = OperationLog(database, key, checkpoint_every=7)
            pairs.append((database, log))
            writers.append(asyncio.create_task(log.run()))
        yield url, pairs
    finally:
        for writer in writers:
            writer.cancel()
        for database, _ in pairs:
            await database.close()


async def test_two_replicas_writing_concurrently_keep_one_intact_chain(
        replicas: tuple[str, list[tuple[Database, OperationLog]]], home: Path) -> None:
    url, pairs = replicas
    tasks, writes = 8, 40  # per replica

    async def caller(log: OperationLog, first: int) -> list[int]:
        return [await log.write(_entry(first + i)) for i in range(writes)]

    results = await asyncio.gather(*(caller(log, 1 + (r * tasks + t) * writes)
                                     for r, (_, log) in enumerate(pairs) for t in range(tasks)))
    total = 2 * tasks * writes
    assert sorted(s for result in results for s in result) == list(range(1, total + 1))
    # The replicas got in each other's way: appends after a stale tail were refused and chained again.
    assert sum(log.stale_appends for _, log in pairs) > 0
    result = _verify(url, home)
    assert result.returncode == 0, result.stderr
    assert f"{total} record(s)" in result.stdout


async def test_a_writer_whose_tail_is_stale_appends_after_the_other_replica(
        replicas: tuple[str, list[tuple[Database, OperationLog]]], home: Path) -> None:
    url, [(_, log), (_, other)] = replicas
    assert [await log.write(_entry(i)) for i in range(1, 3)] == [1, 2]
    assert await asyncio.gather(*(other.write(_entry(i)) for i in range(3, 6))) == [3, 4, 5]
    assert (log.stale_appends, other.stale_appends) == (0, 0)  # the other read the tail (2) before its first append
    assert await log.write(_entry(6)) == 6  # its tail said 2: refused, then appended after 5
    assert await log.write(_entry(7)) == 7
    assert log.stale_appends == 1
    assert await other.write(_entry(8)) == 8  # and so was the other's, which said 5
    assert other.stale_appends == 1
    result = _verify(url, home)
    assert result.returncode == 0, result.stderr
    assert "8 record(s)" in result.stdout


async def test_the_batch_row_type_is_the_table_row(written_log: tuple[str, str]) -> None:
    connection = await asyncpg.connect(written_log[0])
    try:
        columns = await connection.fetch(
            """SELECT attname FROM pg_attribute WHERE attrelid = 'operation_log'::regclass
                 AND attnum > 0 AND NOT attisdropped ORDER BY attnum""")
    finally:
        await connection.close()
    assert tuple(c["attname"] for c in columns) == _ROW


TAMPERING = {
    "edit": ["UPDATE operation_log SET reason = 'nothing to see' WHERE sequence = 12"],
    "versions hidden": ["UPDATE operation_log SET disclosed_versions = '{}' WHERE sequence = 12"],
    "versions added": ["UPDATE operation_log SET disclosed_versions = '{residents/x/versions/9}' WHERE sequence = 12"],
    "delete": ["DELETE FROM operation_log_checkpoint WHERE sequence >= 12",
               "DELETE FROM operation_log WHERE sequence = 12"],
    "insert": ["DELETE FROM operation_log_checkpoint WHERE sequence >= 12",
               "UPDATE operation_log SET sequence = sequence + 1000 WHERE sequence >= 12",
               """INSERT INTO operation_log (sequence, time, request_id, trace_id, organization, method, decision,
                      reason, status, prev_hash, entry_hash)
                  SELECT 12, now(), 'forged', '', 'kyoiku-iinkai', '/x', 1, 'forged', 'OK', entry_hash, entry_hash
                  FROM operation_log WHERE sequence = 11""",
               "UPDATE operation_log SET sequence = sequence - 1000 + 1 WHERE sequence > 1000"],
}


@pytest.mark.parametrize("tampering", list(TAMPERING))
async def test_tampering_is_named_at_the_first_bad_sequence(written_log: tuple[str, str], home: Path,
                                                            tampering: str) -> None:
    owner = await asyncpg.connect(written_log[1])
    try:
        await owner.execute("SET search_path TO gateway")
        for statement in TAMPERING[tampering]:
            await owner.execute(statement)
    finally:
        await owner.close()
    result = _verify(written_log[0], home)
    assert result.returncode == 1
    assert "sequence 12:" in result.stderr


async def test_the_gateway_role_cannot_change_the_log(written_log: tuple[str, str]) -> None:
    connection = await asyncpg.connect(written_log[0])
    try:
        for statement in ("UPDATE operation_log SET reason = ''", "DELETE FROM operation_log_checkpoint"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_gateway_fails_closed_when_the_log_cannot_be_written(suite: RunningSuite) -> None:
    owner = await asyncpg.connect(suite.owner_url("gateway"))
    await owner.execute("REVOKE INSERT ON gateway.operation_log FROM juki_gateway")
    try:
        async with secure_channel(suite.gateway, suite.client_tls("kyoiku-iinkai")) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await identity_pb2_grpc.IdentityServiceStub(channel).LookupResident(
                    identity_pb2.LookupResidentRequest(resident_code="12345678901"),
                    metadata=purpose_metadata("EDU-SCHOLARSHIP-30-15-2-2", request_id=str(uuid.uuid4()),
                                              credential=suite.credential("kyoiku-iinkai")), timeout=10)
    finally:
        await owner.execute("GRANT INSERT ON gateway.operation_log TO juki_gateway")
        await owner.close()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "operation log" in (refused.value.details() or "")


async def test_an_entry_the_database_refuses_fails_only_its_own_call_and_is_logged_as_refused(
        replicas: tuple[str, list[tuple[Database, OperationLog]]], home: Path) -> None:
    """Issue 15: a value PostgreSQL cannot store (U+0000) in one entry of a group commit used to fail the
    whole batch; now the others are committed and the call at fault is logged as refused."""
    url, [(_, log), _] = replicas
    poison = dataclasses.replace(_entry(3), request_id="poison", resident_codes=["1234\x005678"],
                                 case_reference="case\x00ref")
    results = await asyncio.gather(*(log.write(poison if i == 3 else _entry(i)) for i in range(1, 9)),
                                   return_exceptions=True)
    refused = results[2]
    assert isinstance(refused, LogEntryRefused)
    assert sorted([*(r for r in results if isinstance(r, int)), refused.sequence]) == list(range(1, 9))
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow("SELECT * FROM operation_log WHERE sequence = $1", refused.sequence)
    finally:
        await connection.close()
    assert (row["request_id"], row["decision"], row["status"], row["resident_codes"], row["case_reference"]) == (
        "poison", operation_log_pb2.DECISION_DENIED, "INVALID_ARGUMENT", [], "case\ufffdref")
    assert "SQLSTATE 22021" in row["reason"]
    result = _verify(url, home)
    assert result.returncode == 0, result.stderr
    assert "8 record(s)" in result.stdout


async def test_after_a_failed_append_the_writer_reads_the_tail_and_newest_checkpoint_again(
        admin_url: str, home: Path) -> None:
    """A failover to a standby that lacks the last records (asynchronous replication) or a restore changes the
    log under a running writer: its next append chains after the records that are there and signs a checkpoint
    when the newest one that is there says one is due, not when its memory of a lost one does."""
    databases = await fresh_database(admin_url)
    database = Database(DatabaseConfig(url=databases["gateway"].url, migration_url=None))
    await database.connect()
    log = OperationLog(database, SigningKey.load(ensure_signing_key(home / "operation-log.key")), checkpoint_every=3)
    runner = asyncio.create_task(log.run())
    owner = await asyncpg.connect(databases["gateway"].migration_url)
    try:
        await owner.execute("SET search_path TO gateway")
        assert [await log.write(_entry(i)) for i in range(5)] == [1, 2, 3, 4, 5]  # checkpoints at 1 and 4
        # The database loses records 4 and 5 and the checkpoint at 4, and refuses one append meanwhile.
        await owner.execute("REVOKE EXECUTE ON FUNCTION append_operation_log(operation_log[], bigint, bytea, text, "
                            "bytea, timestamptz) FROM juki_gateway")
        with pytest.raises(Exception, match="operation log"):
            await log.write(_entry(5))
        await owner.execute("DELETE FROM operation_log_checkpoint WHERE sequence >= 4")
        await owner.execute("DELETE FROM operation_log WHERE sequence >= 4")
        await owner.execute("GRANT EXECUTE ON FUNCTION append_operation_log(operation_log[], bigint, bytea, text, "
                            "bytea, timestamptz) TO juki_gateway")
        assert await log.write(_entry(6)) == 4
        assert log.stale_appends == 0  # read again, not refused and chained again
        # 4 - 1 >= 3: the checkpoint the lost one stood for is signed again.
        assert await owner.fetchval("SELECT max(sequence) FROM operation_log_checkpoint") == 4
    finally:
        runner.cancel()
        await owner.close()
        await database.close()
    result = _verify(databases["gateway"].url, home)
    assert result.returncode == 0, result.stderr
    assert "4 record(s)" in result.stdout
