"""Boundary rules of 12-5 reports that need no database: who made a report decides its source, a report
names only fields of the record, and an answer carries what its outcome needs."""

from __future__ import annotations

import uuid

import pytest

from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2 as rpb
from jukilib.errors import InvalidArgument
from jukilib.register.reports import source_of, validate_answer, validate_new_report

IDENTITY_FIELDS = frozenset(identity_pb2.IdentityRecord.DESCRIPTOR.fields_by_name)
NAME = f"municipalityReports/{uuid.uuid4()}"


@pytest.mark.parametrize(("organization", "source"), [
    ("agency", rpb.REPORT_SOURCE_AGENCY_ERROR_REPORT),
    ("disclosure", rpb.REPORT_SOURCE_CORRECTION_REQUEST),
    ("somu-shichoson", rpb.REPORT_SOURCE_PREFECTURE_FINDING),
])
def test_the_source_of_a_report_is_who_made_it(organization: str, source: int) -> None:
    report = rpb.MunicipalityReport(resident_code="12345678901", source=rpb.REPORT_SOURCE_AGENCY_ERROR_REPORT,
                                    reason_code="ITEM_MISMATCH", fields=["record.full_name"])
    assert validate_new_report(report, "", IDENTITY_FIELDS, source_of(organization)).source == source


def test_a_report_naming_a_field_the_record_lacks_is_refused_naming_the_fields() -> None:
    report = rpb.MunicipalityReport(resident_code="12345678901", reason_code="ITEM_MISMATCH",
                                    fields=["record.full_name", "record.shoe_size"])
    with pytest.raises(InvalidArgument) as refused:
        validate_new_report(report, "", IDENTITY_FIELDS, rpb.REPORT_SOURCE_PREFECTURE_FINDING)
    assert [v.field for v in refused.value.violations] == ["municipality_report.fields"]


@pytest.mark.parametrize(("answer", "fields"), [
    (rpb.AnswerMunicipalityReportRequest(name=NAME, outcome=rpb.REPORT_OUTCOME_NO_ERROR), ["reason_code"]),
    (rpb.AnswerMunicipalityReportRequest(name=NAME, outcome=rpb.REPORT_OUTCOME_NO_ERROR, reason_code="OK",
                                         notification_id="n-1"), ["notification_id"]),
    (rpb.AnswerMunicipalityReportRequest(name=NAME, outcome=rpb.REPORT_OUTCOME_CORRECTED), ["notification_id"]),
    (rpb.AnswerMunicipalityReportRequest(name="reports/1", outcome=rpb.REPORT_OUTCOME_CORRECTED,
                                         notification_id="n-1"), ["name"]),
    (rpb.AnswerMunicipalityReportRequest(name=NAME), ["outcome"]),
])
def test_an_answer_without_what_its_outcome_needs_is_refused(answer: rpb.AnswerMunicipalityReportRequest,
                                                             fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_answer(answer)
    assert [v.field for v in refused.value.violations] == fields


def test_a_complete_answer_passes() -> None:
    answer = validate_answer(rpb.AnswerMunicipalityReportRequest(name=NAME, outcome=rpb.REPORT_OUTCOME_NO_ERROR,
                                                                 reason_code="RECORD_MATCHES_EVIDENCE"))
    assert (str(answer.report_id), answer.outcome) == (NAME.split("/")[1], rpb.REPORT_OUTCOME_NO_ERROR)
