"""The catalogue's load rules (juki_services.gateway.policy.check_purpose): a catalogue that breaks one fails
to load, naming the purpose and the rule; the shipped catalogue keeps every one of them (issue 18)."""

from __future__ import annotations

import pytest

from juki_services.gateway import contracts
from juki_services.gateway.policy import DEFAULT_CATALOGUE, Catalogue, CatalogueError, load_catalogue, parse_catalogue
from jukilib.domain.municipalities import MunicipalityTable, gunma_municipalities

ORGANIZATIONS = '''version = "t"
[[organizations]]
code = "kyoiku-iinkai"
name = "教育委員会"
kind = "executive_organ"
[[organizations]]
code = "shichoson-ka"
name = "総務部市町村課"
kind = "prefecture_desk"
[[organizations]]
code = "disclosure"
name = "開示事務"
kind = "internal_service"
[[organizations]]
code = "disclosure-desk"
name = "開示窓口"
kind = "disclosure_desk"
'''
LOOKUP = "juki.identity.v1.IdentityService/LookupResident"
ANNEX_LOOKUP = "juki.annex.v1.AnnexService/LookupAnnexResident"
CASES = "juki.disclosure.v1.DisclosureService/ListDisclosureCases"


@pytest.fixture(scope="module")
def municipalities() -> MunicipalityTable:
    return gunma_municipalities()


@pytest.fixture(scope="module")
def shipped(municipalities: MunicipalityTable) -> Catalogue:
    return load_catalogue(DEFAULT_CATALOGUE, municipalities)


def _purpose(*, methods: tuple[str, ...] = (LOOKUP,), fields: str = '["record.full_name"]',
             recipients: str = '["kyoiku-iinkai"]', extra: str = "max_records_per_call = 1\nmax_records_per_day = 10",
             ) -> str:
    listed = ", ".join(f'"{m}"' for m in methods)
    if "operator_roles" not in extra:  # rule 5: people act only as operators (a test of it says otherwise)
        extra += '\noperator_roles = ["provision_clerk"]'
    return f'''
[[purposes]]
code = "RULE-X"
legal_basis = "住基法30-15②(2)"
affair = "test"
recipients = {recipients}
methods = [{listed}]
fields = {fields}
{extra}
valid_from = 2015-06-01
'''


def _refused(text: str, municipalities: MunicipalityTable) -> str:
    with pytest.raises(CatalogueError) as refused:
        parse_catalogue(ORGANIZATIONS + text, municipalities)
    assert "purpose RULE-X" in str(refused.value)  # the entry is named
    return str(refused.value)


def _loads(text: str, municipalities: MunicipalityTable) -> Catalogue:
    return parse_catalogue(ORGANIZATIONS + text, municipalities)


# --- rule 1: explicit fields --------------------------------------------------------------------------


@pytest.mark.parametrize("fields", ['["*"]', '["record.full_name", "*"]'])
def test_a_star_in_a_field_list_fails_to_load(municipalities: MunicipalityTable, fields: str) -> None:
    assert "explicit" in _refused(_purpose(fields=fields), municipalities)


def test_a_record_answering_purpose_without_fields_fails_to_load(municipalities: MunicipalityTable) -> None:
    assert "must list the paths" in _refused(_purpose(fields="[]"), municipalities)


def test_a_workflow_purpose_lists_no_fields_and_one_that_lists_some_fails(municipalities: MunicipalityTable) -> None:
    workflow = _purpose(methods=(CASES,), fields="[]", recipients='["disclosure-desk"]', extra="")
    assert _loads(workflow, municipalities).purposes["RULE-X"].fields == ()
    listed = _purpose(methods=(CASES,), fields='["name"]', recipients='["disclosure-desk"]', extra="")
    assert "must be []" in _refused(listed, municipalities)


def test_a_field_in_no_answered_record_fails_to_load(municipalities: MunicipalityTable) -> None:
    assert "record.fullname" in _refused(_purpose(fields='["record.fullname"]'), municipalities)


