"""The disclosure service's reads and reports, through the gateway.

The disclosure service never reads another service's tables (DESIGN §2). It calls the identity and
annex contracts and the gateway's provision history over mTLS with its own certificate
(organisation `disclosure`), through the gateway, under purposes of its own that require the case
reference: the gateway checks them, minimises nothing the law withholds from the person (30-32,
30-44-13: the 30-44-6 limits bind provision to others, not disclosure to the person) and writes
every call to the operation log, tied to the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki.disclosure.v1 import disclosure_pb2, disclosure_pb2_grpc
from juki.gateway.v1 import operation_log_pb2, operation_log_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib import caller
from jukilib.config import DEFAULT_CALL_TIMEOUT
from jukilib.errors import Unavailable
from jukilib.grpc import deadlines, tracing

# The purposes of the disclosure service itself (services/gateway/purposes.toml).
RECORDS_PURPOSE = "DISCLOSURE-RECORDS-30-32"
REPORTS_PURPOSE = "CORRECTION-REPORT-12-5"
ORGAN_NOTICE_PURPOSE = "ORGAN-NOTICE-30-35"
FEED_PURPOSE = "ORGAN-NOTICE-FEED"
OWN_PURPOSES = frozenset({RECORDS_PURPOSE, REPORTS_PURPOSE, ORGAN_NOTICE_PURPOSE, FEED_PURPOSE})
IDENTITY, ANNEX = "identity", "annex"
PAGE = 500


@dataclass
class FileRecords:
    """A person's current record and full history in one file, as the register answered."""

    file: str
    current: Any | None = None
    versions: list[Any] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.current is not None

    def version_names(self) -> list[str]:
        return [f"{self.file}:{v.name}" for v in self.versions]

    def resident_codes(self, asked: str) -> list[str]:
        """Every 住民票コード the person has had in this file (30-4: a change of code), `asked` first."""
        codes = dict.fromkeys([asked, *(v.record.resident_code for v in self.versions)])
        return [code for code in codes if code]


