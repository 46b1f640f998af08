"""Rules of disclosure, correction and usage-suspension cases: who may ask, which documents prove identity,
the deadline, the state machines. Pure functions; no I/O."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from juki.disclosure.v1 import disclosure_pb2 as pb
from jukilib.domain.dates import japan_date
from jukilib.errors import FailedPrecondition, TimeWindow, Violations
from jukilib.register.validation import FIELD_PATH, REASON_CODE

# 住基法 30-33: disclose within 30 days of the request (UNVERIFIED wording; DOMAIN §1.1). The period
# is counted from the day after receipt (民法 140, 初日不算入).
STATUTORY_DAYS = 30
# A case is at risk this many days before its (possibly extended) deadline, or once past its local target.
AT_RISK_DAYS = 3
# An extension is for a reasonable period (30-33 ②). Not law: a sanity bound against typing errors.
MAX_EXTENSION_DAYS = 60
REQUESTER_NAME_MAX = 100
REASON_MAX = 500
STEP_MAX = 1000
VALUE_MAX = 200

S = pb.DisclosureState
# DOMAIN §5: RECEIVED → (IDENTITY_VERIFIED | REJECTED_IDENTITY) → SEARCHING → (DECIDED_DISCLOSE |
# DECIDED_NOT_EXIST) → NOTIFIED → CLOSED. An extension (30-33 ②) may be granted in any state in which the
# deadline runs (`extended_state`); a verified request then goes IDENTITY_VERIFIED → EXTENDED → SEARCHING.
# A search that failed half-way may be retried (SEARCHING → SEARCHING).
DISCLOSURE_TRANSITIONS: Mapping[int, frozenset[int]] = {
    S.DISCLOSURE_STATE_RECEIVED: frozenset({S.DISCLOSURE_STATE_IDENTITY_VERIFIED,
                                            S.DISCLOSURE_STATE_REJECTED_IDENTITY}),
    S.DISCLOSURE_STATE_IDENTITY_VERIFIED: frozenset({S.DISCLOSURE_STATE_SEARCHING, S.DISCLOSURE_STATE_EXTENDED}),
    S.DISCLOSURE_STATE_EXTENDED: frozenset({S.DISCLOSURE_STATE_SEARCHING}),
    S.DISCLOSURE_STATE_SEARCHING: frozenset({S.DISCLOSURE_STATE_SEARCHING, S.DISCLOSURE_STATE_DECIDED_DISCLOSE,
                                             S.DISCLOSURE_STATE_DECIDED_NOT_EXIST}),
    S.DISCLOSURE_STATE_DECIDED_DISCLOSE: frozenset({S.DISCLOSURE_STATE_NOTIFIED}),
    S.DISCLOSURE_STATE_DECIDED_NOT_EXIST: frozenset({S.DISCLOSURE_STATE_NOTIFIED}),
    S.DISCLOSURE_STATE_NOTIFIED: frozenset({S.DISCLOSURE_STATE_CLOSED}),
    S.DISCLOSURE_STATE_REJECTED_IDENTITY: frozenset({S.DISCLOSURE_STATE_CLOSED}),
    S.DISCLOSURE_STATE_CLOSED: frozenset(),
}
# States in which the disclosure deadline runs. 住基法 30-33 ①: the disclosure is to be *carried out* (the
# resident told) within 30 days, so a decided case whose notice has not been sent is still running.
DEADLINE_RUNNING = frozenset({S.DISCLOSURE_STATE_RECEIVED, S.DISCLOSURE_STATE_IDENTITY_VERIFIED,
                              S.DISCLOSURE_STATE_SEARCHING, S.DISCLOSURE_STATE_EXTENDED,
                              S.DISCLOSURE_STATE_DECIDED_DISCLOSE, S.DISCLOSURE_STATE_DECIDED_NOT_EXIST})
# A correction may be asked only by a person who received a disclosure (30-35).
DISCLOSED = frozenset({S.DISCLOSURE_STATE_DECIDED_DISCLOSE, S.DISCLOSURE_STATE_NOTIFIED, S.DISCLOSURE_STATE_CLOSED})

C = pb.CorrectionState
# DOMAIN §5: RECEIVED → INVESTIGATING → (NO_ERROR | ERROR_FOUND → MUNICIPALITY_NOTIFIED (12-5) →
# AWAITING_CS_UPDATE → UPDATED) → RESULT_NOTIFIED → CLOSED.
CORRECTION_TRANSITIONS: Mapping[int, frozenset[int]] = {
    C.CORRECTION_STATE_RECEIVED: frozenset({C.CORRECTION_STATE_INVESTIGATING}),
    C.CORRECTION_STATE_INVESTIGATING: frozenset({C.CORRECTION_STATE_INVESTIGATING, C.CORRECTION_STATE_NO_ERROR,
                                                 C.CORRECTION_STATE_ERROR_FOUND}),
    # A conclusion whose notice or report failed half-way may be retried (NO_ERROR → NO_ERROR, …).
    C.CORRECTION_STATE_NO_ERROR: frozenset({C.CORRECTION_STATE_NO_ERROR, C.CORRECTION_STATE_RESULT_NOTIFIED}),
    C.CORRECTION_STATE_ERROR_FOUND: frozenset({C.CORRECTION_STATE_ERROR_FOUND,
                                               C.CORRECTION_STATE_MUNICIPALITY_NOTIFIED}),
    C.CORRECTION_STATE_MUNICIPALITY_NOTIFIED: frozenset({C.CORRECTION_STATE_AWAITING_CS_UPDATE}),
    # 住基法 12-5: the municipality fixes the record (UPDATED) or answers that it found no error.
    C.CORRECTION_STATE_AWAITING_CS_UPDATE: frozenset({C.CORRECTION_STATE_UPDATED, C.CORRECTION_STATE_NO_ERROR}),
    C.CORRECTION_STATE_UPDATED: frozenset({C.CORRECTION_STATE_RESULT_NOTIFIED}),
    C.CORRECTION_STATE_RESULT_NOTIFIED: frozenset({C.CORRECTION_STATE_CLOSED}),
    C.CORRECTION_STATE_CLOSED: frozenset(),
}

U = pb.UsageSuspensionState
# 個人情報保護法 98 … 101 (利用停止請求; 番号法 30 for 特定個人情報): RECEIVED → (IDENTITY_VERIFIED | REJECTED) →
# (DECIDED_STOP | DECIDED_NOT_STOP) → NOTIFIED → CLOSED; REJECTED → CLOSED. An extension (102 ②) keeps the state.
SUSPENSION_TRANSITIONS: Mapping[int, frozenset[int]] = {
    U.USAGE_SUSPENSION_STATE_RECEIVED: frozenset({U.USAGE_SUSPENSION_STATE_IDENTITY_VERIFIED,
                                                  U.USAGE_SUSPENSION_STATE_REJECTED}),
    U.USAGE_SUSPENSION_STATE_IDENTITY_VERIFIED: frozenset({U.USAGE_SUSPENSION_STATE_DECIDED_STOP,
                                                           U.USAGE_SUSPENSION_STATE_DECIDED_NOT_STOP}),
    U.USAGE_SUSPENSION_STATE_DECIDED_STOP: frozenset({U.USAGE_SUSPENSION_STATE_NOTIFIED}),
    U.USAGE_SUSPENSION_STATE_DECIDED_NOT_STOP: frozenset({U.USAGE_SUSPENSION_STATE_NOTIFIED}),
    U.USAGE_SUSPENSION_STATE_NOTIFIED: frozenset({U.USAGE_SUSPENSION_STATE_CLOSED}),
    U.USAGE_SUSPENSION_STATE_REJECTED: frozenset({U.USAGE_SUSPENSION_STATE_CLOSED}),
    U.USAGE_SUSPENSION_STATE_CLOSED: frozenset(),
}
# 個人情報保護法 102 ①: the decision is made within 30 days of the request, counted like a disclosure's; as
# with a disclosure, the deadline runs until the requester is told (a decided case not yet notified runs).
SUSPENSION_RUNNING = frozenset({U.USAGE_SUSPENSION_STATE_RECEIVED, U.USAGE_SUSPENSION_STATE_IDENTITY_VERIFIED,
                                U.USAGE_SUSPENSION_STATE_DECIDED_STOP, U.USAGE_SUSPENSION_STATE_DECIDED_NOT_STOP})
# 個人情報保護法 102 ②: extended by at most 30 days, with a written reason (UNVERIFIED wording; issue 18).
SUSPENSION_EXTENSION_DAYS = 30
# While the request is being handled the named purposes are refused (issue 18): until a decision.
SUSPENSION_PENDING = frozenset({U.USAGE_SUSPENSION_STATE_RECEIVED, U.USAGE_SUSPENSION_STATE_IDENTITY_VERIFIED})
# Cases under which nothing more is read (issue 19: disclosure and correction work names an open case): closed,
# or their request rejected (identity not verified, not the person's own data). A rejected request reaches
# CLOSED only when filed away, but nothing is gathered for it any more.
TERMINAL: Mapping[str, frozenset[int]] = {
    "disclosure": frozenset({S.DISCLOSURE_STATE_CLOSED, S.DISCLOSURE_STATE_REJECTED_IDENTITY}),
    "correction": frozenset({C.CORRECTION_STATE_CLOSED}),
    "suspension": frozenset({U.USAGE_SUSPENSION_STATE_CLOSED, U.USAGE_SUSPENSION_STATE_REJECTED}),
}
STATE_ENUMS: Mapping[str, Any] = {"disclosure": pb.DisclosureState, "correction": pb.CorrectionState,
                                  "suspension": pb.UsageSuspensionState}


def case_open(kind: str, state: int) -> bool:
    """Whether a case of `kind` in `state` is open: work may still read records for it."""
    return state not in TERMINAL[kind]


PURPOSE_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,63}$")
MAX_PURPOSES = 50

# Documents that prove identity alone (photo ID issued by a public body).
PHOTO_IDS = frozenset({pb.IDENTITY_DOCUMENT_MY_NUMBER_CARD, pb.IDENTITY_DOCUMENT_DRIVING_LICENCE,
                       pb.IDENTITY_DOCUMENT_PASSPORT, pb.IDENTITY_DOCUMENT_OTHER_OFFICIAL_PHOTO_ID})


def deadline_from(receive_time: dt.datetime, days: int) -> dt.date:
    """The last day of a period of `days` days starting the day after receipt (Japan time)."""
    return japan_date(receive_time) + dt.timedelta(days=days)


def japan_today(now: dt.datetime) -> dt.date:
    return japan_date(now)


def state_name(state: int, enum: Any = pb.DisclosureState) -> str:
    try:
        return str(enum.Name(state))
    except ValueError:
        return str(state)


def check_transition(current: int, target: int, *, correction: bool = False, suspension: bool = False) -> None:
    """FAILED_PRECONDITION naming the current state when `target` cannot follow it."""
    table: Mapping[int, frozenset[int]]
    enum: Any
    if suspension:
        table, enum = SUSPENSION_TRANSITIONS, pb.UsageSuspensionState
    elif correction:
        table, enum = CORRECTION_TRANSITIONS, pb.CorrectionState
    else:
        table, enum = DISCLOSURE_TRANSITIONS, pb.DisclosureState
    if target not in table.get(current, frozenset()):
        name = state_name(current, enum)
        raise FailedPrecondition(f"the case is in state {name}; {state_name(target, enum)} cannot follow it",
                                 "INVALID_STATE_TRANSITION", {"current_state": name})


def deadline_status(state: int, deadline: dt.date, target: dt.date, today: dt.date,
                    running: frozenset[int] = DEADLINE_RUNNING) -> pb.DeadlineStatus.ValueType:
    """Where a case stands: overdue past its deadline, at risk past its target or near its deadline."""
    if state not in running:
        return pb.DEADLINE_STATUS_NONE
    if today > deadline:
        return pb.DEADLINE_STATUS_OVERDUE
    if today > target or (deadline - today).days <= AT_RISK_DAYS:
        return pb.DEADLINE_STATUS_AT_RISK
    return pb.DEADLINE_STATUS_ON_TRACK


def _documents(case: Any, violations: Violations, field: str = "disclosure_case.identity_documents") -> None:
    documents = list(case.identity_documents)
    if not documents:
        violations.add(field, "at least one document is required", "REQUIRED_FIELD")
        return
    if any(d not in pb.IdentityDocument.values() or d == pb.IDENTITY_DOCUMENT_UNSPECIFIED for d in documents):
        violations.add(field, "contains an unknown document")
        return
    kind = case.requester_kind
    # Documents anyone can obtain do not prove identity (Hokkaido practice, DOMAIN §5).
    if pb.IDENTITY_DOCUMENT_RESIDENCE_RECORD_COPY in documents:
        violations.add(field, "a copy of the residence record (住民票の写し) is not accepted", "DOCUMENT_NOT_ACCEPTED")
    if pb.IDENTITY_DOCUMENT_FAMILY_REGISTER_COPY in documents and kind != pb.REQUESTER_KIND_LEGAL_REPRESENTATIVE:
        violations.add(field, "a family register copy (戸籍謄本) is not accepted as proof of identity",
                       "DOCUMENT_NOT_ACCEPTED")
    photo = [d for d in documents if d in PHOTO_IDS]
    # A health-insurance card has no photo: only with a second document (DOMAIN §5).
    secondary = [d for d in documents if d in (pb.IDENTITY_DOCUMENT_SECONDARY_DOCUMENT, *PHOTO_IDS)]
    health_card_ok = pb.IDENTITY_DOCUMENT_HEALTH_INSURANCE_CARD in documents and secondary
    if not photo and not health_card_ok:
        violations.add(field, "needs a photo ID, or a health-insurance card with a second document",
                       "IDENTITY_NOT_PROVEN")
    if kind == pb.REQUESTER_KIND_CURATOR_OR_ASSISTANT and pb.IDENTITY_DOCUMENT_REGISTRY_CERTIFICATE not in documents:
        violations.add(field, "a curator or assistant must show a registry certificate (登記事項証明書)",
                       "POWER_NOT_PROVEN")
    if kind == pb.REQUESTER_KIND_LEGAL_REPRESENTATIVE and not (
            {pb.IDENTITY_DOCUMENT_FAMILY_REGISTER_COPY, pb.IDENTITY_DOCUMENT_REGISTRY_CERTIFICATE} & set(documents)):
        violations.add(field, "a legal representative must prove the status (戸籍謄本 or 登記事項証明書)",
                       "POWER_NOT_PROVEN")


DEFAULT_RECEIPT_WINDOW = TimeWindow(dt.timedelta(days=365))
"""A request's receipt time, as the desk states it: at most 5 minutes ahead (clocks), a year behind."""


