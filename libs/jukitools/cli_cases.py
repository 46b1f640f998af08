"""`juki cases …`: the disclosure desk's work on disclosure, correction and usage-suspension cases, through
the gateway.

Staff act through the gateway (every call is in the operation log), as the `disclosure-desk` sample
caller of `.juki/endpoints.json` with the credential of the clerk who logged in (`--operator`), under
DISCLOSURE-30-32 for disclosure cases (住基法 30-32 … 30-34), CORRECTION-30-35 for correction cases
(30-35) and USAGE-SUSPENSION-98 for usage-suspension cases (利用停止請求, 個人情報保護法 98 … 102), as the
desk's purposes in the catalogue say. A transition reads the case first for its etag
(AIP-154), unless `--etag` gives the one the clerk last saw. What is printed is the case's state,
deadlines and documents: no names, no 住民票コード, no requested values; a notice's content goes only
to the file it is saved in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message
from google.protobuf.timestamp_pb2 import Timestamp

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.disclosure.v1 import disclosure_pb2_grpc
from jukilib.domain.dates import JAPAN
from jukitools.calls import print_error
from jukitools.client import Endpoints, gateway_channel, load_credential, purpose_metadata
from jukitools.clihelp import DefaultsHelp

PURPOSE = "DISCLOSURE-30-32"
CORRECTION_PURPOSE = "CORRECTION-30-35"
SUSPENSION_PURPOSE = "USAGE-SUSPENSION-98"
CASES, CORRECTIONS, SUSPENSIONS = "disclosureCases", "correctionCases", "usageSuspensionCases"
JST = JAPAN
STATUS = {pb.DEADLINE_STATUS_NONE: "-", pb.DEADLINE_STATUS_ON_TRACK: "on track",
          pb.DEADLINE_STATUS_AT_RISK: "AT RISK", pb.DEADLINE_STATUS_OVERDUE: "OVERDUE"}


def _choices(enum: Any, prefix: str) -> dict[str, Any]:
    """A proto enum's values by command-line name: REQUESTER_KIND_LEGAL_REPRESENTATIVE → legal-representative."""
    return {name.removeprefix(prefix).lower().replace("_", "-"): value
            for name, value in enum.items() if not name.endswith("_UNSPECIFIED")}


KINDS = _choices(pb.RequesterKind, "REQUESTER_KIND_")
DOCUMENTS = _choices(pb.IdentityDocument, "IDENTITY_DOCUMENT_")
CHANNELS = _choices(pb.Channel, "CHANNEL_")
SCOPES = _choices(pb.DisclosureScope, "DISCLOSURE_SCOPE_")
FILES = _choices(pb.RecordFile, "RECORD_FILE_")
ACTIONS = _choices(pb.CorrectionAction, "CORRECTION_ACTION_")
GROUNDS = _choices(pb.UsageSuspensionGround, "USAGE_SUSPENSION_GROUND_")


