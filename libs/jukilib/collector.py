"""The garbage collector in processes that handle many records at once."""

from __future__ import annotations

import ctypes
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


_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
LARGE_BUFFER_BYTES = 128 << 10


def return_large_buffers() -> None:
    """Have the C allocator map buffers of `LARGE_BUFFER_BYTES` and more apart, and give them back to the
    system when freed (glibc, Linux; elsewhere nothing changes).

    glibc raises this threshold to the largest mapped buffer freed (up to 32 MB): after that, the
    multi-megabyte buffers of a bulk load (a file's chunks, their COPY text, the pickles between its
    processes) come from the heap, whose freed pieces the process keeps, and its memory grows with the
    file. A fixed threshold keeps it flat (figures: docs/performance.md, "Initial load")."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)
