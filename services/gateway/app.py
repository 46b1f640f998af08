"""Wiring of the gateway: routes to every backend, the policy catalogue and the operation log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc import aio

from juki.agency.v1 import agency_pb2
from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from juki.gateway.v1 import audit_records_pb2, operation_log_pb2, operator_admin_pb2
from juki.identity.v1 import identity_pb2
from juki_services.gateway import metrics
from juki_services.gateway.admin import OperatorAdmin
from juki_services.gateway.admission import Admission, DenyList, RateLimiter
from juki_services.gateway.audit_records import AuditRecords
from juki_services.gateway.chain import SigningKeyFile
from juki_services.gateway.checkpoints import CheckpointExporter
from juki_services.gateway.config import GatewayConfig
from juki_services.gateway.open_cases import GET_CASE_STATUS, OpenCases
from juki_services.gateway.operators import OperatorRegistry
from juki_services.gateway.oplog import LogEntry, OperationLog, OperationLogServicer, detail_text
from juki_services.gateway.policy import DEFAULT_CATALOGUE, CatalogueHolder
from juki_services.gateway.proxy import Gateway, Operators, Route, backend_routes
from juki_services.gateway.search_log import AuditHashKey
from juki_services.gateway.suspensions import LIST_ACTIVE, Suspensions
from juki_services.gateway.volume import VolumeCounter
from jukilib import caller
from jukilib.db.migrations import Migration, load_migrations
from jukilib.db.pool import Database
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc import deadlines, tracing
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import ServiceParts
from jukilib.operator_credential import load_verification_key
from jukilib.supervision import Job
from jukilib.telemetry import current_trace_id

IDENTITY = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
ANNEX = annex_pb2.DESCRIPTOR.services_by_name["AnnexService"]
DISCLOSURE = disclosure_pb2.DESCRIPTOR.services_by_name["DisclosureService"]
AGENCY = agency_pb2.DESCRIPTOR.services_by_name["AgencyService"]
OPERATION_LOG = operation_log_pb2.DESCRIPTOR.services_by_name["OperationLogService"]
OPERATOR_ADMIN = operator_admin_pb2.DESCRIPTOR.services_by_name["OperatorAdminService"]
AUDIT_RECORDS = audit_records_pb2.DESCRIPTOR.services_by_name["AuditRecordService"]
# The agency stand-in's control methods are not exposed: only ⑤ queries go through the gateway.
AGENCY_METHODS_EXPOSED = ("QueryResident",)
# The disclosure service's list of suspensions in force and its answer whether a case is open are the
# gateway's own to read, not exposed.
GATEWAY_ONLY = frozenset({LIST_ACTIVE, GET_CASE_STATUS})
DISCLOSURE_METHODS_EXPOSED = tuple(m.name for m in DISCLOSURE.methods if m.name not in GATEWAY_ONLY)


def migrations() -> list[Migration]:
    return load_migrations([Path(__file__).parent / "migrations"])


def exposed_methods() -> list[str]:
    """Every method the gateway answers (`package.Service/Method`), for the authorisation matrix."""
    services = (IDENTITY, ANNEX, DISCLOSURE, OPERATION_LOG, OPERATOR_ADMIN, AUDIT_RECORDS)
    methods = [f"{s.full_name}/{m.name}" for s in services for m in s.methods
               if not (m.client_streaming ^ m.server_streaming) and not (s is DISCLOSURE and m.name in GATEWAY_ONLY)]
    return methods + [f"{AGENCY.full_name}/{name}" for name in AGENCY_METHODS_EXPOSED]


def _local_routes(service: ServiceDescriptor, servicer: object) -> list[Route]:
    """The gateway's own services, behind the same purpose checks and logging as every backend.
    Each handler receives the request and the authenticated caller."""
    routes = []
    for method in service.methods:
        handler = getattr(servicer, method.name)
        request_type = GetMessageClass(method.input_type)

        async def invoke(request: bytes, who: caller.Caller, handler: Any = handler,
                         request_type: Any = request_type) -> bytes:
            answer = await handler(request_type.FromString(request), who)
            data: bytes = answer.SerializeToString()
            return data

        routes.append(Route(method, invoke))
    return routes


class _OperationLogQueries:
    """OperationLogServicer's methods in the (request, caller) shape of a local route."""

    def __init__(self, database: Database, catalogue: CatalogueHolder) -> None:
        self._servicer = OperationLogServicer(database, catalogue)

    def __getattr__(self, name: str) -> Callable[[Any, caller.Caller], Awaitable[Any]]:
        method = getattr(self._servicer, name)

        async def call(request: Any, who: caller.Caller) -> Any:
            return await method(request, None)  # the servicer does not use its context

        return call