def _received(text: str) -> dt.datetime:
    """An ISO 8601 time; Japan time when it carries no offset."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=JST)


def _item(text: str) -> pb.CorrectionItem:
    """`FIELD:ACTION[=VALUE]`, e.g. `record.full_name:correct=上野　花子` or `record.alias:delete`."""
    head, _, value = text.partition("=")
    field, _, action = head.partition(":")
    if not field or action not in ACTIONS:
        raise argparse.ArgumentTypeError(f"expected FIELD:ACTION[=VALUE] with ACTION one of {', '.join(ACTIONS)}")
    return pb.CorrectionItem(field=field, action=ACTIONS[action], requested_value=value)


def _action(actions: Any, name: str, help_text: str, case: str | None = None,
            metavar: str = "CASE") -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text,
                                                      formatter_class=DefaultsHelp)
    sub.add_argument("--as", dest="caller", default="disclosure-desk",
                     help="sample caller whose client certificate is presented (endpoints.json)")
    sub.add_argument("--operator", default="kaiji-0001",
                     help="the clerk who logged in (`juki operators login`), whose credential is sent")
    if case:
        sub.add_argument("case", metavar=metavar, help=case)
    return sub


def _with_etag(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument("--etag", default=None, help="the etag last read (default: read the case first)")
    return sub


def _received_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--received", type=_received, default=None,
                     help="when the written request was received, ISO 8601, Japan time without an offset "
                          "(default: now)")
    sub.add_argument("--request-id", default="", help="idempotency key: a repeat answers the case already opened "
                                                      "(default: none)")


def add_parser(commands: Any) -> None:
    cases = commands.add_parser("cases", help="disclosure and correction cases (住基法 30-32 … 30-35)",
                                formatter_class=DefaultsHelp)
    actions = cases.add_subparsers(dest="cases_action", required=True)
    listing = _action(actions, "list", "list cases, most recently received first")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--at-risk", action="store_true", help="only cases past their target or near the deadline")
    which.add_argument("--overdue", action="store_true", help="only cases past their (extended) deadline")
    which.add_argument("--all", action="store_true", help="closed cases too")
    kind = listing.add_mutually_exclusive_group()
    kind.add_argument("--corrections", action="store_true", help="correction cases instead of disclosure cases")
    kind.add_argument("--suspensions", action="store_true", help="usage-suspension cases instead of disclosure cases")
    _add_disclosure(actions)
    _add_correction(actions)
    _add_suspension(actions)
    either = "disclosureCases/ID, correctionCases/ID or usageSuspensionCases/ID (a bare ID is a disclosure case)"
    _with_etag(_action(actions, "close", "close a disclosure, correction or usage-suspension case", either))
    _action(actions, "get", "show a disclosure, correction or usage-suspension case", either)
    _action(actions, "documents", "list the written notices of a case", either)
    fetch = _action(actions, "fetch", "fetch a written notice and save its PDF and/or JSON",
                    "the document's name, e.g. disclosureCases/ID/documents/ID", "DOCUMENT")
    fetch.add_argument("--output", type=Path, default=None, help="the PDF file (default: <document id>.pdf here)")
    fetch.add_argument("--json", dest="json_output", type=Path, default=None,
                       help="also save the machine-readable notice to this file")
    fetch.add_argument("--no-pdf", action="store_true", help="do not save the PDF (with --json)")


def _add_disclosure(actions: Any) -> None:
    create = _action(actions, "create", "open a disclosure case on a written request (30-32 ①)")
    create.add_argument("--resident-code", required=True, help="住民票コード of the person whose records are asked")
    create.add_argument("--requester-name", required=True, help="the requester's name as written on the request")
    create.add_argument("--requester-kind", choices=KINDS, default="person", help="who files the request")
    create.add_argument("--document", dest="documents", action="append", choices=DOCUMENTS, required=True,
                        help="an identity document shown (repeat for each; health-insurance-card needs a second)")
    create.add_argument("--channel", choices=CHANNELS, default="counter", help="how the request arrived")
    create.add_argument("--scope", dest="scopes", action="append", choices=SCOPES, required=True,
                        help="what is asked (repeat for each)")
    _received_option(create)
    case = "disclosureCases/ID (or the ID), or usageSuspensionCases/ID"
    verify = _with_etag(_action(actions, "verify", "record the identity check: IDENTITY_VERIFIED, or "
                                                   "REJECTED_IDENTITY (a usage suspension: REJECTED)", case))
    verify.add_argument("--rejected", metavar="REASON", default="",
                        help="the documents did not prove the identity: why (printed on the refusal notice)")
    extend = _with_etag(_action(actions, "extend", "extend the deadline once, with a reason and a written "
                                                   "notice (30-33 ②; 個人情報保護法 102 ②: at most 30 "
                                                   "days)", case))
    extend.add_argument("--reason", required=True, help="why the deadline cannot be met (printed on the notice)")
    extend.add_argument("--new-deadline", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
    decide = _with_etag(_action(actions, "decide", "decide, with the written notice: a disclosure gathers the "
                                                   "records (開示決定通知書, 30-32 ②); a usage suspension needs "
                                                   "--stop or --not-stop and --reason (個人情報保護法 101)", case))
    outcome = decide.add_mutually_exclusive_group()
    outcome.add_argument("--stop", action="store_true", help="usage suspension: stop (for good)")
    outcome.add_argument("--not-stop", action="store_true", help="usage suspension: do not stop")
    decide.add_argument("--reason", default="", help="usage suspension: why (printed on the notice)")
    decide.add_argument("--stop-purpose", dest="stop_purposes", action="append", default=[], metavar="PURPOSE",
                        help="with --stop: a purpose to stop (repeat; default: every purpose the request names)")
    _with_etag(_action(actions, "notify", "record that the decision notice was sent or handed over", case))


def _add_correction(actions: Any) -> None:
    correct = _action(actions, "correct", "open a correction case on a disclosure the person received (30-35)",
                      "the disclosure case: disclosureCases/ID, or the ID")
    correct.add_argument("--file", choices=FILES, default="identity", help="the file concerned")
    correct.add_argument("--item", dest="items", action="append", type=_item, required=True,
                         metavar="FIELD:ACTION[=VALUE]",
                         help=f"a field to correct, add or delete (ACTION: {', '.join(ACTIONS)}), e.g. "
                              "record.full_name:correct=VALUE; repeat for each")
    _received_option(correct)
    case = "correctionCases/ID, or the ID"
    investigate = _with_etag(_action(actions, "investigate", "record one step of the investigation (遅滞なく調査, "
                                                             "30-35)", case))
    investigate.add_argument("--step", required=True, help="what was checked and found")
    conclude = _with_etag(_action(actions, "conclude", "conclude: the written result, or a 12-5 report to the "
                                                       "municipality", case))
    found = conclude.add_mutually_exclusive_group(required=True)
    found.add_argument("--error-found", action="store_true", help="the record is wrong: report it (12-5)")
    found.add_argument("--no-error", action="store_true", help="the record is right: issue the written result")
    conclude.add_argument("--reason-code", default="", help="with --error-found: the kind, e.g. ITEM_MISMATCH "
                                                            "(default: none)")
    conclude.add_argument("--field", dest="fields", action="append", default=[], metavar="FIELD",
                          help="with --error-found: a field found wrong (repeat; default: every item's field)")


def _add_suspension(actions: Any) -> None:
    suspend = _action(actions, "suspend", "open a usage-suspension case (利用停止請求, 個人情報保護法 98): from now "
                                          "the gateway refuses the person's records under the purposes named")
    suspend.add_argument("--resident-code", required=True, help="住民票コード of the person (current or former)")
    suspend.add_argument("--requester-name", required=True, help="the requester's name as written on the request")
    suspend.add_argument("--requester-kind", choices=KINDS, default="person", help="who files the request")
    suspend.add_argument("--document", dest="documents", action="append", choices=DOCUMENTS, required=True,
                         help="an identity document shown (repeat for each; health-insurance-card needs a second)")
    suspend.add_argument("--channel", choices=CHANNELS, default="counter", help="how the request arrived")
    suspend.add_argument("--purpose", dest="purposes", action="append", required=True, metavar="PURPOSE",
                         help="a purpose of use whose use or provision is to stop (`juki purposes list`; repeat)")
    suspend.add_argument("--ground", choices=GROUNDS, required=True, help="the ground of the request (98 ①)")
    _received_option(suspend)


# --- printing (state, deadlines, documents: no personal data) ------------------------------------

def _day(date: Any) -> str:
    return dt.date(date.year, date.month, date.day).isoformat() if date.year else "-"


def _jst(time: Timestamp) -> str:
    return f"{time.ToDatetime(dt.UTC).astimezone(JST):%Y-%m-%d %H:%M} JST" if time.seconds else "-"


def _state(case: pb.DisclosureCase | pb.CorrectionCase | pb.UsageSuspensionCase) -> str:
    if isinstance(case, pb.DisclosureCase):
        return pb.DisclosureState.Name(case.state).removeprefix("DISCLOSURE_STATE_")
    if isinstance(case, pb.UsageSuspensionCase):
        return pb.UsageSuspensionState.Name(case.state).removeprefix("USAGE_SUSPENSION_STATE_")
    return pb.CorrectionState.Name(case.state).removeprefix("CORRECTION_STATE_")


def format_row(case: pb.DisclosureCase | pb.UsageSuspensionCase) -> str:
    deadline = case.extension.new_deadline if case.HasField("extension") else case.deadline
    received = case.receive_time.ToDatetime(dt.UTC).astimezone(JST).date()
    return (f"{case.name:<52} {_state(case):<18} {received.isoformat():<10} "
            f"{_day(deadline):<10} {_day(case.target_date):<10} {STATUS.get(case.deadline_status, '-')}")


HEADER = f"{'case':<52} {'state':<18} {'received':<10} {'deadline':<10} {'target':<10} status"
CORRECTION_HEADER = f"{'correction case':<52} {'state':<22} {'received':<10} disclosure case"


def format_correction_row(case: pb.CorrectionCase) -> str:
    received = case.receive_time.ToDatetime(dt.UTC).astimezone(JST).date()
    return f"{case.name:<52} {_state(case):<22} {received.isoformat():<10} {case.disclosure_case}"


def format_case(case: pb.DisclosureCase | pb.CorrectionCase | pb.UsageSuspensionCase) -> str:
    """A case as the clerk needs it after a step: state, dates, documents, etag."""
    lines = [case.name, f"  state:      {_state(case)}", f"  received:   {_jst(case.receive_time)}"]
    if isinstance(case, pb.UsageSuspensionCase):
        decision = pb.UsageSuspensionDecision.Name(case.decision).removeprefix("USAGE_SUSPENSION_DECISION_")
        stopped = f" ({', '.join(case.stopped_purposes)})" if case.stopped_purposes else ""
        lines += [f"  purposes:   {', '.join(case.purposes)}",
                  f"  refused:    {', '.join(case.suspended_purposes) or '-'}",
                  f"  decision:   {decision if case.decision else '-'}{stopped}"]
    if isinstance(case, pb.DisclosureCase | pb.UsageSuspensionCase):
        lines.append(f"  deadline:   {_day(case.deadline)}  target {_day(case.target_date)}  "
                     f"status {STATUS.get(case.deadline_status, '-')}")
        if case.HasField("extension"):
            lines.append(f"  extended:   to {_day(case.extension.new_deadline)} on {_jst(case.extension.extend_time)}"
                         f", notice {case.extension.notice or '-'}")
    else:
        lines += [f"  disclosure: {case.disclosure_case}",
                  f"  file:       {pb.RecordFile.Name(case.file).removeprefix('RECORD_FILE_')}",
                  "  items:      " + ", ".join(
                      f"{i.field} {pb.CorrectionAction.Name(i.action).removeprefix('CORRECTION_ACTION_')}"
                      for i in case.items)]
        lines += [f"  step:       {_jst(s.create_time)} by {s.actor}" for s in case.investigation_steps]
        if case.municipality_report:
            lines.append(f"  12-5:       {case.municipality_report}"
                         f"{f', resolved by version {case.resolving_version}' if case.resolving_version else ''}")
        lines += [f"  recipient:  {r.organization} ({', '.join(r.fields)}), notice {r.notice or '-'}"
                  for r in case.wrong_value_recipients]
    lines += [f"  document:   {name}" for name in case.documents]
    lines.append(f"  etag:       {case.etag}")
    return "\n".join(lines)


def format_document(document: pb.DisclosureDocument) -> str:
    kind = pb.DocumentKind.Name(document.kind).removeprefix("DOCUMENT_KIND_")
    number = f", {document.document_number}" if document.document_number else ""
    return f"{document.name}  {kind} to {document.addressee}, {_jst(document.create_time)}{number}, pdf sha256 " \
           f"{document.pdf_sha256}"


# --- calls ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clerk:
    """The disclosure desk's clerk at the gateway: each call declares the purpose of its case's kind."""

    stub: disclosure_pb2_grpc.DisclosureServiceStub
    credential: str

    async def __call__(self, method: str, request: message.Message, purpose: str = PURPOSE) -> Any:
        metadata = purpose_metadata(purpose, credential=self.credential, request_id=str(uuid.uuid4()))
        return await getattr(self.stub, method)(request, metadata=metadata, timeout=60)


def _name(text: str, collection: str) -> str:
    """A case name from `collection/{id}`, another collection's full name, or a bare id."""
    return text if "/" in text else f"{collection}/{text}"


