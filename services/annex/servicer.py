"""AnnexService: the register methods bound to the annex contract's names and messages."""

from __future__ import annotations

from typing import Any

from grpc import aio

from juki.annex.v1 import annex_pb2 as pb
from juki.annex.v1 import annex_pb2_grpc
from juki_services.annex import perimeter
from jukilib import caller
from jukilib.errors import to_status
from jukilib.register.api import RegisterApi
from jukilib.register.retention import Retention
from jukilib.register.servicer import (
    ModificationMethods,
    MunicipalityReportMethods,
    RegisterContract,
    RegisterMethods,
    RetentionMethods,
    ReviewMethods,
)

CONTRACT = RegisterContract(
    apply_response=pb.ApplyNotificationResponse, stream_response=pb.StreamNotificationsResponse,
    version_field="annex_resident_version", search_response=pb.SearchAnnexResidentsResponse,
    candidate=pb.AnnexResidentCandidate, candidate_field="annex_resident",
    list_response=pb.ListAnnexResidentVersionsResponse, versions_field="annex_resident_versions",
    batch_lookup_response=pb.BatchLookupAnnexResidentsResponse, batch_lookup_result=pb.BatchLookupAnnexResidentResult,
    resource_field="annex_resident",
)


class AnnexServicer(MunicipalityReportMethods, ReviewMethods, ModificationMethods, RetentionMethods, RegisterMethods,
                    annex_pb2_grpc.AnnexServiceServicer):
    contract = CONTRACT

    def __init__(self, api: RegisterApi, retention: Retention | None = None) -> None:
        self._api = api
        self._reports = api.reports
        # Without one (a test, a tool) every purge is refused: there is no disclosure service to ask.
        self._retention = retention or Retention(api.engine.database, holds=None)

    ApplyNotification = RegisterMethods.apply_notification
    StreamNotifications = RegisterMethods.stream

    # 住基法 30-44-6, keyed on the file (`perimeter`): every read answers 国外転出者 only, without 住民票コード,
    # unless the gateway declared the call a subject access (30-44-13); deny by default.

    async def GetAnnexResident(self, request: pb.GetAnnexResidentRequest,
                               context: aio.ServicerContext[Any, Any]) -> Any:
        who, answered = caller.current_or_none(), perimeter.Answered()
        resource = answered.checked(await self._api.get(request.name, perimeter.reading(who)), who)
        answered.tell_gateway(context)
        return resource

    async def LookupAnnexResident(self, request: pb.LookupAnnexResidentRequest,
                                  context: aio.ServicerContext[Any, Any]) -> Any:
        who, answered = caller.current_or_none(), perimeter.Answered()
        resource = answered.checked(await self._api.lookup(request, perimeter.reading(who)), who)
        answered.tell_gateway(context)
        return resource

    async def BatchLookupAnnexResidents(self, request: pb.BatchLookupAnnexResidentsRequest,
                                        context: aio.ServicerContext[Any, Any]) -> Any:
        who, answered = caller.current_or_none(), perimeter.Answered()
        found = await self._api.batch_lookup(request.resident_codes, perimeter.reading(who))
        wanted = self._api.wanted(perimeter.reading(who))
        not_found = to_status(perimeter.not_found())
        results = []
        for current in found:
            resource = None if current is None else self._api.resource_message(current, wanted)
            if resource is None or not perimeter.admits(resource, who):
                results.append(pb.BatchLookupAnnexResidentResult(error=not_found))  # as for an unknown code
            else:
                results.append(pb.BatchLookupAnnexResidentResult(annex_resident=answered.without_code(resource)))
        answered.tell_gateway(context)
        return pb.BatchLookupAnnexResidentsResponse(results=results)

    async def SearchAnnexResidents(self, request: pb.SearchAnnexResidentsRequest,
                                   context: aio.ServicerContext[Any, Any]) -> Any:
        who, answered = caller.current_or_none(), perimeter.Answered()
        candidates, truncated = await self._api.search(request.query, perimeter.reading(who))
        response = pb.SearchAnnexResidentsResponse(
            candidates=[pb.AnnexResidentCandidate(annex_resident=answered.without_code(resource),
                                                  matched_fields=fields)
                        for resource, fields in candidates if perimeter.admits(resource, who)],
            truncated=truncated)
        answered.tell_gateway(context)
        return response

    async def ListAnnexResidentVersions(self, request: pb.ListAnnexResidentVersionsRequest,
                                        context: aio.ServicerContext[Any, Any]) -> Any:
        """The person must be a 国外転出者 now (else NOT_FOUND, as for an unknown name), and only the versions
        recorded while abroad are answered (a page may then hold fewer than `page_size`)."""
        who, answered = caller.current_or_none(), perimeter.Answered()
        if perimeter.limited(who):
            perimeter.Answered().checked(await self._api.get(request.parent, perimeter.reading(who)), who)
        versions, token = await self._api.list_versions(request.parent, request.page_size, request.page_token,
                                                        perimeter.reading(who))
        response = pb.ListAnnexResidentVersionsResponse(annex_resident_versions=answered.kept(versions, who),
                                                        next_page_token=token)
        answered.tell_gateway(context)
        return response
