"""The policy catalogue (purposes of use) and the decision on each call (DESIGN §4).

The catalogue is data (`purposes.toml`, versioned, shipped with the project). A call is allowed
only when the calling organisation is a recipient of the declared purpose, the purpose allows the
method, the operator holds one of the purpose's `operator_roles` (human work; a purpose without them
is for systems, such as a municipality CS notifying), the purpose is in effect, and has a case
reference when it requires one. Every refusal names its reason. Volume caps per call and per day are
data of the purpose too (enforced by juki_services.gateway.volume).

A catalogue loads only if every purpose keeps these rules (`check_purpose`; the entry and the rule are named,
and on reload the previous catalogue stays in force):
1. every field mask is explicit (no "*"); `fields = []` exactly for purposes whose methods answer no record;
2. 個人番号 only under a purpose that declares its 番号法 basis (`individual_number_basis`);
3. every method answering personal data (`contracts.RECORD_METHODS`, derived from the protos) has per-call
   and per-day caps;
4. 住基法 30-44-6, keyed on the file: an annex read (`contracts.ANNEX_READS`) only under
   `overseas_emigrant_only = true` and without `record.resident_code`, to any recipient; the only exception
   is `subject_access` (30-44-13), to the internal disclosure service alone;
5. a purpose granted to a department of people requires an operator role; a query of the agency a case reference;
6. disclosure and correction work names an open case: a `subject_access` purpose, and every purpose granting a
   resident's provision history other than to auditors, has `open_case_required = true` (checked per call
   against the disclosure service, juki_services.gateway.open_cases).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import Descriptor

from juki_services.gateway import contracts
from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import PermissionDenied
from jukilib.operator_credential import ROLES
from jukilib.supervision import Heartbeat

DEFAULT_CATALOGUE = Path(__file__).parent / "purposes.toml"
logger = logging.getLogger(__name__)


class CatalogueError(Exception):
    """The catalogue file is invalid; the message names the entry and the problem."""


PROVISION_RECIPIENT_KINDS = frozenset({"executive_organ", "governor_department"})


@dataclass(frozen=True)
class Organization:
    code: str
    name: str
    kind: str

    @property
    def receives_provisions(self) -> bool:
        """An organ or department receiving provisions (住基法 30-15, 30-44-6): it knows a person only by
        the identifiers of the record, never by the register's internal id."""
        return self.kind in PROVISION_RECIPIENT_KINDS


@dataclass(frozen=True)
class Purpose:
    code: str
    legal_basis: str
    affair: str
    recipients: frozenset[str]
    methods: frozenset[str]
    fields: tuple[str, ...]
    valid_from: dt.date
    valid_until: dt.date | None = None
    case_reference_required: bool = False
    open_case_required: bool = False
    """The case reference must name an open case of the disclosure service (implies case_reference_required)."""
    overseas_emigrant_only: bool = False
    follows_former_identifiers: bool = False
    """A former 住民票コード or 個人番号 finds the person (the resident's own disclosure case, the holding
    municipality's 12-5 work); for every other purpose it finds nobody."""
    example: bool = False
    operator_roles: frozenset[str] = frozenset()
    """Human work: the call needs an operator credential with one of these roles. Empty: systems only."""
    max_records_per_call: int | None = None
    max_records_per_day: int | None = None
    """Per organisation and Japanese calendar day, across every replica."""
    max_records_per_operator_per_day: int | None = None
    individual_number_basis: str = ""
    """The 番号法 provision that lets this purpose use 個人番号 (別表 affair, 第9条第2項 条例 ...); empty: none."""
    subject_access: bool = False
    """The person's own disclosure and correction (住基法 30-44-13 applying 30-32 ff. to the annex file): the
    annex file answers records of persons who never left Japan too (still without 住民票コード). Only for
    recipients of kind `internal_service` (the disclosure service)."""

    @property
    def all_fields(self) -> bool:
        return self.fields == ("*",)

    def grants(self, organization: Organization) -> bool:
        return organization.code in self.recipients or f"kind:{organization.kind}" in self.recipients

    def in_effect(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)


