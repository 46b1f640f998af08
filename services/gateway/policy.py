"""The policy catalogue (purposes of use) and the decision on each call (DESIGN §4).

The catalogue is data (`purposes.toml`, versioned, shipped with the project). A call is allowed
only when the calling organisation is a recipient of the declared purpose, the purpose allows the
method, the operator holds one of the purpose's `operator_roles` (human work; a purpose without them
is for systems, such as a municipality CS notifying), the purpose is in effect, and has a case
reference when it requires one. Every refusal names its reason. Volume caps per call and per day are
data of the purpose too (enforced by juki_services.gateway.volume).
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
    for key in ("methods", "recipients", "fields"):
        values = _require(entry, key, list, where)
        if not all(isinstance(v, str) and v for v in values):
            raise CatalogueError(f"{where}: '{key}' must list non-empty strings")
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
        case_reference_required=bool(entry.get("case_reference_required", False)),
        overseas_emigrant_only=bool(entry.get("overseas_emigrant_only", False)),
        follows_former_identifiers=bool(entry.get("follows_former_identifiers", False)),
        example=bool(entry.get("example", False)),
    )


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


ANNEX_READS = frozenset(f"juki.annex.v1.AnnexService/{m}" for m in (
    "GetAnnexResident", "LookupAnnexResident", "BatchLookupAnnexResidents", "SearchAnnexResidents",
    "ListAnnexResidentVersions"))


PROVISION_KINDS = frozenset({"executive_organ", "governor_department"})
"""Organisations that receive provisions or use records for their own affairs (30-15, 30-44-6): the
executive organs and the governor's departments other than the Juki-net desk."""


def _provision_recipients(purpose: Purpose, organizations: Mapping[str, Organization]) -> list[str]:
    """The recipients of `purpose` that are provision recipients (by organisation kind, or a `kind:` entry)."""
    found = []
    for recipient in sorted(purpose.recipients):
        kind = recipient.removeprefix("kind:") if recipient.startswith("kind:") else (
            organizations[recipient].kind if recipient in organizations else "")
        if kind in PROVISION_KINDS:
            found.append(recipient)
    return found


def _check_annex_provision(purpose: Purpose, organizations: Mapping[str, Organization]) -> None:
    """住基法 30-44-6: annex data reaches a provision recipient only for 国外転出者 affairs and never with the
    住民票コード. Keyed on the file (an annex read method) and on who receives it, whatever the purpose's
    label or legal basis says."""
    recipients = _provision_recipients(purpose, organizations)
    if not recipients or not purpose.methods & ANNEX_READS:
        return
    if not purpose.overseas_emigrant_only:
        raise CatalogueError(f"purpose {purpose.code}: annex data for {', '.join(recipients)} (30-44-6) must set "
                             "overseas_emigrant_only = true")
    if "*" in purpose.fields or any(f in ("record", "record.resident_code") for f in purpose.fields):
        raise CatalogueError(f"purpose {purpose.code}: annex data for {', '.join(recipients)} (30-44-6) may not "
                             "carry record.resident_code")


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
        _check_annex_provision(purpose, organizations)
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
