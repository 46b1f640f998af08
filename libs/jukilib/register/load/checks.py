"""The checks of a loaded row that the RPC path makes of a notification: the register's validators
(remembered per value, `MemoViolations`) and the change information of a 記載 (`ChangeChecks`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from juki.register.v1 import register_pb2
from jukilib.errors import Violations
from jukilib.recordfile import CALENDAR, FieldProblem
from jukilib.register import validation
from jukilib.register.model import ChangeKind

DEFAULT_REASON = register_pb2.CHANGE_REASON_REISSUE  # 改製


class _Memo:
    __slots__ = ("calls", "kept", "off")

    def __init__(self) -> None:
        self.calls = 0
        self.kept = 0
        self.off = False


_Outcome = tuple[tuple[Any, ...], Any]
"""(the violations a check added, what it returned)."""


class MemoViolations(Violations):
    """The register's own validators, with each check's outcome on one value remembered for the rest of
    the load: names, dates of birth, municipalities and sex codes repeat across millions of rows. The
    rules are the validators'; only repeated evaluation is saved. A check whose values hardly repeat
    (addresses) stops being remembered after a while: remembering would only cost.

    Every outcome lives in one dictionary keyed by (check, field, value...): the look-up is most of the
    cost of a remembered check, which runs ten times a row."""

    SAMPLE = 50_000
    LIMIT = 500_000

    def __init__(self) -> None:
        super().__init__()
        self._outcomes: dict[tuple[Any, ...], _Outcome] = {}
        self._memos: dict[tuple[Any, ...], _Memo] = {}

    def _replay(self, found: _Outcome) -> Any:
        if found[0]:
            self.items.extend(found[0])
        return found[1]

    def _check(self, key: tuple[Any, ...], check: Callable[..., Any], *args: Any) -> Any:
        """Run a check not remembered yet (its violations are added), and remember its outcome."""
        kind = key[:2]
        memo = self._memos.get(kind)
        if memo is None:
            memo = self._memos[kind] = _Memo()
        start = len(self.items)
        result = check(self, *args)
        if memo.off:
            return result
        memo.calls += 1
        if memo.calls == self.SAMPLE and memo.kept > self.SAMPLE * 9 // 10:  # mostly distinct values
            memo.off = True
            for stale in [other for other in self._outcomes if other[:2] == kind]:
                del self._outcomes[stale]
        elif memo.kept < self.LIMIT:
            memo.kept += 1
            self._outcomes[key] = (tuple(self.items[start:]), result)
        return result

    def _remembered(self, key: tuple[Any, ...], check: Callable[..., Any], *args: Any) -> Any:
        found = self._outcomes.get(key)
        return self._check(key, check, *args) if found is None else self._replay(found)

    def required_text(self, field: str, value: str, *, max_length: int) -> None:
        self._remembered(("required_text", field, value, max_length), _required_text, field, value, max_length)

    def optional_text(self, field: str, value: str, *, max_length: int) -> None:
        self._remembered(("optional_text", field, value, max_length), _optional_text, field, value, max_length)

    def kana(self, field: str, value: str) -> None:
        self._remembered(("kana", field, value), Violations.kana, field, value)

    def sex_code(self, field: str, value: str) -> None:
        self._remembered(("sex_code", field, value), Violations.sex_code, field, value)

    def municipality(self, field: str, value: str, table: Any = None) -> None:
        self._remembered(("municipality", field, value, id(table)), Violations.municipality, field, value, table)

    def partial_date(self, field: str, value: Any) -> None:
        key = ("partial_date", field, value.precision, value.year, value.month, value.day, value.original_text)
        self._remembered(key, Violations.partial_date, field, value)

    def calendar_date(self, field: str, value: Any) -> dt.date | None:
        result: dt.date | None = self._remembered(("calendar_date", field, value.year, value.month, value.day),
                                                  Violations.calendar_date, field, value)
        return result


def _required_text(violations: Violations, field: str, value: str, max_length: int) -> None:
    Violations.required_text(violations, field, value, max_length=max_length)


def _optional_text(violations: Violations, field: str, value: str, max_length: int) -> None:
    Violations.optional_text(violations, field, value, max_length=max_length)


_NO_CHANGE_INFORMATION: tuple[Any, ...] = ()
_KEYABLE = frozenset({str, int, bool, type(None)})


def _change_key(meta: dict[str, Any]) -> tuple[Any, ...]:
    """What the outcome of `ChangeChecks.check` depends on: whether each item is present, its type and
    its value (true is not 1 and null is not absent, although Python's equality says otherwise)."""
    if not meta:
        return _NO_CHANGE_INFORMATION  # nearly every row of a file: no per-row look-ups
    key: list[Any] = []
    for name in ("event_date", "change_reason"):
        if name not in meta:
            key.append(None)
        elif type(meta[name]) in _KEYABLE:
            key.append((type(meta[name]), meta[name]))
        else:
            key.append(repr(meta[name]))  # e.g. a JSON list: wrong, and not hashable
    return tuple(key)


class ChangeChecks:
    """The change information of a row (event date, reason) as a 記載 by the load, remembered per value."""

    def __init__(self, load_day: dt.date) -> None:
        self._load_day = load_day
        self._changes: dict[tuple[Any, ...], tuple[dt.date, int, list[FieldProblem]]] = {}

    def check(self, meta: dict[str, Any]) -> tuple[dt.date, int, list[FieldProblem]]:
        """(event date, reason, problems) of a 記載 by the load; the rules of `RegisterApi._check_change`."""
        found = self._changes.get(_change_key(meta))
        if found is not None:
            return found
        problems: list[tuple[str, str]] = []
        reason_value = meta.get("change_reason", DEFAULT_REASON)
        reason: int = register_pb2.CHANGE_REASON_UNSPECIFIED
        try:
            if isinstance(reason_value, str) and not reason_value.isdigit():
                reason = register_pb2.ChangeReason.Value(reason_value)
            elif isinstance(reason_value, int | str) and not isinstance(reason_value, bool):
                reason = int(reason_value)
        except ValueError:
            pass
        event_date = self._load_day
        if "event_date" in meta:
            value = meta["event_date"]
            match = CALENDAR.fullmatch(value) if isinstance(value, str) else None
            try:
                if match is None:
                    raise ValueError
                event_date = dt.date(*(int(part) for part in match.groups()))
            except ValueError:
                problems.append(("event_date", "must be a valid calendar date (YYYY-MM-DD)"))
        # The load is the 記載 of each row, received on the day of the load.
        for field, problem in validation.change_problems(ChangeKind.RECORD, reason, event_date, self._load_day):
            problems.append((field.removeprefix("change.").replace("reason", "change_reason"), problem))
        found = (event_date, reason, problems)
        self._changes[_change_key(meta)] = found
        return found

