"""Field rules of the two registers' records (juki_services.identity.rules, juki_services.annex.rules), through
`jukilib.errors.Violations`.

Every bad field must be named by its path, and no description may contain the bad value (values are
personal data and descriptions reach callers and logs).
"""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from google.type import date_pb2

from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from juki_services.annex.rules import validate_annex_record
from juki_services.identity.rules import validate_identity_record
from jukilib.domain.codes import CheckDigitMode, resident_code_check_digit
from jukilib.domain.municipalities import MunicipalityTable, gunma_municipalities
from jukilib.errors import InvalidArgument, TimeWindow, Violations, to_status

MAEBASHI = "102016"
TAKASAKI = "102024"
VALID_INDIVIDUAL_NUMBER = "983205673214"
BAD_INDIVIDUAL_NUMBER = "983205673210"  # same base, wrong check digit
BAD_ADDRESS = "群馬県前橋市\x07大手町一丁目1番1号"
BAD_SEX_CODE = "7"
BAD_MUNICIPALITY = "999999"


def _binding(register: str = "identity") -> MunicipalityTable:
    """What the record rules need besides the record: the prefecture's municipalities."""
    return gunma_municipalities()


def _birth_date() -> register_pb2.PartialDate:
    return register_pb2.PartialDate(precision=register_pb2.DATE_PRECISION_DAY, year=1980, month=4, day=1)


def _identity_record() -> identity_pb2.IdentityRecord:
    return identity_pb2.IdentityRecord(
        resident_code="12345678901",
        individual_number=VALID_INDIVIDUAL_NUMBER,
        full_name="山田 太郎",
        full_name_kana="ヤマダ タロウ",
        birth_date=_birth_date(),
        sex_code="1",
        address="群馬県前橋市大手町一丁目1番1号",
        address_municipality_code=MAEBASHI,
    )


def _annex_record(**changes: object) -> annex_pb2.AnnexRecord:
    record = annex_pb2.AnnexRecord(
        resident_code="12345678901",
        full_name="山田 花子",
        full_name_kana="ヤマダ ハナコ",
        address="群馬県前橋市大手町一丁目1番1号",
        address_date=date_pb2.Date(year=2020, month=4, day=1),
        birth_date=_birth_date(),
        sex_code="2",
        domicile_municipality_code=MAEBASHI,
    )
    for name, value in changes.items():
        if isinstance(value, date_pb2.Date):
            getattr(record, name).CopyFrom(value)
        else:
            setattr(record, name, value)
    return record


def _identity_violations(record: identity_pb2.IdentityRecord) -> Violations:
    violations = Violations()
    validate_identity_record(record, violations, _binding("identity"), MAEBASHI)
    return violations


def _annex_violations(record: annex_pb2.AnnexRecord, organization: str = MAEBASHI) -> Violations:
    violations = Violations()
    validate_annex_record(record, violations, _binding("annex"), organization)
    return violations


def _fields(violations: Violations) -> set[str]:
    return {v.field for v in violations.items}


# --- identity ---------------------------------------------------------------------------------------


def test_valid_identity_record_has_no_violations() -> None:
    violations = _identity_violations(_identity_record())

    assert violations.items == []
    violations.raise_if_any()  # does not raise


def _bad_identity_record() -> identity_pb2.IdentityRecord:
    record = _identity_record()
    record.individual_number = BAD_INDIVIDUAL_NUMBER
    record.full_name = ""
    record.address = BAD_ADDRESS
    record.sex_code = BAD_SEX_CODE
    record.address_municipality_code = BAD_MUNICIPALITY
    return record


def test_every_bad_identity_field_is_named() -> None:
    violations = _identity_violations(_bad_identity_record())

    assert _fields(violations) == {
        "record.individual_number",
        "record.full_name",
        "record.address",
        "record.sex_code",
        "record.address_municipality_code",
    }


def test_identity_violation_descriptions_do_not_contain_the_bad_values() -> None:
    violations = _identity_violations(_bad_identity_record())

    for violation in violations.items:
        for value in (BAD_INDIVIDUAL_NUMBER, BAD_ADDRESS, "\x07", "大手町", BAD_MUNICIPALITY):
            assert value not in violation.description, violation.field
    (sex,) = [v for v in violations.items if v.field == "record.sex_code"]
    assert BAD_SEX_CODE not in sex.description


def test_bad_identity_record_raises_invalid_argument_without_values_on_the_wire() -> None:
    violations = _identity_violations(_bad_identity_record())

    with pytest.raises(InvalidArgument) as excinfo:
        violations.raise_if_any()

    wire = to_status(excinfo.value).SerializeToString()
    assert BAD_INDIVIDUAL_NUMBER.encode() not in wire
    assert "大手町".encode() not in wire
    assert BAD_MUNICIPALITY.encode() not in wire
    bad_request = error_details_pb2.BadRequest()
    assert to_status(excinfo.value).details[1].Unpack(bad_request)
    assert {v.field for v in bad_request.field_violations} == _fields(violations)


def test_missing_full_name_is_a_required_field_violation() -> None:
    record = _identity_record()
    record.full_name = ""

    (violation,) = _identity_violations(record).items

    assert (violation.field, violation.reason) == ("record.full_name", "REQUIRED_FIELD")


