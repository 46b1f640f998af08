"""DisclosureService: thin bindings of the contract to the desk (juki_services.disclosure.desk)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
from grpc import aio

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki_services.disclosure import rules
from juki_services.disclosure.desk import Desk, actor_of, case_message, parse_name, suspension_message
from juki_services.disclosure.organ_notices import OrganNotices, notification_message
from jukilib import caller, paging
from jukilib.errors import FailedPrecondition, FieldViolation, InvalidArgument

Ctx = aio.ServicerContext[Any, Any]
CASES, CORRECTIONS, SUSPENSIONS = "disclosureCases", "correctionCases", "usageSuspensionCases"


def document_message(row: Mapping[str, Any], full: bool) -> pb.DisclosureDocument:
    document = pb.DisclosureDocument(
        name=f"{row['case_kind']}Cases/{row['case_id']}/documents/{row['id']}", kind=row["kind"],
        addressee=row["addressee"], pdf_sha256=row["pdf_sha256"], json_sha256=row["json_sha256"],
        record_versions=row["record_versions"], subject_resident_code=row["subject_resident_code"],
        document_number=row["number"] or "")
    if full:
        document.pdf, document.json = bytes(row["pdf"]), row["json"]
    document.create_time.FromDatetime(row["create_time"])
    return document


def _position(token: str) -> tuple[dt.datetime, uuid.UUID] | None:
    position = paging.decode_token(token, keys=("time", "id"))
    if not position:
        return None
    try:
        return dt.datetime.fromisoformat(str(position["time"])), uuid.UUID(str(position["id"]))
    except ValueError:
        raise paging.invalid_token() from None


def _next_token(rows: list[asyncpg.Record], limit: int) -> str:
    if len(rows) <= limit:
        return ""
    last = rows[limit - 1]
    return paging.encode_token({"time": last["receive_time"].isoformat(), "id": str(last["id"])})


def _actor() -> str:
    """The caller of this RPC as a case's history records it; read here, in the servicer, once per call."""
    return actor_of(caller.current())


