"""Boundary validation shared by the registers: every bad field named, nothing stored.

Error descriptions name the rule, never the value (values are personal data).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from google.type import date_pb2

from jukilib.domain import codes, dates, sex, text
from jukilib.domain.municipalities import MunicipalityTable
from jukilib.errors import FieldViolation, InvalidArgument
from jukilib.register.model import ChangeKind

logger = logging.getLogger(__name__)

# Reason categories per kind (住民記録システム標準仕様書 1.2.2); 改製 and 再製 serve both 記載 and 消除.
_RECORD_REASONS = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9})
_REMOVE_REASONS = frozenset({7, 8, 20, 21, 22, 23, 24, 25, 26})
_MODIFY_REASONS = frozenset(range(40, 52))
REASONS_BY_KIND = {ChangeKind.RECORD: _RECORD_REASONS, ChangeKind.REMOVE: _REMOVE_REASONS,
                   ChangeKind.MODIFY: _MODIFY_REASONS}
# 転出 and 国外転出 may carry a planned (future) date; every other change happened already (j80).
FUTURE_DATED_REASONS = frozenset({20, 21})


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
# How many of (year, month, day) a date of each precision states for certain
_KNOWN_PARTS = {dates.DatePrecision.DAY: 3, dates.DatePrecision.MONTH: 2, dates.DatePrecision.YEAR: 1}
_PRECISIONS = {1: dates.DatePrecision.DAY, 2: dates.DatePrecision.MONTH, 3: dates.DatePrecision.YEAR,
               4: dates.DatePrecision.APPROXIMATE, 5: dates.DatePrecision.UNKNOWN}


@dataclass(frozen=True)
class TimeWindow:
    """How far from now a time a caller states may lie: `max_ahead` of clock skew, `max_age` behind."""

    max_age: dt.timedelta
    max_ahead: dt.timedelta = dt.timedelta(minutes=5)


class Violations:
    """Collects field violations of one request; `raise_if_any` ends validation."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []
        self.warnings: list[str] = []
        """Fields accepted with a warning (a 住民票コード whose check digit did not match, in warn mode)."""

    def add(self, field: str, description: str, reason: str = "INVALID_FIELD") -> None:
        self.items.append(FieldViolation(field, description, reason))

    def extend(self, field: str, problems: Iterable[str]) -> None:
        for problem in problems:
            self.add(field, problem)

    def raise_if_any(self) -> None:
        for field in self.warnings:
            # 告示436号 formula UNVERIFIED: in warn mode the code is accepted and the fact logged.
            logger.warning("resident code check digit mismatch accepted (warn mode)", extra={"field": field})
        if self.items:
            raise InvalidArgument(self.items)

    def required_text(self, field: str, value: str, *, max_length: int) -> None:
        if not value:
            self.add(field, "is required", "REQUIRED_FIELD")
            return
        self.extend(field, text.text_problems(value, max_length=max_length))

    def optional_text(self, field: str, value: str, *, max_length: int) -> None:
        if value:
            self.extend(field, text.text_problems(value, max_length=max_length))

    def kana(self, field: str, value: str) -> None:
        if value:
            self.optional_text(field, value, max_length=200)
            if not text.is_katakana_reading(value):
                self.add(field, "must be written in full-width katakana")

    def resident_code(self, field: str, value: str, mode: codes.CheckDigitMode) -> None:
        result = codes.check_resident_code(value, mode)
        if result.error:
            self.add(field, result.error)
        elif result.warning:
            self.warnings.append(field)

    def sex_code(self, field: str, value: str) -> None:
        if not sex.is_valid_sex_code(value):
            self.add(field, "is not a code of the sex code table")

    def municipality(self, field: str, value: str, table: MunicipalityTable | None = None) -> None:
        if not codes.is_valid_municipality_code(value):
            self.add(field, "must be a 6-digit local government code with a valid check digit")
        elif table is not None and value not in table:
            self.add(field, "is not a municipality of this prefecture")

    def partial_date(self, field: str, value: object) -> None:
        problems = dates.validate_partial_date(partial_date_from_proto(value)) if _has_precision(value) else [
            "precision is required"]
        self.extend(field, problems)

    def time_within(self, field: str, value: timestamp_pb2.Timestamp, now: dt.datetime, window: TimeWindow
                    ) -> dt.datetime | None:
        """`value` as a time, when it lies within `window` around `now` (a notification time of year 530 or
        9999, a receipt of 1900, is a caller's mistake, not a fact to record)."""
        try:
            moment = value.ToDatetime(dt.UTC)
        except (ValueError, OverflowError):
            self.add(field, "is not a time between the years 1 and 9999")
            return None
        if moment > now + window.max_ahead:
            self.add(field, "must not be in the future")
        elif moment < now - window.max_age:
            self.add(field, f"must not be more than {window.max_age.days} days before now")
        else:
            return moment
        return None

    def not_after(self, field: str, value: object, limit: dt.date, what: str) -> None:
        """A partial date that must not lie after `limit`, compared as far as it is known (a birth date known
        to the month is after the event only if its month is); approximate and unknown dates are not."""
        depth = _KNOWN_PARTS.get(partial_date_from_proto(value).precision, 0) if _has_precision(value) else 0
        known = partial_date_from_proto(value) if depth else None
        if known is None or None in (parts := (known.year, known.month, known.day)[:depth]):
            return
        if parts > (limit.year, limit.month, limit.day)[:depth]:
            self.add(field, f"must not be after {what}")

    def calendar_date(self, field: str, value: date_pb2.Date) -> dt.date | None:
        try:
            return dt.date(value.year, value.month, value.day)
        except ValueError:
            self.add(field, "must be a valid calendar date")
            return None


def _has_precision(value: object) -> bool:
    return int(getattr(value, "precision", 0)) in _PRECISIONS


def partial_date_from_proto(value: object) -> dates.PartialDate:
    """`juki.register.v1.PartialDate` to the domain type (unset parts as None)."""
    precision = _PRECISIONS[int(getattr(value, "precision", 0))]
    return dates.PartialDate(
        precision=precision,
        year=getattr(value, "year", 0) or None,
        month=getattr(value, "month", 0) or None,
        day=getattr(value, "day", 0) or None,
        original_text=getattr(value, "original_text", ""),
    )


def notification_id_problems(value: str) -> list[str]:
    if not value:
        return ["is required"]
    if _NOTIFICATION_ID.fullmatch(value) is None:
        return ["must be 1-64 printable ASCII characters"]
    return []
