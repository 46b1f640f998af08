"""Which 修正 tell organs of a corrected value (住基法 30-35 follow-up), decided without a database."""

from __future__ import annotations

import pytest

from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2 as rpb
from juki_services.disclosure import organ_notices
from juki_services.disclosure.organ_notices import corrects, notification_id
from jukilib.register.modifications import changed_fields


def _modification(reason: int, fields: tuple[str, ...] = ("record.full_name",),
                  reports: tuple[str, ...] = ()) -> rpb.Modification:
    return rpb.Modification(name="residents/p/versions/2", person="residents/p", version=2, previous_version=1,
                            reason=reason, field_paths=fields, municipality_reports=reports)


@pytest.mark.parametrize("reason", sorted(organ_notices.CORRECTING_REASONS))
def test_a_correcting_reason_replaced_a_wrong_value(reason: int) -> None:
    assert corrects(_modification(reason))


@pytest.mark.parametrize("reason", [rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY,
                                    rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST,
                                    rpb.CHANGE_REASON_FORMER_SURNAME_CHANGE, rpb.CHANGE_REASON_ALIAS_CHANGE])
def test_a_change_of_a_right_value_tells_no_organ_unless_it_closed_a_12_5_report(reason: int) -> None:
    # A 転居 or a new code on request replaces a value that was right when it was provided; a 修正 that the
    # register found to close a 12-5 report as corrected replaced a wrong one, whatever reason it gave.
    assert not corrects(_modification(reason))
    assert corrects(_modification(reason, reports=("municipalityReports/r",)))


def test_a_correction_that_changed_no_field_tells_no_organ() -> None:
    assert not corrects(_modification(rpb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION, fields=()))


def test_each_correction_has_one_notification_id_on_every_replica() -> None:
    first = notification_id(1, "residents/p/versions/2")
    assert first == notification_id(1, "residents/p/versions/2")
    assert first != notification_id(1, "residents/p/versions/3") != notification_id(2, "residents/p/versions/2")


def test_the_changed_fields_are_named_in_the_record_s_order() -> None:
    before = {"resident_code": "1", "full_name": "誤記", "sex_code": "2", "address": "A"}
    after = {"resident_code": "1", "full_name": "正", "sex_code": "1", "address": "A", "alias": "通称"}
    assert changed_fields(before, after, identity_pb2.IdentityRecord.DESCRIPTOR) == [
        "record.full_name", "record.alias", "record.sex_code"]
