"""Validation and search forms of free text, names and name readings.

docs/domain.md §4.5: Juki-net names are 住基ネット統一文字 / MJ characters, rendered in Unicode (IVS allowed).
Names must **never be normalised destructively** and unknown characters must not be rejected (they go to
文字同定 review). So :func:`text_problems` rejects only what can never be legitimate text (control
characters, bidi overrides, lone surrogates, non-characters), and :func:`search_key` derives a separate
degraded (縮退) form used for search only; the stored name is never replaced by it.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Bidirectional embedding/override/isolate controls (Cf): they can disguise text in logs and screens.
_BIDI_CONTROLS = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))

# Variation selectors: standardized (U+FE00–FE0F), ideographic variation sequences (IVS, U+E0100–E01EF),
# Mongolian free variation selectors (U+180B–180D, U+180F).
_VARIATION_SELECTORS = (
    frozenset(range(0xFE00, 0xFE10))
    | frozenset(range(0xE0100, 0xE01F0))
    | frozenset((0x180B, 0x180C, 0x180D, 0x180F))
)

# Common 異体字 folded to one form for SEARCH ONLY (degraded form, DOMAIN §4.5). Not a legal mapping:
# e.g. 齊 is the traditional form of 斉, folded here to 斎 so that サイトウ spellings find each other.
ITAIJI_FOLD: dict[str, str] = {
    "髙": "高",
    "﨑": "崎",  # U+FA11 is a unified ideograph in the compatibility block; NFKC keeps it
    "𥔎": "崎",  # U+2550E たつさき
    "邊": "辺",
    "邉": "辺",
    "齋": "斎",
    "齊": "斎",
    "濵": "浜",
    "濱": "浜",
    "德": "徳",
    "澤": "沢",
    "嶋": "島",
    "嶌": "島",
    "廣": "広",
    "櫻": "桜",
    "國": "国",
    "榮": "栄",
    "眞": "真",
}
_ITAIJI_TABLE = str.maketrans(ITAIJI_FOLD)

_HIRAGANA_TO_KATAKANA = str.maketrans(
    {cp: cp + 0x60 for cp in (*range(0x3041, 0x3097), 0x309D, 0x309E)}
)

# Full-width katakana (ァ–ヺ, ヽヾ), prolonged sound mark, middle dot, spaces.
_KATAKANA_READING = re.compile("[\u30a1-\u30fa\u30fd\u30feー・ \u3000]+")


def _is_noncharacter(cp: int) -> bool:
    """Unicode non-characters: U+FDD0–FDEF and the last two code points of every plane."""
    return 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE


# Every character `_char_problems` objects to, as one class, so that clean text (nearly all of it) is
# passed by one scan in C: controls (Cc), bidi controls, surrogates (Cs), non-characters.
_SUSPECT = re.compile(
    "[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(17))
    + "]")


def _char_problems(value: str) -> list[str]:
    if _SUSPECT.search(value) is None:
        return []
    problems: list[str] = []
    categories = [unicodedata.category(ch) for ch in value]
    if "Cc" in categories:
        problems.append("contains control characters")
    if any(ord(ch) in _BIDI_CONTROLS for ch in value):
        problems.append("contains bidirectional control characters")
    if "Cs" in categories:
        problems.append("contains unpaired surrogates")
    if any(_is_noncharacter(ord(ch)) for ch in value):
        problems.append("contains non-characters")
    return problems


def text_problems(value: str, *, max_length: int, allow_empty: bool = False) -> list[str]:
    """Problems with ``value`` (empty list = ok). Length counts code points (an IVS counts as one). Text of
    only spaces is blank, and refused like empty text unless `allow_empty`.

    Messages never contain the value: it may be personal data.
    """
    problems: list[str] = []
    characters = _char_problems(value)
    if not value and not allow_empty:
        problems.append("must not be empty")
    elif value and not allow_empty and not characters and not _strip(value):
        problems.append("must not be blank")  # only spaces (U+3000 included): no name, no address
    if len(value) > max_length:
        problems.append(f"must be at most {max_length} characters")
    return problems + characters


# Whitespace (`str.isspace`, U+3000 included: `\\s` is the same test) and variation selectors.
_STRIPPED = re.compile("[\\s\ufe00-\ufe0f\U000e0100-\U000e01ef\u180b-\u180d\u180f]")


def _strip(value: str) -> str:
    """Remove whitespace (incl. U+3000) and variation selectors."""
    return _STRIPPED.sub("", value)


def search_key(name: str) -> str:
    """Degraded (縮退) search form of a name or reading (DOMAIN §4.5). Never store it in place of the name.

    NFKC (half-width kana → full-width, full-width Latin → ASCII), drop whitespace and variation
    selectors (IVS), hiragana → katakana (so readings compare), NFKC again (re-composes a dakuten
    separated by a removed space), then fold the common 異体字 of :data:`ITAIJI_FOLD`. Idempotent.
    """
    stripped = _strip(unicodedata.normalize("NFKC", name))
    katakana = stripped.translate(_HIRAGANA_TO_KATAKANA)
    return unicodedata.normalize("NFKC", katakana).translate(_ITAIJI_TABLE)


def is_katakana_reading(value: str) -> bool:
    """True for a non-blank reading in full-width katakana (ァ–ヺ, ヽヾ), ー, ・ and spaces.

    Municipal systems keep フリガナ in katakana (DOMAIN §4.6, VERIFIED jyuki-stnd j180).
    """
    return bool(value.strip()) and _KATAKANA_READING.fullmatch(value) is not None


def _unidentified(character: str) -> bool:
    """Private use (a municipality's 外字) or unassigned in the Unicode version of this Python."""
    return unicodedata.category(character) in ("Co", "Cn")


@functools.cache
def _candidates() -> re.Pattern[str]:
    """The BMP's private-use and unassigned code points (listed on first use) and every character beyond the
    BMP (checked one by one: most are assigned ideographs), as one character class. Non-characters are
    unassigned too, but refused outright (`text_problems`)."""
    ranges: list[str] = []
    start = None
    for cp in range(0x10001):
        suspect = cp < 0x10000 and _unidentified(chr(cp)) and not _is_noncharacter(cp)
        if suspect and start is None:
            start = cp
        elif not suspect and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(cp - 1))}")
            start = None
    return re.compile("[" + "".join(ranges) + "\U00010000-\U0010ffff]")


def needs_identification(value: str) -> bool:
    """Whether `value` holds a character the register cannot identify. DOMAIN §B: such text is accepted,
    never refused, and the record goes to 文字同定 review."""
    if value.isascii():
        return False
    candidates = _candidates()
    found = candidates.search(value)
    while found is not None:
        if ord(found.group()) < 0x10000 or _unidentified(found.group()):
            return True
        found = candidates.search(value, found.end())
    return False
