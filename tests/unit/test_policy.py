"""The gateway's policy catalogue (juki_services.gateway.policy): parsing, and the decision on each call.

Every refusal must carry its own reason, so that the operation log and the caller can tell them apart.
"""

from __future__ import annotations

import datetime as dt
import textwrap

import grpc
import pytest

from juki_services.gateway.policy import (
    DEFAULT_CATALOGUE,
    Catalogue,
    CatalogueError,
    load_catalogue,
    parse_catalogue,
)
from jukilib.domain.municipalities import MunicipalityTable, gunma_municipalities
from jukilib.errors import PermissionDenied

LOOKUP_RESIDENT = "/juki.identity.v1.IdentityService/LookupResident"
GET_RESIDENT = "/juki.identity.v1.IdentityService/GetResident"
APPLY_IDENTITY = "/juki.identity.v1.IdentityService/ApplyNotification"
SCHOLARSHIP = "EDU-SCHOLARSHIP-30-15-2-2"
LICENCE = "EDU-LICENCE-30-15-2-1"
TODAY = dt.date(2026, 12, 1)
MAEBASHI = "102016"
CLERK = frozenset({"provision_clerk"})


@pytest.fixture(scope="module")
def municipalities() -> MunicipalityTable:
    return gunma_municipalities()


@pytest.fixture(scope="module")
def catalogue(municipalities: MunicipalityTable) -> Catalogue:
    return load_catalogue(DEFAULT_CATALOGUE, municipalities)


def _refusal(catalogue: Catalogue, organization: str, method: str, purpose: str, case_reference: str = "",
             day: dt.date = TODAY) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as excinfo:
        catalogue.authorize(organization, method, purpose, case_reference, day, operator_roles=CLERK)
    assert excinfo.value.code == grpc.StatusCode.PERMISSION_DENIED
    return excinfo.value


# --- the shipped catalogue ---------------------------------------------------------------------------


def test_shipped_catalogue_parses(catalogue: Catalogue) -> None:
    assert catalogue.version
    assert SCHOLARSHIP in catalogue.purposes
    assert "kyoiku-iinkai" in catalogue.organizations


def test_every_municipality_is_an_organisation_of_kind_municipality(
    catalogue: Catalogue, municipalities: MunicipalityTable
) -> None:
    for municipality in municipalities:
        organization = catalogue.organizations[municipality.code6]
        assert organization.kind == "municipality"
        assert organization.name == municipality.name


def test_every_shipped_purpose_names_only_registered_recipients(catalogue: Catalogue) -> None:
    kinds = {f"kind:{o.kind}" for o in catalogue.organizations.values()}
    for purpose in catalogue.purposes.values():
        unknown = {r for r in purpose.recipients if r not in catalogue.organizations and r not in kinds}
        assert not unknown, f"{purpose.code} grants unknown recipients {sorted(unknown)}"


def test_every_shipped_method_is_a_full_method_name_without_leading_slash(catalogue: Catalogue) -> None:
    for purpose in catalogue.purposes.values():
        for method in purpose.methods:
            package_service, _, rpc = method.partition("/")
            assert not method.startswith("/"), f"{purpose.code}: {method}"
            assert package_service.startswith("juki.") and rpc, f"{purpose.code}: {method}"


# --- authorize ----------------------------------------------------------------------------------------


def test_authorize_returns_the_purpose_for_a_granted_call(catalogue: Catalogue) -> None:
    purpose = catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, SCHOLARSHIP, "", TODAY, operator_roles=CLERK)

    assert purpose.code == SCHOLARSHIP
    assert "record.full_name" in purpose.fields
    assert "record.individual_number" not in purpose.fields


def test_authorize_accepts_a_method_name_without_leading_slash(catalogue: Catalogue) -> None:
    purpose = catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT.lstrip("/"), SCHOLARSHIP, "", TODAY,
                                  operator_roles=CLERK)

    assert purpose.code == SCHOLARSHIP


def test_unknown_organisation_is_refused(catalogue: Catalogue) -> None:
    error = _refusal(catalogue, "not-an-organisation", LOOKUP_RESIDENT, SCHOLARSHIP)

    assert error.reason == "UNKNOWN_ORGANIZATION"


def test_missing_purpose_is_refused(catalogue: Catalogue) -> None:
    assert _refusal(catalogue, "kyoiku-iinkai", LOOKUP_RESIDENT, "").reason == "PURPOSE_REQUIRED"


