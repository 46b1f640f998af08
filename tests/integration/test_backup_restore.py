"""The restoration duty (住基法 30-6 ④, 30-41 ④; issue 20): the suite's database can be rebuilt to a point in
time from sealed base backups and continuously archived WAL, with PostgreSQL's own tools, on a real embedded
PostgreSQL started as `juki up` starts it (archiving on).

The drill runs once for the module: rows written, a full backup, rows, an incremental backup, rows, time T,
rows, the suite stopped, then `juki restore --to T`. Each test states one thing the drill must show."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from juki_services.gateway.chain import SigningKeyFile, ensure_signing_key
from juki_services.gateway.checkpoints import CheckpointExporter
from juki_services.gateway.oplog import OperationLog
from jukilib.config import DatabaseConfig
from jukilib.db.bootstrap import runtime_role, with_credentials
from jukilib.db.embedded import EmbeddedPostgres
from jukilib.db.pool import Database
from jukitools.backup import BackupSettings, Catalogue, seal_archived
from jukitools.local import CHECKPOINT_DIR, DATABASES, write_private_json
from jukitools.suite import Suite, prepare_database, role_passwords
from tests.integration.test_operation_log import _entry


@dataclass
class Drill:
    home: Path
    marker: str
    target: dt.datetime
    before_backup: dt.datetime
    refused: subprocess.CompletedProcess[str]
    refused_later: subprocess.CompletedProcess[str]
    restored: subprocess.CompletedProcess[str]
    listing: str
    rows: list[str]
    log: list[tuple[str, str, str]]
    verified: subprocess.CompletedProcess[str]
    after_last_commit: subprocess.CompletedProcess[str]
    while_running: subprocess.CompletedProcess[str]
    backup_verified: subprocess.CompletedProcess[str]
    census_denied: subprocess.CompletedProcess[str]
    damaged_backup: subprocess.CompletedProcess[str]
    scratch_left: list[Path]


def juki(home: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("JUKI_")} | variables
    return subprocess.run([sys.executable, "-m", "jukitools.cli", "--home", str(home), *args], env=environment,
                          check=False, capture_output=True, text=True, timeout=240)


async def log_and_export(home: Path, gateway_url: str, entries: int) -> None:
    """`entries` records through the gateway's log writer, then its head signed into the journal outside the
    database (`.juki/checkpoints`), as the running gateway does every second."""
    database = Database(DatabaseConfig(url=gateway_url, migration_url=None))
    await database.connect()
    keys = SigningKeyFile(ensure_signing_key(home / "operation-log.key"))
    exporter = CheckpointExporter(home / CHECKPOINT_DIR, keys, interval=3600)
    log = OperationLog(database, keys, checkpoint_every=5, exporter=exporter)
    writer = asyncio.create_task(log.run())
    try:
        for index in range(entries):
            await log.write(_entry(index))
        assert await exporter.export() is not None
    finally:
        writer.cancel()
        await database.close()


async def insert(admin_url: str, *labels: str, marker: str = "") -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS drill_rows (label text PRIMARY KEY, value text)")
        for label in labels:
            await connection.execute("INSERT INTO drill_rows VALUES ($1, $2)", label, marker)
        await connection.execute("CHECKPOINT")  # the rows on disk, as a data file would hold them
    finally:
        await connection.close()


async def read_restored(home: Path) -> tuple[list[str], list[tuple[str, str, str]],
                                              subprocess.CompletedProcess[str]]:
    """The restored database's rows, its operation log's maintenance entries, and `juki audit verify` on it."""
    server = EmbeddedPostgres(home / "pgdata")
    url = await asyncio.to_thread(server.start)
    try:
        gateway = with_credentials(url, runtime_role("gateway"), role_passwords(home)[runtime_role("gateway")], "juki")
        verified = juki(home, "audit", "verify", JUKI_DATABASE_URL=gateway)
        connection = await asyncpg.connect(url)
        try:
            rows = [row["label"] for row in await connection.fetch("SELECT label FROM drill_rows ORDER BY label")]
        finally:
            await connection.close()
        connection = await asyncpg.connect(url, database="juki")
        try:
            log = [(row["method"], row["reason"], row["detail"]) for row in await connection.fetch(
                "SELECT method, reason, detail FROM gateway.operation_log WHERE method LIKE 'maintenance/%' "
                "ORDER BY sequence")]
        finally:
            await connection.close()
    finally:
        await asyncio.to_thread(server.stop)
    return rows, log, verified


@pytest.fixture(scope="module")
async def drill(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Drill]:
    home = tmp_path_factory.mktemp("backup-home")
    marker = f"JUKI-PLAINTEXT-{secrets.token_hex(8)}"
    suite = Suite(home)
    admin_url = await asyncio.to_thread(suite.start_database)
    try:
        urls = await prepare_database(admin_url, role_passwords(home))
        write_private_json(home / DATABASES, {service: {"url": db.url, "migration_url": db.migration_url}
                                              for service, db in urls.items()})
        before_backup = dt.datetime.now(dt.UTC)
        await insert(admin_url, "before-full", marker=marker)
        full = juki(home, "backup")
        assert full.returncode == 0, full.stderr
        await insert(admin_url, "before-incremental")
        incremental = juki(home, "backup", "--incremental")
        assert incremental.returncode == 0, incremental.stderr
        await insert(admin_url, "before-target")
        await asyncio.sleep(0.5)
        target = dt.datetime.now(dt.UTC)
        await asyncio.sleep(0.5)
        await insert(admin_url, "after-target")
        await log_and_export(home, urls["gateway"].url, 12)  # the journal now names records the restore loses
        while_running = juki(home, "restore", "--latest")
    finally:
        await asyncio.to_thread(suite.stop)  # a clean stop archives the last segment
    listing = juki(home, "backup", "list").stdout
    refused = juki(home, "restore", "--to", before_backup.isoformat())
    refused_later = juki(home, "restore", "--to", (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat())
    restored = juki(home, "restore", "--to", target.isoformat())
    rows, log, verified = await read_restored(home)
    # A target after every archived commit (the newest archived write): nothing to stop at, everything replayed.
    settings = BackupSettings.of(home)
    seal_archived(settings)
    window = Catalogue.read(settings).covered()
    assert window is not None
    after_last_commit = juki(home, "restore", "--to", window[1].isoformat())
    backup_verified, census_denied, damaged_backup = verify_backups(home)
    yield Drill(home, marker, target, before_backup, refused, refused_later, restored, listing, rows, log, verified,
                after_last_commit, while_running, backup_verified, census_denied, damaged_backup,
                list((home / "backup-staging").glob("backup-verify-*")))


def verify_backups(home: Path) -> tuple[subprocess.CompletedProcess[str], ...]:
    """`juki backup verify` on the backups as they are, on a census that promises a row the backup does not
    hold, and on a backup whose sealed data was damaged (each put back after)."""
    newest = Catalogue.read(BackupSettings.of(home)).backups[-1]
    verified = juki(home, "backup", "verify")
    info = home / "backups" / "base" / newest.id / "info.json"
    original = info.read_text()
    recorded = json.loads(original)
    after = recorded["census"]["gateway.operation_log"][1]
    recorded["census"]["gateway.operation_log"] = [after + 1, after + 2]
    info.write_text(json.dumps(recorded))
    census_denied = juki(home, "backup", "verify")
    info.write_text(original)
    sealed = home / "backups" / "base" / newest.id / "data.tar.gz.sealed"
    kept = sealed.read_bytes()
    sealed.write_bytes(kept[:4096] + bytes([kept[4096] ^ 1]) + kept[4097:])
    damaged = juki(home, "backup", "verify")
    sealed.write_bytes(kept)
    return verified, census_denied, damaged


async def test_restore_to_a_time_keeps_the_rows_written_before_it_and_none_after(drill: Drill) -> None:
    assert drill.restored.returncode == 0, drill.restored.stderr
    assert drill.rows == ["before-full", "before-incremental", "before-target"]


async def test_restore_combines_the_full_and_the_incremental_backup(drill: Drill) -> None:
    assert "-F + " in drill.restored.stdout and "-I" in drill.restored.stdout, drill.restored.stdout
    assert "incremental on" in drill.listing


async def test_the_damaged_cluster_is_kept_aside_not_deleted(drill: Drill) -> None:
    kept = next(path for path in drill.home.iterdir() if path.name.startswith("pgdata.damaged-")
                and str(path) in drill.restored.stdout)
    assert (kept / "PG_VERSION").is_file()


async def test_a_running_database_is_not_restored(drill: Drill) -> None:
    assert drill.while_running.returncode == 2
    assert "stop it first" in drill.while_running.stderr


async def test_a_target_before_the_oldest_backup_is_refused(drill: Drill) -> None:
    assert drill.refused.returncode == 2
    assert "before the oldest backup" in drill.refused.stderr


async def test_a_target_after_the_newest_archived_wal_is_refused(drill: Drill) -> None:
    assert drill.refused_later.returncode == 2
    assert "after the newest archived WAL" in drill.refused_later.stderr


async def test_backups_and_archived_wal_hold_no_plaintext(drill: Drill) -> None:
    """The marker is in the database's own files (so the search can find it), in none of the backup's."""
    def holding(root: Path) -> list[Path]:
        return [path for path in root.rglob("*") if path.is_file() and drill.marker.encode() in path.read_bytes()]

    kept = sorted(path for path in drill.home.iterdir() if path.name.startswith("pgdata.damaged-"))[0]
    assert holding(kept), "the search must find the marker in plaintext data files"
    backup_files = [path for path in (drill.home / "backups").rglob("*") if path.is_file()]
    assert any(path.parent.name == "wal" for path in backup_files) and any(
        path.name == "data.tar.gz.sealed" for path in backup_files)
    assert holding(drill.home / "backups") == []


async def test_backups_and_the_restore_are_in_the_operation_log(drill: Drill) -> None:
    actions = [(method, reason) for method, reason, _ in drill.log]
    assert actions.count(("maintenance/backup", "started")) == 2
    assert actions.count(("maintenance/backup", "done")) == 2
    assert all('"wal_archiving":"on"' in detail for method, reason, detail in drill.log
               if (method, reason) == ("maintenance/backup", "done"))
    assert actions[-2:] == [("maintenance/restore", "started"), ("maintenance/restore", "done")]
    restore_detail = drill.log[-1][2]
    assert drill.target.isoformat() in restore_detail and "pgdata.damaged-" in restore_detail


async def test_a_restore_says_the_log_is_behind_its_journal_and_audit_verify_reports_the_loss(drill: Drill) -> None:
    """The records written after T are gone with the restore; the journal of checkpoints outside the database
    still names them. The restore says so and signs its record into the chain: `juki audit verify` passes
    across the restore and reports the records lost with it rather than hiding them."""
    assert "the journal of checkpoints outside the database names record" in drill.restored.stdout
    assert drill.verified.returncode == 0, drill.verified.stderr
    assert "were lost with the restore" in drill.verified.stdout, drill.verified.stdout


async def test_a_target_after_the_last_archived_commit_restores_everything_archived(drill: Drill) -> None:
    """PostgreSQL refuses to promote when no commit after the target ends recovery; the state at the end of the
    archive is then the state at the target, and the restore replays to it and says so."""
    assert drill.after_last_commit.returncode == 0, drill.after_last_commit.stderr
    assert "every archived commit was before the target" in drill.after_last_commit.stdout


async def test_backup_verify_restores_the_newest_backup_and_finds_what_it_recorded(drill: Drill) -> None:
    """Issue 20, backup verify: the newest backup (an incremental on a full) is rebuilt in a scratch
    directory, checked by pg_verifybackup, its row counts held to the census taken with it and its operation
    log's chain verified; the scratch copy (the registers in plaintext) is gone afterwards."""
    result = drill.backup_verified
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pg_verifybackup: " in result.stdout and " + " in result.stdout  # the full and the incremental
    assert "table(s) as the census says" in result.stdout and "operation log: intact" in result.stdout
    assert "verified: no difference" in result.stdout
    assert drill.scratch_left == []


async def test_backup_verify_exits_non_zero_when_the_restored_rows_differ_from_the_census(drill: Drill) -> None:
    assert drill.census_denied.returncode == 1, drill.census_denied.stdout
    assert "DIFFERENCE gateway.operation_log" in drill.census_denied.stdout
    assert "1 difference(s)" in drill.census_denied.stderr


async def test_backup_verify_exits_non_zero_on_a_damaged_backup(drill: Drill) -> None:
    assert drill.damaged_backup.returncode != 0
    assert "verified: no difference" not in drill.damaged_backup.stdout