def _catalogue_recorder(log: OperationLog, database: Database) -> Callable[[str, str, bool, str], Awaitable[None]]:
    """Every catalogue version loaded, and every file refused, goes into the operation log (DESIGN §4), its
    exact text kept by digest in `policy_catalogue` first (migration 0009), so the log's digest can be read
    back as the catalogue it names."""

    async def record(version: str, digest: str, loaded: bool, content: str) -> None:
        async with database.connection() as connection:
            await connection.execute("INSERT INTO policy_catalogue (sha256, content) VALUES ($1, $2) "
                                     "ON CONFLICT (sha256) DO NOTHING", digest,
                                     content.replace("\x00", "\ufffd"))  # PostgreSQL text holds no U+0000
        await log.write(LogEntry(
            time=dt.datetime.now(dt.UTC), request_id=f"catalogue-{digest[:16]}", trace_id=current_trace_id(),
            organization="gateway", method="policy-catalogue/load",
            decision=operation_log_pb2.DECISION_ALLOWED if loaded else operation_log_pb2.DECISION_DENIED,
            reason=f"catalogue {version} sha256 {digest}", status="OK" if loaded else "INVALID_ARGUMENT",
            detail=detail_text({"sha256": digest, "version": version})))

    return record


def _suspension_reader(channel: aio.Channel, timeout: float) -> Callable[[], Awaitable[list[Any]]]:
    """Reads every suspension in force from the disclosure service, as the gateway itself (its certificate)."""
    stub = disclosure_pb2_grpc.DisclosureServiceStub(channel)
    metadata = caller.Caller(organization="gateway", request_id="usage-suspensions").to_metadata()

    async def read() -> list[Any]:
        found: list[Any] = []
        token = ""
        while True:
            # A CLIENT span whose trace context the disclosure side follows (sampled as a background loop's).
            with tracing.outgoing(tracing.method_name(stub.ListActiveUsageSuspensions), metadata) as traced:
                page = await stub.ListActiveUsageSuspensions(disclosure_pb2.ListActiveUsageSuspensionsRequest(
                    page_size=1000, page_token=token), metadata=traced, timeout=timeout)
            found.extend(page.usage_suspensions)
            token = page.next_page_token
            if not token:
                return found

    return read


def _case_status_reader(channel: aio.Channel, timeout: float) -> Callable[[str], Awaitable[Any]]:
    """Asks the disclosure service whether a case is open, as the gateway itself (its certificate); within
    what is left of the deadline of the call being checked (jukilib.grpc.deadlines)."""
    stub = disclosure_pb2_grpc.DisclosureServiceStub(channel)
    metadata = caller.Caller(organization="gateway", request_id="open-case").to_metadata()

    async def read(name: str) -> Any:
        with tracing.outgoing(tracing.method_name(stub.GetCaseStatus), metadata) as traced:  # a hop of the call
            return await stub.GetCaseStatus(disclosure_pb2.GetCaseStatusRequest(name=name), metadata=traced,
                                            timeout=deadlines.timeout(timeout))

    return read


