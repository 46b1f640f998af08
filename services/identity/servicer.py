"""IdentityService: a thin adapter from the contract to the register API."""

from __future__ import annotations

from typing import Any, cast

from grpc import aio

from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from jukilib.register.api import RegisterApi


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, api: RegisterApi) -> None:
        self._api = api

    async def ApplyNotification(
        self, request: identity_pb2.ApplyNotificationRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.ApplyNotificationResponse:
        version = cast(identity_pb2.ResidentVersion, await self._api.apply(request))
        return identity_pb2.ApplyNotificationResponse(resident_version=version)

    async def GetResident(
        self, request: identity_pb2.GetResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.Resident:
        return cast(identity_pb2.Resident, await self._api.get(request.name))

    async def LookupResident(
        self, request: identity_pb2.LookupResidentRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.Resident:
        return cast(identity_pb2.Resident, await self._api.lookup(request.resident_code))

    async def ListResidentVersions(
        self, request: identity_pb2.ListResidentVersionsRequest, context: aio.ServicerContext[Any, Any]
    ) -> identity_pb2.ListResidentVersionsResponse:
        versions, token = await self._api.list_versions(request.parent, request.page_size, request.page_token)
        return identity_pb2.ListResidentVersionsResponse(
            resident_versions=cast(list[identity_pb2.ResidentVersion], versions), next_page_token=token
        )
