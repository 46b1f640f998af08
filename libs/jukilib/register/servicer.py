"""The RPC methods of a register service, written once for both registers.

A register's servicer declares its `RegisterContract` (which response messages and fields its
contract uses) and binds its method names to these implementations; the logic lives here and in
`RegisterApi`, not in the services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from grpc import aio

from juki.register.v1 import register_pb2
from jukilib import caller
from jukilib.errors import NotFound, to_status
from jukilib.register.api import RegisterApi
from jukilib.register.reports import (
    MunicipalityReports,
    report_message,
    source_of,
    validate_answer,
    validate_new_report,
)
from jukilib.register.retention import PurgeRun, Retention, order_of
from jukilib.register.review import ReviewQueue, review_message
from jukilib.register.streaming import stream_notifications


@dataclass(frozen=True)
class RegisterContract:
    """Response messages of one register's contract, and the field each carries its result in."""

    apply_response: Callable[..., Any]
    stream_response: Callable[..., Any]
    version_field: str
    """e.g. `resident_version`: the version in ApplyNotificationResponse and StreamNotificationsResponse."""
    search_response: Callable[..., Any]
    candidate: Callable[..., Any]
    candidate_field: str
    """e.g. `resident`: the resource in a search candidate."""
    list_response: Callable[..., Any]
    versions_field: str
    """e.g. `resident_versions`: the versions in the history response."""
    batch_lookup_response: Callable[..., Any]
    batch_lookup_result: Callable[..., Any]
    """One result of a batch lookup (its `<resource_field>` or its `error`, a google.rpc.Status)."""
    resource_field: str
    """e.g. `resident`: the resource in a batch lookup result."""


