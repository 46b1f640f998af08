"""Load synthetic Gunma residents through the gateway, each notified by its own municipality's CS.

Notification ids are deterministic, so loading again is harmless: every repeat is answered from the
stored receipt and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from juki.annex.v1 import annex_pb2_grpc
from juki.identity.v1 import identity_pb2_grpc
from jukitools.client import Endpoints, gateway_channel, purpose_metadata
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents

logger = logging.getLogger(__name__)

DEMO_SEED = 20261126
DEMO_EVENT_DATE = dt.date(2026, 4, 1)
# A fixed notification time: a repeated load sends byte-identical notifications, answered from receipts.
DEMO_NOTIFY_TIME = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
CONCURRENCY = 16


def municipality_caller(code6: str) -> str:
    """The sample caller name of a municipality's CS (`juki dev-certs` issues one per municipality)."""
    return f"cs-{code6}"


async def load_demo_residents(endpoints: Endpoints, count: int, annex_count: int) -> int:
    """Notify `count` residents to identity and the first `annex_count` to annex; returns the count."""
    residents = generate_residents(count, seed=DEMO_SEED)
    by_municipality: dict[str, list[tuple[int, SyntheticResident]]] = {}
    for index, resident in enumerate(residents):
        by_municipality.setdefault(resident.municipality_code, []).append((index, resident))
    limit = asyncio.Semaphore(CONCURRENCY)
    await asyncio.gather(*(
        _load_municipality(endpoints, code, items, annex_count, limit) for code, items in by_municipality.items()
    ))
    logger.info("demo residents loaded", extra={"count": count, "annex_count": annex_count})
    return count


async def _load_municipality(endpoints: Endpoints, code: str, items: list[tuple[int, SyntheticResident]],
                             annex_count: int, limit: asyncio.Semaphore) -> None:
    async with gateway_channel(endpoints, municipality_caller(code)) as channel:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        annex = annex_pb2_grpc.AnnexServiceStub(channel)
        for index, resident in items:
            async with limit:
                await identity.ApplyNotification(
                    birth_notification(resident, f"demo-{index:06d}", DEMO_EVENT_DATE, DEMO_NOTIFY_TIME),
                    metadata=purpose_metadata("CS-NOTIFY-30-6"), timeout=30)
                if index < annex_count:
                    await annex.ApplyNotification(
                        annex_notification(resident, f"demo-annex-{index:06d}", DEMO_EVENT_DATE,
                                           moved_abroad=index % 5 == 0, notify_time=DEMO_NOTIFY_TIME),
                        metadata=purpose_metadata("CS-NOTIFY-30-41"), timeout=30)
