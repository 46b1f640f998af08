"""Extension points for what one register keeps beside the engine's tables.

The engine knows nothing about 個人番号; the identity service keeps it (encrypted, with a keyed-hash
index) through these hooks, inside the engine's transaction. The defaults keep nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from jukilib.register.model import Record, StoredVersion


class RegisterHooks:
    """No-op hooks: a register whose record is stored as is (the annex file)."""

    def prepare(self, record: Record) -> tuple[Record, Any]:
        """Split a notified record into (what the engine stores, what the hooks keep)."""
        return record, None

    async def after_apply(self, connection: asyncpg.Connection, stored: StoredVersion, secret: Any, *,
                          becomes_current: bool) -> None:
        """Store what `prepare` kept apart, in the same transaction as the version."""

    async def reveal(self, connection: asyncpg.Connection, versions: list[StoredVersion]) -> list[StoredVersion]:
        """Put back what `prepare` kept apart, for answers."""
        return versions
