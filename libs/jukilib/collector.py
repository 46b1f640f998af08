"""The garbage collector in processes that handle many records at once."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 50_000
"""Net allocations of tracked objects (containers) that start a young-generation collection; Python's
default is 700."""


def collect_young_rarely() -> None:
    """Start a young-generation collection after `YOUNG_COLLECTION_THRESHOLD` allocations, not 700.

    Garbage is freed by reference counting; the collector is only for reference cycles, which juki's
    code rarely makes. With the default, a batch of 1,000 records (about 20,000 live objects while its
    answer is built) starts dozens of collections, each walking and promoting the batch's objects. The
    register services (`ServiceParts.collect_young_rarely`) and `juki load` (its main process and its
    workers) set it; the gateway keeps the default: its calls make few objects each, and a rarer but
    longer collection would pause all of its concurrent lookups at once. The older generations keep their
    thresholds. Measured gains and costs: docs/performance.md, "Garbage collection".
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
