"""Wiring of the gateway: routes to every backend, the policy catalogue and the operation log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from juki.agency.v1 import agency_pb2
from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2
from juki.gateway.v1 import operation_log_pb2
from juki.identity.v1 import identity_pb2
from jukilib import caller
from jukilib.config import ConfigError, ServiceConfig
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts
from jukilib.telemetry import current_trace_id
from services.gateway.admission import Admission, DenyList, RateLimiter
from services.gateway.chain import SigningKey
from services.gateway.oplog import LogEntry, OperationLog, OperationLogServicer
from services.gateway.policy import DEFAULT_CATALOGUE, CatalogueHolder
from services.gateway.proxy import Gateway, Route, backend_routes

IDENTITY = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
ANNEX = annex_pb2.DESCRIPTOR.services_by_name["AnnexService"]
DISCLOSURE = disclosure_pb2.DESCRIPTOR.services_by_name["DisclosureService"]
AGENCY = agency_pb2.DESCRIPTOR.services_by_name["AgencyService"]
OPERATION_LOG = operation_log_pb2.DESCRIPTOR.services_by_name["OperationLogService"]
# The agency stand-in's control methods are not exposed: only ⑤ queries go through the gateway.
AGENCY_METHODS_EXPOSED = ("QueryResident",)


def migrations() -> list[Migration]:
    return load_migrations([Path(__file__).parent / "migrations"])


def _local_operation_log_routes(database: Database) -> list[Route]:
    """The gateway's own service, behind the same purpose checks and logging as every backend."""
    servicer = OperationLogServicer(database)
    routes = []
    for method in OPERATION_LOG.methods:
        handler = getattr(servicer, method.name)
        request_type = GetMessageClass(method.input_type)

        async def invoke(request: bytes, who: caller.Caller, handler: Any = handler,
                         request_type: Any = request_type) -> bytes:
            context: Any = None  # the servicer does not use its context
            answer = await handler(request_type.FromString(request), context)
            data: bytes = answer.SerializeToString()
            return data

        routes.append(Route(method, invoke))
    return routes


def _catalogue_recorder(log: OperationLog) -> Callable[[str, str, bool], Awaitable[None]]:
    """Every catalogue version loaded, and every file refused, goes into the operation log (DESIGN §4)."""

    async def record(version: str, digest: str, loaded: bool) -> None:
        await log.write(LogEntry(
            time=dt.datetime.now(dt.UTC), request_id=f"catalogue-{digest[:16]}", trace_id=current_trace_id(),
            organization="gateway", method="policy-catalogue/load", decision=1 if loaded else 2,
            reason=f"catalogue {version} sha256 {digest}", status="OK" if loaded else "INVALID_ARGUMENT"))

    return record


def build(config: ServiceConfig, database: Database) -> ServiceParts:
    if config.operation_log_key is None:
        raise ConfigError("JUKI_OPERATION_LOG_KEY is required by the gateway")
    log = OperationLog(database, SigningKey.load(config.operation_log_key),
                       checkpoint_every=config.checkpoint_every, checkpoint_seconds=config.checkpoint_seconds)
    catalogue = CatalogueHolder(config.policy_file or DEFAULT_CATALOGUE, gunma_municipalities(),
                                _catalogue_recorder(log))
    channels = {name: secure_channel(target, config.tls) for name, target in config.targets.items()}
    routes = [
        *backend_routes(IDENTITY, channels["identity"]),
        *backend_routes(ANNEX, channels["annex"]),
        *backend_routes(DISCLOSURE, channels["disclosure"]),
        *backend_routes(AGENCY, channels["agency"], only=AGENCY_METHODS_EXPOSED),
        *_local_operation_log_routes(database),
    ]
    admission = Admission(DenyList(config.revocation_file),
                          RateLimiter(config.organization_rate, config.organization_rate * 2),
                          RateLimiter(config.operator_rate, config.operator_rate * 2))
    gateway = Gateway(catalogue, log, admission)

    def register(server: aio.Server) -> None:
        server.add_generic_rpc_handlers((gateway.generic_handler(routes),))

    async def close_channels() -> None:
        for channel in channels.values():
            await channel.close()

    return ServiceParts(
        service_names=[s.full_name for s in (IDENTITY, ANNEX, DISCLOSURE, AGENCY, OPERATION_LOG)],
        register=register,
        background=[log.run, catalogue.run],
        on_stop=[close_channels],
    )
