"""Rules of disclosure and correction cases (juki_services.disclosure.rules, .corrections): the state
machines, the identity documents, the deadlines, and who received a wrong value."""

from __future__ import annotations

import datetime as dt
import itertools
from io import BytesIO
from typing import Any

import pytest
from pypdf import PdfReader

from juki.disclosure.v1 import disclosure_pb2 as pb
from juki.gateway.v1 import operation_log_pb2
from juki.identity.v1 import identity_pb2
from juki_services.disclosure import corrections, notices, rules
from jukilib.errors import FailedPrecondition, InvalidArgument, Violations

NOW = dt.datetime(2026, 11, 2, 1, 30, tzinfo=dt.UTC)
S, C = pb.DisclosureState, pb.CorrectionState


def _case(documents: list[int], kind: int = pb.REQUESTER_KIND_PERSON) -> pb.DisclosureCase:
    return pb.DisclosureCase(subject_resident_code="12345678901", requester_kind=kind, requester_name="請求者",
                             identity_documents=documents, channel=pb.CHANNEL_POST,
                             scopes=[pb.DISCLOSURE_SCOPE_IDENTITY_FILE])


def _violations(case: pb.DisclosureCase) -> dict[str, str]:
    violations = Violations()
    rules.validate_new_case(case, NOW, violations)
    return {v.field: v.reason for v in violations.items}


# --- state machines ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("current", "target"), [
    (S.DISCLOSURE_STATE_RECEIVED, S.DISCLOSURE_STATE_IDENTITY_VERIFIED),
    (S.DISCLOSURE_STATE_RECEIVED, S.DISCLOSURE_STATE_REJECTED_IDENTITY),
    (S.DISCLOSURE_STATE_IDENTITY_VERIFIED, S.DISCLOSURE_STATE_SEARCHING),
    (S.DISCLOSURE_STATE_IDENTITY_VERIFIED, S.DISCLOSURE_STATE_EXTENDED),
    (S.DISCLOSURE_STATE_EXTENDED, S.DISCLOSURE_STATE_SEARCHING),
    (S.DISCLOSURE_STATE_SEARCHING, S.DISCLOSURE_STATE_DECIDED_NOT_EXIST),
    (S.DISCLOSURE_STATE_DECIDED_DISCLOSE, S.DISCLOSURE_STATE_NOTIFIED),
    (S.DISCLOSURE_STATE_NOTIFIED, S.DISCLOSURE_STATE_CLOSED),
    (S.DISCLOSURE_STATE_REJECTED_IDENTITY, S.DISCLOSURE_STATE_CLOSED),
])
def test_disclosure_transitions_of_domain_section_5_are_allowed(current: int, target: int) -> None:
    rules.check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), [
    (S.DISCLOSURE_STATE_RECEIVED, S.DISCLOSURE_STATE_SEARCHING),   # identity not verified
    (S.DISCLOSURE_STATE_RECEIVED, S.DISCLOSURE_STATE_EXTENDED),
    (S.DISCLOSURE_STATE_EXTENDED, S.DISCLOSURE_STATE_EXTENDED),    # one extension only
    (S.DISCLOSURE_STATE_DECIDED_DISCLOSE, S.DISCLOSURE_STATE_EXTENDED),
    (S.DISCLOSURE_STATE_CLOSED, S.DISCLOSURE_STATE_NOTIFIED),
    (S.DISCLOSURE_STATE_REJECTED_IDENTITY, S.DISCLOSURE_STATE_SEARCHING),
])
def test_invalid_disclosure_transition_names_the_current_state(current: int, target: int) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        rules.check_transition(current, target)
    assert pb.DisclosureState.Name(current) in str(refused.value)
    assert refused.value.reason == "INVALID_STATE_TRANSITION"


def test_correction_waits_for_the_municipality_before_its_result() -> None:
    path = [C.CORRECTION_STATE_RECEIVED, C.CORRECTION_STATE_INVESTIGATING, C.CORRECTION_STATE_ERROR_FOUND,
            C.CORRECTION_STATE_MUNICIPALITY_NOTIFIED, C.CORRECTION_STATE_AWAITING_CS_UPDATE,
            C.CORRECTION_STATE_UPDATED, C.CORRECTION_STATE_RESULT_NOTIFIED, C.CORRECTION_STATE_CLOSED]
    for current, target in itertools.pairwise(path):
        rules.check_transition(current, target, correction=True)
    with pytest.raises(FailedPrecondition) as refused:
        rules.check_transition(C.CORRECTION_STATE_AWAITING_CS_UPDATE, C.CORRECTION_STATE_RESULT_NOTIFIED,
                               correction=True)
    assert "AWAITING_CS_UPDATE" in str(refused.value)
    with pytest.raises(FailedPrecondition):  # investigation first
        rules.check_transition(C.CORRECTION_STATE_RECEIVED, C.CORRECTION_STATE_NO_ERROR, correction=True)


