"""Signed checkpoints of the operation log kept outside the database (the external journal).

The database cannot vouch for its own end: its owner could delete the newest records together with the
checkpoints that name them. So, every `interval` seconds when the log has grown, the gateway signs the
chain head it committed last and appends it, one JSON line, to a journal file in a directory that is not
the database's (`JUKI_CHECKPOINT_DIR`, opened append-only and fsync'ed; an auditor copies it as it is),
and hands the same line to an optional external sink (`JUKI_CHECKPOINT_SINK_COMMAND`, run with the line on
its standard input, as PostgreSQL runs an `archive_command`: a syslog forwarder, a WORM store's client).
`juki audit verify` then holds the chain to the newest line it is given. What can still vanish unseen is
what was committed after the newest exported head: at most `interval` seconds of records (and the batch in
flight at a crash). A line holds a sequence number, a hash, a key id, a time and a signature: no personal
data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shlex
from pathlib import Path

from juki_services.gateway.chain import SignedHead, SigningKeyFile
from jukilib.supervision import Heartbeat

JOURNAL_NAME = "operation-log-checkpoints.jsonl"
SINK_TIMEOUT = 10.0
logger = logging.getLogger(__name__)


class JournalError(Exception):
    """A journal line that cannot be read; the message names the file and line."""


def append_to_journal(directory: Path, head: SignedHead) -> None:
    """Append `head` to the journal in `directory`, durably (O_APPEND, fsync) before returning."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / JOURNAL_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(descriptor, (head.line() + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_journal(path: Path) -> list[SignedHead]:
    """Every signed head of a journal file, or of every `*.jsonl` file of a directory (copies of several
    gateways' journals may be put side by side), in order of sequence."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    heads = []
    for file in files:
        for number, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                heads.append(SignedHead.from_line(text))
            except (ValueError, KeyError, TypeError) as error:
                raise JournalError(f"{file}:{number}: not a signed checkpoint ({type(error).__name__})") from None
    return sorted(heads, key=lambda head: head.sequence)


class CheckpointExporter:
    """Signs the newest committed chain head into the journal (and the sink) every `interval` seconds."""

    def __init__(self, directory: Path, keys: SigningKeyFile, *, interval: float = 1.0,
                 sink_command: str = "") -> None:
        self._directory = directory
        self._keys = keys
        self._interval = interval
        self._sink = shlex.split(sink_command)
        self._head: tuple[int, bytes] | None = None
        self._exported = 0
        self.failures = 0
        """Exports that could not be written to the journal (each is tried again at the next interval)."""

    def note_head(self, sequence: int, entry_hash: bytes) -> None:
        """The writer committed up to `sequence` (cheap: called after every group commit)."""
        if self._head is None or sequence > self._head[0]:
            self._head = (sequence, entry_hash)

    async def run(self, heartbeat: Heartbeat) -> None:
        while True:
            heartbeat.beat()
            await asyncio.sleep(self._interval)
            await self.export()

    async def export(self) -> SignedHead | None:
        """Sign and write the newest head if it was not exported yet; the head written, if any."""
        if self._head is None or self._head[0] <= self._exported:
            return None
        sequence, entry_hash = self._head
        key, now = self._keys.current(), dt.datetime.now(dt.UTC)
        head = SignedHead(sequence, entry_hash, key.key_id, key.sign(sequence, entry_hash, now), now)
        try:
            await asyncio.to_thread(append_to_journal, self._directory, head)
        except OSError as error:
            self.failures += 1
            logger.error("operation-log checkpoint not written to the external journal",
                         extra={"sequence": sequence, "error": type(error).__name__})
            return None
        self._exported = sequence
        if self._sink:
            await self._send(head)
        return head

    async def _send(self, head: SignedHead) -> None:
        try:
            process = await asyncio.create_subprocess_exec(*self._sink, stdin=asyncio.subprocess.PIPE,
                                                           stdout=asyncio.subprocess.DEVNULL)
        except OSError as error:
            logger.error("operation-log checkpoint sink cannot be started",
                         extra={"sequence": head.sequence, "error": type(error).__name__})
            return
        try:
            await asyncio.wait_for(process.communicate((head.line() + "\n").encode()), SINK_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            logger.error("operation-log checkpoint sink timed out", extra={"sequence": head.sequence})
            return
        if process.returncode != 0:
            logger.error("operation-log checkpoint sink refused the checkpoint",
                         extra={"sequence": head.sequence, "exit_code": process.returncode})
