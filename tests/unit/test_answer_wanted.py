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


def test_the_gateway_forwards_what_its_own_checks_read() -> None:
    import dataclasses

    from juki_services.gateway.policy import DEFAULT_CATALOGUE, load_catalogue
    from juki_services.gateway.proxy import OVERSEAS_EMIGRANT_FIELD, forwarded_mask
    from jukilib.domain.municipalities import gunma_municipalities

    purposes = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities()).purposes.values()
    for purpose in purposes:
        mask = forwarded_mask(purpose)
        assert (mask is None) == purpose.all_fields
        assert mask is None or set(purpose.fields) <= set(mask)
    overseas = next(p for p in purposes if p.overseas_emigrant_only)
    # A 30-44-6 purpose whose mask left the flag out: the register still sends it, for the gateway's check
    # (which then cuts it, as it is outside the purpose's mask).
    narrowed = dataclasses.replace(overseas, fields=tuple(f for f in overseas.fields if f != OVERSEAS_EMIGRANT_FIELD))
    assert OVERSEAS_EMIGRANT_FIELD in (forwarded_mask(narrowed) or ())
    assert "overseas_emigrant" in (Wanted.of(Caller(organization="o", fields=forwarded_mask(narrowed))).record or ())