def test_unknown_purpose_is_refused(catalogue: Catalogue) -> None:
    assert _refusal(catalogue, "kyoiku-iinkai", LOOKUP_RESIDENT, "NO-SUCH-PURPOSE").reason == "UNKNOWN_PURPOSE"


def test_purpose_of_another_organisation_is_refused(catalogue: Catalogue) -> None:
    error = _refusal(catalogue, "senkyo-kanri-iinkai", LOOKUP_RESIDENT, SCHOLARSHIP)

    assert error.reason == "PURPOSE_NOT_GRANTED"


def test_method_outside_the_purpose_is_refused(catalogue: Catalogue) -> None:
    assert _refusal(catalogue, "kyoiku-iinkai", GET_RESIDENT, SCHOLARSHIP).reason == "METHOD_NOT_ALLOWED"


def test_purpose_before_its_valid_from_is_refused(catalogue: Catalogue) -> None:
    day_before = catalogue.purposes[SCHOLARSHIP].valid_from - dt.timedelta(days=1)

    error = _refusal(catalogue, "kyoiku-iinkai", LOOKUP_RESIDENT, SCHOLARSHIP, day=day_before)

    assert error.reason == "PURPOSE_NOT_IN_EFFECT"


def test_purpose_is_in_effect_from_its_valid_from_day(catalogue: Catalogue) -> None:
    first_day = catalogue.purposes[SCHOLARSHIP].valid_from

    purpose = catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, SCHOLARSHIP, "", first_day, operator_roles=CLERK)
    assert purpose.code == SCHOLARSHIP


def test_purpose_requiring_a_case_reference_is_refused_without_one(catalogue: Catalogue) -> None:
    error = _refusal(catalogue, "kyoiku-iinkai", LOOKUP_RESIDENT, LICENCE, case_reference="")

    assert error.reason == "CASE_REFERENCE_REQUIRED"


def test_purpose_requiring_a_case_reference_is_allowed_with_one(catalogue: Catalogue) -> None:
    purpose = catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, LICENCE, "KYO-2026-0042", TODAY,
                                  operator_roles=CLERK)

    assert purpose.code == LICENCE


def test_municipality_is_granted_identity_notifications(catalogue: Catalogue) -> None:
    organization = catalogue.organizations[MAEBASHI]

    purpose = catalogue.authorize(MAEBASHI, APPLY_IDENTITY, "CS-NOTIFY-30-6", "", TODAY)

    assert organization.kind == "municipality"
    assert purpose.code == "CS-NOTIFY-30-6"
    # The echo of its own notification, field by field, without the 個人番号 it sent.
    assert not purpose.all_fields and "record.full_name" in purpose.fields
    assert "record.individual_number" not in purpose.fields


def test_municipality_may_not_look_up_residents(catalogue: Catalogue) -> None:
    assert _refusal(catalogue, MAEBASHI, LOOKUP_RESIDENT, SCHOLARSHIP).reason == "PURPOSE_NOT_GRANTED"


def test_municipality_of_another_prefecture_is_unknown(catalogue: Catalogue) -> None:
    # 131016 is 千代田区 (Tokyo): a valid 団体コード, but not a municipality of Gunma.
    error = _refusal(catalogue, "131016", APPLY_IDENTITY, "CS-NOTIFY-30-6")

    assert error.reason == "UNKNOWN_ORGANIZATION"


# --- parse_catalogue ----------------------------------------------------------------------------------


def _catalogue_text(purposes: str, organizations: str = "") -> str:
    return textwrap.dedent('version = "test-1"\n') + textwrap.dedent(organizations) + textwrap.dedent(purposes)


PURPOSE_A = """
[[purposes]]
code = "TEST-A"
legal_basis = "住基法30-15②(2)"
affair = "test affair"
recipients = ["kyoiku-iinkai"]
methods = ["juki.identity.v1.IdentityService/LookupResident"]
fields = ["name"]
max_records_per_call = 1
max_records_per_day = 10
operator_roles = ["provision_clerk"]
valid_from = 2020-01-01
"""

KYOIKU = """
[[organizations]]
code = "kyoiku-iinkai"
name = "群馬県教育委員会"
kind = "executive_organ"
"""


