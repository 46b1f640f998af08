"""The generated catalogue walk (issue 18): every (organisation, purpose, method) the shipped catalogue grants,
called through the real gateway as that organisation, with an operator of a role the purpose requires and a
case reference when it requires one.

The cells come from the catalogue the suite's gateway loads (the shipped file: tests/conftest sets no
JUKI_POLICY_FILE): organisations by code, `kind:` recipients expanded to every organisation of the kind
(two municipalities for `kind:municipality`). The data holds persons who never left Japan, 国外転出者 and a
person with a former 住民票コード, in both files. For each record-answering method the walk builds valid
requests about them and checks every answer:
- 住基法 30-44-6: no answer from the annex file holds a 住民票コード anywhere, nor a record of a person who is
  not a 国外転出者 (the one declared exception, `subject_access`, is the person's own disclosure and
  correction, 30-44-13, served to the internal disclosure service: records of persons who never left Japan,
  still without 住民票コード);
- no resource of any answer carries a field outside the purpose's mask (the answer's set fields are walked);
- the residents the gateway logged for the call stay within the purpose's per-call cap.
Methods without a record answer are called once (an empty or dry-run request: what the policy decides comes
before what the backend thinks of the request) to prove the grant lets them through. A method the catalogue
grants that the walk does not know how to call makes the walk fail (`test_the_walk_knows_every_granted_method`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import message
from google.protobuf.message_factory import GetMessageClass

from juki.agency.v1 import agency_pb2
from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.gateway.v1 import operation_log_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from juki_services.gateway import contracts, minimise
from juki_services.gateway.policy import DEFAULT_CATALOGUE, Purpose, load_catalogue
from juki_services.gateway.registry_store import insert_operator
from jukilib.config import SERVICES, TlsConfig
from jukilib.devcerts import ensure_dev_pki
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident
from jukitools.suite import SAMPLE_CALLERS, all_callers
from tests.conftest import RunningSuite, issue_credential
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _resident

CATALOGUE = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities())
CALLER_OF = {organization: name for name, organization in SAMPLE_CALLERS.items()}
SERVICE_CALLERS = frozenset({"agency", "disclosure"})
"""Services that call the gateway with their own server certificates."""
MUNICIPALITIES_WALKED = 2
REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
TWIN_NAME, TWIN_KANA, TWIN_BIRTH = "碓氷　一郎", "ウスイ　イチロウ", (1979, 3, 3)


def _organisations(purpose: Purpose) -> list[str]:
    """The organisations a purpose grants: codes as written, `kind:` entries expanded (two municipalities)."""
    found: list[str] = []
    for recipient in sorted(purpose.recipients):
        if not recipient.startswith("kind:"):
            found.append(recipient)
            continue
        kind = recipient.removeprefix("kind:")
        codes = sorted(code for code, o in CATALOGUE.organizations.items() if o.kind == kind)
        found.extend(codes[:MUNICIPALITIES_WALKED] if kind == "municipality" else codes)
    return found


CELLS = sorted({(organisation, purpose.code, method) for purpose in CATALOGUE.purposes.values()
                for organisation in _organisations(purpose) for method in purpose.methods})
ORGANS_WITHOUT_SAMPLE = sorted({o for o, _, _ in CELLS if o not in CALLER_OF and o not in SERVICE_CALLERS
                                and CATALOGUE.organizations[o].kind != "municipality"})


# --- the data ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class People:
    home: SyntheticResident
    """Never left Japan: in the identity file and in the annex file with a domestic address."""
    abroad: SyntheticResident
    """A 国外転出者 in the annex file, recorded in Japan first; a twin of `home` by the 4 items."""
    renamed: SyntheticResident
    """A 国外転出者 whose 住民票コード changed: `renamed.resident_code` is now a former code."""
    new_code: str
    names: dict[str, str]
    """Resource names: identity and annex resources of each person (`identity:home`, `annex:abroad`, ...)."""
    open_case: str
    """An open disclosure case of `home`: the case reference of purposes that require an open case (issue 19)."""

    @property
    def codes(self) -> set[str]:
        return {self.home.resident_code, self.abroad.resident_code, self.renamed.resident_code, self.new_code}


def _twin(resident: SyntheticResident) -> SyntheticResident:
    return dataclasses.replace(resident, full_name=TWIN_NAME, full_name_kana=TWIN_KANA,
                               birth_date=dt.date(*TWIN_BIRTH))


def _person_name(version_name: str) -> str:
    return version_name.split("/versions/", maxsplit=1)[0]


async def _notify_identity(suite: RunningSuite, request: identity_pb2.ApplyNotificationRequest) -> str:
    answer, _ = await _call(suite, "maebashi-cs", "identity.ApplyNotification", request, "CS-NOTIFY-30-6")
    return _person_name(answer.resident_version.name)


async def _notify_annex(suite: RunningSuite, request: annex_pb2.ApplyNotificationRequest) -> str:
    answer, _ = await _call(suite, "maebashi-cs", "annex.ApplyNotification", request, "CS-NOTIFY-30-41")
    return _person_name(answer.annex_resident_version.name)


def _code_change(request: Any, previous: str, new: str, notification_id: str, day: int) -> Any:
    request.notification_id = notification_id
    request.change.kind = register_pb2.CHANGE_KIND_MODIFY
    request.change.reason = register_pb2.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST
    event = EVENT_DATE + dt.timedelta(days=day)
    request.change.event_date.year, request.change.event_date.month, request.change.event_date.day = (
        event.year, event.month, event.day)
    request.previous_resident_code, request.record.resident_code = previous, new
    return request


@pytest.fixture(scope="module")
async def people(suite: RunningSuite) -> People:
    home, abroad = _twin(_resident(940)), _twin(_resident(941))
    renamed, new_code = _resident(942), _resident(943).resident_code
    names: dict[str, str] = {}
    for key, resident in (("home", home), ("abroad", abroad), ("renamed", renamed)):
        names[f"identity:{key}"] = await _notify_identity(
            suite, birth_notification(resident, f"walk-{key}", EVENT_DATE, NOTIFY_TIME))
    names["annex:home"] = await _notify_annex(
        suite, annex_notification(home, "walk-annex-home", EVENT_DATE, moved_abroad=False))
    # The 国外転出者 was recorded in Japan first: the history holds a version from before the departure.
    names["annex:abroad"] = await _notify_annex(
        suite, annex_notification(abroad, "walk-annex-abroad-1", EVENT_DATE, moved_abroad=False))
    departure = annex_notification(abroad, "walk-annex-abroad-2", EVENT_DATE + dt.timedelta(days=2),
                                   moved_abroad=True)
    departure.change.kind = register_pb2.CHANGE_KIND_MODIFY
    departure.change.reason = register_pb2.CHANGE_REASON_EX_OFFICIO_CORRECTION
    await _notify_annex(suite, departure)
    names["annex:renamed"] = await _notify_annex(
        suite, annex_notification(renamed, "walk-annex-renamed", EVENT_DATE, moved_abroad=True))
    await _notify_identity(suite, _code_change(birth_notification(renamed, "", EVENT_DATE, NOTIFY_TIME),
                                               renamed.resident_code, new_code, "walk-renamed-code", 3))
    await _notify_annex(suite, _code_change(annex_notification(renamed, "", EVENT_DATE, moved_abroad=True),
                                            renamed.resident_code, new_code, "walk-annex-renamed-code", 3))
    case = dpb.DisclosureCase(
        subject_resident_code=home.resident_code, requester_kind=dpb.REQUESTER_KIND_PERSON,
        requester_name="請求者 本人", identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD],
        channel=dpb.CHANNEL_COUNTER, scopes=[dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    opened, _ = await _call(suite, "disclosure-desk", "disclosure.CreateDisclosureCase",
                            dpb.CreateDisclosureCaseRequest(disclosure_case=case), "DISCLOSURE-30-32")
    return People(home, abroad, renamed, new_code, names, opened.name)


# --- callers ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Caller:
    tls: TlsConfig
    credential: str


@pytest.fixture(scope="module")
async def callers(suite: RunningSuite, home: Path) -> dict[str, Caller]:
    """Certificate and operator credential of every organisation of the walk. Each organisation doing human
    work gets an operator of its own holding every role its purposes require."""
    pki = ensure_dev_pki(home / "pki", servers=SERVICES,
                         clients={**all_callers(), **{code: code for code in ORGANS_WITHOUT_SAMPLE}})
    roles: dict[str, set[str]] = {}
    for organisation, code, _ in CELLS:
        roles.setdefault(organisation, set()).update(CATALOGUE.purposes[code].operator_roles)
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        for organisation, needed in sorted(roles.items()):
            if needed:
                await insert_operator(connection, f"walk-{organisation}", organization=organisation,
                                      roles=frozenset(needed), valid_from=None, valid_until=None, by="walk")
    finally:
        await connection.close()
    found = {}
    for organisation, needed in roles.items():
        if organisation in SERVICE_CALLERS:
            tls = suite.server_tls(organisation)
        else:
            name = (f"cs-{organisation}" if CATALOGUE.organizations[organisation].kind == "municipality"
                    else CALLER_OF.get(organisation, organisation))
            pair = pki.clients[name]
            tls = TlsConfig(cert=pair.cert, key=pair.key, ca=pki.ca_cert)
        credential = issue_credential(home, f"walk-{organisation}", organisation, frozenset(needed)) if needed else ""
        found[organisation] = Caller(tls, credential)
    return found


@dataclasses.dataclass
class Outcome:
    code: grpc.StatusCode
    answer: message.Message | None
    request_id: str
    details: str = ""


def _case_reference(purpose: Purpose, people: People) -> str:
    """An open case for a purpose that requires one, a made-up reference for one that requires any."""
    if purpose.open_case_required:
        return people.open_case
    return f"WALK-{purpose.code}" if purpose.case_reference_required else ""


async def _invoke(suite: RunningSuite, who: Caller, purpose: Purpose, method: str, request: message.Message,
                  case_reference: str) -> Outcome:
    """One call through the gateway; an operator registered just now reaches the registry's cache within
    seconds, so a refusal of the credential is retried for a while."""
    descriptor = contracts.METHODS[method]
    response_type = GetMessageClass(descriptor.output_type)
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        request_id = str(uuid.uuid4())
        metadata = purpose_metadata(purpose.code, case_reference=case_reference, request_id=request_id,
                                    credential=who.credential if purpose.operator_roles else "")
        async with secure_channel(suite.gateway, who.tls) as channel:
            try:
                if descriptor.client_streaming:
                    call = channel.stream_stream(f"/{method}", request_serializer=_serialize,
                                                 response_deserializer=response_type.FromString)
                    answers = [a async for a in call(_no_messages(), metadata=metadata, timeout=10)]
                    return Outcome(grpc.StatusCode.OK, answers[0] if answers else None, request_id)
                unary = channel.unary_unary(f"/{method}", request_serializer=_serialize,
                                            response_deserializer=response_type.FromString)
                return Outcome(grpc.StatusCode.OK, await unary(request, metadata=metadata, timeout=10), request_id)
            except grpc.aio.AioRpcError as error:
                outcome = Outcome(error.code(), None, request_id, error.details() or "")
        operator_not_yet_known = outcome.code in REFUSED and "operator" in outcome.details
        if not operator_not_yet_known or asyncio.get_running_loop().time() > deadline:
            return outcome
        await asyncio.sleep(0.2)


def _serialize(request: message.Message) -> bytes:
    return request.SerializeToString()


async def _no_messages() -> AsyncIterator[message.Message]:
    return
    yield  # pragma: no cover - an async generator that yields nothing


# --- what the walk sends -------------------------------------------------------------------------------

Requests = Callable[[People, Purpose, str], Sequence[tuple[str, message.Message]]]


def _capped(purpose: Purpose, codes: Sequence[str]) -> list[str]:
    """The codes a request may name under the purpose's per-call cap (the gateway counts them first)."""
    return list(codes)[:purpose.max_records_per_call or len(codes)]


