"""住基法 30-41 / Art. 17: the annex file has no 個人番号 — no table column, no contract field, no code
path in the annex service."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from google.protobuf.descriptor import Descriptor

from juki.annex.v1 import annex_pb2
from tests.conftest import fresh_database

ANNEX_SOURCES = Path(__file__).resolve().parents[2] / "services" / "annex"
FORBIDDEN = ("individual_number", "individualnumber", "my_number", "kojin_bango", "個人番号")


def _fields(descriptor: Descriptor, seen: set[str]) -> list[str]:
    if descriptor.full_name in seen:
        return []
    seen.add(descriptor.full_name)
    names = []
    for field in descriptor.fields:
        names.append(f"{descriptor.full_name}.{field.name}")
        if field.message_type is not None:
            names += _fields(field.message_type, seen)
    return names


def test_annex_contract_has_no_individual_number_field() -> None:
    seen: set[str] = set()
    fields = [name for message in annex_pb2.DESCRIPTOR.message_types_by_name.values()
              for name in _fields(message, seen)]
    assert fields and not [f for f in fields if any(word in f.lower() for word in FORBIDDEN)]


async def test_annex_schema_has_no_individual_number_column(admin_url: str) -> None:
    databases = await fresh_database(admin_url)
    connection = await asyncpg.connect(databases["annex"].migration_url)
    try:
        columns = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'annex'")
    finally:
        await connection.close()
    assert columns
    assert not [c for c in columns if any(word in c["column_name"].lower() for word in FORBIDDEN)
                or "individual" in c["table_name"]]


def test_annex_service_code_never_mentions_an_individual_number() -> None:
    sources = [p for p in ANNEX_SOURCES.rglob("*") if p.suffix in (".py", ".sql")]
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8").lower()
        assert not any(word in text for word in FORBIDDEN), path.name
