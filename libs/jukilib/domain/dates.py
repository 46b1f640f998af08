"""Partial dates of birth (and other dates where 不詳 forms are lawful).

docs/domain.md §4.3 (VERIFIED, municipal standard spec jyuki-stnd j80/j480): for the date of birth (and the
dates of becoming a resident, of setting the address, of death or disappearance) municipal systems may
hold **non-calendar dates** (e.g. 29 February of a non-leap year, 明治45年7月30日) and **不詳 dates**
("令和○年頃", "…月上旬", "年月日不詳", "推定…"). So a date of birth is stored as a structured
:class:`PartialDate` plus the original text, never forced into :class:`datetime.date`.

The Juki-net codes for 不詳 dates are UNVERIFIED (DOMAIN §4.3, open item F.5); mapping to them belongs
to the message layer, not here. Years are Gregorian; the 和暦 rendering is kept in ``original_text``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

JAPAN = ZoneInfo("Asia/Tokyo")
"""Japan Standard Time, the one time zone of the law's days: deadlines, validity periods, event dates."""


def japan_date(moment: dt.datetime) -> dt.date:
    """The Japanese calendar day of an instant (00:00-09:00 JST is still the previous day in UTC)."""
    return moment.astimezone(JAPAN).date()


MIN_YEAR = 1850
MAX_ORIGINAL_TEXT = 64
# Unicode categories Cc (controls) and Cs (surrogates), exactly.
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class DatePrecision(enum.Enum):
    """Which parts of a partial date are known."""

    DAY = "day"  # 年月日: year, month and day known (day may be non-calendar, §4.3)
    MONTH = "month"  # 年月: year and month known, day unknown
    YEAR = "year"  # 年: year known only
    APPROXIMATE = "approximate"  # 頃 / 推定 / 上旬…: approximate, around a year (month/day optional)
    UNKNOWN = "unknown"  # 年月日不詳


@dataclass(frozen=True)
class PartialDate:
    """A possibly partial date. ``original_text`` keeps the text as notified (e.g. 和暦, "昭和20年頃")."""

    precision: DatePrecision
    year: int | None
    month: int | None
    day: int | None
    original_text: str


# Fields each precision requires ("required") and forbids ("forbidden"); the rest are optional.
# APPROXIMATE allows month (e.g. "昭和10年5月上旬") and day (e.g. "推定昭和20年8月15日") but needs a year.
_REQUIRED: dict[DatePrecision, tuple[str, ...]] = {
    DatePrecision.DAY: ("year", "month", "day"),
    DatePrecision.MONTH: ("year", "month"),
    DatePrecision.YEAR: ("year",),
    DatePrecision.APPROXIMATE: ("year",),
    DatePrecision.UNKNOWN: (),
}
_FORBIDDEN: dict[DatePrecision, tuple[str, ...]] = {
    DatePrecision.DAY: (),
    DatePrecision.MONTH: ("day",),
    DatePrecision.YEAR: ("month", "day"),
    DatePrecision.APPROXIMATE: (),
    DatePrecision.UNKNOWN: ("year", "month", "day"),
}


def _field(d: PartialDate, name: str) -> int | None:
    value: int | None = getattr(d, name)
    return value


def _shape_problems(d: PartialDate) -> list[str]:
    problems = [f"{name} is required for precision {d.precision.value}"
                for name in _REQUIRED[d.precision] if _field(d, name) is None]
    problems += [f"{name} must be empty for precision {d.precision.value}"
                 for name in _FORBIDDEN[d.precision] if _field(d, name) is not None]
    if d.day is not None and d.month is None:
        problems.append("day requires a month")
    return problems


def _range_problems(d: PartialDate, today: dt.date) -> list[str]:
    problems: list[str] = []
    if d.year is not None and not MIN_YEAR <= d.year <= today.year + 1:
        problems.append(f"year must be between {MIN_YEAR} and {today.year + 1}")
    if d.month is not None and not 1 <= d.month <= 12:
        problems.append("month must be between 1 and 12")
    # Non-calendar days such as 29 Feb of a non-leap year or 31 April are lawful here (§4.3); 32 is not.
    if d.day is not None and not 1 <= d.day <= 31:
        problems.append("day must be between 1 and 31")
    return problems