def _purpose(name: str) -> str:
    if name.startswith(f"{SUSPENSIONS}/"):
        return SUSPENSION_PURPOSE
    return CORRECTION_PURPOSE if name.startswith(f"{CORRECTIONS}/") else PURPOSE


async def _get(clerk: Clerk, name: str) -> Any:
    if name.startswith(f"{SUSPENSIONS}/"):
        return await clerk("GetUsageSuspensionCase", pb.GetUsageSuspensionCaseRequest(name=name), SUSPENSION_PURPOSE)
    if name.startswith(f"{CORRECTIONS}/"):
        return await clerk("GetCorrectionCase", pb.GetCorrectionCaseRequest(name=name), CORRECTION_PURPOSE)
    return await clerk("GetDisclosureCase", pb.GetDisclosureCaseRequest(name=name))


async def _etag(clerk: Clerk, name: str, args: argparse.Namespace) -> str:
    return str(args.etag) if args.etag else (await _get(clerk, name)).etag


def _timestamp(target: Timestamp, moment: dt.datetime | None) -> None:
    if moment is not None:
        target.FromDatetime(moment.astimezone(dt.UTC))


async def _create(clerk: Clerk, args: argparse.Namespace) -> Any:
    case = pb.DisclosureCase(
        subject_resident_code=args.resident_code, requester_kind=KINDS[args.requester_kind],
        requester_name=args.requester_name, identity_documents=[DOCUMENTS[d] for d in args.documents],
        channel=CHANNELS[args.channel], scopes=[SCOPES[s] for s in args.scopes])
    _timestamp(case.receive_time, args.received)
    return await clerk("CreateDisclosureCase", pb.CreateDisclosureCaseRequest(
        disclosure_case=case, request_id=args.request_id))


