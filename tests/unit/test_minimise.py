"""Minimisation of answers to a purpose's field mask (juki_services.gateway.minimise).

Fields outside the mask must be absent from the bytes that leave the gateway, wherever in the answer
the record-bearing resource sits; the disclosed paths are what the operation log records.
"""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2
from google.type import date_pb2

from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from juki_services.gateway.minimise import minimise, resident_codes, resources
from jukilib.errors import PermissionDenied

INDIVIDUAL_NUMBER = "983205673214"
RESIDENT_CODE = "12345678901"
OTHER_RESIDENT_CODE = "98765432109"
NAME_ADDRESS = ["name", "record.full_name", "record.address"]


def _identity_record(resident_code: str = RESIDENT_CODE) -> identity_pb2.IdentityRecord:
    """An identity record with every field set."""
    return identity_pb2.IdentityRecord(
        resident_code=resident_code,
        individual_number=INDIVIDUAL_NUMBER,
        full_name="山田 太郎",
        full_name_kana="ヤマダ タロウ",
        kana_confirmed=True,
        former_surname="佐藤",
        alias="タロー",
        birth_date=register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_DAY, year=1980, month=4, day=1,
                                            original_text="昭和55年4月1日"),
        sex_code="1",
        address="群馬県前橋市大手町一丁目1番1号",
        address_municipality_code="102016",
    )


def _change() -> register_pb2.ChangeInfo:
    return register_pb2.ChangeInfo(
        kind=register_pb2.CHANGE_KIND_RECORD,
        reason=register_pb2.CHANGE_REASON_BIRTH,
        event_date=date_pb2.Date(year=2026, month=11, day=1),
        notify_time=timestamp_pb2.Timestamp(seconds=1_790_000_000),
        municipality_code="102016",
        notification_id="N-1",
    )


def _resident() -> identity_pb2.Resident:
    return identity_pb2.Resident(
        name="residents/0b8c3f8e-2a55-4a4f-9d43-1d8d1e0a7c11",
        record=_identity_record(),
        state=register_pb2.RECORD_STATE_ACTIVE,
        version=3,
        change=_change(),
        update_time=timestamp_pb2.Timestamp(seconds=1_790_000_100),
    )


def _version(number: int, resident_code: str = RESIDENT_CODE) -> identity_pb2.ResidentVersion:
    return identity_pb2.ResidentVersion(
        name=f"residents/0b8c3f8e-2a55-4a4f-9d43-1d8d1e0a7c11/versions/{number}",
        record=_identity_record(resident_code),
        state=register_pb2.RECORD_STATE_ACTIVE,
        version=number,
        change=_change(),
        create_time=timestamp_pb2.Timestamp(seconds=1_790_000_000 + number),
    )


def _annex_resident(*, overseas_emigrant: bool) -> annex_pb2.AnnexResident:
    return annex_pb2.AnnexResident(
        name="annexResidents/5a0f0e47-5d8a-4bd4-8f8e-36c2a1c6c0b2",
        record=annex_pb2.AnnexRecord(
            resident_code=RESIDENT_CODE,
            full_name="山田 花子",
            full_name_kana="ヤマダ ハナコ",
            address="" if overseas_emigrant else "群馬県高崎市高松町35番地1",
            overseas_emigrant=overseas_emigrant,
            address_date=date_pb2.Date(year=2026, month=12, day=20),
            birth_date=register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_YEAR, year=1990),
            sex_code="2",
            domicile_municipality_code="102024",
        ),
        state=register_pb2.RECORD_STATE_ACTIVE,
        version=1,
    )


def test_fields_outside_the_mask_are_absent_from_the_bytes() -> None:
    resident = _resident()
    assert INDIVIDUAL_NUMBER.encode() in resident.SerializeToString()  # the test would prove nothing otherwise

    minimise(resident, NAME_ADDRESS, overseas_emigrant_only=False)

    wire = resident.SerializeToString()
    assert INDIVIDUAL_NUMBER.encode() not in wire
    assert RESIDENT_CODE.encode() not in wire
    assert "ヤマダ".encode() not in wire
    assert resident.record.individual_number == ""
    assert resident.record.resident_code == ""
    assert not resident.record.HasField("birth_date")
    assert not resident.HasField("change")
    assert not resident.HasField("update_time")
    assert resident.version == 0


def test_fields_inside_the_mask_are_kept_unchanged() -> None:
    resident = _resident()
    original = _resident()

    minimise(resident, NAME_ADDRESS, overseas_emigrant_only=False)

    assert resident.name == original.name
    assert resident.record.full_name == original.record.full_name
    assert resident.record.address == original.record.address


def test_disclosed_paths_are_exactly_the_paths_present_after_minimisation() -> None:
    resident = _resident()

    disclosed = minimise(resident, NAME_ADDRESS, overseas_emigrant_only=False)

    assert disclosed == ["name", "record.address", "record.full_name"]


def test_disclosed_paths_omit_allowed_fields_that_were_empty() -> None:
    resident = _resident()
    resident.record.ClearField("address")

    disclosed = minimise(resident, NAME_ADDRESS, overseas_emigrant_only=False)

    assert disclosed == ["name", "record.full_name"]


def test_disclosed_paths_of_a_list_are_every_path_any_of_its_records_left_with() -> None:
    # The operation log names each field that left (住基法 30-29's record of provision), so a path set in
    # only the last record of a batch counts as much as one set in all of them.
    answer = identity_pb2.ListResidentVersionsResponse(resident_versions=[_version(1), _version(2), _version(3)])
    for version in answer.resident_versions[:2]:
        version.record.ClearField("alias")
        version.record.ClearField("birth_date")
    answer.resident_versions[2].record.ClearField("full_name")

    disclosed = minimise(answer, ["record.full_name", "record.alias", "record.birth_date"],
                         overseas_emigrant_only=False)

    assert disclosed == ["record.alias", "record.birth_date", "record.full_name"]


