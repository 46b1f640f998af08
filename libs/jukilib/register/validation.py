"""Boundary validation of the registers' own rules: change kinds and reasons, notification ids, the field
paths and reason codes of 12-5 reports. Every bad field is named (`jukilib.errors.Violations`), nothing
stored.

Error descriptions name the rule, never the value (values are personal data).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from juki.register.v1 import register_pb2 as pb
from jukilib.domain import text
from jukilib.register.model import ChangeKind

# Reason categories per kind (住民記録システム標準仕様書 1.2.2); 改製 and 再製 serve both 記載 and 消除.
_RECORD_REASONS = frozenset({
    pb.CHANGE_REASON_DOMESTIC_MOVE_IN, pb.CHANGE_REASON_MOVE_IN_FROM_ABROAD, pb.CHANGE_REASON_BIRTH,
    pb.CHANGE_REASON_EX_OFFICIO_RECORD_NATURALISATION, pb.CHANGE_REASON_EX_OFFICIO_RECORD_NATIONALITY_LOSS,
    pb.CHANGE_REASON_EX_OFFICIO_RECORD, pb.CHANGE_REASON_REISSUE, pb.CHANGE_REASON_RECREATION,
    pb.CHANGE_REASON_CANCELLATION_INCREASE,
})
_REMOVE_REASONS = frozenset({
    pb.CHANGE_REASON_REISSUE, pb.CHANGE_REASON_RECREATION, pb.CHANGE_REASON_DOMESTIC_MOVE_OUT,
    pb.CHANGE_REASON_MOVE_ABROAD, pb.CHANGE_REASON_DEATH, pb.CHANGE_REASON_EX_OFFICIO_REMOVAL_NATURALISATION,
    pb.CHANGE_REASON_EX_OFFICIO_REMOVAL_NATIONALITY_LOSS, pb.CHANGE_REASON_EX_OFFICIO_REMOVAL,
    pb.CHANGE_REASON_CANCELLATION_DECREASE,
})
_MODIFY_REASONS = frozenset({
    pb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY, pb.CHANGE_REASON_MINOR_CORRECTION,
    pb.CHANGE_REASON_EX_OFFICIO_CORRECTION, pb.CHANGE_REASON_CLERICAL_ERROR_CORRECTION,
    pb.CHANGE_REASON_INDIVIDUAL_NUMBER_CHANGE_REQUEST, pb.CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_CORRECTION,
    pb.CHANGE_REASON_INDIVIDUAL_NUMBER_EX_OFFICIO_RECORD, pb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST,
    pb.CHANGE_REASON_RESIDENT_CODE_EX_OFFICIO_RECORD, pb.CHANGE_REASON_FORMER_SURNAME_CHANGE,
    pb.CHANGE_REASON_ALIAS_CHANGE, pb.CHANGE_REASON_CANCELLATION_MODIFY,
})
REASONS_BY_KIND = {ChangeKind.RECORD: _RECORD_REASONS, ChangeKind.REMOVE: _REMOVE_REASONS,
                   ChangeKind.MODIFY: _MODIFY_REASONS}
# 転出 and 国外転出 may carry a planned (future) date; every other change happened already (j80).
FUTURE_DATED_REASONS = frozenset({pb.CHANGE_REASON_DOMESTIC_MOVE_OUT, pb.CHANGE_REASON_MOVE_ABROAD})


def change_problems(kind: ChangeKind, reason: int, event_date: dt.date | None, day_of_receipt: dt.date,
                    ) -> list[tuple[str, str]]:
    """(field, problem) of a change information's reason and event date, for the RPC path and the load."""
    problems = []
    if reason not in REASONS_BY_KIND[kind]:
        problems.append(("change.reason", "is not a reason of this kind of change"))
    # Only 転出 and 国外転出 may be notified ahead of the event (異動日 ≤ 処理日 otherwise).
    if event_date is not None and event_date > day_of_receipt and reason not in FUTURE_DATED_REASONS:
        problems.append(("change.event_date", "must not be after the day of receipt for this reason"))
    return problems

# A record field named in a report or a correction request (`record.full_name`), and a reason code.
FIELD_PATH = re.compile(r"^record\.[a-z_]{1,64}$")
REASON_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_NOTIFICATION_ID = re.compile("[\x21-\x7e]{1,64}")


def notification_id_problems(value: str) -> list[str]:
    if not value:
        return ["is required"]
    if _NOTIFICATION_ID.fullmatch(value) is None:
        return ["must be 1-64 printable ASCII characters"]
    return []


def unidentified_fields(record: dict[str, Any], text_fields: tuple[str, ...]) -> tuple[str, ...]:
    """Paths of the record's text fields (`text_fields`: names, readings, address) holding characters the
    register cannot identify (DOMAIN §B: accepted, and put in the review queue for 文字同定), e.g.
    `record.full_name`. All of them are checked at once first: nearly every record has nothing to identify."""
    texts = [value for value in map(record.get, text_fields) if value]
    if not text.needs_identification("\n".join(texts)):
        return ()
    return tuple(f"record.{name}" for name in text_fields if text.needs_identification(record.get(name) or ""))
