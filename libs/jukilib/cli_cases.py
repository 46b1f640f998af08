"""`juki cases …`: the disclosure desk's open cases, their deadlines and states, through the gateway.

Staff act through the gateway (every call is in the operation log), as the `disclosure-desk` sample
caller of `.juki/endpoints.json` unless told otherwise. The table shows no personal data beyond the
case and the state: no names, no 住民票コード.
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.disclosure.v1 import disclosure_pb2_grpc
from jukilib.client import Endpoints, gateway_channel, load_credential, purpose_metadata

PURPOSE = "DISCLOSURE-30-32"
STATUS = {pb.DEADLINE_STATUS_NONE: "-", pb.DEADLINE_STATUS_ON_TRACK: "on track",
          pb.DEADLINE_STATUS_AT_RISK: "AT RISK", pb.DEADLINE_STATUS_OVERDUE: "OVERDUE"}


def add_parser(commands: Any) -> None:
    cases = commands.add_parser("cases", help="disclosure cases: open ones with deadlines and states")
    actions = cases.add_subparsers(dest="cases_action", required=True)
    listing = actions.add_parser("list", help="list open disclosure cases, newest first")
    listing.add_argument("--as", dest="caller", default="disclosure-desk", help="sample caller (client certificate)")
    listing.add_argument("--operator", default="kaiji-0001",
                         help="the clerk who logged in (`juki operators login`), whose credential is sent")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--at-risk", action="store_true", help="only cases past their target or near the deadline")
    which.add_argument("--overdue", action="store_true", help="only cases past their (extended) deadline")
    which.add_argument("--all", action="store_true", help="closed cases too")


def _day(date: Any) -> str:
    return dt.date(date.year, date.month, date.day).isoformat() if date.year else "-"


def format_row(case: pb.DisclosureCase) -> str:
    deadline = case.extension.new_deadline if case.HasField("extension") else case.deadline
    state = pb.DisclosureState.Name(case.state).removeprefix("DISCLOSURE_STATE_")
    return (f"{case.name:<52} {state:<18} {_day(case.receive_time.ToDatetime(dt.UTC).date()):<10} "
            f"{_day(deadline):<10} {_day(case.target_date):<10} {STATUS.get(case.deadline_status, '-')}")


HEADER = f"{'case':<52} {'state':<18} {'received':<10} {'deadline':<10} {'target':<10} status"


def request_for(args: argparse.Namespace) -> pb.ListDisclosureCasesRequest:
    status = pb.DEADLINE_STATUS_OVERDUE if args.overdue else pb.DEADLINE_STATUS_AT_RISK if args.at_risk \
        else pb.DEADLINE_STATUS_UNSPECIFIED
    return pb.ListDisclosureCasesRequest(open_only=not args.all, deadline_status=status, page_size=500)


async def _pages(stub: Any, request: pb.ListDisclosureCasesRequest, metadata: Any) -> AsyncIterator[pb.DisclosureCase]:
    while True:
        page = await stub.ListDisclosureCases(request, metadata=metadata, timeout=10)
        for case in page.disclosure_cases:
            yield case
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


async def run(args: argparse.Namespace, home: Path) -> int:
    endpoints = Endpoints.load(home / "endpoints.json")
    metadata = purpose_metadata(PURPOSE, credential=load_credential(home, args.operator), request_id=str(uuid.uuid4()))
    async with gateway_channel(endpoints, args.caller) as channel:
        stub = disclosure_pb2_grpc.DisclosureServiceStub(channel)
        print(HEADER)
        count = 0
        try:
            async for case in _pages(stub, request_for(args), metadata):
                print(format_row(case))
                count += 1
        except grpc.aio.AioRpcError as error:
            print(f"{error.code().name}: {error.details()}")
            return 1
    print(f"{count} case(s)")
    return 0
