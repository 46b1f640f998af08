"""Extension points for what one register keeps beside the engine's tables.

The engine knows nothing about 個人番号; the identity service keeps it (encrypted, with a keyed-hash
index) through these hooks, inside the engine's transaction. The defaults keep nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import asyncpg

from jukilib.register.model import Record, StoredVersion


class Applied(NamedTuple):
    """One version stored by a batch (`RegisterEngine.apply_many`), with what `prepare` kept apart."""

    stored: StoredVersion
    secret: Any
    becomes_current: bool


class BulkPerson(NamedTuple):
    """One person of an initial bulk load (`jukilib.register.bulk`): version `version` (1) just recorded
    and current, with what `prepare` kept apart from its record."""

    person_id: str
    """The new person's id, as UUID text (what COPY writes; `str(uuid.UUID(person_id)) == person_id`)."""
    version: int
    secret: Any


class BulkTable(NamedTuple):
    """Rows for one of the register's own tables, written by the bulk loader with COPY."""

    table: str
    columns: tuple[str, ...]
    records: list[tuple[Any, ...]]
    """One tuple per row, in `columns` order: str, int, bool, bytes, uuid, date, datetime or None."""


class RegisterHooks:
    """No-op hooks: a register whose record is stored as is (the annex file)."""

    secret_paths: tuple[str, ...] = ()
    """Paths in the answer's resource (e.g. `record.individual_number`) that only `reveal` fills in. A
    read for a purpose whose field mask covers none of them skips `reveal`: nothing is read or decrypted
    that the caller may not receive."""

    def prepare(self, record: Record) -> tuple[Record, Any]:
        """Split a notified record into (what the engine stores, what the hooks keep)."""
        return record, None

    async def after_apply(self, connection: asyncpg.Connection, stored: StoredVersion, secret: Any, *,
                          becomes_current: bool) -> None:
        """Store what `prepare` kept apart, in the same transaction as the version."""

    async def reveal(self, connection: asyncpg.Connection, versions: list[StoredVersion]) -> list[StoredVersion]:
        """Put back what `prepare` kept apart, for answers."""
        return versions

    # --- batch ingest (RegisterEngine.apply_many) -------------------------------------------------

    async def after_apply_many(self, connection: asyncpg.Connection, stored_and_secrets: Sequence[Applied]) -> None:
        """`after_apply` for every version of a batch, in apply order, in the batch's transaction. The
        default calls `after_apply` one by one; a register may override it with set-based writes."""
        for stored, secret, becomes_current in stored_and_secrets:
            await self.after_apply(connection, stored, secret, becomes_current=becomes_current)

    def restore(self, record: Record, secret: Any) -> Record:
        """Put back into a stored record what `prepare` took out (the record of an answer), without the
        round trip of `reveal`. A register that overrides `reveal` should override this too; until it
        does, the engine answers batches through `reveal`."""
        return record

    # --- initial bulk load (jukilib.register.bulk, `juki load`) -----------------------------------

    def bulk_table_names(self) -> tuple[str, ...]:
        """The register's own tables that `bulk_tables` fills. A fast load checks them empty and drops and
        rebuilds their indexes with the engine's. None by default."""
        return ()

    def bulk_tables(self, persons: Sequence[BulkPerson]) -> list[BulkTable]:
        """What `after_apply` would store for these newly recorded persons, as rows for COPY into the
        tables of `bulk_table_names`. Pure computation (no I/O): the loader may call it in worker
        processes, outside any transaction. Nothing by default."""
        return []


def restores_answers(hooks: RegisterHooks) -> bool:
    """Whether `hooks.restore` completes an answer as `hooks.reveal` would: yes unless the register
    overrides `reveal` without overriding `restore`."""
    kind = type(hooks)
    return kind.restore is not RegisterHooks.restore or kind.reveal is RegisterHooks.reveal
