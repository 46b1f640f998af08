"""IdentityService: a thin adapter from the contract to the register API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from grpc import aio

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.domain import codes
from jukilib.errors import NotFound
from jukilib.register.api import RegisterApi
from jukilib.register.servicer import MunicipalityReportMethods
from jukilib.register.streaming import stream_notifications
from jukilib.register.validation import Violations
from services.identity.numbers import IndividualNumbers


class IdentityServicer(MunicipalityReportMethods, identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, api: RegisterApi) -> None:
        self._api = api
        self._reports = api.reports
        self._numbers = cast(IndividualNumbers, api.engine.hooks)

    async def ApplyNotification(
        self, request: identity_pb2.ApplyNotificationRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.ApplyNotificationResponse:
        version = cast(identity_pb2.ResidentVersion, await self._api.apply(request))
        return identity_pb2.ApplyNotificationResponse(resident_version=version)

    async def StreamNotifications(
        self, request_iterator: AsyncIterator[identity_pb2.StreamNotificationsRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[identity_pb2.StreamNotificationsResponse]:
        async for answer in stream_notifications(self._api, request_iterator, identity_pb2.StreamNotificationsResponse,
                                                 "resident_version"):
            yield answer

    async def GetResident(
        self, request: identity_pb2.GetResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.Resident:
        return cast(identity_pb2.Resident, await self._api.get(request.name))

    async def LookupResident(
        self, request: identity_pb2.LookupResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.Resident:
        return cast(identity_pb2.Resident, await self._api.lookup(request))

    async def SearchResidents(
        self, request: identity_pb2.SearchResidentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.SearchResidentsResponse:
        candidates, truncated = await self._api.search(request.query)
        return identity_pb2.SearchResidentsResponse(
            candidates=[identity_pb2.ResidentCandidate(resident=cast(identity_pb2.Resident, resource),
                                                       matched_fields=fields) for resource, fields in candidates],
            truncated=truncated)

    async def LookupResidentByIndividualNumber(
        self, request: identity_pb2.LookupResidentByIndividualNumberRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.Resident:
        violations = Violations()
        violations.extend("individual_number", codes.individual_number_problems(request.individual_number))
        violations.raise_if_any()
        person_id = await self._numbers.person_of(request.individual_number)
        if person_id is None:
            raise NotFound("no person with this individual number in the file", "PERSON_NOT_FOUND")
        return cast(identity_pb2.Resident, await self._api.get_by_person_id(person_id))

    async def ListResidentVersions(
        self, request: identity_pb2.ListResidentVersionsRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.ListResidentVersionsResponse:
        versions, token = await self._api.list_versions(request.parent, request.page_size, request.page_token)
        return identity_pb2.ListResidentVersionsResponse(
            resident_versions=cast(list[identity_pb2.ResidentVersion], versions), next_page_token=token
        )
