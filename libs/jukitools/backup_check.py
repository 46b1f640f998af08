"""`juki backup verify` (issue 20): the newest backup restores, and holds what it should.

A backup that was never restored is a hope, not a backup. `verify` rebuilds the newest backup's chain into
a scratch directory (decrypted, each part checked by `pg_verifybackup`, combined with `pg_combinebackup`),
starts it on a private socket with WAL archiving off (a scratch server must never write into the real
archive), and compares it with what the backup recorded when it was taken:

- row counts: `juki backup` counts every table of the suite's database just before and just after
  `pg_basebackup` (the census, in the backup's `info.json`: counts only, no data). The restored copy is the
  state at the backup's end, between the two: a table that did not change during the backup must have the
  same count; an append-only table (the operation log, the registers' histories) a count within the two;
- the operation log: its hash chain and signed checkpoints verify with the public keyring, and it holds
  every checkpoint the journal outside the database signed before the backup started.

Any difference exits non-zero. The scratch copy holds the registers in plaintext: it is removed whatever
happens. The check reads no record's content: counts, hashes and signatures only.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jukilib.config import UsageError
from jukitools import backup as backups

SCRATCH_PORT = 54329
"""The scratch server's port: it listens on a private socket directory only, so any number serves."""

APPEND_ONLY = ("gateway.operation_log", "identity.person_version", "annex.person_version")
"""Tables that only grow while the suite runs (retention purges run as logged maintenance, not during a
backup): their restored count lies between the census before and after the backup."""

@dataclass(frozen=True)
class Difference:
    table: str
    restored: int
    before: int
    after: int

    def line(self) -> str:
        return (f"{self.table}: {self.restored} row(s) restored, {self.before} counted before the backup and "
                f"{self.after} after")


def compare_census(recorded: dict[str, list[int]], restored: dict[str, int]) -> tuple[list[Difference], int]:
    """The tables whose restored count the census rules out, and how many tables it vouched for."""
    differences, held = [], 0
    for table, (before, after) in sorted(recorded.items()):
        count = restored.get(table)
        low, high = min(before, after), max(before, after)
        if count is None:
            differences.append(Difference(table, -1, before, after))
        elif before == after or table in APPEND_ONLY:
            if low <= count <= high:
                held += 1
            else:
                differences.append(Difference(table, count, before, after))
    for table in sorted(restored.keys() - recorded.keys()):
        differences.append(Difference(table, restored[table], 0, 0))
    return differences, held


def rebuild(settings: backups.BackupSettings, scratch: Path, server_user: str | None) -> tuple[backups.Backup, Path]:
    """The newest backup's chain decrypted into `scratch`, each part verified by `pg_verifybackup`, combined;
    ready to start (crash recovery from its backup label replays the WAL it carries to its end)."""
    catalogue = backups.Catalogue.read(settings)
    if not catalogue.backups:
        raise UsageError(f"no base backup in {settings.directory}: nothing to verify")
    newest = catalogue.backups[-1]
    chain = catalogue.chain(newest)
    key = settings.key()
    parts = []
    for backup in chain:
        part = scratch / backup.id
        backups.unseal_tree(settings.directory / backups.BASE_DIR / backup.id / backups.DATA, part, key)
        # An incremental part cannot be checked against WAL alone (-n); the full one is checked with its WAL.
        backups.run_tool([backups.pg_bin("pg_verifybackup"), "-q", *(["-n"] if backup.parent else []), str(part)],
                         f"pg_verifybackup {backup.id}")
        parts.append(part)
    data = parts[0]
    if len(parts) > 1:
        data = scratch / "combined"
        backups.run_tool([backups.pg_bin("pg_combinebackup"), "--no-sync", "-o", str(data), *map(str, parts)],
                         "pg_combinebackup")
    (data / "postmaster.pid").unlink(missing_ok=True)
    data.chmod(0o700)
    if server_user is not None:
        backups.chown_tree(scratch, server_user)
    return newest, data


@contextmanager
def scratch_server(data: Path, server_user: str | None) -> Iterator[Path]:
    """The rebuilt copy running on a private socket only, WAL archiving and summaries off; yields the socket
    directory, stops the server after."""
    with backups.socket_dir(server_user) as sockets:
        backups.run_tool([backups.pg_bin("pg_ctl"), "-D", str(data), "-w", "-t", "3600", "-o", '-h ""',
                          "-o", f"-k {sockets}", "-o", f"-p {SCRATCH_PORT}",
                          "-o", "-c archive_mode=off", "-o", "-c summarize_wal=off",
                          "-l", str(data.parent / "verify.log"), "start"],
                         "pg_ctl start (verify)", user=server_user, timeout=3600)
        try:
            yield sockets
        finally:
            backups.run_tool([backups.pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                             "pg_ctl stop (verify)", user=server_user)


def scratch_directory(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="backup-verify-", dir=parent))


def remove_scratch(scratch: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)


def heads_before(heads: Sequence[Any], moment: dt.datetime) -> list[Any]:
    """The journal's checkpoints signed before `moment` (the backup's start): the records they name were
    committed before the backup began, so the backup must hold them exactly."""
    return [head for head in heads if head.signed_at <= moment]


@dataclass
class Report:
    """What `verify` found; `ok` only when every check held."""

    backup: str
    lines: list[str]
    differences: int = 0

    @property
    def ok(self) -> bool:
        return self.differences == 0

    def fail(self, line: str) -> None:
        self.lines.append(f"DIFFERENCE {line}")
        self.differences += 1


async def check_restored(sockets: Path, backup: backups.Backup, keyring: Any, journal: Sequence[Any],
                         report: Report) -> None:
    """Row counts against the census, and the operation log's chain against the keyring and the journal's
    checkpoints signed before the backup started."""
    import asyncpg

    from juki_services.gateway.chain import verify

    connection = await asyncpg.connect(host=str(sockets), port=SCRATCH_PORT, user="postgres", database="juki")
    try:
        tables = [row[0] for row in await connection.fetch(backups.TABLES_SQL)]
        restored = ({row["name"]: row["rows"] for row in await connection.fetch(backups.census_sql(tables))}
                    if tables else {})
        _compare(backup, restored, report)
        await connection.execute("SET search_path TO gateway")
        verdict = await verify(connection, keyring, heads_before(journal, backup.started_at))
    finally:
        await connection.close()
    if verdict.ok:
        report.lines.append(f"operation log: intact, {verdict.records} record(s), {verdict.checkpoints} signed "
                            f"checkpoint(s), held to {verdict.external} checkpoint(s) of the journal outside")
    else:
        report.fail(f"operation log broken at sequence {verdict.first_bad_sequence}: {verdict.problem}")


def _compare(backup: backups.Backup, restored: dict[str, int], report: Report) -> None:
    if backup.census is None:
        report.lines.append("row counts: no census was recorded with this backup (its role could not count): "
                            f"{len(restored)} table(s) restored, not compared")
        return
    differences, held = compare_census(backup.census, restored)
    changed = len(backup.census) - held - len(differences)
    report.lines.append(f"row counts: {held} table(s) as the census says"
                        + (f", {changed} changed during the backup (not compared)" if changed else ""))
    for difference in differences:
        report.fail(difference.line())