def _query() -> register_pb2.SearchQuery:
    return register_pb2.SearchQuery(full_name=TWIN_NAME, birth_date=register_pb2.PartialDate(
        precision=register_pb2.DATE_PRECISION_DAY, year=TWIN_BIRTH[0], month=TWIN_BIRTH[1], day=TWIN_BIRTH[2]))


def _cs_resident(index: int, organisation: str) -> SyntheticResident:
    return dataclasses.replace(_resident(index), municipality_code=organisation)


RECORD_REQUESTS: dict[str, Requests] = {
    "juki.identity.v1.IdentityService/GetResident": lambda p, _, __: [
        ("home", identity_pb2.GetResidentRequest(name=p.names["identity:home"]))],
    "juki.identity.v1.IdentityService/LookupResident": lambda p, _, __: [
        ("home", identity_pb2.LookupResidentRequest(resident_code=p.home.resident_code)),
        ("abroad", identity_pb2.LookupResidentRequest(resident_code=p.abroad.resident_code)),
        ("former code", identity_pb2.LookupResidentRequest(resident_code=p.renamed.resident_code))],
    "juki.identity.v1.IdentityService/BatchLookupResidents": lambda p, purpose, _: [
        ("batch", identity_pb2.BatchLookupResidentsRequest(resident_codes=_capped(purpose, [
            p.home.resident_code, p.abroad.resident_code, p.new_code, p.renamed.resident_code])))],
    "juki.identity.v1.IdentityService/LookupResidentByIndividualNumber": lambda p, _, __: [
        ("home", identity_pb2.LookupResidentByIndividualNumberRequest(individual_number=p.home.individual_number))],
    "juki.identity.v1.IdentityService/SearchResidents": lambda p, _, __: [
        ("twins", identity_pb2.SearchResidentsRequest(query=_query()))],
    "juki.identity.v1.IdentityService/ListResidentVersions": lambda p, _, __: [
        ("renamed", identity_pb2.ListResidentVersionsRequest(parent=p.names["identity:renamed"]))],
    "juki.annex.v1.AnnexService/GetAnnexResident": lambda p, _, __: [
        ("abroad", annex_pb2.GetAnnexResidentRequest(name=p.names["annex:abroad"])),
        ("home", annex_pb2.GetAnnexResidentRequest(name=p.names["annex:home"]))],
    "juki.annex.v1.AnnexService/LookupAnnexResident": lambda p, _, __: [
        ("abroad", annex_pb2.LookupAnnexResidentRequest(resident_code=p.abroad.resident_code)),
        ("renamed", annex_pb2.LookupAnnexResidentRequest(resident_code=p.new_code)),
        ("former code", annex_pb2.LookupAnnexResidentRequest(resident_code=p.renamed.resident_code)),
        ("home", annex_pb2.LookupAnnexResidentRequest(resident_code=p.home.resident_code))],
    "juki.annex.v1.AnnexService/BatchLookupAnnexResidents": lambda p, purpose, _: [
        ("batch", annex_pb2.BatchLookupAnnexResidentsRequest(resident_codes=_capped(purpose, [
            p.abroad.resident_code, p.home.resident_code, p.new_code, p.renamed.resident_code])))],
    "juki.annex.v1.AnnexService/SearchAnnexResidents": lambda p, _, __: [
        ("twins", annex_pb2.SearchAnnexResidentsRequest(query=_query()))],
    "juki.annex.v1.AnnexService/ListAnnexResidentVersions": lambda p, _, __: [
        ("abroad", annex_pb2.ListAnnexResidentVersionsRequest(parent=p.names["annex:abroad"])),
        ("renamed", annex_pb2.ListAnnexResidentVersionsRequest(parent=p.names["annex:renamed"])),
        ("home", annex_pb2.ListAnnexResidentVersionsRequest(parent=p.names["annex:home"]))],
    "juki.agency.v1.AgencyService/QueryResident": lambda p, _, __: [
        ("home", agency_pb2.QueryResidentRequest(resident_code=p.home.resident_code))],
    "juki.gateway.v1.OperationLogService/ListProvisionRecords": lambda p, _, __: [
        ("home", operation_log_pb2.ListProvisionRecordsRequest(resident_code=p.home.resident_code))],
    # A notification's answer echoes a version: a new resident of the calling municipality, checked like a read.
    "juki.identity.v1.IdentityService/ApplyNotification": lambda p, _, organisation: [
        ("new", birth_notification(_cs_resident(944 + int(organisation) % 10, organisation),
                                   f"walk-cs-{organisation}", EVENT_DATE, NOTIFY_TIME))],
    "juki.annex.v1.AnnexService/ApplyNotification": lambda p, _, organisation: [
        ("new", annex_notification(_cs_resident(954 + int(organisation) % 10, organisation),
                                   f"walk-cs-annex-{organisation}", EVENT_DATE, moved_abroad=True))],
}

