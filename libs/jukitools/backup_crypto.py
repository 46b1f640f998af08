"""Backups at rest: streaming AES-256-GCM under the prefecture's backup key (住基法 30-6 ④, 30-41 ④).

A backup file is a 32-byte header, then chunks. The header holds a magic, the key's id (so that a wrong
key is named, not mistaken for damage), a random nonce prefix and one authenticated number the reader may
need before decrypting (for a WAL segment: when it was last written, which `juki restore` uses to know how
far the archive reaches). Each chunk is up to 1 MiB of plaintext, sealed with the nonce prefix and its
counter; its length word carries a "last chunk" bit, and the header, the counter and that bit are the
chunk's associated data: a reordered, truncated, extended or edited file fails to decrypt. The key (32
random bytes, base64 in `JUKI_BACKUP_KEY_FILE`) is never written into the backup directory.

Only `cryptography` is imported here: PostgreSQL runs the WAL archiver (`jukitools.wal_archive`) once per
segment, and its start-up time counts.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"JUKIBAK1"
HEADER = struct.Struct(">8s8s8sQ")  # magic, key id, nonce prefix, authenticated number
CHUNK = 1 << 20
LAST = 1 << 31
TAG = 16


class BackupKeyError(ValueError):
    """The key is missing, malformed or not the one a file was sealed with; the message names the file."""


class BackupKey:
    """The prefecture's backup key: 32 bytes, identified by the first 8 bytes of its SHA-256."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise BackupKeyError("a backup key is 32 bytes")
        self._aead = AESGCM(secret)
        self.key_id = hashlib.sha256(secret).digest()[:8]

    @classmethod
    def load(cls, path: Path) -> BackupKey:
        try:
            return cls(base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True))
        except (OSError, ValueError, BackupKeyError) as error:
            raise BackupKeyError(f"{path}: not a backup key ({type(error).__name__})") from None

    @staticmethod
    def create(path: Path) -> Path:
        """A new random key at `path` (0600); an existing file is kept as it is."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        return path

    def seal(self, nonce: bytes, data: bytes, associated: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, associated)

    def open(self, nonce: bytes, data: bytes, associated: bytes) -> bytes:
        return self._aead.decrypt(nonce, data, associated)


class SealingWriter:
    """A write-only file object that seals what it is given into `target`; `close()` writes the last chunk."""

    def __init__(self, target: BinaryIO, key: BackupKey, number: int = 0) -> None:
        self._target, self._key = target, key
        self._header = HEADER.pack(MAGIC, key.key_id, os.urandom(8), number)
        self._buffer = bytearray()
        self._counter = 0
        self.closed = False
        target.write(self._header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        while len(self._buffer) > CHUNK:
            self._chunk(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        if not self.closed:
            self._chunk(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._target.flush()
            self.closed = True

    def _chunk(self, data: bytes, *, last: bool) -> None:
        flag = LAST if last else 0
        nonce = self._header[16:24] + struct.pack(">I", self._counter)
        sealed = self._key.seal(nonce, data, self._header + struct.pack(">IB", self._counter, int(last)))
        self._target.write(struct.pack(">I", len(data) | flag) + sealed)
        self._counter += 1


class OpeningReader:
    """A read-only file object over a sealed `source`; raises BackupKeyError on a wrong key and ValueError
    on any damage (edited, cut short, reordered)."""

    def __init__(self, source: BinaryIO, key: BackupKey, name: str = "") -> None:
        self._source, self._key = source, key
        self._header = source.read(HEADER.size)
        _, key_id, _, self.number = read_header(self._header, name)
        if key_id != key.key_id:
            raise BackupKeyError(f"{name}: sealed with another backup key (id {key_id.hex()}, "
                                 f"given {key.key_id.hex()})")
        self._buffer = b""
        self._counter = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            self._next_chunk()
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("a sealed file is read from start to end")

    def _next_chunk(self) -> None:
        word = self._source.read(4)
        if len(word) != 4:
            raise ValueError("sealed file cut short")
        (length,) = struct.unpack(">I", word)
        last = bool(length & LAST)
        length &= ~LAST
        sealed = self._source.read(length + TAG)
        if len(sealed) != length + TAG:
            raise ValueError("sealed file cut short")
        nonce = self._header[16:24] + struct.pack(">I", self._counter)
        try:
            self._buffer += self._key.open(nonce, sealed, self._header + struct.pack(">IB", self._counter, int(last)))
        except Exception:  # cryptography's InvalidTag: the file or its order was changed
            raise ValueError("sealed file does not authenticate") from None
        self._counter += 1
        if last:
            if self._source.read(1):
                raise ValueError("data after the last sealed chunk")
            self._done = True


def read_header(header: bytes, name: str = "") -> tuple[bytes, bytes, bytes, int]:
    """The header's magic, key id, nonce prefix and number (authenticated only once a chunk is opened)."""
    if len(header) != HEADER.size or not header.startswith(MAGIC):
        raise ValueError(f"{name}: not a sealed juki backup file")
    magic, key_id, prefix, number = HEADER.unpack(header)
    return magic, key_id, prefix, number


def header_number(path: Path) -> int:
    """The number in `path`'s header without decrypting it (for listings; the restore authenticates it)."""
    with path.open("rb") as handle:
        return read_header(handle.read(HEADER.size), path.name)[3]