def test_minimal_catalogue_parses(municipalities: MunicipalityTable) -> None:
    catalogue = parse_catalogue(_catalogue_text(PURPOSE_A, KYOIKU), municipalities)

    assert catalogue.version == "test-1"
    purpose = catalogue.purposes["TEST-A"]
    assert purpose.valid_from == dt.date(2020, 1, 1)
    assert purpose.valid_until is None
    assert not purpose.case_reference_required
    assert not purpose.overseas_emigrant_only


def test_purpose_is_not_in_effect_after_its_valid_until(municipalities: MunicipalityTable) -> None:
    text = _catalogue_text(PURPOSE_A + "valid_until = 2025-03-31\n", KYOIKU)
    catalogue = parse_catalogue(text, municipalities)

    last_day = dt.date(2025, 3, 31)
    assert catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, "TEST-A", "", last_day,
                               operator_roles=CLERK).code == "TEST-A"
    error = _refusal(catalogue, "kyoiku-iinkai", LOOKUP_RESIDENT, "TEST-A", day=last_day + dt.timedelta(days=1))
    assert error.reason == "PURPOSE_NOT_IN_EFFECT"


def test_invalid_toml_is_refused(municipalities: MunicipalityTable) -> None:
    with pytest.raises(CatalogueError, match="TOML"):
        parse_catalogue('version = "x"\n[[purposes]\ncode = ', municipalities)


def test_catalogue_without_version_is_refused(municipalities: MunicipalityTable) -> None:
    with pytest.raises(CatalogueError, match="version"):
        parse_catalogue(textwrap.dedent(PURPOSE_A), municipalities)


def test_purpose_missing_legal_basis_is_refused_naming_the_purpose(municipalities: MunicipalityTable) -> None:
    text = _catalogue_text(PURPOSE_A.replace('legal_basis = "住基法30-15②(2)"\n', ""), KYOIKU)

    with pytest.raises(CatalogueError) as excinfo:
        parse_catalogue(text, municipalities)

    assert "TEST-A" in str(excinfo.value)
    assert "legal_basis" in str(excinfo.value)


def test_purpose_with_empty_methods_is_refused_naming_the_purpose(municipalities: MunicipalityTable) -> None:
    text = _catalogue_text(
        PURPOSE_A.replace('methods = ["juki.identity.v1.IdentityService/LookupResident"]', "methods = []"), KYOIKU
    )

    with pytest.raises(CatalogueError, match=r"TEST-A.*methods"):
        parse_catalogue(text, municipalities)


def test_purpose_with_a_malformed_valid_from_is_refused(municipalities: MunicipalityTable) -> None:
    text = _catalogue_text(PURPOSE_A.replace("valid_from = 2020-01-01", 'valid_from = "2020-01-01"'), KYOIKU)

    with pytest.raises(CatalogueError, match=r"TEST-A.*valid_from"):
        parse_catalogue(text, municipalities)


def test_duplicate_purpose_is_refused(municipalities: MunicipalityTable) -> None:
    with pytest.raises(CatalogueError, match=r"TEST-A.*twice"):
        parse_catalogue(_catalogue_text(PURPOSE_A + PURPOSE_A, KYOIKU), municipalities)


def test_duplicate_organisation_is_refused(municipalities: MunicipalityTable) -> None:
    with pytest.raises(CatalogueError, match=r"kyoiku-iinkai.*twice"):
        parse_catalogue(_catalogue_text(PURPOSE_A, KYOIKU + KYOIKU), municipalities)


def test_organisation_reusing_a_municipality_code_is_refused(municipalities: MunicipalityTable) -> None:
    impostor = f'\n[[organizations]]\ncode = "{MAEBASHI}"\nname = "not Maebashi"\nkind = "auditor"\n'

    with pytest.raises(CatalogueError, match=f"{MAEBASHI}.*twice"):
        parse_catalogue(_catalogue_text(PURPOSE_A, impostor), municipalities)


@pytest.mark.parametrize(
    ("key", "value"),
    [("valid_from", "2020-01-01T00:00:00"), ("valid_until", "2030-03-31T23:59:59+09:00")],
)
def test_purpose_with_a_date_time_instead_of_a_date_is_refused(
    municipalities: MunicipalityTable, key: str, value: str
) -> None:
    # TOML date-times are `datetime`, a subclass of `date`: accepted, they make every later
    # `authorize()` fail with TypeError (comparing datetime to date) instead of a refusal.
    purpose = PURPOSE_A.replace("valid_from = 2020-01-01", f"{key} = {value}")
    if key == "valid_until":
        purpose += "valid_from = 2020-01-01\n"

    with pytest.raises(CatalogueError, match=rf"TEST-A.*{key}"):
        parse_catalogue(_catalogue_text(purpose, KYOIKU), municipalities)