@dataclass(frozen=True)
class Catalogue:
    version: str
    organizations: Mapping[str, Organization]
    purposes: Mapping[str, Purpose]

    def authorize(self, organization_code: str, method: str, purpose_code: str, case_reference: str,
                  day: dt.date, *, operator_roles: frozenset[str] | None = None) -> Purpose:
        """The purpose under which the call is allowed; PermissionDenied with the reason otherwise.

        `operator_roles` are the roles of the call's authenticated operator, None when no operator.
        """
        organization = self.organizations.get(organization_code)
        if organization is None:
            raise PermissionDenied("the calling organisation is not registered", "UNKNOWN_ORGANIZATION")
        if not purpose_code:
            raise PermissionDenied("a purpose of use is required (x-juki-purpose)", "PURPOSE_REQUIRED")
        purpose = self.purposes.get(purpose_code)
        if purpose is None:
            raise PermissionDenied("the purpose of use is not in the catalogue", "UNKNOWN_PURPOSE")
        if not purpose.grants(organization):
            raise PermissionDenied("the purpose of use is not granted to this organisation", "PURPOSE_NOT_GRANTED")
        if method.lstrip("/") not in purpose.methods:
            raise PermissionDenied("the purpose of use does not allow this method", "METHOD_NOT_ALLOWED")
        _check_operator(purpose, operator_roles)
        if not purpose.in_effect(day):
            raise PermissionDenied("the purpose of use is not in effect", "PURPOSE_NOT_IN_EFFECT")
        if purpose.case_reference_required and not case_reference:
            raise PermissionDenied("this purpose requires a case reference (x-juki-case-reference)",
                                   "CASE_REFERENCE_REQUIRED")
        return purpose


def _check_operator(purpose: Purpose, roles: frozenset[str] | None) -> None:
    if not purpose.operator_roles:
        return
    if roles is None:
        raise PermissionDenied("this purpose is human work: an operator credential is required "
                               "(x-juki-operator-credential)", "OPERATOR_CREDENTIAL_REQUIRED")
    if not roles & purpose.operator_roles:
        raise PermissionDenied("the operator holds no role this purpose requires", "OPERATOR_ROLE_NOT_ALLOWED")


