"""Keys for data encrypted at rest: AES-256-GCM data keys with ids, and one HMAC key for lookups.

The keyring is a JSON file readable only by the service (`JUKI_KEYRING_FILE`, mode 0600):
``{"active": "<key id>", "keys": {"<key id>": "<base64 32 bytes>", ...}, "hmac_key": "<base64>"}``.
New data is encrypted with the active key; every row records its key id, so old keys decrypt old
rows until `juki keys rotate` has re-encrypted them. In production the file is provisioned from the
prefecture's key management (an HSM or KMS), never committed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class KeyringError(Exception):
    """The keyring is missing, malformed, or lacks a key a row needs (no key material in the message)."""


class Sealed(NamedTuple):
    """A ciphertext with its key id and nonce (a named tuple: bulk loads make millions)."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


class Keyring:
    def __init__(self, active: str, keys: dict[str, bytes], hmac_key: bytes, path: Path | None = None) -> None:
        if active not in keys:
            raise KeyringError("the active key id is not among the keys")
        if any(len(k) != 32 for k in keys.values()) or len(hmac_key) < 32:
            raise KeyringError("data keys must be 32 bytes and the HMAC key at least 32 bytes")
        self.active = active
        self._keys = keys
        self._hmac_key = hmac_key
        self._path = path
        # One cipher per key id and one keyed HMAC state, reused: building them per call costs more
        # than the encryption of a 12-digit number (bulk loads seal millions).
        self._ciphers: dict[str, AESGCM] = {}
        self._hmac = hmac.new(hmac_key, digestmod=hashlib.sha256)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            keys = {kid: base64.b64decode(value) for kid, value in data["keys"].items()}
            return cls(data["active"], keys, base64.b64decode(data["hmac_key"]), path)
        except (OSError, ValueError, KeyError, TypeError):
            raise KeyringError("the keyring file cannot be read or is malformed") from None

    def save(self, path: Path) -> None:
        data = {"active": self.active, "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()},
                "hmac_key": base64.b64encode(self._hmac_key).decode()}
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        temporary.replace(path)

    @classmethod
    def generate(cls) -> Keyring:
        key_id = "k" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        return cls(key_id, {key_id: AESGCM.generate_key(256)}, secrets.token_bytes(32))

    def with_new_active_key(self) -> Keyring:
        key_id = "k" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)
        return Keyring(key_id, {**self._keys, key_id: AESGCM.generate_key(256)}, self._hmac_key, self._path)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def _key(self, key_id: str) -> bytes:
        if key_id not in self._keys and self._path is not None:
            # A key added since start-up (rotation in progress on another replica): read the file again.
            reloaded = Keyring.load(self._path)
            self._keys, self.active = dict(reloaded._keys), reloaded.active
        if key_id not in self._keys:
            raise KeyringError("a row is encrypted with a key id the keyring does not hold")
        return self._keys[key_id]

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(self._key(key_id))
        return cipher

    def seal(self, plaintext: str, associated: bytes) -> Sealed:
        nonce = secrets.token_bytes(NONCE_BYTES)
        ciphertext = self._cipher(self.active).encrypt(nonce, plaintext.encode(), associated)
        return Sealed(self.active, nonce, ciphertext)

    def seal_all(self, items: Sequence[tuple[str, bytes]]) -> list[Sealed]:
        """`seal` of every (plaintext, associated data): the same fresh random nonce per item, drawn from
        the system's random source in one read instead of one read per item (bulk loads seal millions)."""
        nonces = secrets.token_bytes(NONCE_BYTES * len(items))
        encrypt, active = self._cipher(self.active).encrypt, self.active
        return [Sealed(active, nonce, encrypt(nonce, plaintext.encode(), associated))
                for nonce, (plaintext, associated) in zip(
                    [nonces[i:i + NONCE_BYTES] for i in range(0, len(nonces), NONCE_BYTES)], items, strict=True)]

    def open(self, sealed: Sealed, associated: bytes) -> str:
        return self._cipher(sealed.key_id).decrypt(sealed.nonce, sealed.ciphertext, associated).decode()

    def lookup_hash(self, value: str) -> bytes:
        """Keyed hash for equality lookups: without the key it reveals nothing and cannot be brute-forced."""
        keyed = self._hmac.copy()
        keyed.update(value.encode())
        return keyed.digest()
