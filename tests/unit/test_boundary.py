"""Every text of a request is checked at the door, naming the field (issue 15: no poison pills)."""

from __future__ import annotations

import pytest

from juki.gateway.v1.operation_log_pb2 import GetOperationLogStatusRequest
from juki.identity.v1 import identity_pb2
from juki.register.v1.register_pb2 import REPORT_STATE_OPEN, ListMunicipalityReportsRequest, SearchQuery
from jukilib.boundary import MAX_TEXT_LENGTH, check_request, storable
from jukilib.errors import InvalidArgument


def _violations(request: object) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as refused:
        check_request(request)  # type: ignore[arg-type]
    return [(v.field, v.reason) for v in refused.value.violations]


def test_a_nul_byte_in_a_resident_code_is_refused_naming_the_field() -> None:
    assert _violations(identity_pb2.LookupResidentRequest(resident_code="1234\x0056789")) == [
        ("resident_code", "TEXT_NOT_STORABLE")]


def test_each_bad_code_of_a_batch_is_named_by_its_index() -> None:
    request = identity_pb2.BatchLookupResidentsRequest(resident_codes=["12345678901", "1\x002", "3\uffff", "x" * 11])
    assert [field for field, _ in _violations(request)] == ["resident_codes[1]", "resident_codes[2]"]


def test_nested_fields_are_named_by_their_path_and_overlong_text_is_refused() -> None:
    request = identity_pb2.SearchResidentsRequest(query=SearchQuery(full_name="x" * (MAX_TEXT_LENGTH + 1),
                                                                    municipality_code="10\x002"))
    assert _violations(request) == [("query.full_name", "TEXT_TOO_LONG"), ("query.municipality_code",
                                                                          "TEXT_NOT_STORABLE")]


def test_storable_text_is_left_to_the_owning_services_rules() -> None:
    # control characters other than U+0000 can be stored: the register's rules refuse them in a name,
    # together with every other bad field of the notification
    check_request(identity_pb2.SearchResidentsRequest(query=SearchQuery(full_name="髙橋\u3000太郎\t\x07",
                                                                      full_name_kana="タカハシ\nタロウ\r")))


def test_the_error_names_fields_and_never_carries_the_value() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_request(identity_pb2.SearchResidentsRequest(query=SearchQuery(full_name="山田\x00花子")))
    assert "山田" not in str(refused.value) and all("山田" not in v.description for v in refused.value.violations)


def test_storable_replaces_what_cannot_be_stored() -> None:
    assert storable("a\x00b\uffffc\x1f") == "a\ufffdb\ufffdc\x1f"
    assert len(storable("x" * (MAX_TEXT_LENGTH + 5))) == MAX_TEXT_LENGTH


def test_an_enum_value_the_contract_does_not_define_is_refused() -> None:
    # proto3 enums are open: 70,000 decodes, and once reached SQL as an out-of-range smallint (INTERNAL)
    assert _violations(ListMunicipalityReportsRequest(state=70000)) == [("state", "UNKNOWN_ENUM_VALUE")]
    check_request(ListMunicipalityReportsRequest(state=REPORT_STATE_OPEN))


def test_a_timestamp_outside_years_1_to_9999_is_refused_naming_the_field() -> None:
    request = identity_pb2.ApplyNotificationRequest()
    request.change.notify_time.seconds = 253_402_300_800  # 10000-01-01
    assert _violations(request) == [("change.notify_time", "TIMESTAMP_OUT_OF_RANGE")]
    request.change.notify_time.seconds, request.change.notify_time.nanos = 0, -1
    assert _violations(request) == [("change.notify_time", "TIMESTAMP_OUT_OF_RANGE")]
    request.change.notify_time.nanos = 0
    check_request(request)


def test_a_duration_beyond_ten_thousand_years_is_refused_naming_the_field() -> None:
    # found by the gateway's fuzzing: a window of -86,399,999,913,601 s overflowed Python's timedelta (INTERNAL)
    request = GetOperationLogStatusRequest()
    request.window.seconds = -86_399_999_913_601
    assert _violations(request) == [("window", "DURATION_OUT_OF_RANGE")]
    request.window.seconds, request.window.nanos = 1, -1  # nanos of the other sign
    assert _violations(request) == [("window", "DURATION_OUT_OF_RANGE")]
    request.window.seconds, request.window.nanos = -315_576_000_000, -999_999_999
    check_request(request)