def _extension(args: argparse.Namespace) -> pb.DeadlineExtension:
    extension = pb.DeadlineExtension(reason=args.reason)
    new = args.new_deadline
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = (
        new.year, new.month, new.day)
    return extension


async def _suspend(clerk: Clerk, args: argparse.Namespace) -> Any:
    case = pb.UsageSuspensionCase(
        subject_resident_code=args.resident_code, requester_kind=KINDS[args.requester_kind],
        requester_name=args.requester_name, identity_documents=[DOCUMENTS[d] for d in args.documents],
        channel=CHANNELS[args.channel], purposes=args.purposes, ground=GROUNDS[args.ground])
    _timestamp(case.receive_time, args.received)
    return await clerk("CreateUsageSuspensionCase", pb.CreateUsageSuspensionCaseRequest(
        usage_suspension_case=case, request_id=args.request_id), SUSPENSION_PURPOSE)


async def _suspension_step(clerk: Clerk, name: str, tag: str, args: argparse.Namespace) -> Any:
    action = args.cases_action
    if action == "verify":
        request: message.Message = pb.VerifyUsageSuspensionCaseIdentityRequest(
            name=name, etag=tag, verified=not args.rejected, rejection_reason=args.rejected)
    elif action == "extend":
        request = pb.ExtendUsageSuspensionCaseRequest(name=name, etag=tag, extension=_extension(args))
    elif action == "decide":
        decision = pb.USAGE_SUSPENSION_DECISION_STOP if args.stop else pb.USAGE_SUSPENSION_DECISION_NOT_STOP \
            if args.not_stop else pb.USAGE_SUSPENSION_DECISION_UNSPECIFIED
        request = pb.DecideUsageSuspensionCaseRequest(name=name, etag=tag, decision=decision, reason=args.reason,
                                                      stopped_purposes=args.stop_purposes)
    else:
        request = pb.NotifyUsageSuspensionCaseRequest(name=name, etag=tag)
    method = {"verify": "VerifyUsageSuspensionCaseIdentity", "extend": "ExtendUsageSuspensionCase",
              "decide": "DecideUsageSuspensionCase", "notify": "NotifyUsageSuspensionCase"}[action]
    return await clerk(method, request, SUSPENSION_PURPOSE)


