"""gRPC server bootstrap for every juki service: an explicit init → start → ready → stop lifecycle.

1. start: the server listens at once (mTLS, client certificates required) with the health service
   reporting NOT_SERVING;
2. ready: it connects to PostgreSQL (bounded retries), applies or waits for its migrations, then
   reports SERVING and starts its background jobs (e.g. the outbox relay) under a `Supervisor`
   (`jukilib.supervision`: restarted on any failure, each with a health entry
   `juki.background.<job>` that turns NOT_SERVING when the job makes no progress; an essential job's
   staleness turns the whole service NOT_SERVING);
3. stop (SIGTERM/SIGINT): NOT_SERVING, in-flight calls given a grace period, background jobs
   cancelled, the pool closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import asyncpg
import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jukilib import collector, instruments
from jukilib.config import RESERVED_METHODS, CommonConfig, ServiceConfig
from jukilib.db import migrations as migrations_mod
from jukilib.db.bootstrap import runtime_role
from jukilib.db.pool import Database
from jukilib.grpc.deadlines import DeadlineInterceptor
from jukilib.grpc.interceptors import ErrorInterceptor, TrustedPeerInterceptor
from jukilib.grpc.tracing import TracingInterceptor
from jukilib.supervision import Job, Supervisor

logger = logging.getLogger(__name__)

C = TypeVar("C", bound=ServiceConfig)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceParts:
    """What a service contributes to its server."""

    service_names: Sequence[str]
    """Full names of the gRPC services it serves (health and reflection report these)."""
    register: Callable[[aio.Server], None]
    """Adds the servicers to the server."""
    background: list[Job] = field(default_factory=list)
    """Long-running jobs started once ready, supervised (`jukilib.supervision`) and cancelled on stop."""
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Clean-ups after the server stopped (e.g. closing outgoing channels)."""
    collect_young_rarely: bool = False
    """The service handles many records per call (batch answers, streamed ingest): see
    `jukilib.collector.collect_young_rarely`."""


def server_credentials(config: CommonConfig) -> grpc.ServerCredentials:
    cert, key, ca = config.tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


class GrpcService(Generic[C]):
    """One service process: server, pool, migrations, health, background tasks. `config` is the service's
    own (`services.<name>.config`); the server reads its common part, `build` the rest."""

    def __init__(
        self,
        config: C,
        migrations: Sequence[migrations_mod.Migration],
        build: Callable[[C, Database], ServiceParts],
    ) -> None:
        self.config = config
        self.common = config.common
        self.database = Database(config.common.database)
        self._migrations = list(migrations)
        self._build = build
        self._health = health.aio.HealthServicer()
        self._server: aio.Server | None = None
        self._parts: ServiceParts | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._supervisor: Supervisor | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.port = 0

    def _interceptors(self) -> list[aio.ServerInterceptor]:
        chain: list[aio.ServerInterceptor] = [TracingInterceptor(), ErrorInterceptor(), DeadlineInterceptor()]
        if self.common.trusted_peers:
            chain.append(TrustedPeerInterceptor(self.common.trusted_peers,
                                                RESERVED_METHODS.get(self.common.service)))
        return chain

    async def start(self) -> int:
        """Listen (NOT_SERVING) and begin getting ready in the background; returns the port."""
        self._server = aio.server(interceptors=self._interceptors())
        self._parts = self._build(self.config, self.database)
        self._parts.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        await self._set_health(NOT_SERVING)
        if self.common.reflection:
            names = [*self._parts.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, self._server)
        self.port = self._server.add_secure_port(self.common.listen, server_credentials(self.common))
        await self._server.start()
        instruments.watch_pool(self.common.service, self.database)
        self._tasks.append(asyncio.create_task(instruments.measure_event_loop_lag(), name="event-loop-lag"))
        logger.info("listening", extra={"service": self.common.service, "port": self.port})
        self._tasks.append(asyncio.create_task(self._become_ready(), name="become-ready"))
        return self.port

    async def wait_ready(self, timeout: float) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def _become_ready(self) -> None:
        try:
            await self.database.connect()
            await self._migrate()
        except Exception as exc:
            # Migration errors name files and SQLSTATEs only; other messages could quote values.
            detail = str(exc) if isinstance(exc, migrations_mod.MigrationError) else ""
            logger.error("could not get ready",
                         extra={"service": self.common.service, "error_type": type(exc).__name__, "error": detail})
            self.failed.set()
            return
        assert self._parts is not None
        self._supervisor = Supervisor(self.common.service, self._parts.background, self._publish_job_health)
        self._tasks.extend(self._supervisor.start())
        # What start-up made (modules, descriptors, catalogues, pools) lives as long as the process: frozen,
        # the collector stops scanning it, so a full collection under load walks only what calls made
        # (docs/performance.md, "Garbage collection").
        gc.collect()
        gc.freeze()
        if self._parts.collect_young_rarely:
            collector.collect_young_rarely()
        await self._set_health(SERVING)
        self._ready.set()
        logger.info("serving", extra={"service": self.common.service})

    async def _migrate(self) -> None:
        schema = self.common.service
        url = self.common.database.migration_url
        if url:
            connection = await asyncpg.connect(url, timeout=self.common.database.acquire_timeout)
            try:
                applied = await migrations_mod.apply(connection, schema, self._migrations, runtime_role(schema))
            finally:
                await connection.close()
            logger.info("migrations applied", extra={"count": len(applied)})
            return
        # Without the owner's URL, wait until someone (juki migrate) has applied them.
        while True:
            async with self.database.connection() as connection:
                todo = await migrations_mod.pending(connection, schema, self._migrations)
            if not todo:
                return
            logger.warning("waiting for migrations", extra={"pending": len(todo)})
            await asyncio.sleep(2.0)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        assert self._parts is not None
        for name in ("", *self._parts.service_names):
            await self._health.set(name, status)

    async def _publish_job_health(self, name: str, serving: bool) -> None:
        """A background job's health changed; the service's own follows its essential jobs."""
        if self._stopping:
            return
        await self._health.set(name, SERVING if serving else NOT_SERVING)
        if self._ready.is_set() and self._supervisor is not None:
            await self._set_health(NOT_SERVING if self._supervisor.essential_stale else SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving: health first, then background tasks, in-flight calls, the pool."""
        if self._server is None:
            return
        grace = self.common.shutdown_grace if grace is None else grace
        self._stopping = True
        await self._set_health(NOT_SERVING)
        for name in self._supervisor.health_names if self._supervisor else ():
            await self._health.set(name, NOT_SERVING)
        # In-flight calls finish first: they may still need background tasks (the operation log writer).
        await self._server.stop(grace)
        self._server = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task that does not end on cancellation must not hold the process.
            _, stuck = await asyncio.wait(self._tasks, timeout=grace + 5.0)
            for task in stuck:
                logger.error("background task did not stop", extra={"task": task.get_name()})
        self._tasks.clear()
        if self._supervisor is not None:
            self._supervisor.stop()
        assert self._parts is not None
        for clean_up in self._parts.on_stop:
            await clean_up()
        await self.database.close()
        logger.info("stopped", extra={"service": self.common.service})


async def serve_forever(service: GrpcService[C]) -> int:
    """Run `service` until SIGTERM or SIGINT, then stop it gracefully. Returns the exit code:
    0 after a requested stop, 1 when the service could not get ready."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await service.start()
    waits = [asyncio.create_task(stop_requested.wait()), asyncio.create_task(service.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    logger.info("stopping", extra={"service": service.common.service, "failed": service.failed.is_set()})
    await service.stop()
    return 1 if service.failed.is_set() else 0
