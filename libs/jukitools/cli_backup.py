"""`juki backup [--incremental]`, `juki backup list` and `juki restore --to TIME | --latest` (issue 20).

Both are maintenance actions in the operation log (`jukitools.maintenance_log.logged_action`: who, when,
which target). A backup is logged before and after, in the log of the database it backs up. A restore
cannot write its intent first (the database it rebuilds is stopped, and may be gone): it is recorded once
the restored database runs, as the first entry of the restored chain, naming the target, the backup, the
cluster kept aside and where the chain ends compared with the journal of checkpoints kept outside the
database. A restore to an earlier time leaves that journal ahead of the log. The restore's first record
carries a statement signed with the operation log's key (`chain.RestoreStatement`: where the restored log
ends and how far the journal reached), so the chain continues across the restore: `juki audit verify` passes
and reports the records lost with it, which the restore prints first. A log shortened without that key still
fails verification.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import json
import os
import pwd
import sys
import time
from pathlib import Path
from typing import Any

from juki_services.gateway.chain import RestoreStatement, SigningKey
from jukilib.config import UsageError
from jukilib.db.embedded import EmbeddedPostgres, running_postmaster
from jukitools import backup as backups
from jukitools import backup_check as check
from jukitools.local import CHECKPOINT_DIR, DATABASES, ENDPOINTS, LocalSuite
from jukitools.maintenance_log import logged_action
from jukitools.runner import connected
from jukitools.standby import after_restore, primary_dir


def add_parsers(commands: Any) -> None:
    backup = commands.add_parser(
        "backup", help="a verified, sealed base backup of the suite's PostgreSQL (pg_basebackup, pg_verifybackup) "
                       "into JUKI_BACKUP_DIR (else .juki/backups), then the retention setting; `list`: the catalogue")
    backup.add_argument("action", nargs="?", choices=("list", "verify"), default=None,
                        help="list: the backups, the archived WAL and the window a restore can reach; verify: "
                             "restore the newest backup into a scratch directory and check pg_verifybackup, the "
                             "row counts recorded with it and the operation log's chain (exit 1 on any "
                             "difference)")
    backup.add_argument("--incremental", action="store_true",
                        help="an incremental backup on the newest one (pg_basebackup --incremental; the restore "
                             "combines the chain with pg_combinebackup)")
    restore = commands.add_parser(
        "restore", help="rebuild the STOPPED suite's database to a point in time from the backups and the archived "
                        "WAL; the damaged cluster is renamed, never deleted")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", default="", help="the point in time, ISO 8601 (e.g. 2026-12-06T21:30:00+09:00; "
                                                 "without an offset: this machine's local time)")
    target.add_argument("--latest", action="store_true", help="as far as the archived WAL reaches")


async def backup_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    settings = backups.BackupSettings.of(suite.home)
    if args.action == "list":
        return list_backups(settings)
    if args.action == "verify":
        return await verify_backup(suite, settings)
    kind = "incremental" if args.incremental else "full"
    async with _Database(suite) as (url, log_suite), \
            logged_action(log_suite, "backup", target=str(settings.directory), kind=kind) as outcome:
        taken = await asyncio.to_thread(backups.take_backup, settings, url, suite.home / "backup-staging",
                                        incremental=args.incremental)
        outcome.detail.update(backup=taken.id, sealed_bytes=taken.sealed_bytes, seconds=taken.seconds,
                              wal_archiving=await asyncio.to_thread(_archive_mode, url))
        pruned = await asyncio.to_thread(backups.prune, settings)  # retention: a maintenance action too
        outcome.detail["pruned"] = pruned
    print(f"backup {taken.id} ({taken.kind}{', on ' + taken.parent if taken.parent else ''}): verified, "
          f"{taken.sealed_bytes / 1e6:.1f} MB sealed in {taken.seconds:.1f} s; restorable from "
          f"{taken.consistent_at.isoformat(timespec='seconds')}")
    if pruned:
        print(f"retention ({settings.retention} full backups): removed {', '.join(pruned)}")
    if outcome.detail["wal_archiving"] != "on":
        print("WAL archiving is not on (archive_mode): this backup restores to its own end only, not to a later "
              "point in time", file=sys.stderr)
    return 0


async def verify_backup(suite: LocalSuite, settings: backups.BackupSettings) -> int:
    """`juki backup verify`: a maintenance action (it opens the sealed backups), logged before and after."""
    from juki_services.gateway.chain import PublicKeyring
    from juki_services.gateway.checkpoints import read_journal
    from jukitools.cli_audit import journal_path, keyring_file

    keyring = PublicKeyring.load(keyring_file(suite, ""))
    journal = journal_path(suite, "")
    heads = read_journal(journal) if journal is not None else []
    scratch = check.scratch_directory(suite.home / "backup-staging")
    user = _server_user(suite.home / "pgdata")
    try:
        async with _Database(suite) as (_, log_suite), \
                logged_action(log_suite, "backup-verify", target=str(settings.directory)) as outcome:
            started = time.monotonic()
            backup, data = await asyncio.to_thread(check.rebuild, settings, scratch, user)
            report = check.Report(backup.id, [f"pg_verifybackup: {' + '.join(backup_ids(settings, backup))} verified"])
            with check.scratch_server(data, user) as sockets:
                await check.check_restored(sockets, backup, keyring, heads, report)
            outcome.detail.update(backup=backup.id, differences=report.differences,
                                  seconds=round(time.monotonic() - started, 1))
    finally:
        check.remove_scratch(scratch)  # the registers in plaintext: never left behind
    print(f"backup {report.backup}, restored into a scratch directory in {outcome.detail['seconds']} s:")
    for line in report.lines:
        print(f"  {line}")
    print("verified: no difference" if report.ok else f"{report.differences} difference(s)",
          file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def backup_ids(settings: backups.BackupSettings, backup: backups.Backup) -> list[str]:
    return [part.id for part in backups.Catalogue.read(settings).chain(backup)]


def _archive_mode(url: str) -> str:
    """The server's `archive_mode`, or "unknown" when the backup's connection cannot ask (a replication-only
    role)."""
    try:
        return backups.run_tool([backups.pg_bin("psql"), url, "-Atqc", "SHOW archive_mode"], "psql").strip()
    except RuntimeError:
        return "unknown"


def list_backups(settings: backups.BackupSettings) -> int:
    catalogue = backups.Catalogue.read(settings)
    if not catalogue.backups:
        print(f"no backups in {settings.directory}")
        return 0
    for backup in catalogue.backups:
        on = f" on {backup.parent}" if backup.parent else ""
        print(f"{backup.id}  {backup.kind}{on}  consistent {backup.consistent_at.isoformat(timespec='seconds')}  "
              f"{backup.sealed_bytes / 1e6:.1f} MB  {backup.seconds:.1f} s")
    if catalogue.segments:
        print(f"archived WAL: {len(catalogue.segments)} file(s), "
              f"{catalogue.segments[0]} … {catalogue.segments[-1]}")
    else:
        print("archived WAL: none (is archiving on? `juki up` turns it on unless JUKI_WAL_ARCHIVE=off)")
    window = catalogue.covered()
    if window is not None:
        first, last = (moment.isoformat(timespec="seconds") for moment in window)
        print(f"a restore can reach {first} … {last}")
    return 0


async def restore_command(args: argparse.Namespace) -> int:
    suite = LocalSuite.of(args.home)
    settings = backups.BackupSettings.of(suite.home)
    if suite.has_explicit("JUKI_DATABASE_URL"):
        raise UsageError("JUKI_DATABASE_URL names an external PostgreSQL: restore it with its own tools "
                         "(README, production guide); `juki restore` rebuilds the embedded database")
    pgdata = primary_dir(suite.home)  # `pgdata`, or the standby's directory after a failover
    if (suite.home / ENDPOINTS).exists() or running_postmaster(pgdata) is not None:
        raise UsageError("the suite is running: stop it first (a restore rebuilds a stopped database)")
    target = None if args.latest else parse_time(args.to)
    # The restore signs its record in the operation log (`RestoreStatement`): without the key, refuse before
    # touching anything rather than leave a restored log that verification cannot tell from a shortened one.
    signing_key = SigningKey.load(suite.file("JUKI_OPERATION_LOG_KEY", "operation-log.key"))
    # The lock every user of the embedded server holds shared (jukilib.db.embedded): held exclusively, no
    # `juki up` or second restore starts on the data directory while it is rebuilt.
    with pgdata.with_name(pgdata.name + ".lock").open("a") as users:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError("the database is in use (a suite, a backup or another restore): stop it first") from None
        restored = await asyncio.to_thread(backups.restore, settings, pgdata, target, _server_user(pgdata))
    kept = (f"the damaged cluster is kept as {restored.damaged}" if restored.damaged.exists()
            else "there was no cluster to keep aside")
    if (standby_kept := after_restore(suite.home)) is not None:  # its history is not the restored primary's
        print(f"the standby was kept aside as {standby_kept}; `juki up --standby` makes a new one")
    print(f"restored from {' + '.join(restored.chain)} to {_reached(restored)} in {restored.seconds:.1f} s; {kept}")
    if restored.target is not None and restored.reached == "end of archive":
        print("every archived commit was before the target: replayed to the end of the archived WAL, which is the "
              "state at the target")
    async with _Database(suite) as (_, log_suite):
        log_end, head, journal_end = await _log_and_journal(suite, log_suite)
        if journal_end is not None and journal_end > log_end:
            print(f"the operation log now ends at record {log_end}; the journal of checkpoints outside the database "
                  f"names record {journal_end}: the records after the target were lost with the restore, and "
                  "`juki audit verify` reports it (keep the journal and the damaged cluster as evidence)")
        statement = RestoreStatement.signed(signing_key, log_end, head, journal_end or 0, dt.datetime.now(dt.UTC))
        async with logged_action(log_suite, "restore", target=_reached(restored), backup=restored.backup,
                                 chain=restored.chain, reached=restored.reached,
                                 damaged_cluster=restored.damaged.name if restored.damaged.exists() else None,
                                 seconds=restored.seconds, restore_statement=statement.detail()):
            pass
    return 0


def parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--to: not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _reached(restored: backups.Restored) -> str:
    return restored.target.isoformat() if restored.target is not None else "the end of the archived WAL"


def _server_user(pgdata: Path) -> str | None:
    """Who the server runs as: the owner of its data directory when that is not us (the wheel runs it as
    its own user when started by root)."""
    if pgdata.exists():
        owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
        return owner if pgdata.stat().st_uid != os.geteuid() else None
    return "embedded_postgres" if os.geteuid() == 0 else None


class _Database:
    """The suite's database for a backup or the record of a restore: the server of
    JUKI_BACKUP_DATABASE_URL (a replication-capable role of an external PostgreSQL), else the embedded one
    (attached to, or started and stopped again); with the suite that finds the operation log."""

    def __init__(self, suite: LocalSuite) -> None:
        self._suite = suite
        self._embedded: EmbeddedPostgres | None = None

    async def __aenter__(self) -> tuple[str, LocalSuite]:
        external = self._suite.environ.get("JUKI_BACKUP_DATABASE_URL", "").strip()
        if external:
            return external, self._suite
        pgdata = primary_dir(self._suite.home)
        if not (pgdata / "PG_VERSION").is_file():
            raise UsageError(f"no embedded database in {pgdata} and JUKI_BACKUP_DATABASE_URL is not set")
        self._embedded = EmbeddedPostgres(pgdata)
        admin_url = await asyncio.to_thread(self._embedded.start)
        return admin_url, _log_suite(self._suite, admin_url)

    async def __aexit__(self, *_: object) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)


def _log_suite(suite: LocalSuite, admin_url: str) -> LocalSuite:
    """The running suite's settings; with the suite stopped, the gateway's runtime role on `admin_url`'s
    server (its password from `db-credentials.json`), so that the action is logged all the same."""
    from jukilib.db.bootstrap import runtime_role, with_credentials

    if suite.has_explicit("JUKI_OPERATION_LOG_DATABASE_URL") or (suite.home / DATABASES).is_file():
        return suite
    credentials = suite.home / "db-credentials.json"
    if not credentials.is_file():
        return suite  # logged_action names the missing setting
    password = json.loads(credentials.read_text(encoding="utf-8"))[runtime_role("gateway")]
    url = with_credentials(admin_url, runtime_role("gateway"), password, "juki")
    return LocalSuite(suite.home, {**suite.environ, "JUKI_OPERATION_LOG_DATABASE_URL": url})


async def _log_and_journal(suite: LocalSuite, log_suite: LocalSuite) -> tuple[int, bytes, int | None]:
    """The restored log's last sequence and hash, and the newest sequence the external journal names (None:
    none)."""
    from juki_services.gateway.chain import GENESIS
    from juki_services.gateway.checkpoints import read_journal

    async with connected(log_suite.operation_log_url(), "gateway") as connection:
        last = await connection.fetchrow(
            "SELECT sequence, entry_hash FROM operation_log ORDER BY sequence DESC LIMIT 1")
    explicit = suite.environ.get("JUKI_CHECKPOINT_DIR", "").strip()
    journal = Path(explicit) if explicit else suite.home / CHECKPOINT_DIR
    heads = read_journal(journal) if journal.exists() else []
    newest = max((head.sequence for head in heads), default=None)
    if last is None:
        return 0, GENESIS, newest
    return int(last["sequence"]), bytes(last["entry_hash"]), newest