# --- identity documents ----------------------------------------------------------------------------

@pytest.mark.parametrize("documents", [
    [pb.IDENTITY_DOCUMENT_MY_NUMBER_CARD], [pb.IDENTITY_DOCUMENT_DRIVING_LICENCE], [pb.IDENTITY_DOCUMENT_PASSPORT],
    [pb.IDENTITY_DOCUMENT_HEALTH_INSURANCE_CARD, pb.IDENTITY_DOCUMENT_SECONDARY_DOCUMENT],
])
def test_accepted_identity_documents(documents: list[int]) -> None:
    assert _violations(_case(documents)) == {}


@pytest.mark.parametrize(("documents", "reason"), [
    ([pb.IDENTITY_DOCUMENT_HEALTH_INSURANCE_CARD], "IDENTITY_NOT_PROVEN"),
    ([pb.IDENTITY_DOCUMENT_SECONDARY_DOCUMENT], "IDENTITY_NOT_PROVEN"),
    ([pb.IDENTITY_DOCUMENT_RESIDENCE_RECORD_COPY, pb.IDENTITY_DOCUMENT_PASSPORT], "DOCUMENT_NOT_ACCEPTED"),
    ([pb.IDENTITY_DOCUMENT_FAMILY_REGISTER_COPY, pb.IDENTITY_DOCUMENT_PASSPORT], "DOCUMENT_NOT_ACCEPTED"),
    ([], "REQUIRED_FIELD"),
])
def test_refused_identity_documents_name_the_field(documents: list[int], reason: str) -> None:
    assert _violations(_case(documents)) == {"disclosure_case.identity_documents": reason}


def test_representatives_must_prove_their_power() -> None:
    curator = _case([pb.IDENTITY_DOCUMENT_PASSPORT], pb.REQUESTER_KIND_CURATOR_OR_ASSISTANT)
    assert _violations(curator) == {"disclosure_case.identity_documents": "POWER_NOT_PROVEN"}
    curator.identity_documents.append(pb.IDENTITY_DOCUMENT_REGISTRY_CERTIFICATE)
    assert _violations(curator) == {}
    # A 戸籍謄本 proves a legal representative's status, never identity.
    parent = _case([pb.IDENTITY_DOCUMENT_PASSPORT, pb.IDENTITY_DOCUMENT_FAMILY_REGISTER_COPY],
                   pb.REQUESTER_KIND_LEGAL_REPRESENTATIVE)
    assert _violations(parent) == {}
    parent_without_photo = _case([pb.IDENTITY_DOCUMENT_FAMILY_REGISTER_COPY], pb.REQUESTER_KIND_LEGAL_REPRESENTATIVE)
    assert _violations(parent_without_photo) == {"disclosure_case.identity_documents": "IDENTITY_NOT_PROVEN"}


# --- deadlines -------------------------------------------------------------------------------------

def test_deadline_is_30_days_from_the_day_after_receipt_in_japan_time() -> None:
    late_evening = dt.datetime(2026, 11, 2, 15, 30, tzinfo=dt.UTC)  # 00:30 on 3 November in Japan
    assert rules.deadline_from(NOW, rules.STATUTORY_DAYS) == dt.date(2026, 12, 2)
    assert rules.deadline_from(late_evening, rules.STATUTORY_DAYS) == dt.date(2026, 12, 3)


def test_deadline_status_on_track_at_risk_overdue() -> None:
    deadline, target = dt.date(2026, 12, 2), dt.date(2026, 11, 16)
    running = S.DISCLOSURE_STATE_IDENTITY_VERIFIED
    assert rules.deadline_status(running, deadline, target, dt.date(2026, 11, 10)) == pb.DEADLINE_STATUS_ON_TRACK
    assert rules.deadline_status(running, deadline, target, dt.date(2026, 11, 17)) == pb.DEADLINE_STATUS_AT_RISK
    assert rules.deadline_status(running, deadline, target, dt.date(2026, 12, 3)) == pb.DEADLINE_STATUS_OVERDUE
    assert rules.deadline_status(S.DISCLOSURE_STATE_NOTIFIED, deadline, target,
                                 dt.date(2026, 12, 3)) == pb.DEADLINE_STATUS_NONE


def _extension(reason: str, day: dt.date) -> pb.DeadlineExtension:
    extension = pb.DeadlineExtension(reason=reason)
    extension.new_deadline.year, extension.new_deadline.month, extension.new_deadline.day = (
        day.year, day.month, day.day)
    return extension