WORKFLOW_REQUESTS: dict[str, message.Message] = {
    "juki.identity.v1.IdentityService/PurgeExpiredRecords": register_pb2.PurgeExpiredRecordsRequest(dry_run=True),
    "juki.annex.v1.AnnexService/PurgeExpiredRecords": register_pb2.PurgeExpiredRecordsRequest(dry_run=True),
}
"""Workflow methods whose empty request would act: the walk sends this harmless one instead."""
WORKFLOW_METHODS = frozenset({
    *(f"juki.{s}.v1.{S}Service/{m}" for s, S in (("identity", "Identity"), ("annex", "Annex")) for m in (
        "StreamNotifications", "CreateMunicipalityReport", "ListMunicipalityReports", "GetMunicipalityReport",
        "AcknowledgeMunicipalityReport", "AnswerMunicipalityReport", "InvestigateMunicipalityReport",
        "ForwardMunicipalityReport", "DismissMunicipalityReport", "ListReviewItems", "GetReviewItem",
        "DismissReviewItem", "ReportReviewItem", "PurgeExpiredRecords", "ListModifications")),
    *(f"juki.disclosure.v1.DisclosureService/{m}" for m in (
        "CreateDisclosureCase", "GetDisclosureCase", "ListDisclosureCases", "VerifyDisclosureCaseIdentity",
        "ExtendDisclosureCase", "DecideDisclosureCase", "NotifyDisclosureCase", "CloseDisclosureCase",
        "GetDisclosureDocument", "ListDisclosureDocuments", "CreateCorrectionCase", "GetCorrectionCase",
        "ListCorrectionCases", "RecordInvestigationStep", "ConcludeCorrectionInvestigation",
        "CompleteCorrectionCase", "CloseCorrectionCase", "CreateUsageSuspensionCase", "GetUsageSuspensionCase",
        "ListUsageSuspensionCases", "VerifyUsageSuspensionCaseIdentity", "ExtendUsageSuspensionCase",
        "DecideUsageSuspensionCase", "NotifyUsageSuspensionCase", "CloseUsageSuspensionCase",
        "ListOrganNotifications")),
    *(f"juki.gateway.v1.AuditRecordService/{m}" for m in (
        "CreateAuditReview", "ListAuditReviews", "CreateIncident", "GetIncident", "ListIncidents", "UpdateIncident")),
    "juki.gateway.v1.OperationLogService/ListOperationLogEntries",
    "juki.gateway.v1.OperationLogService/GetMisuseReport",
    "juki.gateway.v1.OperationLogService/GetOperationLogStatus",
    *(f"juki.gateway.v1.OperatorAdminService/{m}" for m in (
        "CreateOperator", "GetOperator", "ListOperators", "UpdateOperator", "DisableOperator", "EnableOperator",
        "GetOrganization", "DisableOrganization", "EnableOrganization")),
})
"""Methods answering no record of the files (cases, 12-5 reports, review items, operators, the log): called
once with an empty request (or `WORKFLOW_REQUESTS`); the gateway's decision comes before the backend's
answer, so anything but PERMISSION_DENIED / UNAUTHENTICATED proves the grant. An empty request acts on
nothing: every one of them needs a name, a case or a body to change anything."""
SKIPPED: dict[str, str] = {}
"""Granted methods the walk does not call, with the reason (none today)."""