@pytest.mark.parametrize("section", ["purposes", "organizations"])
def test_section_written_as_a_table_instead_of_an_array_is_refused(
    municipalities: MunicipalityTable, section: str
) -> None:
    # `[purposes]` instead of `[[purposes]]` is an easy slip; it must give a CatalogueError, not a crash.
    text = f'version = "test-1"\n[{section}]\ncode = "X"\n'

    with pytest.raises(CatalogueError, match=section):
        parse_catalogue(text, municipalities)


def test_annex_provision_purpose_must_be_limited_to_overseas_emigrants(municipalities: MunicipalityTable) -> None:
    purpose = '''
[[purposes]]
code = "ANNEX-X"
legal_basis = "住基法30-44-6②"
affair = "test"
recipients = ["kikaku-bu"]
methods = ["juki.annex.v1.AnnexService/LookupAnnexResident"]
fields = ["record.full_name"]
valid_from = 2024-05-27
'''
    organization = '''
[[organizations]]
code = "kikaku-bu"
name = "企画部"
kind = "governor_department"
'''
    with pytest.raises(CatalogueError, match="overseas_emigrant_only"):
        parse_catalogue(f'version = "t"\n{organization}{purpose}', municipalities)
    with_code = purpose.replace('fields = ["record.full_name"]',
                                'fields = ["record.resident_code"]\noverseas_emigrant_only = true')
    with pytest.raises(CatalogueError, match="resident_code"):
        parse_catalogue(f'version = "t"\n{organization}{with_code}', municipalities)


@pytest.mark.parametrize("legal_basis", ["住基法30-15②(2) 条例", "住基法30-6, 30-41", "anything"])
def test_annex_data_for_an_organ_is_limited_whatever_the_purpose_says_it_is(
        municipalities: MunicipalityTable, legal_basis: str) -> None:
    # 住基法 30-44-6: keyed on the file and on who receives it, not on the purpose's label.
    text = f'''version = "t"
[[organizations]]
code = "kyoiku-iinkai"
name = "教育委員会"
kind = "executive_organ"
[[purposes]]
code = "LABELLED-OTHERWISE"
legal_basis = "{legal_basis}"
affair = "test"
recipients = ["kyoiku-iinkai"]
methods = ["juki.annex.v1.AnnexService/BatchLookupAnnexResidents"]
fields = ["record.full_name"]
valid_from = 2024-05-27
'''
    with pytest.raises(CatalogueError, match=r"LABELLED-OTHERWISE.*kyoiku-iinkai.*overseas_emigrant_only"):
        parse_catalogue(text, municipalities)
    limited = text.replace('fields = ["record.full_name"]',
                           'fields = ["record.full_name", "record.resident_code"]\noverseas_emigrant_only = true')
    with pytest.raises(CatalogueError, match=r"LABELLED-OTHERWISE.*resident_code"):
        parse_catalogue(limited, municipalities)


def test_the_governors_own_affairs_are_the_juki_net_desks_not_an_organs(catalogue: Catalogue) -> None:
    own = catalogue.purposes["JUKI-OWN-AFFAIRS"]
    assert own.recipients == {"shichoson-ka"}
    assert catalogue.organizations["shichoson-ka"].kind == "prefecture_desk"


# --- operators and volume caps --------------------------------------------------------------------------


def _with(extra: str, municipalities: MunicipalityTable) -> Catalogue:
    """PURPOSE_A with the `extra` lines (replacing PURPOSE_A's own value of a key they set)."""
    keys = {line.split("=")[0].strip() for line in extra.splitlines()}
    base = "\n".join(line for line in PURPOSE_A.splitlines() if line.split("=")[0].strip() not in keys)
    return parse_catalogue(_catalogue_text(base.replace("valid_from", f"{extra}\nvalid_from") + "\n", KYOIKU),
                           municipalities)


def test_purpose_for_human_work_refuses_a_call_without_an_operator(municipalities: MunicipalityTable) -> None:
    catalogue = _with('operator_roles = ["provision_clerk"]', municipalities)
    with pytest.raises(PermissionDenied) as refused:
        catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, "TEST-A", "", TODAY)
    assert refused.value.reason == "OPERATOR_CREDENTIAL_REQUIRED"


