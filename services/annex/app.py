"""Wiring of the annex service: the register engine with the annex file's record and rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from google.protobuf import message
from grpc import aio

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki_services.annex.rules import validate_annex_record
from juki_services.annex.servicer import AnnexServicer
from jukilib.grpc import tracing
from jukilib.register.api import RegisterBinding
from jukilib.register.wiring import RegisterService


async def forward_to_agency(channel: aio.Channel, key: str, version: message.Message) -> Any:
    """住基法 30-42: the governor notifies the agency of every applied change."""
    request = agency_pb2.RecordAnnexChangeRequest(idempotency_key=key)
    request.annex_resident_version.CopyFrom(cast(annex_pb2.AnnexResidentVersion, version))
    with tracing.outgoing("/juki.agency.v1.AgencyService/RecordAnnexChange") as metadata:
        return await agency_pb2_grpc.AgencyServiceStub(channel).RecordAnnexChange(request, metadata=metadata)


async def forward_batch_to_agency(channel: aio.Channel, changes: Sequence[tuple[str, message.Message]]) -> Any:
    """住基法 30-42, many changes in one call (the agency records all of them or none)."""
    request = agency_pb2.BatchRecordAnnexChangesRequest()
    for key, version in changes:
        change = request.requests.add(idempotency_key=key)
        change.annex_resident_version.CopyFrom(cast(annex_pb2.AnnexResidentVersion, version))
    with tracing.outgoing("/juki.agency.v1.AgencyService/BatchRecordAnnexChanges") as metadata:
        return await agency_pb2_grpc.AgencyServiceStub(channel).BatchRecordAnnexChanges(request, metadata=metadata)


REGISTER = RegisterService(
    binding=RegisterBinding(
        register="annex",
        collection="annexResidents",
        record_type=annex_pb2.AnnexRecord,
        resource_type=annex_pb2.AnnexResident,
        version_type=annex_pb2.AnnexResidentVersion,
        validate_record=validate_annex_record,
        municipality_field="domicile_municipality_code",
    ),
    service_name=annex_pb2.DESCRIPTOR.services_by_name["AnnexService"].full_name,
    servicer=AnnexServicer,
    add_servicer=annex_pb2_grpc.add_AnnexServiceServicer_to_server,
    forward=forward_to_agency,
    forward_batch=forward_batch_to_agency,
)
migrations = REGISTER.migrations
api = REGISTER.api
build = REGISTER.build