def test_the_walk_knows_every_granted_method() -> None:
    """A method added to a proto and granted in the catalogue fails the walk until the walk can call it."""
    granted = {method for _, _, method in CELLS}
    unknown = sorted(granted - RECORD_REQUESTS.keys() - WORKFLOW_METHODS - SKIPPED.keys())
    assert not unknown, f"the catalogue grants methods the walk cannot call: {unknown}"
    # Every method that answers personal data has requests built from the data, never an empty one.
    assert not contracts.RECORD_METHODS & (WORKFLOW_METHODS | SKIPPED.keys())
    assert granted & contracts.ANNEX_READS, "the catalogue grants no annex read: the walk would prove nothing"


# --- what the walk checks ------------------------------------------------------------------------------


def _covers(fields: Sequence[str], path: str) -> bool:
    return any(path == f or path.startswith(f"{f}.") for f in fields)


def _set_paths(resource: message.Message) -> list[str]:
    """Every set field of a resource, `record.<field>` inside its record."""
    paths = []
    for descriptor, value in resource.ListFields():
        if descriptor.name == "record" and descriptor.message_type.full_name in contracts.FILE_RECORDS:
            paths.extend(f"record.{inner.name}" for inner, _ in value.ListFields())
        else:
            paths.append(descriptor.name)
    return paths