async def _disclosure_step(clerk: Clerk, args: argparse.Namespace) -> Any:
    name = _name(args.case, CASES)
    tag = await _etag(clerk, name, args)
    if name.startswith(f"{SUSPENSIONS}/"):
        return await _suspension_step(clerk, name, tag, args)
    if args.cases_action == "decide" and (args.stop or args.not_stop or args.reason or args.stop_purposes):
        print("juki: --stop, --not-stop, --reason and --stop-purpose are for usage-suspension cases",
              file=sys.stderr)
        raise SystemExit(2)
    if args.cases_action == "verify":
        return await clerk("VerifyDisclosureCaseIdentity", pb.VerifyDisclosureCaseIdentityRequest(
            name=name, etag=tag, verified=not args.rejected, rejection_reason=args.rejected))
    if args.cases_action == "extend":
        return await clerk("ExtendDisclosureCase", pb.ExtendDisclosureCaseRequest(
            name=name, etag=tag, extension=_extension(args)))
    method, request = {"decide": ("DecideDisclosureCase", pb.DecideDisclosureCaseRequest),
                       "notify": ("NotifyDisclosureCase", pb.NotifyDisclosureCaseRequest)}[args.cases_action]
    return await clerk(method, request(name=name, etag=tag))


async def _close(clerk: Clerk, args: argparse.Namespace) -> Any:
    name = _name(args.case, CASES)
    tag = await _etag(clerk, name, args)
    if name.startswith(f"{SUSPENSIONS}/"):
        return await clerk("CloseUsageSuspensionCase", pb.CloseUsageSuspensionCaseRequest(name=name, etag=tag),
                           SUSPENSION_PURPOSE)
    if name.startswith(f"{CORRECTIONS}/"):
        return await clerk("CloseCorrectionCase", pb.CloseCorrectionCaseRequest(name=name, etag=tag),
                           CORRECTION_PURPOSE)
    return await clerk("CloseDisclosureCase", pb.CloseDisclosureCaseRequest(name=name, etag=tag))