def validate_new_case(case: Any, now: dt.datetime, violations: Violations,
                      receipt_window: TimeWindow = DEFAULT_RECEIPT_WINDOW) -> None:
    """Every bad field of a case to open (paths under `disclosure_case.`)."""
    code = case.subject_resident_code
    if len(code) != 11 or not code.isascii() or not code.isdigit():
        violations.add("disclosure_case.subject_resident_code", "must be 11 digits")
    if case.requester_kind not in (pb.REQUESTER_KIND_PERSON, pb.REQUESTER_KIND_LEGAL_REPRESENTATIVE,
                                   pb.REQUESTER_KIND_CURATOR_OR_ASSISTANT):
        violations.add("disclosure_case.requester_kind", "is required", "REQUIRED_FIELD")
    violations.required_text("disclosure_case.requester_name", case.requester_name, max_length=REQUESTER_NAME_MAX)
    _documents(case, violations)
    if case.channel not in (pb.CHANNEL_COUNTER, pb.CHANNEL_POST, pb.CHANNEL_ELECTRONIC):
        violations.add("disclosure_case.channel", "is required", "REQUIRED_FIELD")
    scopes = list(case.scopes)
    if not scopes:
        violations.add("disclosure_case.scopes", "at least one scope is required", "REQUIRED_FIELD")
    elif len(set(scopes)) != len(scopes) or any(s not in pb.DisclosureScope.values()
                                                or s == pb.DISCLOSURE_SCOPE_UNSPECIFIED for s in scopes):
        violations.add("disclosure_case.scopes", "must be distinct known scopes")
    if case.HasField("receive_time"):
        violations.time_within("disclosure_case.receive_time", case.receive_time, now, receipt_window)