def test_a_method_no_contract_defines_fails_to_load(municipalities: MunicipalityTable) -> None:
    assert "no contract defines" in _refused(_purpose(methods=("juki.identity.v1.IdentityService/Nope",)),
                                             municipalities)


def test_no_shipped_purpose_grants_a_star(shipped: Catalogue) -> None:
    assert all("*" not in purpose.fields for purpose in shipped.purposes.values())
    assert "*" not in DEFAULT_CATALOGUE.read_text(encoding="utf-8").replace("a star", "")


# --- rule 2: 個人番号 only with a 番号法 basis ---------------------------------------------------------------


@pytest.mark.parametrize("fields", ['["record.individual_number"]', '["record"]'])
def test_individual_number_without_a_bango_basis_fails_to_load(municipalities: MunicipalityTable,
                                                                fields: str) -> None:
    assert "individual_number_basis" in _refused(_purpose(fields=fields), municipalities)
    basis = 'individual_number_basis = "番号法 第9条第2項 条例"\nmax_records_per_call = 1\nmax_records_per_day = 10'
    assert _loads(_purpose(fields=fields, extra=basis), municipalities).purposes["RULE-X"].individual_number_basis


def test_a_lookup_by_individual_number_without_a_bango_basis_fails_to_load(municipalities: MunicipalityTable) -> None:
    by_number = _purpose(methods=("juki.identity.v1.IdentityService/LookupResidentByIndividualNumber",))
    assert "individual_number_basis" in _refused(by_number, municipalities)


def test_shipped_individual_number_only_where_a_basis_is_declared(shipped: Catalogue) -> None:
    carrying = {p.code for p in shipped.purposes.values() if "record.individual_number" in p.fields
                or ("record" in p.fields and p.methods & contracts.RECORD_METHODS)}
    assert carrying and all(shipped.purposes[code].individual_number_basis for code in carrying)
    # issue 18: 個人番号 of 200 residents left under the governor's own affairs; no more.
    assert "record.individual_number" not in shipped.purposes["JUKI-OWN-AFFAIRS"].fields


# --- rule 3: volume caps on every record-answering purpose --------------------------------------------------


@pytest.mark.parametrize("extra", ["", "max_records_per_call = 1", "max_records_per_day = 10"])
def test_a_record_answering_purpose_without_both_caps_fails_to_load(municipalities: MunicipalityTable,
                                                                    extra: str) -> None:
    assert "max_records_per_call" in _refused(_purpose(extra=extra), municipalities)


def test_record_answering_methods_are_derived_from_the_protos() -> None:
    assert {LOOKUP, ANNEX_LOOKUP, "juki.agency.v1.AgencyService/QueryResident",
            "juki.gateway.v1.OperationLogService/ListProvisionRecords",
            "juki.identity.v1.IdentityService/ListResidentVersions"} <= contracts.RECORD_METHODS
    # A notification's answer echoes what the municipality sent; a case is workflow.
    assert "juki.identity.v1.IdentityService/ApplyNotification" not in contracts.RECORD_METHODS
    assert CASES not in contracts.RECORD_METHODS
    assert {f"juki.annex.v1.AnnexService/{m}" for m in (
        "GetAnnexResident", "LookupAnnexResident", "BatchLookupAnnexResidents", "SearchAnnexResidents",
        "ListAnnexResidentVersions")} == contracts.ANNEX_READS


def test_every_shipped_record_answering_purpose_has_caps(shipped: Catalogue) -> None:
    for purpose in shipped.purposes.values():
        if purpose.methods & contracts.RECORD_METHODS:
            assert purpose.max_records_per_call and purpose.max_records_per_day, purpose.code


# --- rule 4: 住基法 30-44-6 keyed on the file ----------------------------------------------------------------

ANNEX_FIELDS = '["record.full_name", "record.overseas_emigrant"]'


@pytest.mark.parametrize("recipients", ['["kyoiku-iinkai"]', '["shichoson-ka"]', '["disclosure-desk"]',
                                        '["kind:municipality"]'])