def test_extension_once_before_the_deadline_with_reason_and_later_date() -> None:
    deadline = dt.date(2026, 12, 2)
    later = dt.date(2026, 12, 20)
    assert rules.validate_extension(_extension("理由", later), deadline, False, deadline) == later
    with pytest.raises(FailedPrecondition) as passed:
        rules.validate_extension(_extension("理由", later), deadline, False, deadline + dt.timedelta(days=1))
    assert passed.value.reason == "DEADLINE_PASSED"
    with pytest.raises(FailedPrecondition) as twice:
        rules.validate_extension(_extension("理由", later), deadline, True, deadline)
    assert twice.value.reason == "ALREADY_EXTENDED"
    with pytest.raises(InvalidArgument) as bad:
        rules.validate_extension(_extension("", deadline), deadline, False, deadline)
    assert {v.field for v in bad.value.violations} == {"extension.reason", "extension.new_deadline"}


def test_correction_items_are_checked_per_field() -> None:
    violations = Violations()
    rules.validate_correction_items([
        pb.CorrectionItem(field="record.full_name", action=pb.CORRECTION_ACTION_CORRECT, requested_value="正"),
        pb.CorrectionItem(field="record.alias", action=pb.CORRECTION_ACTION_DELETE, requested_value="x"),
        pb.CorrectionItem(field="full_name", action=pb.CORRECTION_ACTION_ADD, requested_value="y"),
        pb.CorrectionItem(field="record.shoe_size", action=pb.CORRECTION_ACTION_ADD, requested_value="z"),
    ], violations, frozenset(identity_pb2.IdentityRecord.DESCRIPTOR.fields_by_name))
    assert {v.field for v in violations.items} == {"correction_case.items[1].requested_value",
                                                   "correction_case.items[2].field", "correction_case.items[3].field"}


# --- who received a wrong value --------------------------------------------------------------------

def _version(number: int, name: str, stored: dt.datetime) -> identity_pb2.ResidentVersion:
    version = identity_pb2.ResidentVersion(name=f"residents/p/versions/{number}", version=number,
                                           record=identity_pb2.IdentityRecord(full_name=name, address="前橋市",
                                                                              resident_code="12345678901"))
    version.create_time.FromDatetime(stored)
    return version


def _provision(recipient: str, moment: dt.datetime, fields: list[str],
               method: str = "/juki.identity.v1.IdentityService/LookupResident", versions: tuple[int, ...] = ()) -> Any:
    record = operation_log_pb2.ProvisionRecord(recipient=recipient, purpose=f"P-{recipient}", method=method,
                                               fields=fields,
                                               record_versions=[f"residents/p/versions/{n}" for n in versions])
    record.time.FromDatetime(moment)
    return record


def test_only_organs_given_the_wrong_value_while_it_stood_are_listed() -> None:
    t0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    versions = [_version(1, "誤", t0), _version(2, "誤", t0 + dt.timedelta(days=2)),
                _version(3, "正", t0 + dt.timedelta(days=4))]
    provisions = [
        _provision("before", t0 - dt.timedelta(days=1), ["record.full_name"]),
        _provision("early", t0 + dt.timedelta(days=1), ["record.full_name", "record.address"]),
        _provision("late", t0 + dt.timedelta(days=3), ["record.full_name"]),
        _provision("address-only", t0 + dt.timedelta(days=3), ["record.address"]),
        _provision("annex", t0 + dt.timedelta(days=3), ["record.full_name"], "/juki.annex.v1.AnnexService/Lookup"),
        _provision("after", t0 + dt.timedelta(days=5), ["record.full_name"]),
    ]
    found = corrections.wrong_value_recipients("identity", versions, wrong=2, resolving=3,
                                               fields=["record.full_name", "record.address"], provisions=provisions)
    assert [r["organization"] for r in found] == ["early", "late"]
    assert found[0]["provisions"][0]["record_version"] == "identity:residents/p/versions/1"
    assert found[1]["provisions"][0]["record_version"] == "identity:residents/p/versions/2"
    assert all(r["fields"] == ["record.full_name"] for r in found)  # the address did not change


def test_the_versions_the_log_recorded_decide_who_received_the_wrong_value() -> None:
    # Version 3 is a late notification (an older change stored after version 2): by time, an organ
    # served between versions 3 and 4 would seem to have received version 3; the log says version 2.
    t0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    versions = [_version(1, "正", t0), _version(2, "誤", t0 + dt.timedelta(days=1)),
                _version(3, "旧", t0 + dt.timedelta(days=2)), _version(4, "正", t0 + dt.timedelta(days=4))]
    provisions = [
        _provision("given-wrong", t0 + dt.timedelta(days=3), ["record.full_name"], versions=(2,)),
        _provision("given-right", t0 + dt.timedelta(days=1, hours=1), ["record.full_name"], versions=(1,)),
        _provision("unlogged", t0 + dt.timedelta(days=1, hours=2), ["record.full_name"]),  # before versions were logged
    ]
    found = corrections.wrong_value_recipients("identity", versions, wrong=2, resolving=4,
                                               fields=["record.full_name"], provisions=provisions)
    assert [r["organization"] for r in found] == ["given-wrong", "unlogged"]
    assert found[0]["provisions"][0]["record_version"] == "identity:residents/p/versions/2"