def validate_verification(verified: bool, rejection_reason: str) -> None:
    """A refused request names its reason (it goes into the refusal notice); a verified one has none."""
    violations = Violations()
    if verified:
        if rejection_reason:
            violations.add("rejection_reason", "must be empty when the identity is verified")
    else:
        violations.required_text("rejection_reason", rejection_reason, max_length=REASON_MAX)
    violations.raise_if_any()


def extended_state(state: int) -> int:
    """The state a case is in after its deadline is extended (30-33 ②: possible whenever the deadline runs). A
    verified request waits as EXTENDED for its search; any other case keeps its state (a received request
    still needs its identity verified, a decided one its notice sent)."""
    if state not in DEADLINE_RUNNING:
        raise FailedPrecondition(f"the case is in state {state_name(state, S)}; only a case whose deadline runs "
                                 "can be extended", "INVALID_STATE_TRANSITION", {"current_state": state_name(state, S)})
    return int(S.DISCLOSURE_STATE_EXTENDED) if state == S.DISCLOSURE_STATE_IDENTITY_VERIFIED else state


def validate_extension(extension: Any, deadline: dt.date, already_extended: bool, today: dt.date,
                       max_days: int = MAX_EXTENSION_DAYS) -> dt.date:
    """住基法 30-33 ② (個人情報保護法 102 ② likewise): one extension, with a reason and a new date, notified
    before the deadline passes."""
    violations = Violations()
    violations.required_text("extension.reason", extension.reason, max_length=REASON_MAX)
    new = extension.new_deadline
    new_date: dt.date | None = None
    try:
        new_date = dt.date(new.year, new.month, new.day)
    except ValueError:
        violations.add("extension.new_deadline", "must be a calendar date", "REQUIRED_FIELD" if not new.year else
                       "INVALID_FIELD")
    if new_date is not None and new_date <= deadline:
        violations.add("extension.new_deadline", "must be after the statutory deadline")
    if new_date is not None and new_date > deadline + dt.timedelta(days=max_days):
        violations.add("extension.new_deadline", f"must be within {max_days} days of the deadline")
    violations.raise_if_any()
    assert new_date is not None
    if already_extended:
        raise FailedPrecondition("the deadline was already extended once", "ALREADY_EXTENDED")
    if today > deadline:
        # The notice of extension must reach the requester within the 30 days (30-33 ②).
        raise FailedPrecondition("the deadline has passed; it can no longer be extended", "DEADLINE_PASSED",
                                 {"deadline": deadline.isoformat()})
    return new_date


