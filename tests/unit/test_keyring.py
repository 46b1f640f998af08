"""The keyring's lookup hash is HMAC-SHA-256 under the HMAC key, and batch sealing opens like single sealing;
HMAC keys rotate (a hash per key during a rotation, each naming its key), a running service picks up a changed
file, and a file from before HMAC keys had ids still loads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from jukilib.keyring import LEGACY_HMAC_ID, NONCE_BYTES, RELOAD_SECONDS, Keyring, KeyringError, hmac_key_id_of


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


def _legacy_file(path: Path, hmac_key: bytes) -> None:
    path.write_text(json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(os.urandom(32)).decode()},
                                "hmac_key": base64.b64encode(hmac_key).decode()}))


def test_a_keyring_file_with_a_single_hmac_key_loads_and_hashes_as_before(tmp_path: Path) -> None:
    key = os.urandom(32)
    _legacy_file(tmp_path / "keyring.json", key)
    keyring = Keyring.load(tmp_path / "keyring.json")
    assert keyring.hmac_key_ids == frozenset({LEGACY_HMAC_ID})
    # The hashes already stored stay valid: the bare HMAC-SHA-256, one per lookup.
    assert keyring.lookup_hashes("123456789012") == (hmac.new(key, b"123456789012", hashlib.sha256).digest(),)
    keyring.save(tmp_path / "saved.json")
    assert Keyring.load(tmp_path / "saved.json").lookup_hash("123456789012") == keyring.lookup_hash("123456789012")


def test_during_an_hmac_rotation_a_value_has_one_hash_per_key_each_naming_its_key() -> None:
    before = Keyring.generate()
    during = before.with_new_hmac_key()
    hashes = during.lookup_hashes("123456789012")
    assert len(hashes) == 2 and hashes[0] == during.lookup_hash("123456789012")
    assert [hmac_key_id_of(h) for h in hashes] == [during.hmac_active, LEGACY_HMAC_ID]
    assert hashes[1] == before.lookup_hash("123456789012")  # the old key's hash is the one already stored
    after = during.with_active_hmac_key_only()
    assert after.lookup_hashes("123456789012") == hashes[:1]
    assert during.lookup_hashes("123456789013")[0] != hashes[0]


def test_a_service_picks_up_a_changed_keyring_file_without_restart(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keyring.json"
    Keyring.generate().save(path)
    running = Keyring.load(path)
    rotated = Keyring.load(path).with_new_hmac_key().with_new_active_key()
    rotated.save(path)
    clock = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    clock[0] += RELOAD_SECONDS + 0.01
    assert len(running.lookup_hashes("123456789012")) == 2
    assert running.seal("x", b"a").key_id == rotated.active
    detached = running.detached()
    rotated.with_active_hmac_key_only().save(path)
    clock[0] += RELOAD_SECONDS + 0.01
    assert len(running.lookup_hashes("123456789012")) == 1
    assert len(detached.lookup_hashes("123456789012")) == 2  # a rotation step keeps the keys it started with


def test_sealed_bytes_open_only_with_their_associated_data() -> None:
    keyring = Keyring.generate()
    pdf, content = keyring.seal_bytes_all([(b"%PDF-1.7 ...", b"doc/pdf"), (b'{"a": 1}', b"doc/json")])
    assert pdf.key_id == content.key_id == keyring.active and pdf.nonce != content.nonce
    assert keyring.open_bytes(pdf, b"doc/pdf") == b"%PDF-1.7 ..."
    with pytest.raises(InvalidTag):
        keyring.open_bytes(pdf, b"doc/json")
    retired = keyring.with_new_active_key()
    assert retired.open_bytes(content, b"doc/json") == b'{"a": 1}'
    with pytest.raises(KeyringError):
        retired.with_active_key_only().open_bytes(content, b"doc/json")