def _text_problems(text: str) -> list[str]:
    problems: list[str] = []
    if len(text) > MAX_ORIGINAL_TEXT:
        problems.append(f"original text must be at most {MAX_ORIGINAL_TEXT} characters")
    if _CONTROL_OR_SURROGATE.search(text):
        problems.append("original text contains control characters")
    return problems


def validate_partial_date(d: PartialDate, *, today: dt.date | None = None) -> list[str]:
    """Problems with ``d`` (empty list = valid). Messages never contain the date itself."""
    reference = today if today is not None else dt.date.today()
    return _shape_problems(d) + _range_problems(d, reference) + _text_problems(d.original_text)


def sort_key(d: PartialDate) -> tuple[int, int, int]:
    """Ordering key: (year, month, day), unknown parts as 0, so partial dates sort before full ones."""
    return (d.year or 0, d.month or 0, d.day or 0)


def matches(d: PartialDate, other: PartialDate) -> bool:
    """True when every part known in *both* dates agrees (symmetric).

    Used to match a query date against a stored partial date: a stored 不詳 date matches any query,
    a stored year-only date matches any query in that year. An APPROXIMATE year is compared exactly;
    callers wanting a tolerance must widen the query themselves.
    """
    pairs = ((d.year, other.year), (d.month, other.month), (d.day, other.day))
    return all(a is None or b is None or a == b for a, b in pairs)


# 元号 and the first day of each (元号法; the Gregorian calendar from 明治6年1月1日). A written document
# (a notice) dates everything this one way: 令和8年12月6日, the first year as 元年.
ERAS: tuple[tuple[dt.date, str], ...] = (
    (dt.date(2019, 5, 1), "令和"),
    (dt.date(1989, 1, 8), "平成"),
    (dt.date(1926, 12, 25), "昭和"),
    (dt.date(1912, 7, 30), "大正"),
    (dt.date(1873, 1, 1), "明治"),  # 明治6年: the solar calendar; earlier days are written in 西暦
)


def era_year(day: dt.date) -> str:
    """The 元号 year of a day, e.g. 令和8年, 平成元年; 西暦 before 明治6年 (no solar-calendar 和暦)."""
    for start, era in ERAS:
        if day >= start:
            number = day.year - (start.year if era != "明治" else 1868) + 1
            return f"{era}{'元' if number == 1 else number}年"
    return f"西暦{day.year}年"


def wareki(day: dt.date) -> str:
    """A calendar day in the documents' one date style: 令和8年12月6日."""
    return f"{era_year(day)}{day.month}月{day.day}日"


def wareki_time(moment: dt.datetime) -> str:
    """An instant as its Japanese day and time: 令和8年12月6日 9時05分."""
    local = moment.astimezone(JAPAN)
    return f"{wareki(local.date())} {local.hour}時{local.minute:02d}分"


def wareki_partial(year: int | None, month: int | None, day: int | None) -> str:
    """A possibly partial date (§4.3) in 和暦: the era of the first day of what is known (a year that
    spans two eras is named by the earlier: 昭和64年); a non-calendar day (2月30日) is written as sent."""
    if year is None:
        return "年月日不詳"
    first = dt.date(year, month or 1, 1)
    text = era_year(first)
    if month is not None:
        text += f"{month}月"
        if day is not None:
            try:
                text = wareki(dt.date(year, month, day))
            except ValueError:  # a non-calendar day, lawful here (§4.3)
                text += f"{day}日"
    return text


def fiscal_year(day: dt.date) -> int:
    """The Japanese fiscal year (年度, 地方自治法 208 ①: 4月1日 to 3月31日) a day falls in, as its
    starting Gregorian year: 2027-03-31 is in fiscal 2026."""
    return day.year if day.month >= 4 else day.year - 1