def validate_correction_items(items: Any, violations: Violations, record_fields: frozenset[str]) -> None:
    """Per field of the file's record (`record_fields`): correct, add or delete (30-35), each field once."""
    if not items:
        violations.add("correction_case.items", "at least one item is required", "REQUIRED_FIELD")
        return
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"correction_case.items[{index}]"
        if not FIELD_PATH.match(item.field):
            violations.add(f"{where}.field", "must be a record field path such as record.full_name")
        elif item.field.removeprefix("record.") not in record_fields:
            violations.add(f"{where}.field", "names no field of the file's record")
        elif item.field in seen:
            violations.add(f"{where}.field", "appears twice")
        seen.add(item.field)
        if item.action not in (pb.CORRECTION_ACTION_CORRECT, pb.CORRECTION_ACTION_ADD, pb.CORRECTION_ACTION_DELETE):
            violations.add(f"{where}.action", "is required", "REQUIRED_FIELD")
        elif item.action == pb.CORRECTION_ACTION_DELETE:
            if item.requested_value:
                violations.add(f"{where}.requested_value", "must be empty for a deletion")
        else:
            violations.required_text(f"{where}.requested_value", item.requested_value, max_length=VALUE_MAX)


def validate_conclusion(error_found: bool, reason_code: str, fields: list[str], item_fields: list[str]) -> list[str]:
    """The fields a 12-5 report names; checks the reason code when an error was found."""
    violations = Violations()
    if not error_found:
        if reason_code or fields:
            violations.add("reason_code" if reason_code else "fields", "must be empty when no error was found")
        violations.raise_if_any()
        return []
    if not REASON_CODE.match(reason_code):
        violations.add("reason_code", "must be an UPPER_SNAKE_CASE code of at most 64 characters", "REQUIRED_FIELD"
                       if not reason_code else "INVALID_FIELD")
    if any(f not in item_fields for f in fields):
        violations.add("fields", "must be fields of the case's items")
    violations.raise_if_any()
    return list(fields) or list(item_fields)


