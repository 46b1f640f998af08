"""性別 (sex) codes.

UNVERIFIED (docs/domain.md §4.4, open item F.5): no public source gives the Juki-net code values. The table
below is the common convention (1 = 男, 2 = 女) plus 9 = 不明/適用不能 as in ISO 5218; it MUST be confirmed
against the J-LIS specification. Store the code as received and map it through this table (§4.4).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

# UNVERIFIED: confirm against the J-LIS 電文 specification before relying on it.
SEX_CODES: Final = MappingProxyType({
    "1": "男",
    "2": "女",
    "9": "不明/適用不能",
})

MALE: Final = "1"
FEMALE: Final = "2"
NOT_APPLICABLE: Final = "9"


def is_valid_sex_code(code: str) -> bool:
    """True when ``code`` is one of :data:`SEX_CODES`."""
    return code in SEX_CODES


def sex_label(code: str) -> str | None:
    """Japanese label of a sex code, or None when the code is unknown."""
    return SEX_CODES.get(code)
