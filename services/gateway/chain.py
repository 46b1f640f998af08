"""The operation log's hash chain and signed checkpoints, and their verification (`juki audit verify`).

Each record's hash is SHA-256 over the previous record's hash and a canonical JSON form of the
record (sorted keys, UTC microsecond timestamps). Sequences start at 1 without gaps. Every N records
or T seconds the writer signs the chain head with the prefecture's operation-log key (Ed25519).
An edited record breaks its own hash, a deleted one leaves a gap, an inserted one breaks the link of
the next; rewriting the whole tail after a checkpoint breaks the checkpoint's signature or hash.

Whoever owns the database can still delete the newest records with the checkpoints that name them, or
rewrite a tail and drop its checkpoints: the database cannot vouch for its own end. So the head is also
signed, every second or so, into a journal outside the database (`juki_services.gateway.checkpoints`), and
`verify` holds the chain to the newest checkpoint of that journal: a log that ends before it, or differs
from it, is reported. Checkpoints name the key that signed them and when; `PublicKeyring` says which keys
were valid when, so the signing key can be rotated (`juki audit rotate-key`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = b"\x00" * 32
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
HASHED_FIELDS = ("sequence", "time", "request_id", "trace_id", "organization", "operator", "method", "purpose",
                 "legal_basis", "case_reference", "decision", "reason", "status", "resident_codes",
                 "disclosed_fields")
# Hashed only when not empty: the column came later, and rows written before it keep their hashes.
HASHED_WHEN_PRESENT = ("disclosed_versions", "detail")


def _canonical_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, list | tuple):
        return list(value)
    return value


def entry_hash(previous: bytes, record: Mapping[str, Any] | asyncpg.Record) -> bytes:
    """The chain hash of `record` (a row or its values) after `previous`."""
    hashed = {k: _canonical_value(record[k]) for k in HASHED_FIELDS}
    hashed.update((k, _canonical_value(record[k])) for k in HASHED_WHEN_PRESENT if record[k])
    return hashlib.sha256(previous + canonical_json(hashed)).digest()


def canonical_json(hashed: dict[str, Any]) -> bytes:
    """`json.dumps(hashed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))` in UTF-8, the form
    every record was hashed in. orjson writes exactly these bytes for the values a record holds (text,
    64-bit integers, lists of text; checked for every code point and by a property test) several times
    faster, which the gateway's group commit pays per call; anything else goes the standard way."""
    try:
        return orjson.dumps(hashed, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, or a type orjson does not write
        return json.dumps(hashed, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def checkpoint_message(sequence: int, head: bytes, signed_at: dt.datetime) -> bytes:
    """What a checkpoint's signature covers: the chain head and the time it was signed (so a retired key
    cannot sign "in the past" unseen: the time is checked against the key's validity)."""
    micros = (signed_at - EPOCH) // dt.timedelta(microseconds=1)
    return (b"juki-operation-log-checkpoint-v2\x00" + sequence.to_bytes(8, "big") + head
            + micros.to_bytes(8, "big", signed=True))


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the operation-log signing key must be an Ed25519 private key")
        return cls(key_id_of(key.public_key()), key)

    def sign(self, sequence: int, head: bytes, signed_at: dt.datetime) -> bytes:
        return self.private.sign(checkpoint_message(sequence, head, signed_at))

    def current(self) -> SigningKey:
        """A fixed key is its own source (tests, tools); `SigningKeyFile` follows a rotated file."""
        return self


class SigningKeyFile:
    """The signing key of a file that `juki audit rotate-key` may replace while the gateway runs: read
    again when the file changes (one `stat` per checkpoint)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp = self._file_stamp()
        self._key = SigningKey.load(path)

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = self._path.stat()
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def current(self) -> SigningKey:
        """The key in the file now; the one read before when the file cannot be read (logged by the caller
        through the key id that stays)."""
        try:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._key, self._stamp = SigningKey.load(self._path), stamp
        except (OSError, ValueError):
            pass
        return self._key


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def ensure_signing_key(path: Path) -> Path:
    """A development signing key (PEM, 0600) and its public key beside it (`.pub`), created once."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.with_suffix(".pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def load_public_key(path: Path) -> Ed25519PublicKey:
    return _public_key(path.read_bytes())


def _public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the operation-log verification key must be an Ed25519 public key")
    return key


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class PublicKeyEntry:
    public: Ed25519PublicKey
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None

    def valid_at(self, moment: dt.datetime) -> bool:
        return ((self.valid_from is None or self.valid_from <= moment)
                and (self.valid_until is None or moment <= self.valid_until))


class PublicKeyring:
    """The operation log's public keys by key id, each with its validity period.

    File forms: one PEM public key (valid at any time: a log that never rotated), or JSON
    ``{"keys": [{"key_id": ..., "public_key": "<PEM>", "valid_from": ISO-8601, "valid_until": ISO-8601|null}]}``
    as `juki audit rotate-key` writes it.
    """

    def __init__(self, entries: Mapping[str, PublicKeyEntry]) -> None:
        self.entries = dict(entries)

    @classmethod
    def load(cls, path: Path) -> PublicKeyring:
        data = path.read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            key = _public_key(data)
            return cls({key_id_of(key): PublicKeyEntry(key)})
        entries = {}
        for item in json.loads(data)["keys"]:
            key = _public_key(item["public_key"].encode())
            if key_id_of(key) != item["key_id"]:
                raise ValueError(f"keyring entry {item['key_id']}: the key id is not the key's")
            entries[item["key_id"]] = PublicKeyEntry(key, _moment(item.get("valid_from")),
                                                     _moment(item.get("valid_until")))
        return cls(entries)

    def to_json(self) -> str:
        keys = [{"key_id": key_id, "public_key": public_pem(entry.public),
                 "valid_from": entry.valid_from.isoformat() if entry.valid_from else None,
                 "valid_until": entry.valid_until.isoformat() if entry.valid_until else None}
                for key_id, entry in self.entries.items()]
        return json.dumps({"keys": keys}, indent=2) + "\n"

    def problem(self, key_id: str, sequence: int, head: bytes, signed_at: dt.datetime, signature: bytes) -> str:
        """Why this signature does not vouch for (sequence, head) at signed_at; '' when it does."""
        return self.signature_problem("checkpoint", key_id, checkpoint_message(sequence, head, signed_at),
                                      signed_at, signature)

    def signature_problem(self, what: str, key_id: str, message: bytes, signed_at: dt.datetime,
                          signature: bytes) -> str:
        """Why `signature` by `key_id` at `signed_at` does not vouch for `message` (`what` names it); '' when
        it does."""
        entry = self.entries.get(key_id)
        if entry is None:
            return f"{what} signed with a key not in the keyring"
        if not entry.valid_at(signed_at):
            return f"{what} signed outside its key's validity period"
        try:
            entry.public.verify(signature, message)
        except InvalidSignature:
            return f"{what} signature is not valid"
        return ""


def _moment(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class SignedHead:
    """A chain head (sequence, entry hash) signed at `signed_at` with the key `key_id`."""

    sequence: int
    entry_hash: bytes
    key_id: str
    signature: bytes
    signed_at: dt.datetime

    @classmethod
    def of_row(cls, row: asyncpg.Record) -> SignedHead:
        """A checkpoint of the database's `operation_log_checkpoint` table."""
        return cls(row["sequence"], bytes(row["entry_hash"]), row["key_id"], bytes(row["signature"]), row["signed_at"])

    def problem(self, head: bytes, keyring: PublicKeyring) -> str:
        """Why this checkpoint does not vouch for the chain whose record at its sequence has `head`."""
        if self.entry_hash != bytes(head):
            return "signed checkpoint does not match the chain"
        return keyring.problem(self.key_id, self.sequence, self.entry_hash, self.signed_at, self.signature)

    def line(self) -> str:
        """One line of the journal kept outside the database."""
        return json.dumps({"sequence": self.sequence, "entry_hash": self.entry_hash.hex(), "key_id": self.key_id,
                           "signed_at": self.signed_at.astimezone(dt.UTC).isoformat(),
                           "signature": base64.b64encode(self.signature).decode()}, sort_keys=True)

    @classmethod
    def from_line(cls, text: str) -> SignedHead:
        item = json.loads(text)
        return cls(int(item["sequence"]), bytes.fromhex(item["entry_hash"]), str(item["key_id"]),
                   base64.b64decode(item["signature"], validate=True), dt.datetime.fromisoformat(item["signed_at"]))


RESTORE_METHOD = "maintenance/restore"
"""The method of a restore's entries (`juki restore`); its "started" entry carries the signed statement."""


@dataclass(frozen=True)
class RestoreStatement:
    """What a restore of the database signs into the first record of the restored chain (住基法 30-6 ④,
    30-41 ④: the files are restored, and the log says what the restore cost).

    A restore to an earlier time shortens the log: records after `log_ended_at` are gone, while the journal
    kept outside the database still names some of them (up to `journal_named`). Verification would report
    that as a shortened log forever, and new records reuse the lost sequence numbers. The statement, signed
    with the operation log's key, says the log was restored, where the restored log ends (`head`, the hash
    of its last record) and how far the journal reached at `restored_at`. `verify` then sets aside the
    journal's checkpoints signed before the restore beyond the restored end, and reports the records lost
    with it instead of failing: reported, not hidden. Without the key nobody can write such a statement, so
    a log shortened by hand still fails."""

    log_ended_at: int
    head: bytes
    journal_named: int
    """The newest record the journal of checkpoints named at the restore (0: none)."""
    restored_at: dt.datetime
    key_id: str
    signature: bytes

    @staticmethod
    def message(log_ended_at: int, head: bytes, journal_named: int, restored_at: dt.datetime) -> bytes:
        micros = (restored_at - EPOCH) // dt.timedelta(microseconds=1)
        return (b"juki-operation-log-restore-v1\x00" + log_ended_at.to_bytes(8, "big") + head
                + journal_named.to_bytes(8, "big") + micros.to_bytes(8, "big", signed=True))

    @classmethod
    def signed(cls, key: SigningKey, log_ended_at: int, head: bytes, journal_named: int,
               restored_at: dt.datetime) -> RestoreStatement:
        signature = key.private.sign(cls.message(log_ended_at, head, journal_named, restored_at))
        return cls(log_ended_at, head, journal_named, restored_at, key.key_id, signature)

    def detail(self) -> dict[str, Any]:
        return {"log_ended_at": self.log_ended_at, "head": self.head.hex(), "journal_named": self.journal_named,
                "restored_at": self.restored_at.astimezone(dt.UTC).isoformat(), "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def of_detail(cls, item: Mapping[str, Any]) -> RestoreStatement:
        return cls(int(item["log_ended_at"]), bytes.fromhex(item["head"]), int(item["journal_named"]),
                   dt.datetime.fromisoformat(item["restored_at"]), str(item["key_id"]),
                   base64.b64decode(item["signature"], validate=True))

    def problem(self, sequence: int, previous: bytes, keyring: PublicKeyring) -> str:
        """Why this statement, read from record `sequence` whose predecessor hashes to `previous`, does not
        vouch for the restore; '' when it does."""
        if self.log_ended_at != sequence - 1 or self.head != previous:
            return "restore record does not follow the end of the restored log"
        return keyring.signature_problem("restore record", self.key_id, self.message(
            self.log_ended_at, self.head, self.journal_named, self.restored_at), self.restored_at, self.signature)


def restore_statement(row: asyncpg.Record) -> RestoreStatement | None:
    """The signed statement of a restore's first record; None for any other record. A record that claims
    to be one but cannot be read raises ValueError."""
    if row["method"] != RESTORE_METHOD or row["reason"] != "started" or not row["detail"]:
        return None
    detail = json.loads(row["detail"])
    if "restore_statement" not in detail:
        return None  # a restore recorded before statements were signed: an ordinary record
    try:
        return RestoreStatement.of_detail(detail["restore_statement"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("restore record cannot be read") from error


@dataclass(frozen=True)
class LostWithRestore:
    """Records a restore lost: `first`..`last`, named by the journal outside the database before the restore
    recorded at `at_sequence`."""

    first: int
    last: int
    restored_at: dt.datetime
    at_sequence: int
    checkpoints: int
    """The journal's checkpoints set aside (they vouch for the lost records, not for the restored chain)."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    checkpoints: int
    first_bad_sequence: int | None = None
    problem: str = ""
    external: int = 0
    """Checkpoints of the external journal the chain was held to."""
    lost: tuple[LostWithRestore, ...] = ()
    """What each signed restore cost (reported, not an error)."""


class _Checkpoints:
    """The checkpoints a walk holds the chain to: the database's own and the external journal's."""

    def __init__(self, stored: list[asyncpg.Record], external: Sequence[SignedHead], keyring: PublicKeyring) -> None:
        self.stored = {r["sequence"]: SignedHead.of_row(r) for r in stored}
        self.external: dict[int, list[SignedHead]] = {}
        for head in external:
            self.external.setdefault(head.sequence, []).append(head)
        self.keyring = keyring
        self.signed = 0
        self.held = 0
        self.lost: list[LostWithRestore] = []

    def set_aside(self, sequence: int, statement: RestoreStatement) -> None:
        """The restore recorded at `sequence`: the journal's checkpoints signed before it that name records
        from `sequence` on vouch for the records it lost, not for the chain that follows."""
        lost_heads = [head for at in list(self.external) if at >= sequence
                      for head in self.external[at] if head.signed_at < statement.restored_at]
        for head in lost_heads:
            self.external[head.sequence].remove(head)
            if not self.external[head.sequence]:
                del self.external[head.sequence]
        last = max([statement.journal_named, *(head.sequence for head in lost_heads)])
        if last >= sequence:
            self.lost.append(LostWithRestore(sequence, last, statement.restored_at, sequence, len(lost_heads)))

    def problem_at(self, sequence: int, head: bytes) -> str:
        checkpoint = self.stored.pop(sequence, None)
        if checkpoint is not None:
            problem = checkpoint.problem(head, self.keyring)
            if problem:
                return problem
            self.signed += 1
        for outside in self.external.pop(sequence, []):
            problem = outside.problem(head, self.keyring)
            if problem:
                return f"{problem} (a checkpoint kept outside the database)"
            self.held += 1
        return ""

    def left_over(self, count: int) -> Verdict | None:
        """A checkpoint naming a record the walk never reached: the log was shortened (or, when its
        signature does not hold, the journal was tampered with: reported as well)."""
        if self.external:
            outside = self.external[min(self.external)][0]
            problem = outside.problem(outside.entry_hash, self.keyring)
            return Verdict(False, count, self.signed, count + 1,
                           f"{problem} (a checkpoint kept outside the database, naming record {outside.sequence})"
                           if problem else f"records are missing: a checkpoint kept outside the database names "
                           f"record {outside.sequence}, the log ends at {count}", self.held, tuple(self.lost))
        if self.stored:
            first = min(self.stored)
            return Verdict(False, count, self.signed, first, "a signed checkpoint names a record that is gone",
                           self.held, tuple(self.lost))
        return None


async def _rows(connection: asyncpg.Connection, batch: int = 5000) -> AsyncIterator[asyncpg.Record]:
    after = 0
    while True:
        rows = await connection.fetch(
            "SELECT * FROM operation_log WHERE sequence > $1 ORDER BY sequence LIMIT $2", after, batch)
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        after = rows[-1]["sequence"]


async def verify(connection: asyncpg.Connection, keyring: PublicKeyring, external: Sequence[SignedHead] = (),
                 ) -> Verdict:
    """Walk the whole log, holding it to its signed checkpoints and to `external` (the signed heads of the
    journal kept outside the database); the first broken record is named by its sequence number."""
    checkpoints = _Checkpoints(await connection.fetch("SELECT * FROM operation_log_checkpoint"), external, keyring)
    previous, expected, count = GENESIS, 1, 0
    async for row in _rows(connection):
        sequence = row["sequence"]
        if sequence != expected:
            return Verdict(False, count, checkpoints.signed, expected, "missing record (gap in the sequence)",
                           checkpoints.held)
        if row["prev_hash"] != previous:
            return Verdict(False, count, checkpoints.signed, sequence, "does not link to the previous record",
                           checkpoints.held)
        if row["entry_hash"] != entry_hash(previous, row):
            return Verdict(False, count, checkpoints.signed, sequence, "record content does not match its hash",
                           checkpoints.held)
        problem = _restore_problem(row, previous, checkpoints) or checkpoints.problem_at(sequence, row["entry_hash"])
        if problem:
            return Verdict(False, count, checkpoints.signed, sequence, problem, checkpoints.held,
                           tuple(checkpoints.lost))
        previous, expected, count = row["entry_hash"], expected + 1, count + 1
    return checkpoints.left_over(count) or Verdict(True, count, checkpoints.signed, external=checkpoints.held,
                                                   lost=tuple(checkpoints.lost))


def _restore_problem(row: asyncpg.Record, previous: bytes, checkpoints: _Checkpoints) -> str:
    """Why a restore's record does not hold; '' when the record is no restore or a good one (whose lost
    records are then set aside)."""
    try:
        statement = restore_statement(row)
    except ValueError as error:
        return str(error)
    if statement is None:
        return ""
    problem = statement.problem(row["sequence"], previous, checkpoints.keyring)
    if not problem:
        checkpoints.set_aside(row["sequence"], statement)
    return problem
