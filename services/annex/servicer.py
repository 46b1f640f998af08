"""AnnexService: the register methods bound to the annex contract's names and messages."""

from __future__ import annotations

from juki.annex.v1 import annex_pb2 as pb
from juki.annex.v1 import annex_pb2_grpc
from jukilib.register.api import RegisterApi
from jukilib.register.retention import Retention
from jukilib.register.servicer import (
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


class AnnexServicer(MunicipalityReportMethods, ReviewMethods, RetentionMethods, RegisterMethods,
                    annex_pb2_grpc.AnnexServiceServicer):
    contract = CONTRACT

    def __init__(self, api: RegisterApi, retention: Retention | None = None) -> None:
        self._api = api
        self._reports = api.reports
        # Without one (a test, a tool) every purge is refused: there is no disclosure service to ask.
        self._retention = retention or Retention(api.engine.database, holds=None)

    ApplyNotification = RegisterMethods.apply_notification
    StreamNotifications = RegisterMethods.stream
    GetAnnexResident = RegisterMethods.get
    LookupAnnexResident = RegisterMethods.lookup
    BatchLookupAnnexResidents = RegisterMethods.batch_lookup
    SearchAnnexResidents = RegisterMethods.search
    ListAnnexResidentVersions = RegisterMethods.list_versions