def _jobs(config: GatewayConfig, log: OperationLog, exporter: CheckpointExporter, catalogue: CatalogueHolder,
          registry: OperatorRegistry, *, suspensions: Suspensions) -> list[Job]:
    """The gateway's background jobs. The operation-log writer is essential: every call waits for its entry
    and fails closed without it (jukilib.supervision); the refreshers are not (an outdated catalogue stays
    in force, the registry's own staleness bound refuses human work), nor is the export of checkpoints (a
    journal that cannot be written is logged and tried again; the log in the database stays whole)."""
    stale = config.common.background_stale_after
    return [Job("operation-log", log.run, stale, essential=True),
            Job("checkpoint-export", exporter.run, stale + config.checkpoint_export_seconds),
            Job("policy-catalogue", catalogue.run, stale),
            Job("operator-registry", registry.run, stale + config.operator_registry_refresh),
            Job("usage-suspensions", suspensions.run, stale + config.usage_suspension_refresh)]


def build(config: GatewayConfig, database: Database, *,
          clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> ServiceParts:
    """The gateway's parts; `clock` is the time its decisions are made at (tests set it)."""
    keys = SigningKeyFile(config.operation_log_key)
    exporter = CheckpointExporter(config.checkpoint_dir, keys, interval=config.checkpoint_export_seconds,
                                  sink_command=config.checkpoint_sink_command)
    log = OperationLog(database, keys, checkpoint_every=config.checkpoint_every,
                       checkpoint_seconds=config.checkpoint_seconds, exporter=exporter)
    catalogue = CatalogueHolder(config.policy_file or DEFAULT_CATALOGUE, gunma_municipalities(),
                                _catalogue_recorder(log, database))
    registry = OperatorRegistry(database, refresh_seconds=config.operator_registry_refresh)
    metrics.watch(log, registry)
    operators = Operators(registry, load_verification_key(config.operator_auth_key),
                          dt.timedelta(hours=config.operator_credential_max_hours))
    channels = {name: secure_channel(target, config.common.tls) for name, target in config.targets.items()}
    timeout = config.backend_timeout  # when the caller set no deadline; else the caller's is passed on
    routes = [
        *backend_routes(IDENTITY, channels["identity"], default_timeout=timeout),
        *backend_routes(ANNEX, channels["annex"], default_timeout=timeout),
        *backend_routes(DISCLOSURE, channels["disclosure"], only=DISCLOSURE_METHODS_EXPOSED, default_timeout=timeout),
        *backend_routes(AGENCY, channels["agency"], only=AGENCY_METHODS_EXPOSED, default_timeout=timeout),
        *_local_routes(OPERATION_LOG, _OperationLogQueries(database, catalogue)),
        *_local_routes(OPERATOR_ADMIN, OperatorAdmin(database, registry, catalogue, config.incompatible_roles)),
        *_local_routes(AUDIT_RECORDS, AuditRecords(database)),
    ]
    admission = Admission(DenyList(config.revocation_file),
                          RateLimiter(config.organization_rate, config.organization_rate * 2),
                          RateLimiter(config.operator_rate, config.operator_rate * 2))
    suspensions = Suspensions(_suspension_reader(channels["disclosure"], min(timeout, 5.0)),
                              refresh_seconds=config.usage_suspension_refresh,
                              max_staleness=config.usage_suspension_max_staleness,
                              fail_closed=config.usage_suspension_fail_closed)
    open_cases = OpenCases(_case_status_reader(channels["disclosure"], min(timeout, 5.0)),
                           ttl=config.open_case_cache_seconds)
    counter = VolumeCounter(database)
    gateway = Gateway(catalogue, log, admission, operators=operators, counter=counter,
                      audit_hash=AuditHashKey.load(config.audit_hash_key), suspensions=suspensions,
                      open_cases=open_cases, clock=clock)

    def register(server: aio.Server) -> None:
        server.add_generic_rpc_handlers((gateway.generic_handler(routes),))

    async def close_channels() -> None:
        for channel in channels.values():
            await channel.close()

    async def export_last_head() -> None:
        await exporter.export()  # the journal ends where the log does on a graceful stop

    return ServiceParts(
        service_names=[s.full_name for s in (IDENTITY, ANNEX, DISCLOSURE, AGENCY, OPERATION_LOG, OPERATOR_ADMIN,
                                                 AUDIT_RECORDS)],
        register=register,
        background=_jobs(config, log, exporter, catalogue, registry, suspensions=suspensions),
        on_stop=[close_channels, counter.give_back, export_last_head],
    )
