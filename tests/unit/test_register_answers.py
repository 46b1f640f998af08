"""A register's answers are built from records as stored (the form every writer stores, which the
protobuf constructor reads as it is), and still come out right for a record stored in another form:
the answer is then built again with each record read through json_format."""

from __future__ import annotations

import datetime as dt
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf import json_format

from juki_services.identity import app as identity_app
from jukilib.domain.codes import CheckDigitMode
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.register.api import RegisterApi
from jukilib.register.model import Change, ChangeKind, CurrentRecord, RecordState, StoredVersion

CANONICAL = {
    "resident_code": "12345678901", "full_name": "上州 太郎", "full_name_kana": "ジョウシュウ タロウ",
    "birth_date": {"precision": "DATE_PRECISION_DAY", "year": 1980, "month": 4, "day": 1},
    "sex_code": "1", "address": "群馬県前橋市大手町一丁目1番1号", "address_municipality_code": "102016",
}
OTHER_FORMS = {
    "proto JSON names": {**{k: v for k, v in CANONICAL.items() if k != "full_name"}, "fullName": "上州 太郎"},
    "a quoted integer": {**CANONICAL, "birth_date": {**CANONICAL["birth_date"], "year": "1980"}},  # type: ignore[dict-item]
    "an enum by number": {**CANONICAL, "birth_date": {**CANONICAL["birth_date"], "precision": 1}},  # type: ignore[dict-item]
    "a field the message no longer has": {**CANONICAL, "retired_field": "x"},
}


def _api(found: list[CurrentRecord | None]) -> RegisterApi:
    async def lookup_many(codes: Any, *, reveal: bool, follow_former: bool) -> list[CurrentRecord | None]:
        return found

    engine: Any = SimpleNamespace(database=None, keyring=None, lookup_many=lookup_many,
                                  hooks=SimpleNamespace(secret_paths=()))
    return RegisterApi(engine, identity_app.REGISTER.binding, municipalities=gunma_municipalities(),
                       resident_code_check=CheckDigitMode.WARN)


def _current(record: dict[str, Any]) -> CurrentRecord:
    at = dt.datetime(2026, 4, 1, 9, 0, tzinfo=dt.UTC)
    change = Change(ChangeKind.RECORD, 1, dt.date(2026, 3, 31), at, at, "102016", "n-1")
    person = uuid.UUID(int=1)
    return CurrentRecord(person, StoredVersion(person, 1, "12345678901", RecordState.ACTIVE, record, change, at), at)


def _expected_record() -> Any:
    return json_format.ParseDict(CANONICAL, identity_app.REGISTER.binding.record_type())


def test_a_record_as_stored_is_answered_as_json_format_reads_it() -> None:
    answer = _api([]).resource_message(_current(CANONICAL))
    assert answer.record == _expected_record()
    assert answer.name == f"residents/{uuid.UUID(int=1)}" and answer.version == 1


@pytest.mark.parametrize("form", sorted(OTHER_FORMS))
def test_a_record_in_another_form_is_read_through_json_format(form: str) -> None:
    api = _api([])
    assert api.resource_message(_current(OTHER_FORMS[form])).record == _expected_record()
    assert api.version_message(_current(OTHER_FORMS[form]).current).record == _expected_record()


async def test_one_record_in_another_form_does_not_spoil_a_batch_answer() -> None:
    found = [_current(CANONICAL), None, _current(OTHER_FORMS["a quoted integer"])]
    api = _api(found)
    servicer = identity_app.REGISTER.servicer(api)
    request = SimpleNamespace(resident_codes=["12345678901", "12345678902", "12345678903"])
    answer = await servicer.BatchLookupResidents(request, None)
    assert [result.WhichOneof("result") for result in answer.results] == ["resident", "error", "resident"]
    assert answer.results[0].resident.record == answer.results[2].resident.record == _expected_record()
