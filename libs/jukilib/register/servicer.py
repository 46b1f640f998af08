"""RPC methods that both register services serve with the same messages (juki.register.v1)."""

from __future__ import annotations

from typing import Any

from grpc import aio

from juki.register.v1 import register_pb2
from jukilib.register.reports import MunicipalityReports, report_message, validate_new_report


class MunicipalityReportMethods:
    """CreateMunicipalityReport, ListMunicipalityReports, AcknowledgeMunicipalityReport (住基法 12-5)."""

    _reports: MunicipalityReports

    async def CreateMunicipalityReport(
        self, request: register_pb2.CreateMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        new = validate_new_report(request.municipality_report, request.request_id)
        row = await self._reports.create(new)
        return report_message(row, register_pb2.MunicipalityReport())  # type: ignore[no-any-return]

    async def ListMunicipalityReports(
        self, request: register_pb2.ListMunicipalityReportsRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.ListMunicipalityReportsResponse:
        rows, token = await self._reports.list(int(request.state), request.page_size, request.page_token)
        return register_pb2.ListMunicipalityReportsResponse(
            municipality_reports=[report_message(r, register_pb2.MunicipalityReport()) for r in rows],
            next_page_token=token)

    async def AcknowledgeMunicipalityReport(
        self, request: register_pb2.AcknowledgeMunicipalityReportRequest, context: aio.ServicerContext[Any, Any]
    ) -> register_pb2.MunicipalityReport:
        row = await self._reports.acknowledge(request.name)
        return report_message(row, register_pb2.MunicipalityReport())  # type: ignore[no-any-return]
