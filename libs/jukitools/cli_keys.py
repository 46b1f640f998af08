"""`juki keys`: the keys of what the suite seals at rest, and their rotation while the suite is running.

- `juki keys new`: a new data key (AES-256-GCM), made active; the services pick it up from the file.
- `juki keys rotate`: re-seal under the active data key every 個人番号 (identity), every refused
  notification of both review queues and every written notice (disclosure), then retire the other data keys.
- `juki keys rotate --hmac`: rotate the HMAC key of the 個人番号's lookup hash: add a new key (lookups try
  both, writes store both), re-hash every 個人番号 of `person_key` under it, drop the old key from the file,
  then delete the hashes made with it. Restartable: run again after an interruption, it resumes.

Each command is a maintenance action in the operation log (`jukitools.maintenance_log.logged_action`, issue 19):
its intent before anything changes, its outcome after (key ids and row counts, never key material); it does
not run when the log cannot be written.

Each step that changes the file waits `RELOAD_GRACE_SECONDS` before relying on it: every service re-reads the
file within `RELOAD_SECONDS` of a change (`jukilib.keyring`). The database work runs as each service's
schema owner, in batches, each its own transaction, beside live traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from jukilib.keyring import RELOAD_GRACE_SECONDS, Keyring
from jukitools.local import KEYRING, LocalSuite
from jukitools.runner import connected


class Databases(Protocol):
    def owner_url(self, service: str) -> str:
        """`service`'s schema owner's URL."""
        ...


async def run(home: str | None, action: str, *, hmac: bool = False, say: Callable[[str], None] = print) -> int:
    from jukitools.maintenance_log import logged_action

    suite = LocalSuite.of(home)
    path = suite.file("JUKI_KEYRING_FILE", KEYRING)
    before = Keyring.load(path)
    name = "keys-new" if action == "new" else "keys-rotate-hmac" if hmac else "keys-rotate"
    async with logged_action(suite, name, **key_ids(before)) as outcome:
        if action == "new":
            keyring = before.with_new_active_key()
            keyring.save(path)
            say(f"new active key {keyring.active}; {len(keyring.key_ids)} key(s) in the keyring")
        elif hmac:
            outcome.detail.update(await rotate_hmac(suite, path, say))
        else:
            outcome.detail.update(await rotate_data_keys(suite, path, say))
        outcome.detail["after"] = key_ids(Keyring.load(path))
    return 0


def key_ids(keyring: Keyring) -> dict[str, Any]:
    """What the operation log says of a keyring: the ids of its keys, never the keys."""
    return {"active_key": keyring.active, "keys": sorted(keyring.key_ids), "hmac_active_key": keyring.hmac_active,
            "hmac_keys": sorted(keyring.hmac_key_ids)}


def _age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


async def _settle(path: Path) -> None:
    """Wait until every service has had the time to re-read the file as it is now."""
    age = _age(path)
    if age < RELOAD_GRACE_SECONDS:
        await asyncio.sleep(RELOAD_GRACE_SECONDS - age)


async def rotate_data_keys(suite: Databases, path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Re-seal everything under the active data key, until a pass finds nothing left, then retire the others.
    Returns what was done: rows re-sealed, keys retired (none when something is left to run again for)."""
    from juki_services.disclosure.store import reseal_corrections, reseal_documents
    from juki_services.identity.numbers import rotate
    from jukilib.register import review

    await _settle(path)
    keyring = Keyring.load(path)
    total = 0
    while True:
        count = 0
        async with connected(suite.owner_url("identity"), "identity") as connection:
            count += await rotate(connection, keyring)
            count += await review.rotate(connection, keyring)
        async with connected(suite.owner_url("annex"), "annex") as connection:
            count += await review.rotate(connection, keyring)  # the annex file holds no 個人番号: its review queue only
        async with connected(suite.owner_url("disclosure"), "disclosure") as connection:
            count += await reseal_documents(connection, keyring)
            count += await reseal_corrections(connection, keyring)
        total += count
        if count == 0:
            break
        await asyncio.sleep(RELOAD_GRACE_SECONDS)  # a write sealed by a replica still on the old file meanwhile
    say(f"re-encrypted {total} row(s) under key {keyring.active}")
    done: dict[str, Any] = {"resealed_rows": total, "sealed_under": keyring.active, "retired_keys": []}
    keep = frozenset({keyring.active})
    left = await _sealed_under_other_keys(suite, keep)
    retired = sorted(keyring.key_ids - keep)
    if left or not retired:
        if left:
            say(f"{left} row(s) still under other keys: nothing retired; run again")
            done["rows_left_under_other_keys"] = left
        return done
    current = Keyring.load(path)  # the file as it is now (an HMAC rotation may have changed it meanwhile)
    if current.active != keyring.active:
        say(f"the active key changed to {current.active} meanwhile: nothing retired; run again")
        return done
    current.with_active_key_only().save(path)
    say(f"retired key(s) {', '.join(retired)}")
    return {**done, "retired_keys": retired}


async def _sealed_under_other_keys(suite: Databases, keep: frozenset[str]) -> int:
    from juki_services.disclosure.store import documents_under_other_keys

    count = 0
    for service in ("identity", "annex"):
        async with connected(suite.owner_url(service), service) as connection:
            if service == "identity":
                count += await connection.fetchval(
                    "SELECT count(*) FROM individual_number WHERE key_id <> ALL($1::text[])", sorted(keep))
            count += await connection.fetchval(
                "SELECT count(*) FROM review_item WHERE ciphertext IS NOT NULL AND key_id <> ALL($1::text[])",
                sorted(keep))
    async with connected(suite.owner_url("disclosure"), "disclosure") as connection:
        count += await documents_under_other_keys(connection, keep)
    return count


async def rotate_hmac(suite: Databases, path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """番号法 7 ②: the 個人番号's uniqueness holds throughout; every lookup finds its person at every step.
    Returns what was done: hashes added under the new key, rows changed, keys retired."""
    from juki_services.identity.numbers import hashes_under_other_keys, rehash

    keyring = Keyring.load(path)
    async with connected(suite.owner_url("identity"), "identity") as connection:
        stale = await hashes_under_other_keys(connection, keyring.hmac_key_ids)
    if len(keyring.hmac_key_ids) == 1 and not stale:
        keyring = keyring.with_new_hmac_key()
        keyring.save(path)
        say(f"new HMAC key {keyring.hmac_active}; lookups try both keys, writes store both")
    await _settle(path)
    both = keyring.detached()
    keep = frozenset({keyring.hmac_active})
    added = 0
    async with connected(suite.owner_url("identity"), "identity") as connection:
        if len(both.hmac_key_ids) > 1:
            added = await rehash(connection, both)
            say(f"re-hashed: {added} hash(es) added under {keyring.hmac_active}")
            Keyring.load(path).with_active_hmac_key_only().save(path)  # the data keys as they are now
            await _settle(path)
        removed = 0
        while True:
            removed += await rehash(connection, both, keep=keep)
            if not await hashes_under_other_keys(connection, keep):
                break
            await asyncio.sleep(RELOAD_GRACE_SECONDS)  # a write by a replica still on the old file meanwhile
    retired = sorted(both.hmac_key_ids - keep)
    say(f"retired HMAC key(s) {', '.join(retired) or '-'}; {removed} row(s) changed")
    return {"hashes_added": added, "hmac_key": keyring.hmac_active, "rows_changed": removed,
            "retired_hmac_keys": retired}
