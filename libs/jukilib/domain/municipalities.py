"""The table of municipalities (市町村) whose CS notify this prefectural server.

Data: ``data/gunma_municipalities.csv`` (docs/domain.md §4.7). Gunma has 35 municipalities: 12 市, 15 町,
8 村 (VERIFIED). The 5-digit 全国地方公共団体コード in the CSV are UNVERIFIED (from memory, DOMAIN §4.7 and
open item F.8): confirm them against the MIC 全国地方公共団体コード list. The check digits are
computed with DOMAIN §2.3 and are verified here at load time, so a mistyped code fails loudly.
"""

from __future__ import annotations

import csv
import enum
import functools
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources

from jukilib.domain.codes import is_valid_municipality_code

GUNMA_PREFECTURE_CODE = "10"  # Gunma = prefecture code 10, 団体コード 100005 (DOMAIN §4.7, VERIFIED)
GUNMA_CSV = "gunma_municipalities.csv"
CSV_HEADER = ("code6", "name", "kind")


class MunicipalityKind(enum.Enum):
    """市 / 町 / 村."""

    CITY = "city"
    TOWN = "town"
    VILLAGE = "village"


@dataclass(frozen=True)
class Municipality:
    """One municipality: 6-digit 団体コード (with check digit), official name (郡 included), kind."""

    code6: str
    name: str
    kind: MunicipalityKind

    @property
    def code5(self) -> str:
        """The 5-digit code without the check digit."""
        return self.code6[:5]


class MunicipalityTable:
    """Immutable look-up of municipalities by 6-digit code."""

    def __init__(self, municipalities: Iterable[Municipality]) -> None:
        by_code: dict[str, Municipality] = {}
        for m in municipalities:
            if m.code6 in by_code:
                raise ValueError(f"duplicate municipality code {m.code6}")
            by_code[m.code6] = m
        self._by_code: Mapping[str, Municipality] = by_code

    def get(self, code6: str) -> Municipality | None:
        """The municipality with this 6-digit code, or None."""
        return self._by_code.get(code6)

    def __contains__(self, code6: object) -> bool:
        return isinstance(code6, str) and code6 in self._by_code

    def __len__(self) -> int:
        return len(self._by_code)

    def __iter__(self) -> Iterator[Municipality]:
        return iter(self._by_code.values())

    def all(self) -> tuple[Municipality, ...]:
        """Every municipality, in file order."""
        return tuple(self._by_code.values())


def _parse_row(row: list[str], line_no: int, prefecture_code: str | None) -> Municipality:
    """One CSV row → Municipality; ValueError naming the row (codes are public, not personal data)."""
    if len(row) != len(CSV_HEADER):
        raise ValueError(f"line {line_no}: expected {len(CSV_HEADER)} fields, got {len(row)}")
    code6, name, kind_text = (field.strip() for field in row)
    if not is_valid_municipality_code(code6):
        raise ValueError(f"line {line_no}: municipality code {code6!r} ({name}) fails its check digit")
    if prefecture_code is not None and not code6.startswith(prefecture_code):
        raise ValueError(f"line {line_no}: code {code6} is not in prefecture {prefecture_code}")
    if not name:
        raise ValueError(f"line {line_no}: empty name")
    try:
        kind = MunicipalityKind(kind_text)
    except ValueError:
        raise ValueError(f"line {line_no}: unknown kind {kind_text!r}") from None
    return Municipality(code6=code6, name=name, kind=kind)


def parse_municipality_csv(text: str, *, prefecture_code: str | None = None) -> MunicipalityTable:
    """Parse ``code6,name,kind`` CSV text, verifying every check digit (DOMAIN §2.3)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
        raise ValueError(f"municipality CSV must start with header {','.join(CSV_HEADER)}")
    rows = (
        _parse_row(row, line_no, prefecture_code)
        for line_no, row in enumerate(reader, start=2)
        if any(field.strip() for field in row)
    )
    return MunicipalityTable(rows)


@functools.cache
def gunma_municipalities() -> MunicipalityTable:
    """The packaged table of Gunma's 35 municipalities (codes UNVERIFIED, see module docstring)."""
    text = resources.files("jukilib.domain").joinpath("data", GUNMA_CSV).read_text(encoding="utf-8")
    return parse_municipality_csv(text, prefecture_code=GUNMA_PREFECTURE_CODE)