def test_a_field_set_to_its_default_is_disclosed_only_when_the_field_has_presence() -> None:
    resident = _resident()
    resident.record.kana_confirmed = False  # no presence: the default value does not leave
    resident.record.birth_date.Clear()  # a message present though empty: it leaves
    assert resident.record.HasField("birth_date")

    disclosed = minimise(resident, ["record.kana_confirmed", "record.birth_date"], overseas_emigrant_only=False)

    assert disclosed == ["record.birth_date"]


def test_allowed_paths_unknown_to_the_resource_are_ignored() -> None:
    resident = _resident()

    disclosed = minimise(resident, ["record.full_name", "record.no_such_field", "no_such_field"],
                         overseas_emigrant_only=False)

    assert disclosed == ["record.full_name"]
    assert INDIVIDUAL_NUMBER.encode() not in resident.SerializeToString()


def test_an_empty_mask_discloses_nothing() -> None:
    resident = _resident()

    disclosed = minimise(resident, [], overseas_emigrant_only=False)

    assert disclosed == []
    assert resident.SerializeToString() == b""


def test_star_keeps_everything() -> None:
    resident = _resident()

    disclosed = minimise(resident, ["*"], overseas_emigrant_only=False)

    assert resident == _resident()
    assert "record.individual_number" in disclosed
    assert {"name", "state", "version", "change", "update_time", "record.birth_date"} <= set(disclosed)


def test_minimises_the_version_inside_an_apply_notification_response() -> None:
    response = identity_pb2.ApplyNotificationResponse(resident_version=_version(1))

    disclosed = minimise(response, NAME_ADDRESS, overseas_emigrant_only=False)

    assert INDIVIDUAL_NUMBER.encode() not in response.SerializeToString()
    assert response.resident_version.record.full_name == "山田 太郎"
    assert disclosed == ["name", "record.address", "record.full_name"]


def test_minimises_every_version_inside_a_list_response() -> None:
    response = identity_pb2.ListResidentVersionsResponse(
        resident_versions=[_version(1), _version(2), _version(3)], next_page_token="next",
    )

    disclosed = minimise(response, NAME_ADDRESS, overseas_emigrant_only=False)

    assert INDIVIDUAL_NUMBER.encode() not in response.SerializeToString()
    assert len(response.resident_versions) == 3
    for version in response.resident_versions:
        assert version.record.individual_number == ""
        assert not version.HasField("change")
        assert version.record.full_name == "山田 太郎"
    assert response.next_page_token == "next"
    assert disclosed == ["name", "record.address", "record.full_name"]


def test_resources_are_the_messages_carrying_a_record() -> None:
    response = identity_pb2.ListResidentVersionsResponse(resident_versions=[_version(1), _version(2)])

    found = list(resources(response))

    assert [type(r) for r in found] == [identity_pb2.ResidentVersion, identity_pb2.ResidentVersion]


def test_resident_codes_finds_the_code_in_a_nested_record() -> None:
    assert resident_codes(_resident()) == [RESIDENT_CODE]


def test_resident_codes_finds_the_code_of_every_version() -> None:
    response = identity_pb2.ListResidentVersionsResponse(
        resident_versions=[_version(1), _version(2, OTHER_RESIDENT_CODE)]
    )

    assert sorted(resident_codes(response)) == sorted([RESIDENT_CODE, OTHER_RESIDENT_CODE])


def test_resident_codes_finds_the_subject_of_a_disclosure_case() -> None:
    case = disclosure_pb2.DisclosureCase(
        name="disclosureCases/1", subject_resident_code=RESIDENT_CODE, requester_name="山田 太郎",
    )

    assert resident_codes(case) == [RESIDENT_CODE]


def test_resident_codes_of_a_message_without_codes_is_empty() -> None:
    assert resident_codes(identity_pb2.ListResidentVersionsResponse(next_page_token="x")) == []


def test_overseas_only_purpose_refuses_a_person_who_did_not_move_abroad() -> None:
    resident = _annex_resident(overseas_emigrant=False)

    with pytest.raises(PermissionDenied) as excinfo:
        minimise(resident, ["name", "record.full_name"], overseas_emigrant_only=True)

    assert excinfo.value.reason == "NOT_AN_OVERSEAS_EMIGRANT"


def test_overseas_only_purpose_passes_a_person_who_moved_abroad() -> None:
    resident = _annex_resident(overseas_emigrant=True)

    disclosed = minimise(resident, ["name", "record.full_name", "record.overseas_emigrant"],
                         overseas_emigrant_only=True)

    assert disclosed == ["name", "record.full_name", "record.overseas_emigrant"]
    assert RESIDENT_CODE.encode() not in resident.SerializeToString()


def test_overseas_rule_is_not_applied_to_other_purposes() -> None:
    resident = _annex_resident(overseas_emigrant=False)

    assert minimise(resident, ["record.full_name"], overseas_emigrant_only=False) == ["record.full_name"]


def test_overseas_purpose_never_receives_the_resident_code_even_if_the_mask_allows_it() -> None:
    resident = annex_pb2.AnnexResident(name="annexResidents/x")
    resident.record.resident_code = "12345678901"
    resident.record.full_name = "海外　太郎"
    resident.record.overseas_emigrant = True
    disclosed = minimise(resident, ["record.resident_code", "record.full_name"], overseas_emigrant_only=True)
    assert resident.record.resident_code == "" and disclosed == ["record.full_name"]