class Records:
    """Calls through the gateway on behalf of one case (its name travels as the case reference). Each call
    gets what is left of the deadline of the call being served (jukilib.grpc.deadlines), `call_timeout`
    seconds when it has none or when the report follower calls."""

    def __init__(self, gateway: aio.Channel, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._call_timeout = call_timeout
        self._identity = identity_pb2_grpc.IdentityServiceStub(gateway)
        self._annex = annex_pb2_grpc.AnnexServiceStub(gateway)
        self._oplog = operation_log_pb2_grpc.OperationLogServiceStub(gateway)
        self._disclosure = disclosure_pb2_grpc.DisclosureServiceStub(gateway)

    @staticmethod
    def _metadata(purpose: str, case: str) -> tuple[tuple[str, str], ...]:
        return ((caller.PURPOSE_KEY, purpose), (caller.CASE_REFERENCE_KEY, case))

    async def _call(self, method: Any, request: Any, purpose: str, case: str) -> Any:
        try:
            with tracing.outgoing(tracing.method_name(method), self._metadata(purpose, case)) as metadata:
                # wait_for_ready: the disclosure service starts before the gateway (each calls the other), so
                # a call may meet the channel between two connection attempts; it waits, within its deadline.
                return await method(request, metadata=metadata, timeout=deadlines.timeout(self._call_timeout),
                                    wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise
            # The reason travels, never the backend's message text.
            raise Unavailable(f"the gateway answered {error.code().name}", "UPSTREAM_UNAVAILABLE") from None

    async def file_records(self, file: str, resident_code: str, case: str,
                           purpose: str = RECORDS_PURPOSE) -> FileRecords:
        """Current record and every version (oldest first); not found → an empty FileRecords."""
        found = FileRecords(file)
        lookup: Any
        history: Any
        request: Any
        if file == IDENTITY:
            lookup, history, request, field_name = (self._identity.LookupResident, self._identity.ListResidentVersions,
                                                    identity_pb2.ListResidentVersionsRequest, "resident_versions")
            lookup_request: Any = identity_pb2.LookupResidentRequest(resident_code=resident_code)
        else:
            lookup, history, request, field_name = (self._annex.LookupAnnexResident,
                                                    self._annex.ListAnnexResidentVersions,
                                                    annex_pb2.ListAnnexResidentVersionsRequest,
                                                    "annex_resident_versions")
            lookup_request = annex_pb2.LookupAnnexResidentRequest(resident_code=resident_code)
        try:
            found.current = await self._call(lookup, lookup_request, purpose, case)
        except grpc.aio.AioRpcError:  # NOT_FOUND: the file holds no record of the person
            return found
        token = ""
        while True:
            page = await self._call(history, request(parent=found.current.name, page_size=PAGE, page_token=token),
                                    purpose, case)
            found.versions.extend(getattr(page, field_name))
            token = page.next_page_token
            if not token:
                return found

    async def provisions(self, resident_codes: list[str], case: str, purpose: str = RECORDS_PURPOSE) -> list[Any]:
        """Every provision of the person's data to others (提供状況) under any of `resident_codes` (every code
        the person has had), each once, newest first; the disclosure service's own reads for the person's
        requests are not provisions to others."""
        seen: dict[bytes, Any] = {}
        for resident_code in resident_codes:
            token = ""
            while True:
                page = await self._call(self._oplog.ListProvisionRecords, operation_log_pb2.ListProvisionRecordsRequest(
                    resident_code=resident_code, page_size=PAGE, page_token=token), purpose, case)
                for record in page.provision_records:
                    if record.purpose not in OWN_PURPOSES:
                        # One answer about the person under two codes (a batch naming both) is one provision.
                        seen.setdefault(record.SerializeToString(deterministic=True), record)
                token = page.next_page_token
                if not token:
                    break
        return sorted(seen.values(), key=lambda r: (r.time.seconds, r.time.nanos), reverse=True)

    async def modifications(self, file: str, token: str, case: str, page_size: int = 50) -> Any:
        """A page of the register's 修正 versions after `token` (ListModifications: no values, no case needed)."""
        request = register_pb2.ListModificationsRequest(page_size=page_size, page_token=token)
        return await self._call(self._register(file).ListModifications, request, FEED_PURPOSE, case)

    async def person_versions(self, file: str, person: str, case: str, purpose: str = ORGAN_NOTICE_PURPOSE
                              ) -> FileRecords:
        """Every version of the person `person` (`residents/{id}`), oldest first; no current record."""
        found = FileRecords(file)
        history, request, field_name = (
            (self._identity.ListResidentVersions, identity_pb2.ListResidentVersionsRequest, "resident_versions")
            if file == IDENTITY else
            (self._annex.ListAnnexResidentVersions, annex_pb2.ListAnnexResidentVersionsRequest,
             "annex_resident_versions"))
        token = ""
        while True:
            page = await self._call(history, request(parent=person, page_size=PAGE, page_token=token), purpose, case)
            found.versions.extend(getattr(page, field_name))
            token = page.next_page_token
            if not token:
                return found

    def _register(self, file: str) -> Any:
        return self._identity if file == IDENTITY else self._annex

    async def create_report(self, file: str, resident_code: str, reason_code: str, fields: list[str],
                            case: str) -> Any:
        """住基法 12-5 through the owning register, idempotent per case (request id = case)."""
        report = register_pb2.MunicipalityReport(
            resident_code=resident_code, reason_code=reason_code, fields=fields, origin_reference=case)
        request = register_pb2.CreateMunicipalityReportRequest(
            municipality_report=report, request_id=f"correction/{case.rsplit('/', 1)[-1]}")
        return await self._call(self._register(file).CreateMunicipalityReport, request, REPORTS_PURPOSE, case)

    async def get_report(self, file: str, name: str, case: str) -> Any:
        return await self._call(self._register(file).GetMunicipalityReport,
                                register_pb2.GetMunicipalityReportRequest(name=name), REPORTS_PURPOSE, case)

    async def complete_correction(self, case: str) -> Any:
        """CompleteCorrectionCase through the gateway: the background task's transition, logged there."""
        return await self._call(self._disclosure.CompleteCorrectionCase,
                                disclosure_pb2.CompleteCorrectionCaseRequest(name=case), REPORTS_PURPOSE, case)