def test_valid_municipality_code_of_another_prefecture_is_refused() -> None:
    record = _identity_record()
    record.address_municipality_code = "131016"  # 千代田区: valid check digit, not in Gunma

    (violation,) = _identity_violations(record).items

    assert violation.field == "record.address_municipality_code"
    assert "131016" not in violation.description


def test_missing_birth_date_is_named() -> None:
    record = _identity_record()
    record.ClearField("birth_date")

    assert _fields(_identity_violations(record)) == {"record.birth_date"}


def test_kana_reading_in_hiragana_is_refused() -> None:
    record = _identity_record()
    record.full_name_kana = "やまだ たろう"

    assert _fields(_identity_violations(record)) == {"record.full_name_kana"}


def test_resident_code_with_wrong_check_digit_is_only_warned_in_warn_mode() -> None:
    base = "1234567890"
    wrong = f"{base}{(resident_code_check_digit(base) + 1) % 10}"
    warn, reject = Violations(), Violations()

    warn.resident_code("record.resident_code", wrong, CheckDigitMode.WARN)
    reject.resident_code("record.resident_code", wrong, CheckDigitMode.REJECT)

    assert warn.items == []
    assert _fields(reject) == {"record.resident_code"}
    assert wrong not in reject.items[0].description


# --- annex ------------------------------------------------------------------------------------------


def test_valid_annex_record_has_no_violations() -> None:
    assert _annex_violations(_annex_record()).items == []


def test_valid_overseas_emigrant_record_has_no_violations() -> None:
    record = _annex_record(overseas_emigrant=True, address="")

    assert _annex_violations(record).items == []


def test_overseas_emigrant_with_an_address_is_refused_on_the_address() -> None:
    record = _annex_record(overseas_emigrant=True)

    assert _fields(_annex_violations(record)) == {"record.address"}


def test_overseas_emigrant_without_an_address_date_is_refused_on_the_address_date() -> None:
    record = _annex_record(overseas_emigrant=True, address="")
    record.ClearField("address_date")

    violations = _annex_violations(record)

    assert _fields(violations) == {"record.address_date"}
    assert violations.items[0].reason == "REQUIRED_FIELD"


def test_resident_at_home_without_an_address_is_refused_on_the_address() -> None:
    record = _annex_record(address="")

    assert _fields(_annex_violations(record)) == {"record.address"}


def test_impossible_address_date_is_refused() -> None:
    record = _annex_record(address_date=date_pb2.Date(year=2023, month=2, day=29))

    assert _fields(_annex_violations(record)) == {"record.address_date"}


def test_domicile_of_another_municipality_than_the_caller_is_refused() -> None:
    record = _annex_record(domicile_municipality_code=TAKASAKI)

    violations = _annex_violations(record, organization=MAEBASHI)

    assert _fields(violations) == {"record.domicile_municipality_code"}
    assert TAKASAKI not in violations.items[0].description


def test_domicile_of_the_calling_municipality_is_accepted() -> None:
    record = _annex_record(domicile_municipality_code=TAKASAKI)

    assert _annex_violations(record, organization=TAKASAKI).items == []



NOW = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
WINDOW = TimeWindow(dt.timedelta(days=3650))


@pytest.mark.parametrize(("stated", "problem"), [
    (dt.datetime(530, 1, 1, tzinfo=dt.UTC), "must not be more than 3650 days before now"),
    (dt.datetime(9999, 1, 1, tzinfo=dt.UTC), "must not be in the future"),
    (NOW + dt.timedelta(minutes=6), "must not be in the future"),
    (NOW + dt.timedelta(minutes=4), None),
    (NOW - dt.timedelta(days=3649), None),
])
def test_a_stated_time_must_lie_within_its_window_around_now(stated: dt.datetime, problem: str | None) -> None:
    violations = Violations()
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(stated)
    moment = violations.time_within("change.notify_time", value, NOW, WINDOW)
    assert [v.description for v in violations.items] == ([problem] if problem else [])
    assert moment == (None if problem else stated)


@pytest.mark.parametrize(("precision", "year", "month", "day", "refused"), [
    (register_pb2.DATE_PRECISION_DAY, 2026, 4, 2, True),
    (register_pb2.DATE_PRECISION_DAY, 2026, 4, 1, False),
    (register_pb2.DATE_PRECISION_MONTH, 2026, 4, 0, False),  # April 2026 may be on or before 1 April
    (register_pb2.DATE_PRECISION_MONTH, 2026, 5, 0, True),
    (register_pb2.DATE_PRECISION_YEAR, 2027, 0, 0, True),
    (register_pb2.DATE_PRECISION_UNKNOWN, 0, 0, 0, False),
])
def test_a_birth_date_after_the_event_is_refused_as_far_as_it_is_known(
        precision: int, year: int, month: int, day: int, refused: bool) -> None:
    violations = Violations()
    birth = register_pb2.PartialDate(precision=precision, year=year, month=month, day=day)  # type: ignore[arg-type]
    violations.not_after("record.birth_date", birth, dt.date(2026, 4, 1), "the event date")
    assert [v.field for v in violations.items] == (["record.birth_date"] if refused else [])
