"""What the `juki bench …` commands share: the event loop, timed concurrent workers, latency
percentiles, CPU accounting (this process, service processes and the embedded PostgreSQL's), service
processes started as `juki serve` starts them, and the child process that runs a benchmark's gRPC
client (a caller is another process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from jukilib.config import SERVICES, TlsConfig
from jukilib.db.bootstrap import ServiceDatabase


def latency(samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered) * 1000, 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)}


async def timed(items: list[Any], concurrency: int, call: Callable[[Any], Awaitable[int]], *,
                keep_samples: bool = False) -> dict[str, Any]:
    """Run `call` over `items` with `concurrency` workers; rate, errors (raised, or the count `call`
    returns) and latencies (with every sample, in seconds, when `keep_samples`: percentiles over several
    runs are computed from all their samples)."""
    pending = iter(items)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for item in pending:
            started = time.perf_counter()
            try:
                errors += await call(item)
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    result = {"per_second": len(items) / seconds, "seconds": round(seconds, 2), "errors": errors,
              "latency_ms": latency(latencies)}
    if keep_samples:
        result["samples"] = latencies
    return result


async def child_process(module: str, spec: dict[str, Any], what: str) -> dict[str, Any]:
    """`python -m <module>` with `spec` as JSON on stdin; its JSON result from stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate(json.dumps(spec).encode())
    if process.returncode != 0:
        raise RuntimeError(f"the client process of {what} failed (exit status {process.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


class Cpu:
    """CPU time over one phase: of this process, of the service processes named in `services` (name →
    pid) and of the embedded PostgreSQL's processes (these two when psutil is installed)."""

    def __init__(self, data_dir: Path, services: Mapping[str, int] | None = None) -> None:
        self._data_dir = str(data_dir)
        self._server: list[Any] = []
        self._services = dict(services or {})

    def _postgres(self) -> float | None:
        try:
            import psutil  # type: ignore[import-untyped]
        except ImportError:
            return None
        if not self._server:
            self._server = [p for p in psutil.process_iter(["cmdline"])
                            if self._data_dir in " ".join(p.info["cmdline"] or ())]
        return _cpu_seconds({*self._server, *(c for p in self._server for c in _children(p))})

    def _service_seconds(self) -> dict[str, float]:
        try:
            import psutil
        except ImportError:
            return {}
        return {name: _cpu_seconds([psutil.Process(pid)]) for name, pid in self._services.items()}

    def start(self) -> tuple[float, float | None, dict[str, float]]:
        return time.process_time(), self._postgres(), self._service_seconds()

    def per_notification(self, started: tuple[float, float | None, dict[str, float]], count: int,
                         this_process: str) -> dict[str, float]:
        """µs per item since `started`: of this process (named `this_process`), of each service process
        and of PostgreSQL."""
        python, postgres, services = started
        used = {this_process: round((time.process_time() - python) / count * 1e6, 1)}
        for name, seconds in self._service_seconds().items():
            used[name] = round((seconds - services[name]) / count * 1e6, 1)
        now = self._postgres()
        if postgres is not None and now is not None:
            used["postgres"] = round((now - postgres) / count * 1e6, 1)
        return used


def _cpu_seconds(processes: Any) -> float:
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def _children(process: Any) -> list[Any]:
    try:
        return list(process.children(recursive=True))
    except Exception:
        return []


@contextlib.asynccontextmanager
async def bench_databases(prefix: str, *, wal_archive: bool = False
                          ) -> AsyncIterator[tuple[Path, dict[str, ServiceDatabase]]]:
    """A temporary home with an embedded PostgreSQL holding every service's schema and roles (as
    `juki up` prepares them), with WAL archived and sealed as `juki up` does when `wal_archive`;
    everything is removed afterwards."""
    from jukilib.db.bootstrap import owner_role, runtime_role
    from jukilib.db.embedded import EmbeddedPostgres
    from jukilib.db.sizing import PRELOADED
    from jukitools.backup import BackupSettings, enable_archiving, seal_periodically
    from jukitools.suite import SEAL_INTERVAL, prepare_database

    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        home = Path(directory)
        server = EmbeddedPostgres(home / "pgdata", delete_on_stop=True)
        admin_url = await asyncio.to_thread(server.start)
        # The statement profile of `juki bench sizes`, whatever the sizing (a restart when it is off).
        await asyncio.to_thread(server.apply_settings, {"shared_preload_libraries": PRELOADED},
                                at_start=("shared_preload_libraries",))
        sealing: asyncio.Task[None] | None = None
        try:
            if wal_archive:
                settings = BackupSettings.of(home)
                await asyncio.to_thread(enable_archiving, server, settings)
                sealing = asyncio.get_running_loop().create_task(seal_periodically(settings, SEAL_INTERVAL))
            passwords = {role(s): secrets.token_urlsafe(24) for s in SERVICES for role in (runtime_role, owner_role)}
            databases = await prepare_database(admin_url, passwords, database="juki_bench")
            await _grant_bench_tools(admin_url, "juki_bench")
            yield home, databases
        finally:
            if sealing is not None:
                sealing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sealing
            await asyncio.to_thread(server.stop)


async def _grant_bench_tools(admin_url: str, database: str) -> None:
    """A superuser's steps in the bench database for the identity schema's owner: `pg_prewarm` and
    `pg_stat_statements` in a schema of their own (nobody may use `public`), the right to run CHECKPOINT
    (`bench_lookup.settle`), to read every role's statistics and to reset the statement profile
    (`bench_sizes`)."""
    import asyncpg

    from jukilib.db.bootstrap import owner_role

    owner = owner_role("identity")
    connection = await asyncpg.connect(admin_url, database=database)
    try:
        await connection.execute(f"""CREATE SCHEMA IF NOT EXISTS prewarm;
                                     CREATE EXTENSION IF NOT EXISTS pg_prewarm SCHEMA prewarm;
                                     CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA prewarm;
                                     GRANT USAGE ON SCHEMA prewarm TO {owner};
                                     GRANT pg_checkpoint, pg_read_all_stats TO {owner};
                                     GRANT EXECUTE ON FUNCTION prewarm.pg_stat_statements_reset(oid, oid, bigint,
                                                                                                boolean)
                                         TO {owner}""")
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def service_processes(environments: Mapping[str, dict[str, str]], log_dir: Path, tls: TlsConfig,
                            ready_timeout: float = 60.0) -> AsyncIterator[dict[str, Any]]:
    """`juki serve <service>` for each service as `juki up` starts them (`jukitools.suite.spawn`, in
    order, each with its environment, which must set JUKI_LISTEN to a fixed port), once each answers
    SERVING (asked with `tls`); all are stopped afterwards (SIGTERM, SIGKILL after 10 s)."""
    from jukitools.suite import spawn, stop_children, wait_serving

    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    started = []
    try:
        for service, environment in environments.items():
            started.append(spawn(service, environment, log_dir))
            await wait_serving(started[-1:], tls, ready_timeout, log_dir)
        yield {child.service: child for child in started}
    finally:
        await asyncio.to_thread(stop_children, list(reversed(started)), 10.0)