def test_an_annex_read_for_any_recipient_needs_the_emigrant_limit(municipalities: MunicipalityTable,
                                                                 recipients: str) -> None:
    text = _purpose(methods=(ANNEX_LOOKUP,), fields=ANNEX_FIELDS, recipients=recipients)
    assert "overseas_emigrant_only" in _refused(text, municipalities)


@pytest.mark.parametrize("fields", ['["record.resident_code"]', '["record"]', '["record.full_name", "record"]'])
def test_an_annex_read_with_the_resident_code_in_its_mask_fails_to_load(municipalities: MunicipalityTable,
                                                                       fields: str) -> None:
    text = _purpose(methods=(ANNEX_LOOKUP,), fields=fields, recipients='["shichoson-ka"]',
                    extra="overseas_emigrant_only = true\nmax_records_per_call = 1\nmax_records_per_day = 10")
    assert "record.resident_code" in _refused(text, municipalities)


def test_an_annex_read_is_judged_by_its_file_not_by_its_legal_basis(municipalities: MunicipalityTable) -> None:
    text = _purpose(methods=(ANNEX_LOOKUP,), fields=ANNEX_FIELDS).replace(
        'legal_basis = "住基法30-15②(2)"', 'legal_basis = "住基法30-32 (本人開示)"')
    assert "overseas_emigrant_only" in _refused(text, municipalities)


def test_subject_access_is_only_for_the_internal_disclosure_service(municipalities: MunicipalityTable) -> None:
    extra = "subject_access = true\nopen_case_required = true\nmax_records_per_call = 1\nmax_records_per_day = 10"
    for recipients in ('["kyoiku-iinkai"]', '["disclosure-desk"]', '["disclosure", "kyoiku-iinkai"]'):
        text = _purpose(methods=(ANNEX_LOOKUP,), fields=ANNEX_FIELDS, recipients=recipients, extra=extra)
        assert "internal_service" in _refused(text, municipalities)
    allowed = _purpose(methods=(ANNEX_LOOKUP,), fields=ANNEX_FIELDS, recipients='["disclosure"]', extra=extra)
    assert _loads(allowed, municipalities).purposes["RULE-X"].subject_access


def test_shipped_annex_reads_obey_30_44_6(shipped: Catalogue) -> None:
    kinds = {code: o.kind for code, o in shipped.organizations.items()}
    for purpose in shipped.purposes.values():
        if not purpose.methods & contracts.ANNEX_READS:
            continue
        if purpose.subject_access:
            assert all(kinds.get(r) == "internal_service" for r in purpose.recipients), purpose.code
        else:
            assert purpose.overseas_emigrant_only, purpose.code
            assert not {"record", "record.resident_code"} & set(purpose.fields), purpose.code


def test_the_governors_own_affairs_are_split_by_file_and_given_to_the_juki_net_desk(shipped: Catalogue) -> None:
    own, annex = shipped.purposes["JUKI-OWN-AFFAIRS"], shipped.purposes["JUKI-OWN-AFFAIRS-ANNEX"]
    assert own.recipients == annex.recipients == {"shichoson-ka"}
    assert not own.methods & contracts.ANNEX_READS and annex.methods <= contracts.ANNEX_READS
    assert annex.overseas_emigrant_only and "record.resident_code" not in annex.fields
    organs = {code for code, o in shipped.organizations.items() if o.kind == "executive_organ"}
    assert all(not p.recipients & organs for p in shipped.purposes.values()
               if p.recipients & {"shichoson-ka"})


# --- rule 5: people act only as registered operators (issue 19) ---------------------------------------


def test_a_purpose_for_a_department_of_people_without_an_operator_role_fails_to_load(
        municipalities: MunicipalityTable) -> None:
    refused = _refused(_purpose(extra="max_records_per_call = 1\nmax_records_per_day = 10\noperator_roles = []"),
                       municipalities)
    assert "kyoiku-iinkai (people, not a system): operator_roles is required" in refused