def _require(entry: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (isinstance(value, str | list) and not value):
        raise CatalogueError(f"{where}: '{key}' must be a non-empty {kind.__name__}")
    return value


def _is_date(value: object) -> bool:
    """A TOML local date; a date-time would later fail every comparison with today's date."""
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _entries(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    entries = data.get(key, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CatalogueError(f"'{key}' must be an array of tables ([[{key}]])")
    return entries


def _purpose(entry: Mapping[str, Any], index: int) -> Purpose:
    where = f"purposes[{index}]"
    code = _require(entry, "code", str, where)
    where = f"purpose {code}"
    valid_until = entry.get("valid_until")
    if valid_until is not None and not _is_date(valid_until):
        raise CatalogueError(f"{where}: 'valid_until' must be a date")
    if not _is_date(entry.get("valid_from")):
        raise CatalogueError(f"{where}: 'valid_from' must be a date")
    if not isinstance(entry.get("fields"), list):
        raise CatalogueError(f"{where}: 'fields' must be a list of field paths ([] for workflow methods only)")
    for key in ("methods", "recipients", "fields"):
        values = entry[key] if key == "fields" else _require(entry, key, list, where)
        if not all(isinstance(v, str) and v for v in values):
            raise CatalogueError(f"{where}: '{key}' must list non-empty strings")
    open_case = _flag(entry, "open_case_required", where)
    return Purpose(
        operator_roles=_operator_roles(entry, where),
        max_records_per_call=_cap(entry, "max_records_per_call", where),
        max_records_per_day=_cap(entry, "max_records_per_day", where),
        max_records_per_operator_per_day=_cap(entry, "max_records_per_operator_per_day", where),
        code=code,
        legal_basis=_require(entry, "legal_basis", str, where),
        affair=_require(entry, "affair", str, where),
        recipients=frozenset(entry["recipients"]),
        methods=frozenset(entry["methods"]),
        fields=tuple(entry["fields"]),
        valid_from=entry["valid_from"],
        valid_until=valid_until,
        # An open case is a case reference: the flag implies the weaker one.
        case_reference_required=bool(entry.get("case_reference_required", False)) or open_case,
        open_case_required=open_case,
        overseas_emigrant_only=bool(entry.get("overseas_emigrant_only", False)),
        follows_former_identifiers=bool(entry.get("follows_former_identifiers", False)),
        example=bool(entry.get("example", False)),
        individual_number_basis=_optional_text(entry, "individual_number_basis", where),
        subject_access=_flag(entry, "subject_access", where),
    )


def _optional_text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise CatalogueError(f"{where}: '{key}' must be a string")
    return value.strip()


def _flag(entry: Mapping[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise CatalogueError(f"{where}: '{key}' must be true or false")
    return value


def _operator_roles(entry: Mapping[str, Any], where: str) -> frozenset[str]:
    roles = entry.get("operator_roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise CatalogueError(f"{where}: 'operator_roles' must list role names")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise CatalogueError(f"{where}: 'operator_roles' names unknown roles {unknown}; known: {', '.join(ROLES)}")
    return frozenset(roles)


def _cap(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CatalogueError(f"{where}: '{key}' must be a positive integer")
    return value


def _organizations(entries: Sequence[Mapping[str, Any]], municipalities: MunicipalityTable) -> dict[str, Organization]:
    found = {m.code6: Organization(m.code6, m.name, "municipality") for m in municipalities}
    for index, entry in enumerate(entries):
        where = f"organizations[{index}]"
        code = _require(entry, "code", str, where)
        if code in found:
            raise CatalogueError(f"organization {code}: defined twice")
        found[code] = Organization(code, _require(entry, "name", str, where), _require(entry, "kind", str, where))
    return found


SUBJECT_ACCESS_KINDS = frozenset({"internal_service"})
INDIVIDUAL_NUMBER = "record.individual_number"
RESIDENT_CODE = "record.resident_code"
INDIVIDUAL_NUMBER_METHODS = frozenset({"juki.identity.v1.IdentityService/LookupResidentByIndividualNumber"})
"""Methods that use 個人番号 as their key: 番号法 利用 as much as receiving it."""


def _covers(fields: Sequence[str], path: str) -> bool:
    """Whether the mask `fields` lets `path` through (a mask path covers every path below it)."""
    return any(path == f or path.startswith(f"{f}.") for f in fields)


def _recipient_kinds(purpose: Purpose, organizations: Mapping[str, Organization]) -> dict[str, str]:
    """Each recipient of `purpose` with its organisation kind ('' when unknown)."""
    def kind(recipient: str) -> str:
        if recipient.startswith("kind:"):
            return recipient.removeprefix("kind:")
        return organizations[recipient].kind if recipient in organizations else ""

    return {recipient: kind(recipient) for recipient in sorted(purpose.recipients)}


def _check_methods(purpose: Purpose) -> None:
    unknown = sorted(m for m in purpose.methods if m not in contracts.METHODS)
    if unknown:
        raise CatalogueError(f"purpose {purpose.code}: 'methods' names methods no contract defines: {unknown}")


def _check_fields(purpose: Purpose) -> None:
    """Rule 1: every mask is explicit. `fields` are paths in the resources of an answer that carry a record
    (what the gateway cuts); a purpose none of whose methods answers such a resource (workflow: cases,
    reports, operators, log entries, whose contract fixes their shape) lists none (`fields = []`)."""
    if "*" in purpose.fields:
        raise CatalogueError(f"purpose {purpose.code}: 'fields' must list explicit paths ('*' is not allowed)")
    types = {t.full_name: t for m in purpose.methods for t in contracts.resource_types(m)}
    if not types and purpose.fields:
        raise CatalogueError(f"purpose {purpose.code}: its methods answer no record: 'fields' must be []")
    if types and not purpose.fields:
        raise CatalogueError(f"purpose {purpose.code}: its methods answer records: 'fields' must list the paths "
                             "the purpose may receive")
    for path in purpose.fields:
        mask = field_mask_pb2.FieldMask(paths=[path])
        if not any(mask.IsValidForDescriptor(t) for t in types.values()):
            raise CatalogueError(f"purpose {purpose.code}: field '{path}' is in no record its methods answer")


def _check_individual_number(purpose: Purpose) -> None:
    """Rule 2 (番号法 第9条, 第19条): 個人番号 only under a purpose that declares its 番号法 basis."""
    if purpose.individual_number_basis:
        return
    holders = [t for m in purpose.methods for t in contracts.resource_types(m)
               if "individual_number" in _record_type(t).fields_by_name]  # the file whose record carries it
    if (holders and _covers(purpose.fields, INDIVIDUAL_NUMBER)) or purpose.methods & INDIVIDUAL_NUMBER_METHODS:
        raise CatalogueError(f"purpose {purpose.code}: 個人番号 ({INDIVIDUAL_NUMBER} or a lookup by it) needs "
                             "'individual_number_basis' (番号法 別表 affair or 第9条第2項 条例)")


def _record_type(resource: Descriptor) -> Descriptor:
    record = resource.fields_by_name["record"].message_type
    assert record is not None  # a resource's record is a message, by construction (contracts.resource_types)
    return record


def _check_caps(purpose: Purpose) -> None:
    """Rule 3: every purpose whose methods answer personal data has per-call and per-day volume caps."""
    answering = sorted(purpose.methods & contracts.RECORD_METHODS)
    if answering and (purpose.max_records_per_call is None or purpose.max_records_per_day is None):
        raise CatalogueError(f"purpose {purpose.code}: {answering[0]} answers personal data: "
                             "'max_records_per_call' and 'max_records_per_day' are required")


def _check_annex(purpose: Purpose, organizations: Mapping[str, Organization]) -> None:
    """Rule 4, 住基法 30-44-6: the annex file is read only for 国外転出者 affairs and never with the 住民票コード,
    for ANY recipient. Keyed on the file (the method's package), whatever the purpose's label or legal basis
    says. The one exception is declared: `subject_access` (the person's own disclosure and 12-5 work for
    the person's request, 30-44-13), only to the internal disclosure service, and it lifts the 国外転出者
    limit alone: the annex file answers no 住民票コード to anyone (the gateway and the register strip it)."""
    if purpose.subject_access:
        kinds = _recipient_kinds(purpose, organizations)
        others = [r for r, kind in kinds.items() if kind not in SUBJECT_ACCESS_KINDS]
        if others:
            raise CatalogueError(f"purpose {purpose.code}: subject_access (30-44-13) is only for recipients of kind "
                                 f"{', '.join(sorted(SUBJECT_ACCESS_KINDS))}, not {', '.join(others)}")
    reads = sorted(purpose.methods & contracts.ANNEX_READS)
    if not reads or purpose.subject_access:
        return
    if not purpose.overseas_emigrant_only:
        raise CatalogueError(f"purpose {purpose.code}: {reads[0]} reads the annex file (30-44-6, for "
                             f"{', '.join(sorted(purpose.recipients))}): overseas_emigrant_only = true is required")
    if _covers(purpose.fields, RESIDENT_CODE):
        raise CatalogueError(f"purpose {purpose.code}: {reads[0]} reads the annex file (30-44-6): the mask may "
                             f"not carry {RESIDENT_CODE}")


SYSTEM_KINDS = frozenset({"municipality", "agency", "internal_service"})
"""Organisations whose calls are made by systems (a municipality's CS, the agency, the disclosure service):
every other kind is a department of people, who act only as registered operators."""
AGENCY_QUERIES = frozenset({"juki.agency.v1.AgencyService/QueryResident"})


def _check_human_work(purpose: Purpose, organizations: Mapping[str, Organization]) -> None:
    """Rule 5 (issue 19): a purpose granted to a department of people requires an operator role (nobody acts
    there without a registered, logged-in operator); a query of the agency's copy (⑤, 住基法 30-9 … 30-12)
    also needs a case reference (and caps, rule 3)."""
    humans = [r for r, kind in _recipient_kinds(purpose, organizations).items() if kind not in SYSTEM_KINDS]
    if humans and not purpose.operator_roles:
        raise CatalogueError(f"purpose {purpose.code}: granted to {', '.join(humans)} (people, not a system): "
                             "operator_roles is required")
    if purpose.methods & AGENCY_QUERIES and not purpose.case_reference_required:
        raise CatalogueError(f"purpose {purpose.code}: a query of the agency (⑤) needs case_reference_required = "
                             "true")


PROVISION_HISTORY = frozenset({"juki.gateway.v1.OperationLogService/ListProvisionRecords"})
AUDIT_ROLES = frozenset({"auditor"})


def _check_open_case(purpose: Purpose) -> None:
    """Rule 6 (issue 19): disclosure and correction work reads a person's records only for the person's own
    request while it is handled (住基法 30-32 … 30-35, 30-44-13; 個人情報保護法 76 … 102): a `subject_access`
    purpose, and a purpose granting a resident's provision history (提供状況) to anyone but auditors (whose
    misuse review needs no case), require an open case."""
    if purpose.open_case_required:
        return
    if purpose.subject_access:
        raise CatalogueError(f"purpose {purpose.code}: subject_access (the person's own disclosure or correction) "
                             "needs open_case_required = true")
    history = sorted(purpose.methods & PROVISION_HISTORY)
    if history and not (purpose.operator_roles and purpose.operator_roles <= AUDIT_ROLES):
        raise CatalogueError(f"purpose {purpose.code}: {history[0]} (a resident's provision history) outside audit "
                             "needs open_case_required = true")


def check_purpose(purpose: Purpose, organizations: Mapping[str, Organization]) -> None:
    """Every load rule on one purpose; CatalogueError naming the purpose and the rule."""
    _check_methods(purpose)
    _check_fields(purpose)
    _check_individual_number(purpose)
    _check_annex(purpose, organizations)
    _check_caps(purpose)
    _check_human_work(purpose, organizations)
    _check_open_case(purpose)


def parse_catalogue(text: str, municipalities: MunicipalityTable) -> Catalogue:
    """Parse and check a catalogue; raises CatalogueError naming the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"not valid TOML: {exc}") from None
    version = _require(data, "version", str, "catalogue")
    organizations = _organizations(_entries(data, "organizations"), municipalities)
    purposes: dict[str, Purpose] = {}
    for index, entry in enumerate(_entries(data, "purposes")):
        purpose = _purpose(entry, index)
        if purpose.code in purposes:
            raise CatalogueError(f"purpose {purpose.code}: defined twice")
        check_purpose(purpose, organizations)
        purposes[purpose.code] = purpose
    return Catalogue(version=version, organizations=organizations, purposes=purposes)


def load_catalogue(path: Path, municipalities: MunicipalityTable) -> Catalogue:
    return parse_catalogue(path.read_text(encoding="utf-8"), municipalities)


class CatalogueHolder:
    """The catalogue in force, reloaded without restart when its file changes.

    An invalid file is refused with a precise error and the previous version stays in force. Every
    version loaded (and every file refused) is recorded through `on_change` (the operation log) with the
    exact text that was read and its SHA-256, so that any past catalogue can be read back.
    """

    def __init__(self, path: Path, municipalities: MunicipalityTable,
                 on_change: Callable[[str, str, bool, str], Awaitable[None]], interval: float = 1.0) -> None:
        self._path = path
        self._municipalities = municipalities
        self._on_change = on_change
        self._interval = interval
        self._stamp = self._file_stamp()
        self._text = path.read_text(encoding="utf-8")
        self.current = parse_catalogue(self._text, municipalities)  # a bad file at start-up stops the gateway
        self._announced = False

    def __call__(self) -> Catalogue:
        return self.current

    def _file_stamp(self) -> tuple[float, int]:
        stat = self._path.stat()
        return stat.st_mtime, stat.st_size

    async def run(self, heartbeat: Heartbeat) -> None:
        """Announce the version in force, then watch the file until cancelled."""
        if not self._announced:
            await self._on_change(self.current.version, _digest(self._text), True, self._text)
            self._announced = True
        while True:
            heartbeat.beat()
            await asyncio.sleep(self._interval)
            await self.reload_if_changed()

    async def reload_if_changed(self) -> bool:
        try:
            stamp = self._file_stamp()
        except OSError:
            logger.error("policy catalogue file unreadable; previous version stays in force")
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            text = self._path.read_text(encoding="utf-8")
            candidate = parse_catalogue(text, self._municipalities)
        except (CatalogueError, OSError, UnicodeDecodeError) as error:
            logger.error("policy catalogue refused; previous version stays in force",
                         extra={"error": str(error), "version_in_force": self.current.version})
            refused = self._path.read_bytes().decode("utf-8", "replace") if self._path.exists() else ""
            await self._on_change(f"refused: {error}"[:200], _digest(refused), False, refused)
            return False
        self.current, self._text = candidate, text
        logger.info("policy catalogue loaded", extra={"version": candidate.version})
        await self._on_change(candidate.version, _digest(text), True, text)
        return True


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
