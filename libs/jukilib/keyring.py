"""Keys for data encrypted at rest: AES-256-GCM data keys with ids, and HMAC lookup keys with ids.

The keyring is a JSON file readable only by the service (`JUKI_KEYRING_FILE`, mode 0600):
``{"active": "<key id>", "keys": {"<key id>": "<base64 32 bytes>", ...},
   "hmac_active": "<key id>", "hmac_keys": {"<key id>": "<base64>", ...}}``.
A file with a single ``"hmac_key": "<base64>"`` (before HMAC keys had ids) still loads: that key is
`LEGACY_HMAC_ID`. New data is encrypted with the active key; every row records its key id, so old keys
decrypt old rows until `juki keys rotate` has re-encrypted them. Lookup hashes are made under every HMAC
key the keyring holds: one outside a rotation, two during one (`juki keys rotate --hmac`). A service
re-reads the file when it changes (checked at most every `RELOAD_SECONDS`), so a rotation needs no
restart. In production the file is provisioned from the prefecture's key management (an HSM or KMS),
never committed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
DIGEST_BYTES = 32
LEGACY_HMAC_ID = "h0"
"""The id of an HMAC key from a file without ids; its hashes are the bare digest, as they always were."""
RELOAD_SECONDS = 1.0
"""How stale a service's copy of the keyring may be: a rotation step waits longer than this after
changing the file before it relies on every service using the new file (`RELOAD_GRACE_SECONDS`)."""
RELOAD_GRACE_SECONDS = 2 * RELOAD_SECONDS + 0.5


class KeyringError(Exception):
    """The keyring is missing, malformed, or lacks a key a row needs (no key material in the message)."""


class Sealed(NamedTuple):
    """A ciphertext with its key id and nonce (a named tuple: bulk loads make millions)."""

    key_id: str
    nonce: bytes
    ciphertext: bytes


def hmac_key_id_of(lookup_hash: bytes) -> str:
    """The id of the HMAC key a lookup hash was made with (see `Keyring.lookup_hash`)."""
    return lookup_hash[DIGEST_BYTES:].decode() or LEGACY_HMAC_ID


def _new_id(prefix: str) -> str:
    return prefix + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(2)


class _Material(NamedTuple):
    active: str
    keys: dict[str, bytes]
    hmac_active: str
    hmac_keys: dict[str, bytes]


class Keyring:
    def __init__(self, active: str, keys: dict[str, bytes], hmac_key: bytes | Mapping[str, bytes],
                 path: Path | None = None, *, hmac_active: str = LEGACY_HMAC_ID) -> None:
        hmac_keys = {LEGACY_HMAC_ID: hmac_key} if isinstance(hmac_key, bytes) else dict(hmac_key)
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._checked = time.monotonic()
        self._use(_Material(active, dict(keys), hmac_active, hmac_keys))
        if path is not None:
            self._stamp = _stamp(path)

    def _use(self, material: _Material) -> None:
        active, keys, hmac_active, hmac_keys = material
        if active not in keys or hmac_active not in hmac_keys:
            raise KeyringError("the active key id is not among the keys")
        if any(len(k) != 32 for k in keys.values()) or any(len(k) < 32 for k in hmac_keys.values()):
            raise KeyringError("data keys must be 32 bytes and the HMAC keys at least 32 bytes")
        self.active, self._keys = active, keys
        self.hmac_active, self._hmac_keys = hmac_active, hmac_keys
        # One cipher per key id and one keyed HMAC state per HMAC key, reused: building them per call costs
        # more than the encryption of a 12-digit number (bulk loads seal millions). The active HMAC key first.
        self._ciphers: dict[str, AESGCM] = {}
        self._hmacs = [(hmac.new(hmac_keys[kid], digestmod=hashlib.sha256),
                        b"" if kid == LEGACY_HMAC_ID else kid.encode())
                       for kid in (hmac_active, *sorted(set(hmac_keys) - {hmac_active}))]

    @classmethod
    def load(cls, path: Path) -> Keyring:
        keyring = cls.__new__(cls)
        keyring._path, keyring._checked = path, time.monotonic()
        keyring._stamp = _stamp(path)
        keyring._use(_read(path))
        return keyring

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {
            "active": self.active, "keys": {k: base64.b64encode(v).decode() for k, v in self._keys.items()},
            "hmac_active": self.hmac_active,
            "hmac_keys": {k: base64.b64encode(v).decode() for k, v in self._hmac_keys.items()}}
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)
        temporary.replace(path)

    @classmethod
    def generate(cls) -> Keyring:
        key_id = "k" + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        return cls(key_id, {key_id: AESGCM.generate_key(256)}, secrets.token_bytes(32))

    def _material(self) -> _Material:
        return _Material(self.active, dict(self._keys), self.hmac_active, dict(self._hmac_keys))

    def _with(self, material: _Material) -> Keyring:
        return Keyring(material.active, material.keys, material.hmac_keys, self._path,
                       hmac_active=material.hmac_active)

    def with_new_active_key(self) -> Keyring:
        """A new data key, active; the others stay to open what they sealed."""
        key_id = _new_id("k")
        material = self._material()
        return self._with(material._replace(active=key_id, keys={**material.keys, key_id: AESGCM.generate_key(256)}))

    def with_active_key_only(self) -> Keyring:
        """The data keys retired but the active one (once no row is sealed under them)."""
        material = self._material()
        return self._with(material._replace(keys={self.active: material.keys[self.active]}))

    def with_new_hmac_key(self) -> Keyring:
        """A new HMAC key, made the active one; the others stay, so lookups try both during the re-hash."""
        key_id = _new_id("h")
        material = self._material()
        return self._with(material._replace(hmac_active=key_id,
                                            hmac_keys={**material.hmac_keys, key_id: secrets.token_bytes(32)}))

    def with_active_hmac_key_only(self) -> Keyring:
        """The HMAC keys retired but the active one (once every row is hashed under it)."""
        material = self._material()
        return self._with(material._replace(hmac_keys={self.hmac_active: material.hmac_keys[self.hmac_active]}))

    def detached(self) -> Keyring:
        """A copy that never re-reads the file (a rotation step keeps the keys it started with)."""
        material = self._material()
        return Keyring(material.active, material.keys, material.hmac_keys, hmac_active=material.hmac_active)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    @property
    def hmac_key_ids(self) -> frozenset[str]:
        self.refresh()
        return frozenset(self._hmac_keys)

    def refresh(self) -> None:
        """Re-read the file if it changed (checked at most every `RELOAD_SECONDS`)."""
        if self._path is None or time.monotonic() - self._checked < RELOAD_SECONDS:
            return
        self._checked = time.monotonic()
        self._reload_if_changed()

    def _reload_if_changed(self) -> None:
        assert self._path is not None
        try:
            stamp = _stamp(self._path)
        except KeyringError:
            return  # the file is being replaced: keep the keys in use until it is back
        if stamp != self._stamp:
            self._use(_read(self._path))
            self._stamp = stamp

    def _key(self, key_id: str) -> bytes:
        if key_id not in self._keys and self._path is not None:
            # A key added since the last check (a rotation in progress on another replica): read the file now.
            self._reload_if_changed()
        if key_id not in self._keys:
            raise KeyringError("a row is encrypted with a key id the keyring does not hold")
        return self._keys[key_id]

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(self._key(key_id))
        return cipher

    def seal(self, plaintext: str, associated: bytes) -> Sealed:
        return self.seal_bytes(plaintext.encode(), associated)

    def seal_bytes(self, plaintext: bytes, associated: bytes) -> Sealed:
        self.refresh()
        nonce = secrets.token_bytes(NONCE_BYTES)
        return Sealed(self.active, nonce, self._cipher(self.active).encrypt(nonce, plaintext, associated))

    def seal_all(self, items: Sequence[tuple[str, bytes]]) -> list[Sealed]:
        """`seal` of every (plaintext, associated data): the same fresh random nonce per item, drawn from
        the system's random source in one read instead of one read per item (bulk loads seal millions)."""
        self.refresh()
        nonces = secrets.token_bytes(NONCE_BYTES * len(items))
        encrypt, active = self._cipher(self.active).encrypt, self.active
        return [Sealed(active, nonce, encrypt(nonce, plaintext.encode(), associated))
                for nonce, (plaintext, associated) in zip(
                    [nonces[i:i + NONCE_BYTES] for i in range(0, len(nonces), NONCE_BYTES)], items, strict=True)]

    def seal_bytes_all(self, items: Sequence[tuple[bytes, bytes]]) -> list[Sealed]:
        """`seal_bytes` of every (plaintext, associated data), all under one key, each with a fresh nonce."""
        self.refresh()
        encrypt, active = self._cipher(self.active).encrypt, self.active
        return [Sealed(active, nonce, encrypt(nonce, plaintext, associated))
                for nonce, (plaintext, associated) in ((secrets.token_bytes(NONCE_BYTES), item) for item in items)]

    def open(self, sealed: Sealed, associated: bytes) -> str:
        return self.open_bytes(sealed, associated).decode()

    def open_bytes(self, sealed: Sealed, associated: bytes) -> bytes:
        return self._cipher(sealed.key_id).decrypt(sealed.nonce, sealed.ciphertext, associated)

    def lookup_hash(self, value: str) -> bytes:
        """Keyed hash for equality lookups under the active HMAC key: without the key it reveals nothing and
        cannot be brute-forced. HMAC-SHA-256, followed by the key's id unless it is `LEGACY_HMAC_ID`
        (`hmac_key_id_of`), so that a stored hash says which key made it."""
        return self.lookup_hashes(value)[0]

    def lookup_hashes(self, value: str) -> tuple[bytes, ...]:
        """`lookup_hash` under every HMAC key of the keyring, the active key's first: one hash outside a
        rotation, one per key during one (lookups try them all, writes store them all)."""
        # Inline of `refresh`'s time check, and one key without a loop: bulk loads hash millions.
        if self._path is not None and time.monotonic() - self._checked >= RELOAD_SECONDS:
            self.refresh()
        encoded = value.encode()
        if len(self._hmacs) == 1:
            state, suffix = self._hmacs[0]
            keyed = state.copy()
            keyed.update(encoded)
            return (keyed.digest() + suffix,)
        hashes = []
        for state, suffix in self._hmacs:
            keyed = state.copy()
            keyed.update(encoded)
            hashes.append(keyed.digest() + suffix)
        return tuple(hashes)


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        status = path.stat()
    except OSError:
        raise KeyringError("the keyring file cannot be read or is malformed") from None
    return status.st_mtime_ns, status.st_ino, status.st_size


def _read(path: Path) -> _Material:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = {kid: base64.b64decode(value) for kid, value in data["keys"].items()}
        if "hmac_keys" in data:
            hmac_keys = {kid: base64.b64decode(value) for kid, value in data["hmac_keys"].items()}
            hmac_active = data["hmac_active"]
        else:
            hmac_keys, hmac_active = {LEGACY_HMAC_ID: base64.b64decode(data["hmac_key"])}, LEGACY_HMAC_ID
        if not all(isinstance(kid, str) and kid for kid in hmac_keys):
            raise ValueError
        return _Material(data["active"], keys, hmac_active, hmac_keys)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise KeyringError("the keyring file cannot be read or is malformed") from None
