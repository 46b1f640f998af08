"""Extension point for what one register keeps beside the engine's tables.

The engine knows nothing about 個人番号; the identity service keeps it (encrypted, with a keyed-hash
index) through these hooks: `prepare` takes it out of a notified record, `rows` turns it into rows of
the service's own tables (written with the engine's, by the same writer, in the same transaction), and
`restore`/`reveal` put it back into answers. The defaults keep nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from jukilib.register.model import Record, StoredVersion, UniqueKey
from jukilib.register.rows import Kept, TableRows


class RegisterHooks:
    """No-op hooks: a register whose record is stored as is (the annex file)."""

    secret_paths: tuple[str, ...] = ()
    """Paths in the answer's resource (e.g. `record.individual_number`) that only `reveal` fills in. A
    read for a purpose whose field mask covers none of them skips `reveal`: nothing is read or decrypted
    that the caller may not receive."""

    table_names: tuple[str, ...] = ()
    """The register's own tables that `rows` fills (the initial load checks them empty and rebuilds their
    indexes with the engine's)."""

    unique_key: UniqueKey | None = None
    """An identifier kept unique among persons, found in what `prepare` keeps apart (`unique_keys`)."""

    def unique_keys(self, secret: Any) -> tuple[bytes, ...]:
        """Keyed hashes of the `unique_key` identifiers in what `prepare` kept apart."""
        return ()

    def prepare(self, record: Record) -> tuple[Record, Any]:
        """Split a notified record into (what the engine stores, what the hooks keep)."""
        return record, None

    def rows(self, kept: Sequence[Kept]) -> list[TableRows]:
        """Rows of the register's own tables for what `prepare` kept apart from these new versions (those
        with nothing kept are left out by the caller). Pure computation, no I/O: the initial load calls
        it in worker processes."""
        return []

    def restore(self, record: Record, secret: Any) -> Record:
        """Put back into a stored record what `prepare` took out (the answer to the notification)."""
        return record

    async def reveal(self, connection: asyncpg.Connection, versions: list[StoredVersion]) -> list[StoredVersion]:
        """Put back what `prepare` kept apart, for answers to reads."""
        secrets = await self.kept_fields(connection, [(v.person_id, v.version) for v in versions])
        return [v._replace(record={**v.record, **secrets[(v.person_id, v.version)]})
                if (v.person_id, v.version) in secrets else v for v in versions]

    async def kept_fields(self, connection: asyncpg.Connection, versions: Sequence[tuple[Any, int]],
                          ) -> dict[tuple[Any, int], Record]:
        """The record fields `prepare` kept apart of these (person, version), by (person, version): what
        `reveal` puts back, and what the feed of 修正 compares (a corrected 個人番号 is a changed field)."""
        return {}
