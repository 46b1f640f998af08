"""IdentityService: the register methods bound to the identity contract's names and messages, plus the
lookup by 個人番号 that only this register has."""

from __future__ import annotations

from typing import Any, cast

from grpc import aio

from juki.identity.v1 import identity_pb2 as pb
from juki.identity.v1 import identity_pb2_grpc
from juki_services.identity.numbers import IndividualNumbers
from jukilib import caller
from jukilib.domain import codes
from jukilib.errors import NotFound, Violations
from jukilib.register.api import RegisterApi, follows_former
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
    version_field="resident_version", search_response=pb.SearchResidentsResponse,
    candidate=pb.ResidentCandidate, candidate_field="resident",
    list_response=pb.ListResidentVersionsResponse, versions_field="resident_versions",
    batch_lookup_response=pb.BatchLookupResidentsResponse, batch_lookup_result=pb.BatchLookupResidentResult,
    resource_field="resident",
)


class IdentityServicer(MunicipalityReportMethods, ReviewMethods, ModificationMethods, RetentionMethods,
                       RegisterMethods,
                       identity_pb2_grpc.IdentityServiceServicer):
    contract = CONTRACT

    def __init__(self, api: RegisterApi, retention: Retention | None = None) -> None:
        self._api = api
        self._reports = api.reports
        # Without one (a test, a tool) every purge is refused: there is no disclosure service to ask.
        self._retention = retention or Retention(api.engine.database, holds=None)
        self._numbers = cast(IndividualNumbers, api.engine.hooks)

    ApplyNotification = RegisterMethods.apply_notification
    StreamNotifications = RegisterMethods.stream
    GetResident = RegisterMethods.get
    LookupResident = RegisterMethods.lookup
    BatchLookupResidents = RegisterMethods.batch_lookup
    SearchResidents = RegisterMethods.search
    ListResidentVersions = RegisterMethods.list_versions

    async def LookupResidentByIndividualNumber(
        self, request: pb.LookupResidentByIndividualNumberRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.Resident:
        violations = Violations()
        violations.extend("individual_number", codes.individual_number_problems(request.individual_number))
        violations.raise_if_any()
        person_id = await self._numbers.person_of(request.individual_number,
                                                  follows_former(caller.current_or_none()))
        if person_id is None:
            raise NotFound("no person with this individual number in the file", "PERSON_NOT_FOUND")
        return cast(pb.Resident, await self._api.get_by_person_id(person_id))
