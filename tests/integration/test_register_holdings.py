"""What a register holds since a point, by notification (`jukilib.register.holdings`, the register's side of
`juki reconcile`): every version written since the point, paged without loss, with its outbox state; never a
record or a 住民票コード."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest

from jukilib.devcerts import DevPki
from jukilib.register import holdings
from tests.integration.registers import MAEBASHI, apply, new_person, open_register


@pytest.mark.parametrize("name", ["identity", "annex"])
async def test_every_version_written_since_a_point_is_listed_once_with_its_outbox_state(
        name: str, admin_url: str, pki: DevPki, home: Path) -> None:
    async with open_register(name, admin_url, pki, home) as (register, api, database, _):
        await apply(api, register.request(new_person(), f"{name}-hold-old"))
        await asyncio.sleep(0.05)
        since = dt.datetime.now(dt.UTC)
        written = [await apply(api, register.request(new_person(), f"{name}-hold-{n}")) for n in range(5)]
        async with database.connection() as connection:
            await connection.execute("UPDATE outbox SET state = 'delivered' WHERE idempotency_key = $1",
                                     f"{name}/{MAEBASHI}/{name}-hold-0")
            listed: list[holdings.HeldVersion] = []
            position: holdings.Position | None = None
            pages = 0
            while True:
                page, position = await holdings.held_since(connection, name, since, 2, position)
                listed.extend(page)
                pages += 1
                if position is None:
                    break
            held = await holdings.held_notifications(connection, [(MAEBASHI, f"{name}-hold-1"),
                                                                  (MAEBASHI, f"{name}-hold-old"),
                                                                  (MAEBASHI, "never-sent")])
    assert pages == 3
    assert [v.notification_id for v in listed] == [f"{name}-hold-{n}" for n in range(5)]
    assert [v.outbox_state for v in listed] == ["delivered", "pending", "pending", "pending", "pending"]
    assert all(v.municipality_code == MAEBASHI and v.version == 1 for v in listed)
    assert set(held) == {(MAEBASHI, f"{name}-hold-1"), (MAEBASHI, f"{name}-hold-old")}
    assert held[(MAEBASHI, f"{name}-hold-1")] == (uuid.UUID(written[1].name.split("/")[1]), 1)
