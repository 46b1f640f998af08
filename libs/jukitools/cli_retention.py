"""`juki retention purge`: the retention purge of a register (住基法 30-6 ③ / 30-41 ③), through the gateway.

The purge is the register's PurgeExpiredRecords, reached like any human work: the certificate of 総務部市町村課
(`--as shichoson-ka`) and the credential of the retention clerk who logged in (`--operator`), under the purpose
PREFECTURE-RETENTION. The gateway's operation log records who ran it, when, on which register and how it
ended; the register records the run in `retention_run` under the same request id, printed here. Nothing
connects to a database: no schema owner is needed, since the register's own function does the deleting.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

import grpc

from juki.annex.v1 import annex_pb2_grpc
from juki.identity.v1 import identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib.config import Env, UsageError
from jukitools.calls import print_error
from jukitools.client import Endpoints, gateway_channel, load_credential, purpose_metadata

PURPOSE = "PREFECTURE-RETENTION"
STUBS: dict[str, Any] = {"identity": identity_pb2_grpc.IdentityServiceStub, "annex": annex_pb2_grpc.AnnexServiceStub}
PURGE_TIMEOUT = 3600.0
"""Seconds the purge may take: one pass over the register's history."""


def add_parser(commands: Any) -> None:
    retention = commands.add_parser("retention", help="purge what the retention periods allow (through the "
                                                      "gateway, as a retention clerk)")
    retention.add_argument("action", choices=("purge",), help="purge: delete what is past its retention period")
    retention.add_argument("--register", choices=tuple(STUBS), required=True, help="the register to purge")
    retention.add_argument("--dry-run", action="store_true", help="count what would be purged, delete nothing")
    retention.add_argument("--superseded-years", type=float, default=None,
                           help="years a superseded version is kept (default: JUKI_RETENTION_SUPERSEDED_YEARS, "
                                "else the register's 150; never less than 150)")
    retention.add_argument("--removed-years", type=float, default=None,
                           help="years a removed person is kept (default: JUKI_RETENTION_REMOVED_YEARS, else the "
                                "register's 150; never less than 150)")
    retention.add_argument("--as", dest="caller", default="shichoson-ka",
                           help="sample caller whose client certificate is presented (endpoints.json)")
    retention.add_argument("--operator", default="shichoson-0001",
                           help="the retention clerk who logged in (`juki operators login`)")


def _period(option: float | None, variable: str, env: Env) -> float | None:
    """The option, else the variable, else None (the register's default). The register checks the bounds."""
    if option is not None:
        return option
    text = env.optional(variable)
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{variable} must be a number of years") from None


def request_for(args: argparse.Namespace, env: Env, request_id: str) -> register_pb2.PurgeExpiredRecordsRequest:
    request = register_pb2.PurgeExpiredRecordsRequest(dry_run=args.dry_run, request_id=request_id)
    superseded = _period(args.superseded_years, "JUKI_RETENTION_SUPERSEDED_YEARS", env)
    removed = _period(args.removed_years, "JUKI_RETENTION_REMOVED_YEARS", env)
    if superseded is not None:
        request.superseded_years = superseded
    if removed is not None:
        request.removed_years = removed
    return request


def format_result(register: str, answer: register_pb2.PurgeExpiredRecordsResponse, request_id: str) -> str:
    verb = "would purge" if answer.dry_run else "purged"
    return (f"{register}: {verb} {answer.versions_purged} superseded version(s) and {answer.persons_purged} removed "
            f"person(s); kept as evidence {answer.versions_held} version(s) and {answer.persons_held} person(s) "
            f"past their period (periods {answer.superseded_years:g} / {answer.removed_years:g} years; "
            f"request {request_id})")


async def run(args: argparse.Namespace, home: Path) -> int:
    request_id = str(uuid.uuid4())  # the operation log's request id, and the purge's idempotency key
    request = request_for(args, Env(), request_id)
    endpoints = Endpoints.load(home / "endpoints.json")
    credential = load_credential(home, args.operator)
    metadata = purpose_metadata(PURPOSE, credential=credential, request_id=request_id)
    async with gateway_channel(endpoints, args.caller) as channel:
        try:
            answer = await STUBS[args.register](channel).PurgeExpiredRecords(request, metadata=metadata,
                                                                            timeout=PURGE_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            print_error(error)
            return 1
    print(format_result(args.register, answer, request_id))
    return 0
