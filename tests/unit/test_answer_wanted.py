"""What a register's answer carries for the caller's field mask (`jukilib.register.api.Wanted`): the
fields the mask covers, plus what the gateway's operation log needs before it minimises."""

from __future__ import annotations

from jukilib.caller import Caller
from jukilib.register.api import EVERYTHING, Wanted


def test_no_caller_or_a_purpose_with_every_field_wants_everything() -> None:
    assert Wanted.of(None) is EVERYTHING
    assert Wanted.of(Caller(organization="o")) is EVERYTHING
    assert EVERYTHING.has("change") and EVERYTHING.record is None


def test_a_mask_keeps_its_fields_and_what_the_log_needs() -> None:
    wanted = Wanted.of(Caller(organization="o", fields=("state", "record.full_name", "record.birth_date.year")))
    assert wanted.fields == {"name", "version", "state", "record"}
    assert wanted.record == {"resident_code", "full_name", "birth_date"}
    assert not wanted.has("change") and not wanted.has("update_time")


def test_the_whole_record_path_keeps_every_record_key() -> None:
    wanted = Wanted.of(Caller(organization="o", fields=("record.full_name", "record")))
    assert wanted.record is None and wanted.has("record")


def test_an_empty_mask_still_carries_the_name_version_and_resident_code() -> None:
    wanted = Wanted.of(Caller(organization="o", fields=()))
    assert wanted.fields == {"name", "version"} and wanted.record == {"resident_code"}
