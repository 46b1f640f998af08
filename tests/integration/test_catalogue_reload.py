"""The policy catalogue reloads without restart: a valid new version takes effect, an invalid file is
refused with a precise error while the previous version stays in force, and both are logged."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from juki_services.gateway.policy import DEFAULT_CATALOGUE, CatalogueHolder
from jukilib.domain.municipalities import gunma_municipalities


@pytest.fixture
def catalogue_file(tmp_path: Path) -> Path:
    path = tmp_path / "purposes.toml"
    shutil.copy(DEFAULT_CATALOGUE, path)
    return path


async def test_new_version_takes_effect_and_invalid_file_keeps_the_previous(catalogue_file: Path) -> None:
    recorded: list[tuple[str, bool]] = []
    contents: dict[str, str] = {}

    async def record(version: str, digest: str, loaded: bool, content: str) -> None:
        recorded.append((version, loaded))
        contents[digest] = content

    holder = CatalogueHolder(catalogue_file, gunma_municipalities(), record)
    first = holder().version
    text = catalogue_file.read_text(encoding="utf-8")
    catalogue_file.write_text(text.replace(f'version = "{first}"', 'version = "2099-01-01.1"', 1) +
                              "\n# changed\n", encoding="utf-8")
    assert await holder.reload_if_changed()
    assert holder().version == "2099-01-01.1"
    catalogue_file.write_text(text.replace('legal_basis = "住基法30-6①"', "", 1) + "\n# broken\n", encoding="utf-8")
    assert not await holder.reload_if_changed()
    assert holder().version == "2099-01-01.1"
    assert recorded[0] == ("2099-01-01.1", True)
    assert not recorded[1][1] and "purpose CS-NOTIFY-30-6: 'legal_basis'" in recorded[1][0]
    # Each is recorded with the exact text read, whose SHA-256 is the digest: any version can be read back.
    assert all(hashlib.sha256(text.encode()).hexdigest() == digest for digest, text in contents.items())
    assert any(text.endswith("# broken\n") for text in contents.values())