class DisclosureServicer(disclosure_pb2_grpc.DisclosureServiceServicer):
    def __init__(self, desk: Desk, organ_notices: OrganNotices | None = None) -> None:
        self._desk = desk
        self._organ_notices = organ_notices

    def _case(self, row: asyncpg.Record) -> pb.DisclosureCase:
        return case_message(row, self._desk.today())

    async def _correction(self, case_id: uuid.UUID) -> pb.CorrectionCase:
        row, steps = await self._desk.correction(case_id)
        return self._desk.correction_message(row, steps)

    async def CreateDisclosureCase(self, request: pb.CreateDisclosureCaseRequest, context: Ctx) -> pb.DisclosureCase:
        return self._case(await self._desk.create(request, _actor()))

    async def GetDisclosureCase(self, request: pb.GetDisclosureCaseRequest, context: Ctx) -> pb.DisclosureCase:
        return self._case(await self._desk.get(parse_name(request.name, CASES)))

    async def ListDisclosureCases(
        self, request: pb.ListDisclosureCasesRequest, context: Ctx
    ) -> pb.ListDisclosureCasesResponse:
        limit = paging.page_size(request.page_size)
        rows = await self._desk.list_cases(request, _position(request.page_token), limit + 1)
        return pb.ListDisclosureCasesResponse(disclosure_cases=[self._case(r) for r in rows[:limit]],
                                              next_page_token=_next_token(rows, limit))

    async def VerifyDisclosureCaseIdentity(
        self, request: pb.VerifyDisclosureCaseIdentityRequest, context: Ctx
    ) -> pb.DisclosureCase:
        case_id = parse_name(request.name, CASES)
        rules.validate_verification(request.verified, request.rejection_reason)
        return self._case(await self._desk.verify(case_id, request.etag, request.verified, _actor(),
                                                  request.rejection_reason))

    async def ExtendDisclosureCase(self, request: pb.ExtendDisclosureCaseRequest, context: Ctx) -> pb.DisclosureCase:
        case_id = parse_name(request.name, CASES)
        if not request.HasField("extension"):
            raise InvalidArgument([FieldViolation("extension", "is required", "REQUIRED_FIELD")])
        return self._case(await self._desk.extend(case_id, request.etag, request.extension, _actor()))

    async def DecideDisclosureCase(self, request: pb.DecideDisclosureCaseRequest, context: Ctx) -> pb.DisclosureCase:
        return self._case(await self._desk.decide(parse_name(request.name, CASES), request.etag, _actor()))

    async def NotifyDisclosureCase(self, request: pb.NotifyDisclosureCaseRequest, context: Ctx) -> pb.DisclosureCase:
        return self._case(await self._desk.move(parse_name(request.name, CASES), request.etag,
                                                pb.DISCLOSURE_STATE_NOTIFIED, _actor()))

    async def CloseDisclosureCase(self, request: pb.CloseDisclosureCaseRequest, context: Ctx) -> pb.DisclosureCase:
        return self._case(await self._desk.move(parse_name(request.name, CASES), request.etag,
                                                pb.DISCLOSURE_STATE_CLOSED, _actor()))

    async def GetDisclosureDocument(
        self, request: pb.GetDisclosureDocumentRequest, context: Ctx
    ) -> pb.DisclosureDocument:
        full = request.view != pb.DOCUMENT_VIEW_BASIC
        return document_message(await self._desk.document(request.name, full), full)

    async def ListDisclosureDocuments(
        self, request: pb.ListDisclosureDocumentsRequest, context: Ctx
    ) -> pb.ListDisclosureDocumentsResponse:
        limit = paging.page_size(request.page_size)
        position = paging.decode_token(request.page_token, keys=("offset",))
        offset = paging.int_at(position, "offset") if position else 0
        full = request.view == pb.DOCUMENT_VIEW_FULL
        rows = await self._desk.documents(request.parent, offset, limit + 1, full)
        token = paging.encode_token({"offset": offset + limit}) if len(rows) > limit else ""
        documents = [document_message(r, full) for r in rows[:limit]]
        return pb.ListDisclosureDocumentsResponse(disclosure_documents=documents, next_page_token=token)

    async def CreateCorrectionCase(self, request: pb.CreateCorrectionCaseRequest, context: Ctx) -> pb.CorrectionCase:
        row = await self._desk.create_correction(request, _actor())
        return await self._correction(row["id"])

    async def GetCorrectionCase(self, request: pb.GetCorrectionCaseRequest, context: Ctx) -> pb.CorrectionCase:
        return await self._correction(parse_name(request.name, CORRECTIONS))

    async def ListCorrectionCases(
        self, request: pb.ListCorrectionCasesRequest, context: Ctx
    ) -> pb.ListCorrectionCasesResponse:
        limit = paging.page_size(request.page_size)
        found = await self._desk.list_corrections(_position(request.page_token), limit + 1, request.open_only)
        cases = [self._desk.correction_message(r, s) for r, s in found[:limit]]
        return pb.ListCorrectionCasesResponse(correction_cases=cases,
                                              next_page_token=_next_token([r for r, _ in found], limit))

    async def RecordInvestigationStep(
        self, request: pb.RecordInvestigationStepRequest, context: Ctx
    ) -> pb.CorrectionCase:
        case_id = parse_name(request.name, CORRECTIONS)
        await self._desk.record_step(case_id, request.etag, request.step.description, _actor())
        return await self._correction(case_id)

    async def ConcludeCorrectionInvestigation(
        self, request: pb.ConcludeCorrectionInvestigationRequest, context: Ctx
    ) -> pb.CorrectionCase:
        case_id = parse_name(request.name, CORRECTIONS)
        await self._desk.conclude(case_id, request, _actor())
        return await self._correction(case_id)

    async def CompleteCorrectionCase(
        self, request: pb.CompleteCorrectionCaseRequest, context: Ctx
    ) -> pb.CorrectionCase:
        case_id = parse_name(request.name, CORRECTIONS)
        await self._desk.complete(case_id, _actor())
        return await self._correction(case_id)

    async def CloseCorrectionCase(self, request: pb.CloseCorrectionCaseRequest, context: Ctx) -> pb.CorrectionCase:
        case_id = parse_name(request.name, CORRECTIONS)
        await self._desk.close_correction(case_id, request.etag, _actor())
        return await self._correction(case_id)

    async def ListRetentionHolds(
        self, request: pb.ListRetentionHoldsRequest, context: Ctx
    ) -> pb.ListRetentionHoldsResponse:
        # Only the registers reach this method (jukilib.config.RESERVED_METHODS), each before its purge.
        limit = paging.page_size(request.page_size, default=500, maximum=1000)
        position = paging.decode_token(request.page_token, keys=("after",))
        after = str(position["after"]) if position else ""
        codes = await self._desk.retention_holds(after, limit + 1)
        token = paging.encode_token({"after": codes[limit - 1]}) if len(codes) > limit else ""
        return pb.ListRetentionHoldsResponse(
            retention_holds=[pb.RetentionHold(resident_code=code) for code in codes[:limit]], next_page_token=token)

    # --- usage suspension (利用停止請求) ------------------------------------------------------------------

    def _suspension(self, row: asyncpg.Record) -> pb.UsageSuspensionCase:
        return suspension_message(row, self._desk.today())

    async def CreateUsageSuspensionCase(
        self, request: pb.CreateUsageSuspensionCaseRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        return self._suspension(await self._desk.create_suspension(request, _actor()))

    async def GetUsageSuspensionCase(
        self, request: pb.GetUsageSuspensionCaseRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        return self._suspension(await self._desk.suspension(parse_name(request.name, SUSPENSIONS)))

    async def ListUsageSuspensionCases(
        self, request: pb.ListUsageSuspensionCasesRequest, context: Ctx
    ) -> pb.ListUsageSuspensionCasesResponse:
        limit = paging.page_size(request.page_size)
        rows = await self._desk.list_suspensions(request, _position(request.page_token), limit + 1)
        return pb.ListUsageSuspensionCasesResponse(usage_suspension_cases=[self._suspension(r) for r in rows[:limit]],
                                                   next_page_token=_next_token(rows, limit))

    async def VerifyUsageSuspensionCaseIdentity(
        self, request: pb.VerifyUsageSuspensionCaseIdentityRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        case_id = parse_name(request.name, SUSPENSIONS)
        rules.validate_verification(request.verified, request.rejection_reason)
        return self._suspension(await self._desk.verify_suspension(case_id, request.etag, request.verified, _actor(),
                                                                   request.rejection_reason))

    async def ExtendUsageSuspensionCase(
        self, request: pb.ExtendUsageSuspensionCaseRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        case_id = parse_name(request.name, SUSPENSIONS)
        if not request.HasField("extension"):
            raise InvalidArgument([FieldViolation("extension", "is required", "REQUIRED_FIELD")])
        return self._suspension(await self._desk.extend_suspension(case_id, request.etag, request.extension,
                                                                   _actor()))

    async def DecideUsageSuspensionCase(
        self, request: pb.DecideUsageSuspensionCaseRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        case_id = parse_name(request.name, SUSPENSIONS)
        return self._suspension(await self._desk.decide_suspension(case_id, request, _actor()))

    async def NotifyUsageSuspensionCase(
        self, request: pb.NotifyUsageSuspensionCaseRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        return self._suspension(await self._desk.move_suspension(
            parse_name(request.name, SUSPENSIONS), request.etag, pb.USAGE_SUSPENSION_STATE_NOTIFIED, _actor()))

    async def CloseUsageSuspensionCase(
        self, request: pb.CloseUsageSuspensionCaseRequest, context: Ctx
    ) -> pb.UsageSuspensionCase:
        return self._suspension(await self._desk.move_suspension(
            parse_name(request.name, SUSPENSIONS), request.etag, pb.USAGE_SUSPENSION_STATE_CLOSED, _actor()))

    async def ListActiveUsageSuspensions(
        self, request: pb.ListActiveUsageSuspensionsRequest, context: Ctx
    ) -> pb.ListActiveUsageSuspensionsResponse:
        # Only the gateway reaches this method: it does not expose it (juki_services.gateway.app).
        limit = paging.page_size(request.page_size, default=500, maximum=1000)
        position = paging.decode_token(request.page_token, keys=("after",))
        try:
            after = uuid.UUID(str(position["after"])) if position else None
        except ValueError:
            raise paging.invalid_token() from None
        found = await self._desk.active_suspensions(after, limit + 1)
        token = paging.encode_token({"after": str(found[limit - 1][0])}) if len(found) > limit else ""
        return pb.ListActiveUsageSuspensionsResponse(usage_suspensions=[
            pb.UsageSuspension(usage_suspension_case=f"{SUSPENSIONS}/{case_id}", resident_codes=codes,
                               purposes=purposes, persons=persons)
            for case_id, codes, purposes, persons in found[:limit]],
            next_page_token=token)

    async def GetCaseStatus(self, request: pb.GetCaseStatusRequest, context: Ctx) -> pb.CaseStatus:
        # Only the gateway reaches this method: it does not expose it (juki_services.gateway.app).
        is_open, state = await self._desk.case_status(request.name)
        return pb.CaseStatus(name=request.name, open=is_open, state=state)

    async def ListOrganNotifications(
        self, request: pb.ListOrganNotificationsRequest, context: Ctx
    ) -> pb.ListOrganNotificationsResponse:
        if self._organ_notices is None:
            raise FailedPrecondition("organ notices are not kept by this server", "ORGAN_NOTICES_OFF")
        limit = paging.page_size(request.page_size)
        rows = await self._organ_notices.list(_position(request.page_token), limit + 1)
        token = ""
        if len(rows) > limit:
            last = rows[limit - 1]
            token = paging.encode_token({"time": last["create_time"].isoformat(), "id": str(last["id"])})
        return pb.ListOrganNotificationsResponse(
            organ_notifications=[notification_message(r) for r in rows[:limit]], next_page_token=token)
