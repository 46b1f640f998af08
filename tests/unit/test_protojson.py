"""The fast record conversions give exactly what json_format gives, for every record shape."""

from __future__ import annotations

import datetime as dt

from google.protobuf import json_format, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from jukilib import protojson

texts = st.text(max_size=12)
partial_dates = st.builds(
    register_pb2.PartialDate, precision=st.integers(0, 5), year=st.integers(0, 2100), month=st.integers(0, 12),
    day=st.integers(0, 31), original_text=texts)
calendar_dates = st.builds(__import__("google.type.date_pb2", fromlist=["Date"]).Date,
                           year=st.integers(0, 9999), month=st.integers(0, 12), day=st.integers(0, 31))
identity_records = st.builds(
    identity_pb2.IdentityRecord, resident_code=texts, individual_number=texts, full_name=texts,
    full_name_kana=texts, kana_confirmed=st.booleans(), former_surname=texts, alias=texts,
    birth_date=st.none() | partial_dates, sex_code=texts, address=texts, address_municipality_code=texts)
annex_records = st.builds(
    annex_pb2.AnnexRecord, resident_code=texts, full_name=texts, full_name_kana=texts, kana_confirmed=st.booleans(),
    address=texts, overseas_emigrant=st.booleans(), address_date=st.none() | calendar_dates,
    birth_date=st.none() | partial_dates, sex_code=texts, domicile_municipality_code=texts)


@settings(max_examples=300)
@given(st.one_of(identity_records, annex_records))
def test_message_to_dict_is_what_json_format_writes(record: object) -> None:
    assert protojson.message_to_dict(record) == json_format.MessageToDict(  # type: ignore[arg-type]
        record, preserving_proto_field_name=True)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.one_of(identity_records, annex_records))
def test_a_constructor_given_the_stored_record_builds_what_json_format_reads(record: object) -> None:
    stored = protojson.message_to_dict(record)  # type: ignore[arg-type]
    value = protojson.constructor_value(stored, type(record))  # type: ignore[arg-type]
    built = type(record)(**value) if isinstance(value, dict) else value  # type: ignore[operator]
    assert built == record


def test_a_stored_record_not_in_the_fast_shape_reaches_the_constructor_as_json_format_reads_it() -> None:
    data = {"birth_date": {"precision": 1, "year": "1990"}, "full_name": "x", "unknown": 1}
    expected = json_format.ParseDict(data, identity_pb2.IdentityRecord(), ignore_unknown_fields=True)
    value = protojson.constructor_value(data, identity_pb2.IdentityRecord)
    assert identity_pb2.Resident(record=value).record == expected


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), timezones=st.just(dt.UTC)))
def test_timestamp_value_is_from_datetime(value: dt.datetime) -> None:
    slow = timestamp_pb2.Timestamp()
    slow.FromDatetime(value)
    assert timestamp_pb2.Timestamp(**protojson.timestamp_value(value)) == slow
