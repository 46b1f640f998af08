"""Check digits of the identifiers used on Juki-net.

* 個人番号 (Individual Number, 12 digits) — formula VERIFIED (docs/domain.md §2.1).
* 住民票コード (resident record code, 11 digits) — structure VERIFIED, formula UNVERIFIED (§2.2),
  so its check is pluggable through :class:`CheckDigitMode`.
* 全国地方公共団体コード (local-government code, 5 digits + check digit) — VERIFIED (§2.3).

Error and warning messages never contain the checked value: they reach API errors, and the value
may be personal data.
"""

from __future__ import annotations

import enum
import functools
import operator
from dataclasses import dataclass

MSG_CHECK_DIGIT = "check digit does not match"
MSG_CHECK_DIGIT_UNVERIFIED = "check digit does not match (algorithm UNVERIFIED, 告示436号 not yet checked)"


def _is_ascii_digits(value: str, length: int) -> bool:
    """True when ``value`` is exactly ``length`` ASCII digits (no full-width or other Unicode digits)."""
    # An ASCII string is all digits exactly when it matches [0-9]+: the same test as a regular
    # expression, without its cost (two per row on an initial load of millions).
    return len(value) == length and value.isascii() and value.isdigit()


def _require_digits(value: str, length: int, what: str) -> None:
    if not _is_ascii_digits(value, length):
        raise ValueError(f"{what} must be {length} ASCII digits")


def _mod11_weight_from_right(position: int) -> int:
    """Weight Qn for the n-th base digit counted from the right (n starts at 1).

    総務省令第85号(平成26年) 第5条: Qn = n+1 for 1≤n≤6, n−5 for 7≤n≤11, i.e. the cycle 2..7.
    """
    return (position - 1) % 6 + 2


@functools.cache
def _mod11_weights(length: int) -> tuple[tuple[int, ...], int]:
    """The weights of a base of `length` digits, left to right, and 48 × their sum (see below)."""
    weights = tuple(_mod11_weight_from_right(n) for n in range(length, 0, -1))
    return weights, 48 * sum(weights)


def _mod11_check_digit(base: str) -> int:
    """CD = 11 − (Σ Pn×Qn mod 11), but 0 when the remainder is 0 or 1 (総務省令第85号 第5条)."""
    weights, offset = _mod11_weights(len(base))
    # Over the ASCII bytes: Σ (byte − 48) × Q = Σ byte × Q − 48 × Σ Q (callers pass ASCII digits only).
    total = sum(map(operator.mul, base.encode("ascii"), weights)) - offset
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


# --- 個人番号 -------------------------------------------------------------------------------------


def individual_number_check_digit(base11: str) -> int:
    """Check digit of a 個人番号 from its 11 base digits.

    番号法施行令 第8条 (11 digits + 1 check digit); formula: 総務省令第85号(平成26年) 第5条. VERIFIED.
    """
    _require_digits(base11, 11, "individual number base")
    return _mod11_check_digit(base11)


def is_valid_individual_number(value: str) -> bool:
    """True when ``value`` is 12 ASCII digits whose last digit is the 省令85号 check digit."""
    if not _is_ascii_digits(value, 12):
        return False
    return _mod11_check_digit(value[:11]) == int(value[11])


def individual_number_problems(value: str) -> list[str]:
    """Problems with a 個人番号 (empty list = valid); the check digit is always enforced (DOMAIN §B)."""
    if not _is_ascii_digits(value, 12):
        return ["must be 12 digits"]
    if _mod11_check_digit(value[:11]) != int(value[11]):
        return [MSG_CHECK_DIGIT]
    return []


# --- 住民票コード --------------------------------------------------------------------------------


class CheckDigitMode(enum.Enum):
    """How to treat a 住民票コード whose check digit does not match the hypothesised formula."""

    OFF = "off"
    WARN = "warn"
    REJECT = "reject"


@dataclass(frozen=True)
class CodeCheck:
    """Outcome of checking an identifier: ``ok`` is False only when ``error`` is set."""

    ok: bool
    warning: str | None = None
    error: str | None = None


_CODE_OK = CodeCheck(ok=True)  # immutable: one instance serves every good code


def resident_code_check_digit(base10: str) -> int:
    """Check digit of a 住民票コード from its 10 random digits.

    住民基本台帳法施行規則 第1条: 10 random digits + 1 check digit computed by the formula of
    平成14年総務省告示第436号. UNVERIFIED: the text of the 告示 was not retrieved; this implements the
    hypothesis of DOMAIN §2.2 (mod 11, weights 2..7 from the right, remainder 0/1 → 0, as for 個人番号).
    """
    _require_digits(base10, 10, "resident code base")
    return _mod11_check_digit(base10)


def check_resident_code(value: str, mode: CheckDigitMode) -> CodeCheck:
    """Check a 住民票コード. Format errors always fail; a check-digit mismatch depends on ``mode``.

    The default mode in configuration should be WARN until 告示436号 is confirmed (DOMAIN §2.2, §B).
    """
    if not _is_ascii_digits(value, 11):
        return CodeCheck(ok=False, error="must be 11 digits")
    if mode is CheckDigitMode.OFF or _mod11_check_digit(value[:10]) == int(value[10]):  # digits checked above
        return _CODE_OK
    if mode is CheckDigitMode.WARN:
        return CodeCheck(ok=True, warning=MSG_CHECK_DIGIT_UNVERIFIED)
    return CodeCheck(ok=False, error=MSG_CHECK_DIGIT_UNVERIFIED)


# --- 全国地方公共団体コード ---------------------------------------------------------------------

_MUNICIPALITY_WEIGHTS = (6, 5, 4, 3, 2)
_MUNICIPALITY_OFFSET = 48 * sum(_MUNICIPALITY_WEIGHTS)


def _municipality_digit(digits: str) -> int:
    """The check digit of the first five of `digits` (ASCII digits, checked by the caller), by the ASCII
    bytes as `_mod11_check_digit` does: map stops at the five weights (every notification checks codes)."""
    remainder: int = (sum(map(operator.mul, digits.encode("ascii"), _MUNICIPALITY_WEIGHTS)) - _MUNICIPALITY_OFFSET) % 11
    return (11 - remainder) % 10


def municipality_check_digit(base5: str) -> int:
    """Check digit of a 全国地方公共団体コード: last digit of 11 − (Σ digit×(6,5,4,3,2) mod 11).

    So remainder 0 → 1 and remainder 1 → 0. VERIFIED (DOMAIN §2.3: citycode.fmd4.com/chigai,
    wiki.hgotoh.jp code-014).
    """
    _require_digits(base5, 5, "municipality code base")
    return _municipality_digit(base5)


def is_valid_municipality_code(code6: str) -> bool:
    """True when ``code6`` is 6 ASCII digits whose last digit is the §2.3 check digit."""
    if not _is_ascii_digits(code6, 6):
        return False
    return _municipality_digit(code6) == int(code6[5])
