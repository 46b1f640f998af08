"""PostgreSQL settings sized to the machine, for the embedded server (issue 22).

PostgreSQL's stock settings (`shared_buffers` 128 MB, `max_wal_size` 1 GB) are sized for a server that
shares a small machine with anything: with them, a register of millions of persons is read from the
operating system's cache a page at a time, and the database's CPU per lookup grows with the file
(docs/performance.md, "Cost flat with size"). The embedded server has the machine to itself apart from
juki's own processes, so it is given what PostgreSQL's documentation recommends for a dedicated server:

- `shared_buffers` a quarter of memory, `effective_cache_size` three quarters (the planner's estimate of
  what the operating system caches as well);
- `maintenance_work_mem` a sixteenth of memory up to 2 GB (index builds of the initial load, VACUUM);
- `max_wal_size` 8 GB and `checkpoint_timeout` 15 min: a load of millions of rows is not interrupted by a
  checkpoint (and its full-page writes) every gigabyte;
- `random_page_cost` 1.1 and `effective_io_concurrency` 200: solid-state disks;
- parallel workers per core, and `pg_prewarm` preloaded: its autoprewarm worker records which pages are in
  `shared_buffers` and reloads them when the server starts again, so a restart does not start cold;
- `pg_stat_statements` preloaded: what each statement costs the server (time, blocks read and dirtied, WAL
  and full-page images), the profile an SRE asks for first (`juki bench sizes` reads it per phase).

The README's production guide lists the same settings for an external PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

MB = 1 << 20
GB = 1 << 30
_CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")

PRELOADED = "pg_prewarm, pg_stat_statements"
"""`shared_preload_libraries` of a server sized to the machine (and of every benchmark's server), as
PostgreSQL shows a list it was given by ALTER SYSTEM (", " between items), so that it compares equal."""
RESTART_SETTINGS = ("shared_buffers", "shared_preload_libraries", "max_worker_processes")
"""The settings below that take effect only when the server starts."""


def machine_memory() -> int:
    """Bytes of memory this machine (or the container's cgroup limit, if lower) gives its processes."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = _CGROUP_LIMIT.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def _size(amount: int) -> str:
    """`amount` bytes as PostgreSQL shows it (`current_setting`): whole gigabytes as GB, else megabytes."""
    megabytes = amount // MB
    return f"{megabytes // 1024}GB" if megabytes % 1024 == 0 else f"{megabytes}MB"


def server_settings(memory: int, cores: int) -> dict[str, str]:
    """The settings for a PostgreSQL server that may use `memory` bytes and `cores` cores."""
    half_the_cores = max(1, cores // 2)
    return {
        "shared_buffers": _size(max(128 * MB, memory // 4)),
        "effective_cache_size": _size(max(512 * MB, memory * 3 // 4)),
        "maintenance_work_mem": _size(min(2 * GB, max(64 * MB, memory // 16))),
        "work_mem": _size(min(64 * MB, max(4 * MB, memory // 1024))),
        "max_wal_size": "8GB",
        "min_wal_size": "1GB",
        "checkpoint_timeout": "15min",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "max_worker_processes": str(max(8, cores + 4)),
        "max_parallel_workers_per_gather": str(half_the_cores),
        "max_parallel_maintenance_workers": str(half_the_cores),
        "shared_preload_libraries": PRELOADED,
    }


SIZING_VARIABLE = "JUKI_EMBEDDED_PG_SIZING"
"""`machine` (the default): the embedded server is sized to the machine; `off`: it keeps the settings it has
(PostgreSQL's stock ones when new). The tests set `off`: their many short-lived servers need no 6 GB cache
each, and a large cache makes each one's shutdown checkpoint long."""


def machine_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`server_settings` for this machine, or none when `JUKI_EMBEDDED_PG_SIZING` is `off`."""
    sizing = environ.get(SIZING_VARIABLE, "machine")
    if sizing not in ("machine", "off"):
        raise ValueError(f"{SIZING_VARIABLE} must be machine or off")
    return server_settings(machine_memory(), os.cpu_count() or 1) if sizing == "machine" else {}
