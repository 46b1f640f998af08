"""How the gateway groups a stream's answers for the operation log (`proxy._batches`): what is ready
now, bounded by count and by bytes, never read far ahead of a slow client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from juki_services.gateway.proxy import _batches


async def _answers(items: list[bytes], produced: list[int]) -> AsyncIterator[bytes]:
    for item in items:
        produced.append(len(item))
        yield item


async def test_a_batch_is_bounded_by_count_and_by_bytes_and_nothing_is_lost() -> None:
    items = [bytes(100)] * 10 + [bytes(1000)] * 5
    produced: list[int] = []
    source = _answers(items, produced)
    await asyncio.sleep(0)
    batches = [batch async for batch in _batches(source, 4, 2500)]
    assert [b for batch in batches for b in batch] == items
    assert all(len(batch) <= 4 for batch in batches)
    # A batch stops once it holds max_bytes (the item that crosses the bound is its last).
    assert all(sum(map(len, batch[:-1])) < 2500 for batch in batches)


async def test_a_slow_reader_holds_the_backend_back() -> None:
    produced: list[int] = []
    batches = _batches(_answers([bytes(10)] * 100, produced), 4, 1 << 20)
    first = await anext(batches)
    await asyncio.sleep(0.05)  # the client does not read: the pump may run at most `size` ahead
    assert len(produced) <= len(first) + 4 + 1
    rest = [item async for batch in batches for item in batch]
    assert len(first) + len(rest) == 100
