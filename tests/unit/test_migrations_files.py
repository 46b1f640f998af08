"""Loading numbered SQL migration files (jukilib.db.migrations.load_migrations); no database needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from jukilib.db.migrations import Migration, MigrationError, load_migrations


def _write(directory: Path, name: str, sql: str = "SELECT 1;") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path


def test_migrations_of_two_directories_are_ordered_by_version(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    own = tmp_path / "own"
    _write(own, "0100_service_tables.sql", "CREATE TABLE a ();")
    _write(shared, "0002_outbox.sql", "CREATE TABLE outbox ();")
    _write(own, "0101_indexes.sql", "CREATE INDEX i ON a ();")
    _write(shared, "0001_register.sql", "CREATE TABLE persons ();")

    # The service's own directory is listed first: the order must still follow the versions.
    migrations = load_migrations([own, shared])

    assert [(m.version, m.name) for m in migrations] == [
        (1, "0001_register"),
        (2, "0002_outbox"),
        (100, "0100_service_tables"),
        (101, "0101_indexes"),
    ]
    assert migrations[0].sql == "CREATE TABLE persons ();"


def test_versions_are_compared_numerically_not_as_text(tmp_path: Path) -> None:
    _write(tmp_path, "0010_ten.sql")
    _write(tmp_path, "0009_nine.sql")

    assert [m.version for m in load_migrations([tmp_path])] == [9, 10]


def test_files_other_than_sql_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql")
    _write(tmp_path, "README.md", "notes")

    assert [m.name for m in load_migrations([tmp_path])] == ["0001_first"]


def test_no_directories_means_no_migrations() -> None:
    assert load_migrations([]) == []


def test_duplicate_version_across_directories_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a", "0001_first.sql")
    _write(tmp_path / "b", "0001_other.sql")

    with pytest.raises(MigrationError, match="0001"):
        load_migrations([tmp_path / "a", tmp_path / "b"])


def test_duplicate_version_within_a_directory_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0003_one.sql")
    _write(tmp_path, "0003_two.sql")

    with pytest.raises(MigrationError, match="0003"):
        load_migrations([tmp_path])


@pytest.mark.parametrize(
    "name",
    ["1_short.sql", "0001-dash.sql", "0001_Upper.sql", "00001_five_digits.sql", "0001_.sql", "init.sql"],
)
def test_badly_named_file_is_refused(tmp_path: Path, name: str) -> None:
    _write(tmp_path, "0001_good.sql")
    _write(tmp_path, name)

    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations([tmp_path])


def test_checksum_changes_when_the_sql_changes() -> None:
    original = Migration(1, "0001_first", "CREATE TABLE a ();")
    edited = Migration(1, "0001_first", "CREATE TABLE a (id int);")

    assert original.checksum != edited.checksum


def test_checksum_depends_only_on_the_sql() -> None:
    a = Migration(1, "0001_first", "CREATE TABLE a ();")
    b = Migration(2, "0002_renamed", "CREATE TABLE a ();")

    assert a.checksum == b.checksum
    assert len(a.checksum) == 64


def test_checksum_of_a_loaded_file_changes_when_the_file_is_edited(tmp_path: Path) -> None:
    path = _write(tmp_path, "0001_first.sql", "CREATE TABLE a ();")
    (before,) = load_migrations([tmp_path])

    path.write_text("CREATE TABLE a ();\n-- edited\n", encoding="utf-8")
    (after,) = load_migrations([tmp_path])

    assert before.checksum != after.checksum
