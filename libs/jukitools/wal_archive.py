"""Continuous WAL archiving for juki: PostgreSQL's `archive_command` into a spool, sealed from there.

PostgreSQL archives each completed segment (and timeline history file) with

    archive_command = 'test ! -f S/%f && cp --preserve=timestamps %p S/%f.part && sync S/%f.part
                       && mv S/%f.part S/%f || cmp -s %p S/%f'

into a spool `S` beside the data directory (the database's own disk, which holds the same plaintext in
`pg_wal` already). Only the standard tools run as the server's user: no interpreter, no key. `seal_spool`,
run by `juki up` every few seconds, by its stop, and by `juki backup` / `juki restore`, compresses (gzip,
level 1: a segment switched by `archive_timeout` is mostly zeros) and seals each spooled file under the
backup key into `<backup dir>/wal/<name>` (temporary file, fsync, rename), with the time the server last
wrote it as the header's authenticated number (`juki restore` refuses a target after the newest one), and
then removes it from the spool: the plaintext never reaches the backup directory. PostgreSQL keeps a
segment in `pg_wal` until the archive command succeeds, so nothing is lost while the spool's disk is full;
a file sealed already is dropped from the spool only if its content is the same (after a crash the server
may archive a segment twice).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import shlex
import shutil
from pathlib import Path

from jukitools.backup_crypto import BackupKey, OpeningReader, SealingWriter

WAL_DIR = "wal"
SPOOL_DIR = "wal-spool"
LOCK = ".seal.lock"


def archive_command(spool: Path) -> str:
    """The server's archive command into `spool` (idempotent: an identical file already there is success)."""
    part, done = shlex.quote(f"{spool}/%f.part"), shlex.quote(f"{spool}/%f")
    return (f"test ! -f {done} && cp --preserve=timestamps %p {part} && sync {part} && mv {part} {done}"
            f" || cmp -s %p {done}")


def seal_spool(spool: Path, backup_dir: Path, key: BackupKey) -> list[str]:
    """Seal every completed file of `spool` into the backup directory; returns their names. A file that the
    archive holds with a different content stays in the spool and is reported by raising ValueError."""
    directory = backup_dir / WAL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    sealed = []
    # One sealer at a time (`juki up` and a `juki backup` may both seal): a lock the kernel drops however
    # the holder ends.
    with (directory / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for source in sorted(spool.glob("*")) if spool.is_dir() else []:
            if source.name.endswith(".part") or source.name.startswith("."):
                continue
            target = directory / source.name
            if target.exists():
                if _digest_of_sealed(target, key) != _digest(source):
                    raise ValueError(f"{source.name}: archived already with another content; left in {spool}")
            else:
                _seal(source, target, key)
                sealed.append(source.name)
            source.unlink()
        if sealed:
            _fsync_directory(directory)
    return sealed


def unseal(source: Path, destination: Path, key: BackupKey) -> None:
    """A sealed WAL file back as PostgreSQL wrote it (for recovery)."""
    with source.open("rb") as sealed, destination.open("wb") as plain, \
            gzip.GzipFile(fileobj=OpeningReader(sealed, key, source.name), mode="rb") as unzipped:
        shutil.copyfileobj(unzipped, plain, 1 << 20)


def _seal(source: Path, target: Path, key: BackupKey) -> None:
    written_ms = int(source.stat().st_mtime * 1000)
    temporary = target.with_name(f".{target.name}.partial")
    with temporary.open("wb") as handle:
        sealer = SealingWriter(handle, key, written_ms)
        with source.open("rb") as plain, \
                gzip.GzipFile(fileobj=sealer, mode="wb", compresslevel=1, mtime=0) as zipped:
            shutil.copyfileobj(plain, zipped, 1 << 20)
        sealer.close()
        os.fsync(handle.fileno())
    temporary.replace(target)


def _digest(path: Path) -> bytes:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()


def _digest_of_sealed(path: Path, key: BackupKey) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as sealed, gzip.GzipFile(fileobj=OpeningReader(sealed, key, path.name),
                                                  mode="rb") as unzipped:
        while block := unzipped.read(1 << 20):
            digest.update(block)
    return digest.digest()


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