def test_purpose_for_human_work_refuses_an_operator_without_its_role(municipalities: MunicipalityTable) -> None:
    catalogue = _with('operator_roles = ["provision_clerk"]', municipalities)
    with pytest.raises(PermissionDenied) as refused:
        catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, "TEST-A", "", TODAY,
                            operator_roles=frozenset({"auditor"}))
    assert refused.value.reason == "OPERATOR_ROLE_NOT_ALLOWED"
    assert catalogue.authorize("kyoiku-iinkai", LOOKUP_RESIDENT, "TEST-A", "", TODAY,
                               operator_roles=frozenset({"auditor", "provision_clerk"})).code == "TEST-A"


def test_purpose_for_systems_allows_calls_with_or_without_an_operator(municipalities: MunicipalityTable) -> None:
    systems = PURPOSE_A.replace('operator_roles = ["provision_clerk"]\n', "").replace(
        'recipients = ["kyoiku-iinkai"]', 'recipients = ["kind:municipality"]')
    catalogue = parse_catalogue(_catalogue_text(systems, KYOIKU), municipalities)
    for roles in (None, frozenset({"auditor"})):
        assert catalogue.authorize("102016", LOOKUP_RESIDENT, "TEST-A", "", TODAY,
                                   operator_roles=roles).code == "TEST-A"


def test_unknown_operator_role_is_refused_naming_the_purpose(municipalities: MunicipalityTable) -> None:
    with pytest.raises(CatalogueError, match=r"TEST-A.*superuser"):
        _with('operator_roles = ["superuser"]', municipalities)


@pytest.mark.parametrize("cap", ["max_records_per_call = 0", 'max_records_per_day = "10"',
                                 "max_records_per_operator_per_day = true"])
def test_volume_cap_that_is_not_a_positive_integer_is_refused(municipalities: MunicipalityTable, cap: str) -> None:
    with pytest.raises(CatalogueError, match=rf"TEST-A.*{cap.split(maxsplit=1)[0]}"):
        _with(cap, municipalities)


def test_volume_caps_are_read_from_the_purpose(municipalities: MunicipalityTable) -> None:
    purpose = _with("max_records_per_call = 5\nmax_records_per_day = 100\nmax_records_per_operator_per_day = 20",
                    municipalities).purposes["TEST-A"]
    assert (purpose.max_records_per_call, purpose.max_records_per_day,
            purpose.max_records_per_operator_per_day) == (5, 100, 20)


def test_shipped_human_purposes_name_the_roles_of_the_issue(catalogue: Catalogue) -> None:
    purposes = catalogue.purposes
    assert purposes["DISCLOSURE-30-32"].operator_roles == {"disclosure_clerk"}
    assert purposes["AUDIT-OPERATION-LOG"].operator_roles == {"auditor"}
    assert purposes["ADMIN-OPERATORS"].operator_roles == {"administrator"}
    # 住基法 30-6 ③ / 30-41 ③: deleting history is a role of its own, not the 12-5 desk's.
    assert purposes["PREFECTURE-RETENTION"].operator_roles == {"retention_clerk"}
    assert purposes["PREFECTURE-RETENTION"].recipients == {"shichoson-ka"}
    for code in (SCHOLARSHIP, LICENCE, "PASSPORT-30-15-1-1", "ANNEX-OVERSEAS-30-44-6-2", "JUKI-OWN-AFFAIRS"):
        assert purposes[code].operator_roles == CLERK, code
    for code in ("CS-NOTIFY-30-6", "CS-NOTIFY-30-41", "AGENCY-ERROR-REPORT-30-8", "CS-REPORTS-12-5"):
        assert not purposes[code].operator_roles, f"{code} is called by systems"
    disclosure_methods = {m for p in purposes.values() for m in p.methods if ".disclosure." in m}
    # Staff reach the disclosure service's methods as disclosure clerks; the service itself (moving a
    # correction case on when the municipality's 修正 arrives) is the only system caller.
    assert all(p.operator_roles == {"disclosure_clerk"} for p in purposes.values()
               if p.methods & disclosure_methods and p.recipients != {"disclosure"})
    assert all(p.case_reference_required for p in purposes.values() if p.recipients == {"disclosure"})
