"""Backups at rest (住基法 30-6 ④, 30-41 ④; issue 20): a sealed backup file opens only whole, unchanged and
with the key it was sealed with; the archive spool is sealed without plaintext; retention keeps the newest
full backups, their incrementals and the WAL they need."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from jukitools.backup import BASE_DIR, INFO, Backup, BackupSettings, Catalogue, choose_backup, prune
from jukitools.backup_crypto import CHUNK, BackupKey, BackupKeyError, OpeningReader, SealingWriter
from jukitools.wal_archive import WAL_DIR, seal_spool, unseal

PLAIN = b"".join(i.to_bytes(4, "big") for i in range(CHUNK // 2))  # two chunks


def sealed(key: BackupKey, data: bytes = PLAIN) -> bytes:
    target = io.BytesIO()
    writer = SealingWriter(target, key)
    writer.write(data)
    writer.close()
    return target.getvalue()


def opened(key: BackupKey, data: bytes) -> bytes:
    return OpeningReader(io.BytesIO(data), key).read()


def test_a_sealed_file_opens_to_what_was_sealed_and_holds_none_of_it() -> None:
    key = BackupKey(bytes(range(32)))
    data = sealed(key)
    assert opened(key, data) == PLAIN
    assert PLAIN[1000:1032] not in data


@pytest.mark.parametrize("damage", ["cut short", "last chunk dropped", "byte flipped", "appended"])
def test_a_damaged_sealed_file_does_not_open(damage: str) -> None:
    key = BackupKey(bytes(range(32)))
    data = bytearray(sealed(key))
    if damage == "cut short":
        data = data[:-10]
    elif damage == "last chunk dropped":
        data = data[:32 + 4 + CHUNK + 16]  # a whole first chunk, no last one
    elif damage == "byte flipped":
        data[5000] ^= 1
    else:
        data += b"\0" * 20
    with pytest.raises(ValueError):
        opened(key, bytes(data))


def test_a_file_sealed_with_another_key_is_named_as_such() -> None:
    data = sealed(BackupKey(bytes(range(32))))
    with pytest.raises(BackupKeyError, match="another backup key"):
        opened(BackupKey(bytes(32)), data)


def test_the_spool_is_sealed_into_the_archive_and_emptied(tmp_path: Path) -> None:
    key = BackupKey(bytes(range(32)))
    spool, archive = tmp_path / "spool", tmp_path / "backups"
    spool.mkdir()
    (spool / "000000010000000000000003").write_bytes(b"WAL-PLAINTEXT" * 1000)
    (spool / "000000010000000000000004.part").write_bytes(b"being copied")
    assert seal_spool(spool, archive, key) == ["000000010000000000000003"]
    assert sorted(path.name for path in spool.iterdir()) == ["000000010000000000000004.part"]
    segment = archive / WAL_DIR / "000000010000000000000003"
    assert b"WAL-PLAINTEXT" not in segment.read_bytes()
    unseal(segment, tmp_path / "back", key)
    assert (tmp_path / "back").read_bytes() == b"WAL-PLAINTEXT" * 1000


def test_a_segment_archived_twice_with_another_content_stays_in_the_spool(tmp_path: Path) -> None:
    key = BackupKey(bytes(range(32)))
    spool, archive = tmp_path / "spool", tmp_path / "backups"
    spool.mkdir()
    (spool / "000000010000000000000003").write_bytes(b"first")
    seal_spool(spool, archive, key)
    (spool / "000000010000000000000003").write_bytes(b"first")  # the server archived it again: same content
    seal_spool(spool, archive, key)
    (spool / "000000010000000000000003").write_bytes(b"other")
    with pytest.raises(ValueError, match="another content"):
        seal_spool(spool, archive, key)
    assert (spool / "000000010000000000000003").exists()


def _backup(settings: BackupSettings, backup_id: str, kind: str, parent: str | None, at: int, wal: str) -> None:
    directory = settings.directory / BASE_DIR / backup_id
    directory.mkdir(parents=True)
    moment = dt.datetime(2026, 12, 1, tzinfo=dt.UTC) + dt.timedelta(hours=at)
    (directory / INFO).write_text(json.dumps(Backup(
        id=backup_id, kind=kind, parent=parent, started_at=moment, consistent_at=moment, start_wal=wal, timeline=1,
        sealed_bytes=1, seconds=1.0).to_json()))


def test_retention_keeps_the_newest_full_backups_their_incrementals_and_the_wal_they_need(tmp_path: Path) -> None:
    settings = BackupSettings.of(tmp_path, {"JUKI_BACKUP_RETENTION": "2"})
    _backup(settings, "a-F", "full", None, 1, "000000010000000000000002")
    _backup(settings, "a-I", "incremental", "a-F", 2, "000000010000000000000004")
    _backup(settings, "b-F", "full", None, 3, "000000010000000000000006")
    _backup(settings, "b-I", "incremental", "b-F", 4, "000000010000000000000008")
    _backup(settings, "c-F", "full", None, 5, "00000002000000000000000A")
    (settings.directory / WAL_DIR).mkdir(parents=True)
    for name in ("000000010000000000000005", "000000010000000000000006", "00000002.history",
                 "000000010000000000000005.00000028.backup", "00000002000000000000000B"):
        (settings.directory / WAL_DIR / name).write_bytes(sealed(BackupKey(bytes(32)), b""))
    assert prune(settings) == ["a-F", "a-I", "2 archived WAL file(s)"]
    assert [backup.id for backup in Catalogue.read(settings).backups] == ["b-F", "b-I", "c-F"]
    assert sorted(path.name for path in (settings.directory / WAL_DIR).iterdir()) == [
        "000000010000000000000006", "00000002.history", "00000002000000000000000B"]


def test_a_restore_starts_from_the_newest_backup_consistent_before_the_target(tmp_path: Path) -> None:
    settings = BackupSettings.of(tmp_path, {})
    _backup(settings, "a-F", "full", None, 1, "000000010000000000000002")
    _backup(settings, "a-I", "incremental", "a-F", 3, "000000010000000000000004")
    catalogue = Catalogue.read(settings)
    at = dt.datetime(2026, 12, 1, 2, tzinfo=dt.UTC)
    assert choose_backup(catalogue, at).id == "a-F"
    assert [backup.id for backup in catalogue.chain(choose_backup(catalogue, None))] == ["a-F", "a-I"]


def test_the_backup_key_may_not_live_inside_the_backup_directory(tmp_path: Path) -> None:
    from jukilib.config import UsageError

    with pytest.raises(UsageError, match="not be inside"):
        BackupSettings.of(tmp_path, {"JUKI_BACKUP_DIR": str(tmp_path / "b"),
                                     "JUKI_BACKUP_KEY_FILE": str(tmp_path / "b" / "key")})
