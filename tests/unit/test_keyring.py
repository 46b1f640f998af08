"""The keyring's lookup hash is HMAC-SHA-256 under the HMAC key, and batch sealing opens like single sealing."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from jukilib.keyring import NONCE_BYTES, Keyring


@pytest.mark.parametrize("key_bytes", [32, 64, 65, 100])
def test_lookup_hash_is_hmac_sha256(key_bytes: int) -> None:
    key = os.urandom(key_bytes)
    keyring = Keyring("k1", {"k1": os.urandom(32)}, key)
    for value in ("", "123456789012", "個人番号", "x" * 200):
        assert keyring.lookup_hash(value) == hmac.new(key, value.encode(), hashlib.sha256).digest()


def test_sealed_all_at_once_opens_with_its_associated_data_and_fresh_nonces() -> None:
    keyring = Keyring.generate()
    items = [(f"{n:012d}", f"person-{n}/1".encode()) for n in range(50)]
    sealed = keyring.seal_all(items)
    assert [keyring.open(s, associated) for s, (_, associated) in zip(sealed, items, strict=True)] == [
        number for number, _ in items]
    assert all(s.key_id == keyring.active and len(s.nonce) == NONCE_BYTES for s in sealed)
    assert len({s.nonce for s in sealed}) == len(sealed)
    assert keyring.seal_all([]) == []