async def _show(clerk: Clerk, args: argparse.Namespace) -> Any:
    return await _get(clerk, _name(args.case, CASES))


async def _correct(clerk: Clerk, args: argparse.Namespace) -> Any:
    case = pb.CorrectionCase(disclosure_case=_name(args.case, CASES), file=FILES[args.file], items=args.items)
    _timestamp(case.receive_time, args.received)
    return await clerk("CreateCorrectionCase", pb.CreateCorrectionCaseRequest(
        correction_case=case, request_id=args.request_id), CORRECTION_PURPOSE)


async def _investigation(clerk: Clerk, args: argparse.Namespace) -> Any:
    name = _name(args.case, CORRECTIONS)
    tag = await _etag(clerk, name, args)
    if args.cases_action == "investigate":
        return await clerk("RecordInvestigationStep", pb.RecordInvestigationStepRequest(
            name=name, etag=tag, step=pb.InvestigationStep(description=args.step)), CORRECTION_PURPOSE)
    return await clerk("ConcludeCorrectionInvestigation", pb.ConcludeCorrectionInvestigationRequest(
        name=name, etag=tag, error_found=args.error_found, reason_code=args.reason_code, fields=args.fields),
        CORRECTION_PURPOSE)


async def _documents(clerk: Clerk, args: argparse.Namespace) -> int:
    parent = _name(args.case, CASES)
    request = pb.ListDisclosureDocumentsRequest(parent=parent, page_size=500)
    while True:
        page = await clerk("ListDisclosureDocuments", request, _purpose(parent))
        for document in page.disclosure_documents:
            print(format_document(document))
        if not page.next_page_token:
            return 0
        request.page_token = page.next_page_token


