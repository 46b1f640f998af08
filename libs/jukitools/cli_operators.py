"""`juki operators …`: the operator registry and operator log-in.

- `login OPERATOR_ID` issues the operator's short-lived credential (see below).
- `add`, `list`, `disable`, `enable`, `disable-organization`, `enable-organization` go through the
  gateway's OperatorAdminService, as an administrator (`--operator`, whose credential `login` saved),
  from the administrators' terminal (`--as`, a client certificate). A prefecture expects this: every
  change to who may see resident data is then purpose-checked, role-checked and written to the same
  hash-chained operation log as every provision (技術的基準: 操作者の管理 and 操作履歴), and no one needs
  database credentials to manage operators.
- `add --bootstrap` writes directly to the registry as the gateway's schema owner: only for the first
  administrator, when no one can yet call the admin API (like `juki db-bootstrap` for the database).

Settings come from `jukitools.local`: `login` reads the registry as the gateway's runtime role and signs with
`.juki/operator-auth.key` unless JUKI_DATABASE_URL / JUKI_OPERATOR_AUTH_KEY say otherwise; `--bootstrap`
writes as the gateway's owner role (JUKI_MIGRATION_DATABASE_URL); the admin commands call the gateway of
`.juki/endpoints.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from typing import Any

import grpc

from juki.gateway.v1 import operator_admin_pb2 as pb
from juki.gateway.v1 import operator_admin_pb2_grpc
from jukilib.config import Env, UsageError
from jukilib.operator_credential import DEFAULT_LIFETIME, ROLES, issue, load_signing_key
from jukitools.local import OPERATOR_AUTH_KEY, LocalSuite
from jukitools.runner import connected, run

ADMIN_CALLER = "admin-office"
ADMIN_PURPOSE = "ADMIN-OPERATORS"


def add_parser(commands: Any) -> None:
    operators = commands.add_parser("operators", help="the operator registry; operator log-in")
    actions = operators.add_subparsers(dest="action", required=True)
    login = actions.add_parser("login", help="issue an operator credential (stands for the palm-vein log-in)")
    login.add_argument("operator_id", help="the operator's opaque staff id, e.g. kyoiku-0001")
    login.add_argument("--hours", type=float, default=DEFAULT_LIFETIME.total_seconds() / 3600,
                       help="how long the credential is valid (at most JUKI_OPERATOR_CREDENTIAL_MAX_HOURS, 8)")
    login.add_argument("--role", action="append", choices=ROLES, help="ask for only these roles")
    add = actions.add_parser("add", help="register an operator")
    add.add_argument("operator_id", help="an opaque staff id, never a name (it goes to the operation log)")
    add.add_argument("--organization", required=True, help="the organisation the operator works for")
    add.add_argument("--role", action="append", choices=ROLES, required=True, help="a role (repeat for several)")
    add.add_argument("--valid-until", type=dt.date.fromisoformat, default=None, help="YYYY-MM-DD (exclusive)")
    add.add_argument("--bootstrap", action="store_true",
                     help="write directly as the schema owner (first administrator only)")
    listing = actions.add_parser("list", help="list operators")
    listing.add_argument("--organization", default="", help="only this organisation's operators (default: all)")
    for name in ("disable", "enable"):
        actions.add_parser(name, help=f"{name} an operator (every replica within 5 s)").add_argument(
            "operator_id", help="the operator's staff id")
    for name in ("disable-organization", "enable-organization"):
        actions.add_parser(name, help=f"{name.split('-')[0]} a calling organisation").add_argument(
            "organization", help="the organisation code of its client certificates")
    for sub in (add, listing, *(actions.choices[n] for n in ("disable", "enable", "disable-organization",
                                                             "enable-organization"))):
        sub.add_argument("--as", dest="caller", default=ADMIN_CALLER, help="client certificate (sample caller)")
        sub.add_argument("--operator", default=os.environ.get("JUKI_OPERATOR", ""),
                         help="the administrator's operator id (default JUKI_OPERATOR)")


def command(args: argparse.Namespace) -> int:
    if args.action == "login":
        return run(_login(args))
    if args.action == "add" and args.bootstrap:
        return run(_bootstrap(args))
    return run(_admin(args))


async def _login(args: argparse.Namespace) -> int:
    """Stands for the palm-vein log-in at the terminal.

    In the real system this runs on the prefecture's authentication server: the terminal's palm-vein
    reader captures the operator's vein pattern and the server matches it against the template enrolled
    for `operator_id`. THE BIOMETRIC DEVICE PLUGS IN HERE, before the registry check below: only on a
    match may the server go on to sign. In juki the authentication is possession of the signing key file
    (`JUKI_OPERATOR_AUTH_KEY`, 0600), so only whoever holds it can issue credentials.
    """
    from juki_services.gateway.maintenance import log_login
    from juki_services.gateway.operators import ACTIVE, record_of
    from juki_services.gateway.registry_store import fetch_operator

    env, suite = Env(), LocalSuite.of(args.home)
    max_hours = float(env.text("JUKI_OPERATOR_CREDENTIAL_MAX_HOURS", "8"))
    if not 0 < args.hours <= max_hours:
        raise UsageError(f"--hours must be more than 0 and at most {max_hours:g}")
    key = load_signing_key(suite.file("JUKI_OPERATOR_AUTH_KEY", OPERATOR_AUTH_KEY))
    async with connected(suite.database_url("gateway"), "gateway") as connection:
        row = await fetch_operator(connection, args.operator_id)
        now = dt.datetime.now(dt.UTC)
        record = record_of(row) if row is not None else None
        refusal = _login_refusal(record, args.role, now, ACTIVE)
        organization = record.organization if record is not None else ""
        if refusal:  # a refused log-in is evidence too (an unknown id, a disabled operator, a role not held)
            await log_login(connection, args.operator_id, organization, allowed=False, reason=refusal)
            print(f"juki: {args.operator_id} {refusal}", file=sys.stderr)
            return 1
        assert record is not None
        roles = frozenset(args.role or record.roles) & record.roles
        until = now + dt.timedelta(hours=args.hours)
        await log_login(connection, record.operator_id, organization, allowed=True, reason="logged in",
                        roles=roles, until=until)
    credential = issue(key, record.operator_id, record.organization, roles, now=now,
                       lifetime=dt.timedelta(hours=args.hours))
    from jukitools.client import save_credential

    path = save_credential(suite.home, record.operator_id, credential)
    print(f"{record.operator_id} ({record.organization}; {', '.join(sorted(roles))}) logged in until "
          f"{until:%Y-%m-%d %H:%M} UTC; credential in {path}")
    return 0


def _login_refusal(record: Any, asked: list[str] | None, now: dt.datetime, active: str) -> str:
    """Why the log-in is refused, '' when it is not."""
    if record is None or record.status != active or not record.in_effect(now):
        return "is not an active registered operator"
    if not frozenset(asked or record.roles) & record.roles:
        return "holds none of the roles asked for"
    return ""


async def _bootstrap(args: argparse.Namespace) -> int:
    from juki_services.gateway.maintenance import bootstrap_operator
    from jukilib.errors import AlreadyExists

    url = LocalSuite.of(args.home).owner_url("gateway")
    until = dt.datetime.combine(args.valid_until, dt.time(), dt.UTC) if args.valid_until else None
    async with connected(url, "gateway") as connection:
        if not await bootstrap_operator(connection, args.operator_id, organization=args.organization,
                                        roles=args.role, valid_until=until):
            raise AlreadyExists("an operator with this id is already registered", "OPERATOR_EXISTS")
    print(f"registered {args.operator_id} ({args.organization}) directly; use the admin API from now on")
    return 0


async def _admin(args: argparse.Namespace) -> int:
    from jukitools.calls import print_answer, print_error
    from jukitools.client import gateway_channel, load_credential, purpose_metadata

    if not args.operator:
        raise UsageError("--operator (an administrator who has logged in) is required, or JUKI_OPERATOR")
    suite = LocalSuite.of(args.home)
    endpoints = suite.endpoints()
    metadata = purpose_metadata(ADMIN_PURPOSE, credential=load_credential(suite.home, args.operator))
    async with gateway_channel(endpoints, args.caller) as channel:
        stub = operator_admin_pb2_grpc.OperatorAdminServiceStub(channel)
        try:
            answer = await _admin_call(args, stub, metadata)
        except grpc.aio.AioRpcError as error:
            print_error(error)
            return 1
    print_answer(answer)
    return 0


async def _admin_call(args: argparse.Namespace, stub: Any, metadata: Any) -> Any:
    from juki_services.gateway.admin import ROLE_VALUES

    if args.action == "add":
        operator = pb.Operator(organization=args.organization, roles=[ROLE_VALUES[r] for r in args.role])
        if args.valid_until:
            operator.valid_until.FromDatetime(dt.datetime.combine(args.valid_until, dt.time(), dt.UTC))
        return await stub.CreateOperator(pb.CreateOperatorRequest(operator_id=args.operator_id, operator=operator),
                                         metadata=metadata, timeout=10)
    if args.action == "list":
        return await stub.ListOperators(pb.ListOperatorsRequest(organization=args.organization, page_size=500),
                                        metadata=metadata, timeout=10)
    if args.action in ("disable", "enable"):
        method = stub.DisableOperator if args.action == "disable" else stub.EnableOperator
        request_type = pb.DisableOperatorRequest if args.action == "disable" else pb.EnableOperatorRequest
        return await method(request_type(name=f"operators/{args.operator_id}"), metadata=metadata, timeout=10)
    method = stub.DisableOrganization if args.action == "disable-organization" else stub.EnableOrganization
    request = (pb.DisableOrganizationRequest if args.action == "disable-organization"
               else pb.EnableOrganizationRequest)(name=f"organizations/{args.organization}")
    return await method(request, metadata=metadata, timeout=10)