def validate_new_suspension(case: Any, now: dt.datetime, violations: Violations,
                            receipt_window: TimeWindow = DEFAULT_RECEIPT_WINDOW) -> None:
    """Every bad field of a usage-suspension request to open (paths under `usage_suspension_case.`). Whether
    each purpose is one of the catalogue's is the gateway's to say (it holds the catalogue)."""
    prefix = "usage_suspension_case"
    code = case.subject_resident_code
    if len(code) != 11 or not code.isascii() or not code.isdigit():
        violations.add(f"{prefix}.subject_resident_code", "must be 11 digits")
    if case.requester_kind not in (pb.REQUESTER_KIND_PERSON, pb.REQUESTER_KIND_LEGAL_REPRESENTATIVE,
                                   pb.REQUESTER_KIND_CURATOR_OR_ASSISTANT):
        violations.add(f"{prefix}.requester_kind", "is required", "REQUIRED_FIELD")
    violations.required_text(f"{prefix}.requester_name", case.requester_name, max_length=REQUESTER_NAME_MAX)
    _documents(case, violations, f"{prefix}.identity_documents")
    if case.channel not in (pb.CHANNEL_COUNTER, pb.CHANNEL_POST, pb.CHANNEL_ELECTRONIC):
        violations.add(f"{prefix}.channel", "is required", "REQUIRED_FIELD")
    purposes = list(case.purposes)
    if not purposes:
        violations.add(f"{prefix}.purposes", "at least one purpose of use is required", "REQUIRED_FIELD")
    elif len(purposes) > MAX_PURPOSES:
        violations.add(f"{prefix}.purposes", f"at most {MAX_PURPOSES} purposes")
    for index, purpose in enumerate(purposes):
        if not PURPOSE_CODE.match(purpose):
            violations.add(f"{prefix}.purposes[{index}]", "must be a purpose code of the catalogue")
        elif purpose in purposes[:index]:
            violations.add(f"{prefix}.purposes[{index}]", "appears twice")
    if case.ground not in pb.UsageSuspensionGround.values() or case.ground == pb.USAGE_SUSPENSION_GROUND_UNSPECIFIED:
        violations.add(f"{prefix}.ground", "is required", "REQUIRED_FIELD")
    if case.HasField("receive_time"):
        violations.time_within(f"{prefix}.receive_time", case.receive_time, now, receipt_window)


