"""個人番号 kept apart from the register: encrypted per version, found through a keyed hash.

These are the identity register's hooks: the engine stores the record without the number, and these
hooks store and reveal it inside the engine's transactions. The number never reaches a log line, a
span attribute or an error message.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from juki.register.v1 import register_pb2 as pb
from jukilib.db.pool import Database
from jukilib.keyring import Keyring, Sealed, hmac_key_id_of
from jukilib.register.hooks import RegisterHooks
from jukilib.register.model import Record, UniqueKey
from jukilib.register.rows import Kept, TableRows

FIELD = "individual_number"
COLUMNS = (("person_id", "uuid"), ("version", "bigint"), ("key_id", "text"), ("nonce", "bytea"),
           ("ciphertext", "bytea"))


def associated_data(person_id: uuid.UUID | str, version: int) -> bytes:
    """Binds a ciphertext to its row: a ciphertext copied to another row does not decrypt."""
    return f"{person_id}/{version}".encode()


class IndividualNumbers(RegisterHooks):
    # 番号法 19: 個人番号 only to those the law allows; a purpose whose mask leaves it out never has it
    # decrypted (RegisterHooks.secret_paths), the gateway's minimisation still removes it whatever comes back.
    secret_paths = (f"record.{FIELD}",)
    table_names = ("individual_number",)
    # 番号法 7 ②: a number is one person's, and changes only by the 個人番号 change reasons (変更請求, 職権).
    unique_key = UniqueKey("INDIVIDUAL_NUMBER", "individual number", frozenset({
        pb.CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST, pb.CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_CORRECTION,
        pb.CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_RECORD}))

    def __init__(self, database: Database, keyring: Keyring) -> None:
        self._database = database
        self._keyring = keyring

    def unique_keys(self, secret: Any) -> tuple[bytes, ...]:
        # During an HMAC key rotation: the hash under every key, so that nothing written meanwhile is missed.
        return self._keyring.lookup_hashes(secret) if secret else ()

    def prepare(self, record: Record) -> tuple[Record, Any]:
        stored = dict(record)
        number = stored.pop(FIELD, None)
        return stored, number

    def rows(self, kept: Sequence[Kept]) -> list[TableRows]:
        """One `individual_number` row per version with a number: sealed with a fresh nonce under the active
        key, the person and version as associated data. Its keyed hash is the engine's (`unique_keys`,
        kept in `person_key`)."""
        sealed = self._keyring.seal_all([(number, associated_data(person_id, version))
                                         for person_id, version, number in kept])
        records: list[tuple[Any, ...]] = [(person_id, version, key_id, nonce, ciphertext)
                                          for (person_id, version, _), (key_id, nonce, ciphertext)
                                          in zip(kept, sealed, strict=True)]
        return [TableRows("individual_number", COLUMNS, records)]

    def restore(self, record: Record, secret: Any) -> Record:
        """What `reveal` answers for a version just stored with `secret`, without reading it back."""
        return {**record, FIELD: secret} if secret else record

    async def kept_fields(self, connection: asyncpg.Connection, versions: Sequence[tuple[Any, int]],
                          ) -> dict[tuple[Any, int], Record]:
        if not versions:
            return {}
        rows = await connection.fetch(
            """SELECT n.person_id, n.version, n.key_id, n.nonce, n.ciphertext
               FROM individual_number n
               JOIN unnest($1::uuid[], $2::bigint[]) AS wanted (person_id, version)
                 ON n.person_id = wanted.person_id AND n.version = wanted.version""",
            [person for person, _ in versions], [version for _, version in versions],
        )
        return {
            (row["person_id"], row["version"]): {FIELD: self._keyring.open(
                Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"])),
                associated_data(row["person_id"], row["version"]))}
            for row in rows
        }

    async def person_of(self, number: str, follow_former: bool = True) -> uuid.UUID | None:
        """The person who has this 個人番号 in their current record (or, with `follow_former`, ever had it)."""
        hashes = self._keyring.lookup_hashes(number)
        async with self._database.connection() as connection:
            if len(hashes) == 1:  # outside a rotation: one hash, one index probe
                found: uuid.UUID | None = await connection.fetchval(
                    "SELECT person_id FROM person_key WHERE key = $1 AND ($2 OR current)", hashes[0], follow_former)
            else:  # during an HMAC key rotation: a row re-hashed or not yet, either is found
                found = await connection.fetchval(
                    "SELECT person_id FROM person_key WHERE key = ANY($1::bytea[]) AND ($2 OR current) LIMIT 1",
                    list(hashes), follow_former)
        return found


async def rotate(connection: asyncpg.Connection, keyring: Keyring, batch: int = 1000) -> int:
    """Re-encrypt every row not under the active key, in batches (run as the schema owner; the
    service keeps answering meanwhile, since it can open rows under either key). Returns the count."""
    total = 0
    while True:
        async with connection.transaction():
            rows = await connection.fetch(
                """SELECT person_id, version, key_id, nonce, ciphertext FROM individual_number
                   WHERE key_id <> $1 LIMIT $2 FOR UPDATE SKIP LOCKED""",
                keyring.active, batch,
            )
            for row in rows:
                data = associated_data(row["person_id"], row["version"])
                number = keyring.open(Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"])), data)
                sealed = keyring.seal(number, data)
                await connection.execute(
                    "UPDATE individual_number SET key_id = $3, nonce = $4, ciphertext = $5"
                    " WHERE person_id = $1 AND version = $2",
                    row["person_id"], row["version"], sealed.key_id, sealed.nonce, sealed.ciphertext,
                )
        total += len(rows)
        if len(rows) < batch:
            return total


async def rehash(connection: asyncpg.Connection, keyring: Keyring, *, keep: frozenset[str] | None = None,
                 batch: int = 500) -> int:
    """番号法 7 ②, across an HMAC key rotation: give every 個人番号 in `person_key` its hash under every HMAC
    key of `keyring` (computed from the sealed number), and with `keep` then delete the hashes under the
    keys not in it (`keyring` still holds them, so a number hashed under a retiring key only is found). In
    batches of persons, each its own transaction that locks the persons first, in id order, as every write of
    the register does (`jukilib.register.store`), so that it runs beside live ingest; a run that stops is
    simply run again. Returns the number of rows added and deleted."""
    changed, after = 0, uuid.UUID(int=0)
    while True:
        async with connection.transaction():
            persons = [row["person_id"] for row in await connection.fetch(
                """SELECT DISTINCT person_id FROM person_key WHERE person_id > $1 ORDER BY person_id LIMIT $2""",
                after, batch)]
            if not persons:
                return changed
            await connection.execute("SELECT id FROM person WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                                     persons)
            changed += await _rehash_persons(connection, keyring, persons, keep)
            if keep is not None:
                deleted = await connection.fetchval(
                    """WITH gone AS (DELETE FROM person_key WHERE person_id = ANY($1::uuid[])
                                     AND hmac_key_id <> ALL($2::text[]) RETURNING 1)
                       SELECT count(*) FROM gone""", persons, sorted(keep))
                changed += deleted
        after = persons[-1]


async def _rehash_persons(connection: asyncpg.Connection, keyring: Keyring, persons: list[uuid.UUID],
                          keep: frozenset[str] | None) -> int:
    """The missing hashes (under the keys of `keep`, else every key) of the numbers these (locked) persons hold
    in `person_key`; returns how many were added."""
    held = {bytes(row["key"]): (row["person_id"], row["current"]) for row in await connection.fetch(
        "SELECT key, person_id, current FROM person_key WHERE person_id = ANY($1::uuid[])", persons)}
    numbers = {(row["person_id"], keyring.open(Sealed(row["key_id"], bytes(row["nonce"]), bytes(row["ciphertext"])),
                                                associated_data(row["person_id"], row["version"])))
               for row in await connection.fetch(
                   """SELECT person_id, version, key_id, nonce, ciphertext FROM individual_number
                      WHERE person_id = ANY($1::uuid[])""", persons)}
    missing: list[tuple[bytes, uuid.UUID, bool]] = []
    for person_id, number in numbers:
        hashes = keyring.lookup_hashes(number)
        # Only a number the person holds (under some key) is theirs to hold under the others too.
        rows = [held[h] for h in hashes if h in held and held[h][0] == person_id]
        if rows:
            current = any(is_current for _, is_current in rows)
            missing.extend((h, person_id, current) for h in hashes
                           if h not in held and (keep is None or hmac_key_id_of(h) in keep))
    if missing:
        await connection.execute(
            """INSERT INTO person_key (key, person_id, current)
               SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::boolean[]) ON CONFLICT (key) DO NOTHING""",
            [m[0] for m in missing], [m[1] for m in missing], [m[2] for m in missing])
    return len(missing)


async def hashes_under_other_keys(connection: asyncpg.Connection, keep: frozenset[str]) -> int:
    """How many `person_key` rows were hashed under a key not in `keep`."""
    count: int = await connection.fetchval("SELECT count(*) FROM person_key WHERE hmac_key_id <> ALL($1::text[])",
                                           sorted(keep))
    return count
