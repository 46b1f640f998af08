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
    answer is built) starts dozens of collections, each walking and promoting the batch's objects:
    identity spent 9 % of its CPU in the collector under `juki bench lookup` batches, and `apply_many`
    17-21 µs of its 76-91 µs per notification (658 collections over 30,000 notifications, none at
    50,000). The register services (`ServiceParts.collect_young_rarely`) and `juki load` (its main
    process and its workers) set it; the gateway keeps the default: its calls make few objects each,
    and a rarer but longer collection pauses all of its 64 concurrent lookups at once (p99 94-103 ms
    against 83-88 ms with the default in `juki bench lookup`, alternating runs). The older generations
    keep their thresholds.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