def _check_mask(answer: message.Message, purpose: Purpose, where: str) -> None:
    for resource in minimise.resources(answer):
        outside = [path for path in _set_paths(resource) if not _covers(purpose.fields, path)]
        assert not outside, f"{where}: fields outside the purpose's mask: {outside}"


def _check_annex(answer: message.Message, purpose: Purpose, people: People, where: str) -> None:
    """住基法 30-44-6: no 住民票コード anywhere; only 国外転出者 (but for the declared subject access)."""
    wire = answer.SerializeToString()
    assert not minimise.resident_codes(answer), f"{where}: the annex file answered a 住民票コード"
    leaked = [code for code in people.codes if code.encode() in wire]
    assert not leaked, f"{where}: a 住民票コード is in the annex answer's bytes"
    if purpose.subject_access:
        return
    assert people.home.address.encode() not in wire, f"{where}: a domestic address of the annex file left"
    for resource in minimise.resources(answer):
        record: Any = getattr(resource, "record")  # noqa: B009 - a resource has one, by construction
        assert record.overseas_emigrant or not _covers(purpose.fields, "record.overseas_emigrant"), (
            f"{where}: a record of a person who is not a 国外転出者")
        assert not record.address, f"{where}: a record with a domestic address (not a 国外転出者)"


async def _check_logged_within_caps(suite: RunningSuite, outcome: Outcome, purpose: Purpose, where: str) -> None:
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        rows = await connection.fetch("SELECT status, resident_codes FROM operation_log WHERE request_id = $1",
                                      outcome.request_id)
    finally:
        await connection.close()
    assert [row["status"] for row in rows] == ["OK"], f"{where}: not logged once as OK"
    touched = len(set(rows[0]["resident_codes"]))
    assert purpose.max_records_per_call is None or touched <= purpose.max_records_per_call, (
        f"{where}: {touched} residents in one call, above the cap of {purpose.max_records_per_call}")