def test_notices_render_japanese_text_reproducibly() -> None:
    pdf = notices.render("本人確認情報開示決定通知書", ["氏名: 山田　太郎"])
    text = PdfReader(BytesIO(pdf)).pages[0].extract_text()
    assert "本人確認情報開示決定通知書" in text and "山田　太郎" in text
    assert pdf == notices.render("本人確認情報開示決定通知書", ["氏名: 山田　太郎"])  # reproducible


def test_a_decided_case_runs_its_deadline_until_the_resident_is_notified() -> None:
    # 住基法 30-33 ①: the disclosure is carried out (the resident told) within the period, not merely decided.
    deadline, target = dt.date(2026, 12, 2), dt.date(2026, 11, 16)
    for decided in (S.DISCLOSURE_STATE_DECIDED_DISCLOSE, S.DISCLOSURE_STATE_DECIDED_NOT_EXIST):
        assert rules.deadline_status(decided, deadline, target, dt.date(2026, 12, 3)) == pb.DEADLINE_STATUS_OVERDUE
    for done in (S.DISCLOSURE_STATE_NOTIFIED, S.DISCLOSURE_STATE_CLOSED, S.DISCLOSURE_STATE_REJECTED_IDENTITY):
        assert rules.deadline_status(done, deadline, target, dt.date(2026, 12, 3)) == pb.DEADLINE_STATUS_NONE


@pytest.mark.parametrize(("state", "after"), [
    (S.DISCLOSURE_STATE_RECEIVED, S.DISCLOSURE_STATE_RECEIVED),  # still to be verified: no search before that
    (S.DISCLOSURE_STATE_IDENTITY_VERIFIED, S.DISCLOSURE_STATE_EXTENDED),
    (S.DISCLOSURE_STATE_SEARCHING, S.DISCLOSURE_STATE_SEARCHING),
    (S.DISCLOSURE_STATE_DECIDED_DISCLOSE, S.DISCLOSURE_STATE_DECIDED_DISCLOSE),
    (S.DISCLOSURE_STATE_DECIDED_NOT_EXIST, S.DISCLOSURE_STATE_DECIDED_NOT_EXIST),
])
def test_an_extension_is_possible_in_every_state_in_which_the_deadline_runs(state: int, after: int) -> None:
    assert rules.extended_state(state) == after


@pytest.mark.parametrize("state", [S.DISCLOSURE_STATE_NOTIFIED, S.DISCLOSURE_STATE_CLOSED,
                                   S.DISCLOSURE_STATE_REJECTED_IDENTITY])
def test_a_case_whose_deadline_no_longer_runs_cannot_be_extended(state: int) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        rules.extended_state(state)
    assert refused.value.reason == "INVALID_STATE_TRANSITION"


def test_an_organ_notice_names_the_person_only_by_what_the_organ_received() -> None:
    # 住基法 30-35 follow-up: an organ that was not given the 住民票コード does not learn it from the notice; it
    # finds the person by the provision and the (wrong) value it received.
    t0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    versions = [_version(1, "誤", t0), _version(2, "正", t0 + dt.timedelta(days=2))]
    provisions = [_provision("without-code", t0 + dt.timedelta(days=1), ["record.full_name"]),
                  _provision("with-code", t0 + dt.timedelta(days=1), ["record.full_name", "record.resident_code"])]
    found = corrections.wrong_value_recipients("identity", versions, wrong=1, resolving=2,
                                               fields=["record.full_name"], provisions=provisions)
    correction = pb.CorrectionCase(name="correctionCases/c", subject_resident_code="12345678901")
    issued = t0 + dt.timedelta(days=3)
    texts = {r["organization"]: notices.issue(notices.recipient_notice(correction, r, {"fullName": "正"}, issued),
                                              "第1号", notices.Office()) for r in found}
    without, with_code = texts["without-code"], texts["with-code"]
    assert "12345678901" not in without.json and "12345678901" not in _text(without.pdf)
    assert "誤" in _text(without.pdf) and '"record.full_name": "誤"' in without.json
    assert "12345678901" in with_code.json and "12345678901" in _text(with_code.pdf)


def _text(pdf: bytes) -> str:
    return "".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)
