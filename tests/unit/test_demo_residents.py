"""The deterministic synthetic-resident generator."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

import pytest
from faker.providers.person.ja_JP import Provider as JaPersonProvider

from jukilib.domain.codes import CheckDigitMode, check_resident_code, is_valid_individual_number
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.domain.text import is_katakana_reading, text_problems
from jukitools.demo.residents import SyntheticResident, generate_residents

RESIDENTS = generate_residents(500, seed=20250526)


def test_same_seed_gives_the_same_residents() -> None:
    assert generate_residents(50, seed=7) == generate_residents(50, seed=7)


def test_different_seeds_give_different_residents() -> None:
    assert generate_residents(20, seed=1) != generate_residents(20, seed=2)


def test_count_is_respected() -> None:
    assert len(RESIDENTS) == 500
    assert generate_residents(0, seed=1) == []


def test_resident_codes_are_unique_with_hypothesised_check_digit() -> None:
    codes = [r.resident_code for r in RESIDENTS]
    assert len(set(codes)) == len(codes)
    assert all(check_resident_code(c, CheckDigitMode.REJECT).ok for c in codes)


def test_individual_numbers_are_unique_and_valid() -> None:
    numbers = [r.individual_number for r in RESIDENTS]
    assert len(set(numbers)) == len(numbers)
    assert all(is_valid_individual_number(n) for n in numbers)


def _pairs() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    last = {kanji: kana for kanji, kana, _ in JaPersonProvider.last_name_pairs}
    male = {kanji: kana for kanji, kana, _ in JaPersonProvider.first_name_male_pairs}
    female = {kanji: kana for kanji, kana, _ in JaPersonProvider.first_name_female_pairs}
    return last, male, female


def test_kana_reading_corresponds_to_the_kanji_name() -> None:
    last, male, female = _pairs()
    for r in RESIDENTS:
        sei, mei = r.full_name.split("\u3000")
        sei_kana, mei_kana = r.full_name_kana.split("\u3000")
        assert last[sei] == sei_kana
        assert {**male, **female}[mei] == mei_kana


def test_sex_code_follows_the_gender_of_the_first_name() -> None:
    _, male, female = _pairs()
    for r in RESIDENTS:
        mei = r.full_name.split("\u3000")[1]
        assert r.sex_code == ("1" if mei in male else "2")
        assert mei in (male if r.sex_code == "1" else female)


def test_both_sexes_occur() -> None:
    assert {r.sex_code for r in RESIDENTS} == {"1", "2"}


def test_names_are_valid_text_and_readings_are_katakana() -> None:
    for r in RESIDENTS:
        assert text_problems(r.full_name, max_length=64) == []
        assert is_katakana_reading(r.full_name_kana)


def test_birth_dates_lie_between_1930_and_2024() -> None:
    assert all(dt.date(1930, 1, 1) <= r.birth_date <= dt.date(2024, 12, 31) for r in RESIDENTS)


def test_municipality_is_one_of_gunmas_35_and_starts_the_address() -> None:
    table = gunma_municipalities()
    for r in RESIDENTS:
        municipality = table.get(r.municipality_code)
        assert municipality is not None
        assert r.address.startswith(f"群馬県{municipality.name}")
        assert r.address.endswith("号")
        assert "丁目" in r.address and "番" in r.address


def test_big_cities_dominate_the_distribution() -> None:
    counts = Counter(r.municipality_code for r in RESIDENTS)
    big_four = sum(counts[c] for c in ("102016", "102024", "102059", "102041"))  # 前橋・高崎・太田・伊勢崎
    assert big_four > len(RESIDENTS) * 0.45
    assert counts["103667"] < counts["102024"]  # 上野村 ≪ 高崎市


def test_residents_are_immutable() -> None:
    r: SyntheticResident = RESIDENTS[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.full_name = "x"  # type: ignore[misc]