ANSWERED_NOT = (grpc.StatusCode.NOT_FOUND,)
"""What a valid request about a person may get instead of an answer: not found (a former code for a purpose
that does not follow it; a person the annex file does not answer for the purpose)."""


@pytest.mark.parametrize(("organisation", "code", "method"), CELLS, ids=["|".join(cell) for cell in CELLS])
async def test_catalogue_walk(suite: RunningSuite, people: People, callers: dict[str, Caller],
                              organisation: str, code: str, method: str) -> None:
    purpose, who = CATALOGUE.purposes[code], callers[organisation]
    where = f"{organisation} / {code} / {method}"
    if method in SKIPPED:
        pytest.skip(SKIPPED[method])
    if method not in RECORD_REQUESTS:
        assert method in WORKFLOW_METHODS, f"{where}: the walk cannot call this method"
        request = WORKFLOW_REQUESTS.get(method) or GetMessageClass(contracts.METHODS[method].input_type)()
        outcome = await _invoke(suite, who, purpose, method, request, _case_reference(purpose, people))
        assert outcome.code not in REFUSED, f"{where}: the grant is refused ({outcome.details})"
        if outcome.answer is not None:
            _check_mask(outcome.answer, purpose, where)
        return
    answered = 0
    for label, request in RECORD_REQUESTS[method](people, purpose, organisation):
        outcome = await _invoke_until_known(suite, who, purpose, method, request, _case_reference(purpose, people))
        at = f"{where} [{label}]"
        assert outcome.code == grpc.StatusCode.OK or outcome.code in ANSWERED_NOT, (
            f"{at}: {outcome.code.name} {outcome.details}")
        if method in contracts.ANNEX_READS and label == "home" and not purpose.subject_access:
            # 住基法 30-44-6: a person who never left Japan is not answered from the annex file.
            assert outcome.code == grpc.StatusCode.NOT_FOUND, f"{at}: a non-emigrant's annex record was answered"
        if outcome.answer is None:
            continue
        answered += 1
        _check_mask(outcome.answer, purpose, at)
        if method in contracts.ANNEX_READS:
            _check_annex(outcome.answer, purpose, people, at)
        await _check_logged_within_caps(suite, outcome, purpose, at)
    assert answered, f"{where}: no request was answered: the grant is not proven"


async def _invoke_until_known(suite: RunningSuite, who: Caller, purpose: Purpose, method: str,
                              request: message.Message, case_reference: str) -> Outcome:
    """The agency learns of a change through the relay, a moment after the register applied it."""
    outcome = await _invoke(suite, who, purpose, method, request, case_reference)
    deadline = asyncio.get_running_loop().time() + 10
    while (method == "juki.agency.v1.AgencyService/QueryResident" and outcome.code == grpc.StatusCode.NOT_FOUND
           and asyncio.get_running_loop().time() < deadline):
        await asyncio.sleep(0.2)
        outcome = await _invoke(suite, who, purpose, method, request, case_reference)
    return outcome