def _save(path: Path, content: bytes) -> None:
    """Write a notice readable by its owner only: it holds the person's records."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)


async def _fetch(clerk: Clerk, args: argparse.Namespace) -> int:
    name = str(args.case)
    document = await clerk("GetDisclosureDocument", pb.GetDisclosureDocumentRequest(
        name=name, view=pb.DOCUMENT_VIEW_FULL), _purpose(name))
    pdf, content = bytes(document.pdf), document.json.encode()
    # The stored digests are the notice as issued: a copy that differs is not saved.
    if hashlib.sha256(pdf).hexdigest() != document.pdf_sha256 or \
            hashlib.sha256(content).hexdigest() != document.json_sha256:
        print(f"juki: {name}: content does not match its SHA-256; nothing saved", file=sys.stderr)
        return 1
    print(format_document(document))
    outputs = [] if args.no_pdf else [(args.output or Path(f"{name.rsplit('/', 1)[-1]}.pdf"), pdf)]
    if args.json_output is not None:
        outputs.append((args.json_output, content))
    for path, data in outputs:
        _save(path, data)
        print(f"saved {path} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    return 0


async def _pages(clerk: Clerk, method: str, request: Any, field: str, purpose: str) -> AsyncIterator[Any]:
    while True:
        page = await clerk(method, request, purpose)
        for case in getattr(page, field):
            yield case
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def _status(args: argparse.Namespace) -> pb.DeadlineStatus.ValueType:
    return pb.DEADLINE_STATUS_OVERDUE if args.overdue else pb.DEADLINE_STATUS_AT_RISK if args.at_risk \
        else pb.DEADLINE_STATUS_UNSPECIFIED


def request_for(args: argparse.Namespace) -> pb.ListDisclosureCasesRequest:
    return pb.ListDisclosureCasesRequest(open_only=not args.all, deadline_status=_status(args), page_size=500)


async def _list(clerk: Clerk, args: argparse.Namespace) -> int:
    if args.corrections and (args.overdue or args.at_risk):
        print("juki: correction cases have no deadline status: --corrections goes with --all or alone",
              file=sys.stderr)
        return 2
    if args.corrections:
        print(CORRECTION_HEADER)
        cases = _pages(clerk, "ListCorrectionCases", pb.ListCorrectionCasesRequest(
            open_only=not args.all, page_size=500), "correction_cases", CORRECTION_PURPOSE)
    elif args.suspensions:
        print(HEADER)
        cases = _pages(clerk, "ListUsageSuspensionCases", pb.ListUsageSuspensionCasesRequest(
            open_only=not args.all, deadline_status=_status(args), page_size=500), "usage_suspension_cases",
            SUSPENSION_PURPOSE)
    else:
        print(HEADER)
        cases = _pages(clerk, "ListDisclosureCases", request_for(args), "disclosure_cases", PURPOSE)
    count = 0
    async for case in cases:
        print(format_correction_row(case) if args.corrections else format_row(case))
        count += 1
    print(f"{count} case(s)")
    return 0


STEPS: dict[str, Callable[[Clerk, argparse.Namespace], Awaitable[Any]]] = {
    "create": _create, "verify": _disclosure_step, "extend": _disclosure_step, "decide": _disclosure_step,
    "notify": _disclosure_step, "close": _close, "get": _show, "correct": _correct,
    "investigate": _investigation, "conclude": _investigation, "suspend": _suspend,
}
"""Actions that answer a case, printed with `format_case`."""
OTHERS: dict[str, Callable[[Clerk, argparse.Namespace], Awaitable[int]]] = {
    "list": _list, "documents": _documents, "fetch": _fetch}


async def run(args: argparse.Namespace, home: Path) -> int:
    endpoints = Endpoints.load(home / "endpoints.json")
    credential = load_credential(home, args.operator)
    async with gateway_channel(endpoints, args.caller) as channel:
        clerk = Clerk(disclosure_pb2_grpc.DisclosureServiceStub(channel), credential)
        try:
            if args.cases_action in OTHERS:
                return await OTHERS[args.cases_action](clerk, args)
            print(format_case(await STEPS[args.cases_action](clerk, args)))
        except grpc.aio.AioRpcError as error:
            print_error(error)
            return 1
    return 0