class RegisterMethods:
    """ApplyNotification, StreamNotifications, Get, Lookup, Search and history, for any register.

    The caller is read here, once per call, and handed down: the notifying municipality to ingest, the
    caller (its field mask) to reads. Nothing below a servicer reads the call's context."""

    contract: RegisterContract
    _api: RegisterApi

    async def apply_notification(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        version = await self._api.apply(request, caller.current().organization)
        return self.contract.apply_response(**{self.contract.version_field: version})

    async def stream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for answer in stream_notifications(self._api, request_iterator, self.contract.stream_response,
                                                 self.contract.version_field, caller.current().organization):
            yield answer

    async def get(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        return await self._api.get(request.name, caller.current_or_none())

    async def lookup(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        return await self._api.lookup(request, caller.current_or_none())

    async def batch_lookup(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        who = caller.current_or_none()
        found = await self._api.batch_lookup(request.resident_codes, who)
        field, wanted = self.contract.resource_field, self._api.wanted(who)
        not_found = to_status(NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND"))
        # One constructor call builds the whole answer from dicts (in C).
        return self._api.construct(lambda checked: self.contract.batch_lookup_response(results=[
            {"error": not_found} if current is None else {field: self._api.resource_fields(current, wanted, checked)}
            for current in found]))

    async def search(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        candidates, truncated = await self._api.search(request.query, caller.current_or_none())
        contract = self.contract
        return contract.search_response(
            candidates=[contract.candidate(**{contract.candidate_field: resource}, matched_fields=fields)
                        for resource, fields in candidates],
            truncated=truncated)

    async def list_versions(self, request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        versions, token = await self._api.list_versions(request.parent, request.page_size, request.page_token,
                                                        caller.current_or_none())
        return self.contract.list_response(**{self.contract.versions_field: versions}, next_page_token=token)


class MunicipalityReportMethods:
    """Create, List, Get, Acknowledge and AnswerMunicipalityReport (住基法 12-5), and the desk's review of the
    agency's reports (30-8): Investigate, Forward and DismissMunicipalityReport."""

    _reports: MunicipalityReports

    def _report_message(self, row: Any) -> register_pb2.MunicipalityReport:
        message: register_pb2.MunicipalityReport = report_message(row, register_pb2.MunicipalityReport(),
                                                                  self._reports.overdue_after)
        return message

    async def CreateMunicipalityReport(
        self, request: register_pb2.CreateMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        new = validate_new_report(request.municipality_report, request.request_id, self._reports.record_fields,
                                  source_of(caller.current().organization))
        row = await self._reports.create(new)
        return self._report_message(row)

    async def ListMunicipalityReports(
        self, request: register_pb2.ListMunicipalityReportsRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ListMunicipalityReportsResponse:
        rows, token = await self._reports.list(int(request.state), request.page_size, request.page_token,
                                               caller.current().organization, overdue_only=request.overdue_only)
        return register_pb2.ListMunicipalityReportsResponse(
            municipality_reports=[self._report_message(r) for r in rows],
            next_page_token=token)

    async def GetMunicipalityReport(
        self, request: register_pb2.GetMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.get(request.name, caller.current().organization)
        return self._report_message(row)

    async def AcknowledgeMunicipalityReport(
        self, request: register_pb2.AcknowledgeMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.acknowledge(request.name, caller.current().organization)
        return self._report_message(row)

    async def AnswerMunicipalityReport(
        self, request: register_pb2.AnswerMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.answer(validate_answer(request), caller.current().organization)
        return self._report_message(row)

    async def InvestigateMunicipalityReport(
        self, request: register_pb2.InvestigateMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.review(request.name, caller.current().organization,
                                         register_pb2.REPORT_STATE_INVESTIGATING)
        return self._report_message(row)

    async def ForwardMunicipalityReport(
        self, request: register_pb2.ForwardMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.review(request.name, caller.current().organization, register_pb2.REPORT_STATE_OPEN)
        return self._report_message(row)

    async def DismissMunicipalityReport(
        self, request: register_pb2.DismissMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.review(request.name, caller.current().organization,
                                         register_pb2.REPORT_STATE_DISMISSED, request.reason_code)
        return self._report_message(row)


class ReviewMethods:
    """The prefecture's desk on the register's review queue (DOMAIN §C): List, Get, Dismiss and ReportReviewItem.
    The gateway admits only the desk's purpose to them; nothing else in the suite calls them."""

    _api: RegisterApi

    @property
    def _review(self) -> ReviewQueue:
        return self._api.review

    def _review_message(self, row: Any, content: Any = None) -> register_pb2.ReviewItem:
        binding = self._api.binding
        return review_message(row, binding.collection, content, binding.record_type)

    async def ListReviewItems(
        self, request: register_pb2.ListReviewItemsRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ListReviewItemsResponse:
        rows, token = await self._review.list(int(request.state), int(request.kind), request.page_size,
                                              request.page_token)
        return register_pb2.ListReviewItemsResponse(review_items=[self._review_message(r) for r in rows],
                                                    next_page_token=token)

    async def GetReviewItem(
        self, request: register_pb2.GetReviewItemRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ReviewItem:
        row, content = await self._review.get(request.name)
        return self._review_message(row, content)

    async def DismissReviewItem(
        self, request: register_pb2.DismissReviewItemRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ReviewItem:
        return self._review_message(await self._review.dismiss(request.name, request.reason_code))

    async def ReportReviewItem(
        self, request: register_pb2.ReportReviewItemRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ReviewItem:
        report = request.municipality_report
        if not report.origin_reference:
            report.origin_reference = request.name  # the report's origin: this item
        new = validate_new_report(report, "", self._api.reports.record_fields,
                                  source_of(caller.current().organization))
        return self._review_message(await self._review.report(request.name, new))


class ModificationMethods:
    """ListModifications: the 修正 versions in commit order, without values (jukilib.register.modifications). The
    gateway admits only the disclosure service's follow-up purpose to it."""

    _api: RegisterApi

    async def ListModifications(
        self, request: register_pb2.ListModificationsRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ListModificationsResponse:
        entries, token = await self._api.modifications.list(request.page_size, request.page_token)
        return register_pb2.ListModificationsResponse(modifications=entries, next_page_token=token)


class RetentionMethods:
    """PurgeExpiredRecords (住基法 30-6 ③ / 30-41 ③), reached only through the gateway: the run is recorded with
    the gateway's request id and the operator, so that `retention_run` joins the operation log."""

    _retention: Retention

    async def PurgeExpiredRecords(
        self, request: register_pb2.PurgeExpiredRecordsRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.PurgeExpiredRecordsResponse:
        who = caller.current()
        result = await self._retention.purge(order_of(request), PurgeRun(who.request_id, who.operator))
        return register_pb2.PurgeExpiredRecordsResponse(
            versions_purged=result.versions, persons_purged=result.persons, versions_held=result.versions_held,
            persons_held=result.persons_held, dry_run=result.dry_run, superseded_years=result.superseded_years,
            removed_years=result.removed_years)
