"""`juki call …`: the sample calls of the main flows, as a given caller, without writing code."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, message
from google.rpc import status_pb2

from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2, operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.errors import STATUS_DETAILS_KEY
from jukitools.client import Endpoints, gateway_channel, load_credential, purpose_metadata
from jukitools.demo.load import DEMO_SEED
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import generate_residents
from jukitools.suite import SAMPLE_CALLERS

DEFAULT_PURPOSES = {"notify": "CS-NOTIFY-30-6", "disclosure": "DISCLOSURE-30-32", "oplog": "AUDIT-OPERATION-LOG"}


def add_call_parser(commands: Any) -> None:
    call = commands.add_parser("call", help="make a sample call through the gateway as a sample caller")
    kinds = call.add_subparsers(dest="call", required=True)
    for name, help_text in (("notify", "submit a 30-6 change notification (a new resident)"),
                            ("lookup", "read a resident by 住民票コード"),
                            ("disclosure", "open a disclosure case"),
                            ("oplog", "list the newest operation log entries")):
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("--as", dest="caller", required=True, help="sample caller, e.g. maebashi-cs")
        sub.add_argument("--purpose", default=DEFAULT_PURPOSES.get(name, ""),
                         help="the purpose of use declared (x-juki-purpose; `juki purposes list --as CALLER`)")
        sub.add_argument("--case-reference", default="", help="the case the call is made for (x-juki-case-reference; "
                                                              "required by some purposes)")
        sub.add_argument("--operator", default="", help="human work: the operator who logged in "
                                                        "(`juki operators login`), whose credential is sent")
        if name in ("lookup", "disclosure"):
            sub.add_argument("--resident-code", default="", help="the 住民票コード asked for")
            sub.add_argument("--demo-resident", type=int, default=None,
                             help="use the resident code of the N-th demo resident (default: 0, without "
                                  "--resident-code)")


def _municipality_of(caller_name: str) -> str | None:
    """The municipality a sample caller is the CS of (`maebashi-cs`, `cs-102024`), if it is one."""
    code = SAMPLE_CALLERS.get(caller_name) or caller_name.removeprefix("cs-")
    return code if code.isdigit() and len(code) == 6 else None


def _resident_code(args: argparse.Namespace) -> str:
    if args.resident_code:
        return str(args.resident_code)
    index = args.demo_resident or 0
    return generate_residents(index + 1, seed=DEMO_SEED)[index].resident_code


def print_answer(answer: message.Message) -> None:
    print(json_format.MessageToJson(answer, preserving_proto_field_name=True, indent=2, ensure_ascii=False))


def print_error(error: grpc.aio.AioRpcError) -> None:
    print(f"{error.code().name}: {error.details()}")
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            print_answer(status_pb2.Status.FromString(value))


async def run_call(args: argparse.Namespace, home: Path) -> int:
    endpoints = Endpoints.load(home / "endpoints.json")
    credential = load_credential(home, args.operator) if args.operator else ""
    metadata = purpose_metadata(args.purpose, case_reference=args.case_reference, credential=credential,
                                request_id=str(uuid.uuid4()))
    async with gateway_channel(endpoints, args.caller) as channel:
        try:
            answer = await _call(args, channel, metadata)
        except grpc.aio.AioRpcError as error:
            print_error(error)
            return 1
    print_answer(answer)
    return 0


async def _call(args: argparse.Namespace, channel: grpc.aio.Channel, metadata: Any) -> message.Message:
    if args.call == "notify":
        # 住基法 30-6 ①: a municipality notifies about its own residents.
        resident = generate_residents(1, seed=int(dt.datetime.now().timestamp()),
                                      municipality_code=_municipality_of(args.caller))[0]
        request = birth_notification(resident, f"cli-{uuid.uuid4().hex[:16]}", dt.date.today())
        return await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            request, metadata=metadata, timeout=10)
    if args.call == "lookup":
        return await identity_pb2_grpc.IdentityServiceStub(channel).LookupResident(
            identity_pb2.LookupResidentRequest(resident_code=_resident_code(args)), metadata=metadata, timeout=10)
    if args.call == "disclosure":
        case = disclosure_pb2.DisclosureCase(
            subject_resident_code=_resident_code(args), requester_kind=disclosure_pb2.REQUESTER_KIND_PERSON,
            requester_name="請求者", identity_documents=[disclosure_pb2.IDENTITY_DOCUMENT_MY_NUMBER_CARD],
            channel=disclosure_pb2.CHANNEL_COUNTER, scopes=[disclosure_pb2.DISCLOSURE_SCOPE_IDENTITY_FILE])
        return await disclosure_pb2_grpc.DisclosureServiceStub(channel).CreateDisclosureCase(
            disclosure_pb2.CreateDisclosureCaseRequest(disclosure_case=case), metadata=metadata, timeout=10)
    return await operation_log_pb2_grpc.OperationLogServiceStub(channel).ListOperationLogEntries(
        operation_log_pb2.ListOperationLogEntriesRequest(page_size=10), metadata=metadata, timeout=10)
