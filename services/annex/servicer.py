"""AnnexService: a thin adapter from the contract to the register API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from grpc import aio

from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from jukilib.register.api import RegisterApi
from jukilib.register.servicer import MunicipalityReportMethods
from jukilib.register.streaming import stream_notifications


class AnnexServicer(MunicipalityReportMethods, annex_pb2_grpc.AnnexServiceServicer):
    def __init__(self, api: RegisterApi) -> None:
        self._api = api
        self._reports = api.reports

    async def ApplyNotification(
        self, request: annex_pb2.ApplyNotificationRequest, context: aio.ServicerContext[Any, Any]
    ) -> annex_pb2.ApplyNotificationResponse:
        version = cast(annex_pb2.AnnexResidentVersion, await self._api.apply(request))
        return annex_pb2.ApplyNotificationResponse(annex_resident_version=version)

    async def StreamNotifications(
        self, request_iterator: AsyncIterator[annex_pb2.StreamNotificationsRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[annex_pb2.StreamNotificationsResponse]:
        async for answer in stream_notifications(self._api, request_iterator, annex_pb2.StreamNotificationsResponse,
                                                 "annex_resident_version"):
            yield answer

    async def GetAnnexResident(
        self, request: annex_pb2.GetAnnexResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> annex_pb2.AnnexResident:
        return cast(annex_pb2.AnnexResident, await self._api.get(request.name))

    async def LookupAnnexResident(
        self, request: annex_pb2.LookupAnnexResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> annex_pb2.AnnexResident:
        return cast(annex_pb2.AnnexResident, await self._api.lookup(request))

    async def SearchAnnexResidents(
        self, request: annex_pb2.SearchAnnexResidentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> annex_pb2.SearchAnnexResidentsResponse:
        candidates, truncated = await self._api.search(request.query)
        return annex_pb2.SearchAnnexResidentsResponse(
            candidates=[annex_pb2.AnnexResidentCandidate(annex_resident=cast(annex_pb2.AnnexResident, resource),
                                                         matched_fields=fields) for resource, fields in candidates],
            truncated=truncated)

    async def ListAnnexResidentVersions(
        self, request: annex_pb2.ListAnnexResidentVersionsRequest, context: aio.ServicerContext[Any, Any]
    ) -> annex_pb2.ListAnnexResidentVersionsResponse:
        versions, token = await self._api.list_versions(request.parent, request.page_size, request.page_token)
        return annex_pb2.ListAnnexResidentVersionsResponse(
            annex_resident_versions=cast(list[annex_pb2.AnnexResidentVersion], versions), next_page_token=token
        )