def validate_suspension_decision(decision: int, reason: str, stopped: Sequence[str],
                                 requested: Sequence[str]) -> list[str]:
    """個人情報保護法 101: stop (for which purposes: those asked for, default all) or not stop, with a reason;
    returns the purposes stopped."""
    violations = Violations()
    if decision not in (pb.USAGE_SUSPENSION_DECISION_STOP, pb.USAGE_SUSPENSION_DECISION_NOT_STOP):
        violations.add("decision", "is required", "REQUIRED_FIELD")
    violations.required_text("reason", reason, max_length=REASON_MAX)
    if decision == pb.USAGE_SUSPENSION_DECISION_NOT_STOP and stopped:
        violations.add("stopped_purposes", "must be empty when the decision is not to stop")
    for index, purpose in enumerate(stopped):
        if purpose not in requested:
            violations.add(f"stopped_purposes[{index}]", "must be one of the purposes the request names")
        elif purpose in stopped[:index]:
            violations.add(f"stopped_purposes[{index}]", "appears twice")
    violations.raise_if_any()
    if decision == pb.USAGE_SUSPENSION_DECISION_NOT_STOP:
        return []
    return list(stopped) or list(requested)


def suspended_purposes(state: int, decision: int, requested: Sequence[str], stopped: Sequence[str]) -> list[str]:
    """The purposes under which the person's records may not be provided now (issue 18): those the request
    names while it is handled, and those decided stopped for good once decided (個人情報保護法 100, 101); none
    once a request is rejected, or decided not to stop and the requester notified. A decision not to stop
    lifts the refusal only when the requester is told (the decision takes effect on notification)."""
    if state in SUSPENSION_PENDING or state == U.USAGE_SUSPENSION_STATE_DECIDED_NOT_STOP:
        return list(requested)
    if decision == pb.USAGE_SUSPENSION_DECISION_STOP:
        return list(stopped)
    return []
