"""The operation log's hash chain and signed checkpoints, and their verification (`juki audit verify`).

Each record's hash is SHA-256 over the previous record's hash and a canonical JSON form of the
record (sorted keys, UTC microsecond timestamps). Sequences start at 1 without gaps. Every N records
or T seconds the writer signs the chain head with the prefecture's operation-log key (Ed25519).
An edited record breaks its own hash, a deleted one leaves a gap, an inserted one breaks the link of
the next; rewriting the whole tail after a checkpoint breaks the checkpoint's signature or hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = b"\x00" * 32
HASHED_FIELDS = ("sequence", "time", "request_id", "trace_id", "organization", "operator", "method", "purpose",
                 "legal_basis", "case_reference", "decision", "reason", "status", "resident_codes",
                 "disclosed_fields")
# Hashed only when not empty: the column came later, and rows written before it keep their hashes.
HASHED_WHEN_PRESENT = ("disclosed_versions",)


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


def checkpoint_message(sequence: int, head: bytes) -> bytes:
    return b"juki-operation-log-checkpoint\x00" + sequence.to_bytes(8, "big") + head


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

    def sign(self, sequence: int, head: bytes) -> bytes:
        return self.private.sign(checkpoint_message(sequence, head))


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
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the operation-log verification key must be an Ed25519 public key")
    return key


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    checkpoints: int
    first_bad_sequence: int | None = None
    problem: str = ""


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


async def verify(connection: asyncpg.Connection, public_key: Ed25519PublicKey) -> Verdict:
    """Walk the whole log; the first broken record is named by its sequence number."""
    checkpoints = {r["sequence"]: r for r in await connection.fetch("SELECT * FROM operation_log_checkpoint")}
    previous, expected, count, signed = GENESIS, 1, 0, 0
    async for row in _rows(connection):
        sequence = row["sequence"]
        if sequence != expected:
            return Verdict(False, count, signed, expected, "missing record (gap in the sequence)")
        if row["prev_hash"] != previous:
            return Verdict(False, count, signed, sequence, "does not link to the previous record")
        if row["entry_hash"] != entry_hash(previous, row):
            return Verdict(False, count, signed, sequence, "record content does not match its hash")
        checkpoint = checkpoints.pop(sequence, None)
        if checkpoint is not None:
            problem = _checkpoint_problem(checkpoint, row["entry_hash"], public_key)
            if problem:
                return Verdict(False, count, signed, sequence, problem)
            signed += 1
        previous, expected, count = row["entry_hash"], expected + 1, count + 1
    if checkpoints:
        first = min(checkpoints)
        return Verdict(False, count, signed, first, "a signed checkpoint names a record that is gone")
    return Verdict(True, count, signed)


def _checkpoint_problem(checkpoint: asyncpg.Record, head: bytes, public_key: Ed25519PublicKey) -> str:
    if checkpoint["entry_hash"] != head:
        return "signed checkpoint does not match the chain"
    if checkpoint["key_id"] != key_id_of(public_key):
        return "checkpoint signed with another key"
    try:
        public_key.verify(bytes(checkpoint["signature"]), checkpoint_message(checkpoint["sequence"], head))
    except InvalidSignature:
        return "checkpoint signature is not valid"
    return ""
