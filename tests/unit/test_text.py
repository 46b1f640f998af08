"""Text validation and the degraded search form (docs/domain.md §4.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jukilib.domain.text import ITAIJI_FOLD, is_katakana_reading, needs_identification, search_key, text_problems


def test_plain_kanji_name_has_no_problems() -> None:
    assert text_problems("山田\u3000太郎", max_length=64) == []


def test_ivs_and_standard_variation_selectors_are_accepted() -> None:
    assert text_problems("葛\U000E0100飾", max_length=64) == []
    assert text_problems("邉\U000E0108", max_length=64) == []
    assert text_problems("禰\ufe00", max_length=64) == []


def test_astral_cjk_characters_are_accepted() -> None:
    assert text_problems("𠮷野\u3000𥔎", max_length=64) == []


def test_length_counts_code_points() -> None:
    assert text_problems("𠮷" * 3, max_length=3) == []
    assert text_problems("𠮷" * 4, max_length=3) == ["must be at most 3 characters"]


def test_empty_text_is_rejected_unless_allowed() -> None:
    assert text_problems("", max_length=5) == ["must not be empty"]
    assert text_problems("", max_length=5, allow_empty=True) == []


@pytest.mark.parametrize("value", ["a\nb", "a\tb", "\x00", "\x1b[31m", "\x7f", "\x85"])
def test_control_characters_are_rejected(value: str) -> None:
    assert text_problems(value, max_length=64) == ["contains control characters"]


@pytest.mark.parametrize("cp", [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069])
def test_bidi_overrides_and_isolates_are_rejected(cp: int) -> None:
    assert text_problems(f"山{chr(cp)}田", max_length=64) == ["contains bidirectional control characters"]


def test_zero_width_joiner_is_not_a_bidi_control() -> None:
    assert text_problems("a\u200db", max_length=64) == []


def test_unpaired_surrogate_is_rejected() -> None:
    assert text_problems("山\ud842", max_length=64) == ["contains unpaired surrogates"]


@pytest.mark.parametrize("cp", [0xFDD0, 0xFDEF, 0xFFFE, 0xFFFF, 0x1FFFE, 0x10FFFF])
def test_non_characters_are_rejected(cp: int) -> None:
    assert text_problems(chr(cp), max_length=64) == ["contains non-characters"]


_FIXED_MESSAGES = {
    "must not be empty",
    "must not be blank",
    "must be at most 3 characters",
    "contains control characters",
    "contains bidirectional control characters",
    "contains unpaired surrogates",
    "contains non-characters",
}


@given(st.text())
def test_problem_messages_are_fixed_strings_that_never_echo_the_value(value: str) -> None:
    assert set(text_problems(value, max_length=3)) <= _FIXED_MESSAGES


def test_search_key_removes_all_whitespace_including_ideographic_space() -> None:
    assert search_key(" 山田\u3000 太郎\t") == "山田太郎"


def test_search_key_strips_ivs() -> None:
    assert search_key("葛\U000E0100飾") == "葛飾"
    assert search_key("邉\U000E0108") == search_key("邉") == "辺"


def test_search_key_converts_hiragana_and_half_width_katakana_to_katakana() -> None:
    assert search_key("やまだ たろう") == "ヤマダタロウ"
    assert search_key("ﾔﾏﾀﾞ ﾀﾛｳ") == "ヤマダタロウ"
    assert search_key("ゔぁ") == "ヴァ"


def test_search_key_applies_nfkc_to_full_width_latin() -> None:
    assert search_key("ＳＭＩＴＨ　Ｊｏｈｎ") == "SMITHJohn"


@pytest.mark.parametrize(("variant", "plain"), [
    ("髙橋", "高橋"), ("山﨑", "山崎"), ("渡邊", "渡辺"), ("渡邉", "渡辺"), ("齋藤", "斎藤"),
    ("齊藤", "斎藤"), ("長濵", "長浜"), ("德川", "徳川"),
])
def test_search_key_folds_common_itaiji(variant: str, plain: str) -> None:
    assert search_key(variant) == search_key(plain) == plain


def test_search_key_does_not_touch_the_stored_name() -> None:
    name = "髙橋\u3000太郎"
    search_key(name)
    assert name == "髙橋\u3000太郎"


def test_itaiji_fold_targets_are_not_themselves_folded() -> None:
    assert not set(ITAIJI_FOLD.values()) & set(ITAIJI_FOLD)


@given(st.text())
def test_search_key_is_idempotent(value: str) -> None:
    once = search_key(value)
    assert search_key(once) == once


_kana_heavy = st.text(alphabet=st.sampled_from(
    "あいうかがわゝゞゟ゛゜\u3099\u309a\u3000 ｶﾞﾊﾟｰｳﾞアイウカガワヴー・髙﨑邉\U000E0100\ufe00\u309bＡａ"
))


@given(_kana_heavy)
def test_search_key_is_idempotent_on_kana_and_combining_marks(value: str) -> None:
    once = search_key(value)
    assert search_key(once) == once


@pytest.mark.parametrize("value", [
    "ヤマダ\u3000タロウ", "ヤマダ タロウ", "スミス・ジョン", "ヴィー", "ヵヶヽヾ",
])
def test_full_width_katakana_readings_are_accepted(value: str) -> None:
    assert is_katakana_reading(value)


@pytest.mark.parametrize("value", ["", "\u3000", "やまだ", "ﾔﾏﾀﾞ", "山田", "YAMADA", "ヤマダ1", "ヤマダ\n"])
def test_non_katakana_readings_are_rejected(value: str) -> None:
    assert not is_katakana_reading(value)


# --- the fast (regular-expression) checks decide as the character-by-character definitions ---------

_any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)


def _char_problems_by_definition(value: str) -> list[str]:
    import unicodedata

    problems = []
    categories = [unicodedata.category(ch) for ch in value]
    if "Cc" in categories:
        problems.append("contains control characters")
    if any(0x202A <= ord(ch) <= 0x202E or 0x2066 <= ord(ch) <= 0x2069 for ch in value):
        problems.append("contains bidirectional control characters")
    if "Cs" in categories:
        problems.append("contains unpaired surrogates")
    if any(0xFDD0 <= ord(ch) <= 0xFDEF or (ord(ch) & 0xFFFE) == 0xFFFE for ch in value):
        problems.append("contains non-characters")
    return problems


@given(_any_text)
def test_text_checks_match_their_definition_on_any_text(value: str) -> None:
    assert text_problems(value, max_length=100, allow_empty=True) == _char_problems_by_definition(value)


@given(st.text(alphabet=st.sampled_from("アイウヴヺヽヾー・ \u3000あ亜Aa\t\ufe00"), max_size=8))
def test_katakana_reading_matches_its_definition(value: str) -> None:
    allowed = {*(chr(c) for c in range(0x30A1, 0x30FB)), "\u30fd", "\u30fe", "ー", "・", " ", "\u3000"}
    assert is_katakana_reading(value) == (bool(value.strip()) and all(ch in allowed for ch in value))


@given(_any_text)
def test_search_key_strips_what_isspace_and_the_variation_selectors_say(value: str) -> None:
    from jukilib.domain.text import _strip

    assert _strip(value) == "".join(
        ch for ch in value if not ch.isspace() and not (0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF
                                                        or ord(ch) in (0x180B, 0x180C, 0x180D, 0x180F)))


@pytest.mark.parametrize("value", [" ", "\u3000\u3000", " \t "])
def test_text_of_only_spaces_is_blank(value: str) -> None:
    assert text_problems(value, max_length=64) == (["must not be blank"] if "\t" not in value
                                                   else ["contains control characters"])


@pytest.mark.parametrize(("value", "expected"), [
    ("山田太郎", False), ("𠮷野", False), ("髙橋", False), ("Smith John", False),
    ("\ue000田", True),  # a municipality's 外字 in the private-use area
    ("\U000f0001", True),  # supplementary private use
    ("\u0378x", True),  # unassigned in this Unicode version
])
def test_characters_the_register_cannot_identify_are_found_for_character_identification(
        value: str, expected: bool) -> None:
    assert needs_identification(value) is expected
