"""The operation log cannot be shortened or rewritten unseen (issue 19): the chain head is signed into a
journal outside the database, and `juki audit verify` holds the log to it. Without the journal, each of
these falsifications by the schema owner passes as "intact"; with it, each is named. The signing key can be
rotated: checkpoints say which key signed them and when, and verify accepts a keyring of public keys with
validity periods."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from juki_services.gateway.chain import (
    GENESIS,
    RESTORE_METHOD,
    RestoreStatement,
    SigningKey,
    SigningKeyFile,
    ensure_signing_key,
    entry_hash,
)
from juki_services.gateway.checkpoints import JOURNAL_NAME, CheckpointExporter, read_journal
from juki_services.gateway.maintenance import maintenance_entry
from juki_services.gateway.oplog import OperationLog, append_entry
from jukilib.config import DatabaseConfig
from jukilib.db.pool import Database
from tests.conftest import fresh_database
from tests.integration.test_operation_log import _entry, _verify

ENTRIES = 40
CHECKPOINT_EVERY = 15


@dataclass
class JournalledLog:
    url: str
    owner_url: str
    home: Path
    journal: Path
    log: OperationLog
    exporter: CheckpointExporter

    async def write(self, first: int, count: int) -> None:
        for start in range(first, first + count, 5):
            await asyncio.gather(*(self.log.write(_entry(i)) for i in range(start, min(start + 5, first + count))))

    async def owner(self, *statements: str) -> None:
        connection = await asyncpg.connect(self.owner_url)
        try:
            await connection.execute("SET search_path TO gateway")
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()


@pytest.fixture
async def journalled(admin_url: str, tmp_path: Path) -> AsyncIterator[JournalledLog]:
    """A fresh log of ENTRIES records, a database checkpoint every CHECKPOINT_EVERY, its head exported to the
    journal after the last write (as the gateway's exporter does every second)."""
    home = tmp_path / "home"
    home.mkdir()
    databases = await fresh_database(admin_url)
    database = Database(DatabaseConfig(url=databases["gateway"].url, migration_url=None))
    await database.connect()
    keys = SigningKeyFile(ensure_signing_key(home / "operation-log.key"))
    exporter = CheckpointExporter(tmp_path / "journal", keys, interval=3600)
    log = OperationLog(database, keys, checkpoint_every=CHECKPOINT_EVERY, exporter=exporter)
    writer = asyncio.create_task(log.run())
    try:
        journalled = JournalledLog(databases["gateway"].url, databases["gateway"].migration_url, home,
                                   tmp_path / "journal", log, exporter)
        await journalled.write(1, ENTRIES)
        assert (await exporter.export()) is not None
        yield journalled
    finally:
        writer.cancel()
        await database.close()


async def _newest_checkpoint(log: JournalledLog) -> int:
    connection = await asyncpg.connect(log.url)
    try:
        newest: int = await connection.fetchval("SELECT max(sequence) FROM operation_log_checkpoint")
    finally:
        await connection.close()
    return newest


async def test_the_journal_holds_the_newest_head_and_no_personal_data(journalled: JournalledLog) -> None:
    [head] = read_journal(journalled.journal)
    assert head.sequence == ENTRIES
    line = json.loads((journalled.journal / JOURNAL_NAME).read_text().splitlines()[0])
    assert set(line) == {"sequence", "entry_hash", "key_id", "signed_at", "signature"}
    assert "7000000" not in json.dumps(line)  # no 住民票コード of the entries
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 0, result.stderr
    assert f"{ENTRIES} record(s)" in result.stdout
    assert f"held to 1 checkpoint(s) kept outside the database, the newest naming record {ENTRIES}" in result.stdout


async def test_deleting_the_records_after_the_newest_checkpoint_is_detected(journalled: JournalledLog) -> None:
    newest = await _newest_checkpoint(journalled)
    assert newest < ENTRIES  # records after it are vouched for by the journal only
    await journalled.owner(f"DELETE FROM operation_log WHERE sequence > {newest}")
    unseen = _verify(journalled.url, journalled.home)  # without the journal: "intact", the hole is invisible
    assert unseen.returncode == 0
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 1
    assert f"broken at sequence {newest + 1}: records are missing" in result.stderr
    assert f"names record {ENTRIES}, the log ends at {newest}" in result.stderr


async def test_deleting_the_newest_checkpoint_and_everything_after_the_one_before_is_detected(
        journalled: JournalledLog) -> None:
    newest = await _newest_checkpoint(journalled)
    previous = newest - CHECKPOINT_EVERY
    await journalled.owner(f"DELETE FROM operation_log_checkpoint WHERE sequence > {previous}",
                           f"DELETE FROM operation_log WHERE sequence > {previous}")
    assert _verify(journalled.url, journalled.home).returncode == 0
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 1
    assert f"broken at sequence {previous + 1}: records are missing" in result.stderr


async def test_an_unsigned_record_edited_with_the_tail_rehashed_is_detected(journalled: JournalledLog) -> None:
    newest = await _newest_checkpoint(journalled)
    edited = newest + 2  # after every checkpoint of the database: no signature there covers it
    connection = await asyncpg.connect(journalled.owner_url)
    try:
        await connection.execute("SET search_path TO gateway")
        async with connection.transaction():
            await connection.execute(f"UPDATE operation_log SET reason = 'nothing to see' WHERE sequence = {edited}")
            previous = bytes(await connection.fetchval(
                f"SELECT entry_hash FROM operation_log WHERE sequence = {edited - 1}") or GENESIS)
            tail = await connection.fetch(f"SELECT * FROM operation_log WHERE sequence >= {edited} ORDER BY sequence")
            for row in tail:
                new_hash = entry_hash(previous, row)
                await connection.execute("UPDATE operation_log SET prev_hash = $1, entry_hash = $2 WHERE sequence = $3",
                                         previous, new_hash, row["sequence"])
                previous = new_hash
    finally:
        await connection.close()
    assert _verify(journalled.url, journalled.home).returncode == 0  # the rewrite is consistent in itself
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 1
    assert (f"broken at sequence {ENTRIES}: signed checkpoint does not match the chain "
            "(a checkpoint kept outside the database)") in result.stderr


async def test_a_forged_journal_line_is_reported(journalled: JournalledLog) -> None:
    line = json.loads((journalled.journal / JOURNAL_NAME).read_text())
    line["sequence"] = ENTRIES + 10
    path = journalled.journal / JOURNAL_NAME
    path.write_text(path.read_text() + json.dumps(line) + "\n")
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 1
    assert "checkpoint signature is not valid (a checkpoint kept outside the database" in result.stderr


def _rotate(home: Path, log_url: str) -> None:
    env = {**os.environ, "JUKI_HOME": str(home), "JUKI_OPERATION_LOG_KEY": str(home / "operation-log.key"),
           "JUKI_OPERATION_LOG_DATABASE_URL": log_url}
    result = subprocess.run([sys.executable, "-m", "jukitools.cli", "audit", "rotate-key"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


async def test_the_signing_key_rotates_under_writes_and_verify_takes_a_keyring(journalled: JournalledLog) -> None:
    home = journalled.home
    old_public = (home / "operation-log.pub").read_bytes()
    _rotate(home, journalled.url)
    await journalled.write(ENTRIES + 1, 2 * CHECKPOINT_EVERY)  # the writer reads the new key at its next checkpoint
    await journalled.exporter.export()
    keyring = home / "operation-log-keys.json"
    result = _verify(journalled.url, home, journalled.journal, keys=keyring)
    assert result.returncode == 0, result.stderr
    connection = await asyncpg.connect(journalled.url)
    try:
        key_ids = [r["key_id"] for r in await connection.fetch(
            "SELECT DISTINCT key_id FROM operation_log_checkpoint")]
        rotation = await connection.fetchrow(
            "SELECT * FROM operation_log WHERE method = 'operation-log/rotate-signing-key'")
        maintenance = await connection.fetch(
            "SELECT reason, detail FROM operation_log WHERE method = 'maintenance/operation-log-rotate-signing-key' "
            "ORDER BY sequence")
    finally:
        await connection.close()
    # Issue 19: the rotation is a maintenance action, its intent logged before and its outcome after, by key id.
    assert [row["reason"] for row in maintenance] == ["started", "done"]
    done = json.loads(maintenance[1]["detail"])
    assert len(done["keys_before"]) == 1 and done["new_key"] not in done["keys_before"]
    assert "PRIVATE" not in maintenance[1]["detail"] and old_public.decode() not in maintenance[1]["detail"]
    assert len(key_ids) == 2  # checkpoints of both keys, each verified with its own
    assert rotation is not None and rotation["organization"] == "gateway"  # the rotation is in the chain itself
    # Only the new public key: the old checkpoints are vouched for by nobody.
    only_new = _verify(journalled.url, home, journalled.journal, keys=home / "operation-log.pub")
    assert only_new.returncode == 1
    assert "checkpoint signed with a key not in the keyring" in only_new.stderr
    # The old key's validity ended at the rotation: a checkpoint it signs later is refused.
    ring = json.loads(keyring.read_text())
    [old] = [k for k in ring["keys"] if k["valid_until"]]
    assert old["public_key"].encode() == old_public
    old["valid_until"] = "2000-01-01T00:00:00+00:00"  # as if it had been retired long before it signed
    keyring.write_text(json.dumps(ring))
    expired = _verify(journalled.url, home, journalled.journal, keys=keyring)
    assert expired.returncode == 1
    assert "checkpoint signed outside its key's validity period" in expired.stderr


async def test_the_exporter_hands_each_head_to_the_external_sink(journalled: JournalledLog, tmp_path: Path) -> None:
    received = tmp_path / "sink.jsonl"
    exporter = CheckpointExporter(tmp_path / "journal-2", SigningKeyFile(journalled.home / "operation-log.key"),
                                  sink_command=f"sh -c 'cat >> {received}'")
    exporter.note_head(ENTRIES, bytes(32))
    head = await exporter.export()
    assert head is not None
    assert received.read_text().strip() == head.line()
    assert await exporter.export() is None  # nothing new: nothing signed, nothing sent


async def _restore_to(log: JournalledLog, sequence: int, key: SigningKey, *, log_ended_at: int | None = None) -> None:
    """What `juki restore` to an earlier time leaves: the log ends at `sequence` (the later records are gone
    with the database), the journal outside still names ENTRIES, and the restore's first record carries its
    statement signed with `key`."""
    await log.owner(f"DELETE FROM operation_log_checkpoint WHERE sequence > {sequence}",
                    f"DELETE FROM operation_log WHERE sequence > {sequence}")
    connection = await asyncpg.connect(log.url)
    try:
        head = bytes(await connection.fetchval("SELECT entry_hash FROM operation_log WHERE sequence = $1", sequence))
        statement = RestoreStatement.signed(key, sequence if log_ended_at is None else log_ended_at, head, ENTRIES,
                                            dt.datetime.now(dt.UTC))
        await append_entry(connection, maintenance_entry(RESTORE_METHOD, reason="started",
                                                         detail={"restore_statement": statement.detail()}))
    finally:
        await connection.close()


async def test_a_signed_restore_continues_the_chain_and_verify_reports_the_records_it_lost(
        journalled: JournalledLog) -> None:
    """Issue 20: after a restore to an earlier time, the chain goes on from the restored end with a signed
    record of the restore; `juki audit verify` passes and names the records the journal vouched for that the
    restore lost — reported, not hidden — while the new checkpoints at the reused sequence numbers hold."""
    restored_end = await _newest_checkpoint(journalled)
    await _restore_to(journalled, restored_end, SigningKey.load(journalled.home / "operation-log.key"))
    await asyncio.sleep(0.01)  # the next checkpoints are signed after the restore
    await journalled.write(ENTRIES + 1, 2 * CHECKPOINT_EVERY)
    assert (await journalled.exporter.export()) is not None
    assert max(head.sequence for head in read_journal(journalled.journal)) > ENTRIES  # new heads, reused numbers
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 0, result.stderr
    assert (f"restore recorded at record {restored_end + 1}" in result.stdout
            and f"records {restored_end + 1}–{ENTRIES} named by the journal" in result.stdout), result.stdout


async def test_a_restore_record_not_signed_with_the_logs_key_does_not_hide_a_shortened_log(
        journalled: JournalledLog) -> None:
    """Whoever shortens the log and writes a restore record without the prefecture's key is caught."""
    restored_end = await _newest_checkpoint(journalled)
    forger = SigningKey.load(ensure_signing_key(journalled.home / "forger.key"))
    await _restore_to(journalled, restored_end, forger)
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 1
    assert (f"broken at sequence {restored_end + 1}: restore record signed with a key not in the keyring"
            in result.stderr), result.stderr


async def test_a_restore_record_that_does_not_follow_the_restored_end_is_refused(journalled: JournalledLog) -> None:
    """A genuine statement copied onto another place of the chain vouches for nothing."""
    restored_end = await _newest_checkpoint(journalled)
    key = SigningKey.load(journalled.home / "operation-log.key")
    await _restore_to(journalled, restored_end, key, log_ended_at=restored_end - 1)
    result = _verify(journalled.url, journalled.home, journalled.journal)
    assert result.returncode == 1
    assert "restore record does not follow the end of the restored log" in result.stderr, result.stderr
