"""Rules of disclosure requests: who may ask, which documents prove identity, the deadline."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from juki.disclosure.v1 import disclosure_pb2 as pb
from jukilib.register.validation import Violations

JAPAN = ZoneInfo("Asia/Tokyo")
# 住基法 30-33: disclose within 30 days of the request (UNVERIFIED wording; DOMAIN §1.1). The period
# is counted from the day after receipt (民法 140, 初日不算入).
STATUTORY_DAYS = 30
REQUESTER_NAME_MAX = 100


def deadline_from(receive_time: dt.datetime, days: int) -> dt.date:
    """The last day of a period of `days` days starting the day after receipt (Japan time)."""
    return receive_time.astimezone(JAPAN).date() + dt.timedelta(days=days)


def _documents(case: Any, violations: Violations) -> None:
    documents = list(case.identity_documents)
    if not documents:
        violations.add("disclosure_case.identity_documents", "at least one document is required", "REQUIRED_FIELD")
        return
    if any(d not in pb.IdentityDocument.values() or d == 0 for d in documents):
        violations.add("disclosure_case.identity_documents", "contains an unknown document")
    # A health-insurance card has no photo: only with a second document (Hokkaido practice, DOMAIN §5).
    if pb.IDENTITY_DOCUMENT_HEALTH_INSURANCE_CARD in documents and len(set(documents)) < 2:
        violations.add("disclosure_case.identity_documents", "a health-insurance card needs a second document")
    if (case.requester_kind == pb.REQUESTER_KIND_CURATOR_OR_ASSISTANT
            and pb.IDENTITY_DOCUMENT_REGISTRY_CERTIFICATE not in documents):
        violations.add("disclosure_case.identity_documents",
                       "a curator or assistant must show a registry certificate (登記事項証明書)")


def validate_new_case(case: Any, now: dt.datetime, violations: Violations) -> None:
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
    elif len(set(scopes)) != len(scopes) or any(s not in pb.DisclosureScope.values() or s == 0 for s in scopes):
        violations.add("disclosure_case.scopes", "must be distinct known scopes")
    if case.HasField("receive_time") and case.receive_time.ToDatetime(dt.UTC) > now + dt.timedelta(minutes=5):
        violations.add("disclosure_case.receive_time", "must not be in the future")