def test_a_system_purpose_needs_no_operator_role(municipalities: MunicipalityTable) -> None:
    _loads(_purpose(recipients='["disclosure"]', extra="max_records_per_call = 1\nmax_records_per_day = 10\n"
                    "open_case_required = true\nsubject_access = true\noperator_roles = []"), municipalities)


def test_a_query_of_the_agency_without_a_case_reference_fails_to_load(municipalities: MunicipalityTable) -> None:
    refused = _refused(_purpose(methods=("juki.agency.v1.AgencyService/QueryResident",), fields='["record.full_name"]'),
                       municipalities)
    assert "a query of the agency (⑤) needs case_reference_required = true" in refused


def test_every_shipped_purpose_for_people_requires_an_operator(shipped: Catalogue) -> None:
    systems = {"municipality", "agency", "internal_service"}
    for purpose in shipped.purposes.values():
        kinds = {r.removeprefix("kind:") if r.startswith("kind:") else shipped.organizations[r].kind
                 for r in purpose.recipients}
        if kinds - systems:
            assert purpose.operator_roles, purpose.code


PROVISIONS = "juki.gateway.v1.OperationLogService/ListProvisionRecords"
CAPS = "max_records_per_call = 1\nmax_records_per_day = 10"


def test_the_persons_own_disclosure_without_an_open_case_fails_to_load(municipalities: MunicipalityTable) -> None:
    """Issue 19 (住基法 30-32 … 30-35, 30-44-13): a subject access reads only for an open case; a case reference
    alone is not enough (any text would do)."""
    for flags in ("", "case_reference_required = true"):
        extra = f"subject_access = true\n{flags}\n{CAPS}\noperator_roles = []"
        text = _purpose(recipients='["disclosure"]', extra=extra)
        assert "subject_access (the person's own disclosure or correction) needs open_case_required = true" in (
            _refused(text, municipalities))


def test_the_provision_history_outside_audit_needs_an_open_case(municipalities: MunicipalityTable) -> None:
    """Issue 19 (個人情報保護法 76: 提供状況 is disclosed to the person on request): a desk reading a resident's
    provision history names an open case; the auditors' misuse review does not."""
    desk = _purpose(methods=(PROVISIONS,), fields="[]", recipients='["disclosure-desk"]',
                    extra=f'{CAPS}\noperator_roles = ["disclosure_clerk"]')
    assert f"{PROVISIONS} (a resident's provision history) outside audit needs open_case_required = true" in (
        _refused(desk, municipalities))
    audit = _purpose(methods=(PROVISIONS,), fields="[]", recipients='["disclosure-desk"]',
                     extra=f'{CAPS}\noperator_roles = ["auditor"]')
    assert not _loads(audit, municipalities).purposes["RULE-X"].open_case_required


def test_an_open_case_implies_a_case_reference(municipalities: MunicipalityTable) -> None:
    text = _purpose(methods=(PROVISIONS,), fields="[]", recipients='["disclosure-desk"]',
                    extra=f'{CAPS}\nopen_case_required = true\noperator_roles = ["disclosure_clerk"]')
    purpose = _loads(text, municipalities).purposes["RULE-X"]
    assert purpose.open_case_required and purpose.case_reference_required


def test_open_case_required_must_be_true_or_false(municipalities: MunicipalityTable) -> None:
    text = _purpose(extra=f'{CAPS}\nopen_case_required = "yes"')
    assert "'open_case_required' must be true or false" in _refused(text, municipalities)


def test_the_shipped_disclosure_and_correction_reads_need_an_open_case(shipped: Catalogue) -> None:
    for code in ("DISCLOSURE-RECORDS-30-32", "CORRECTION-REPORT-12-5", "DISCLOSURE-PROVISIONS-30-32"):
        assert shipped.purposes[code].open_case_required, code
    assert PROVISIONS not in shipped.purposes["DISCLOSURE-30-32"].methods
    for purpose in shipped.purposes.values():
        if purpose.subject_access or (PROVISIONS in purpose.methods and purpose.operator_roles != {"auditor"}):
            assert purpose.open_case_required, purpose.code
