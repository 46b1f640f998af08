"""Deterministic synthetic residents for demonstrations and load tests.

Everything here is invented with Faker('ja_JP'): names come from Faker's paired (kanji, kana, romaji)
tuples so a name and its reading always correspond. Identifiers carry valid check digits (個人番号:
総務省令第85号 第5条; 住民票コード: the UNVERIFIED hypothesis of docs/domain.md §2.2) but are random: unlike real
ones, the synthetic 個人番号 is not derived from the 住民票コード.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from faker import Faker

from jukilib.domain.codes import individual_number_check_digit, resident_code_check_digit
from jukilib.domain.municipalities import Municipality, gunma_municipalities
from jukilib.domain.sex import FEMALE, MALE

BIRTH_FIRST = dt.date(1930, 1, 1)
BIRTH_LAST = dt.date(2024, 12, 31)
IDEOGRAPHIC_SPACE = "\u3000"

# Approximate populations in thousands (rough 2020-census order of magnitude), used ONLY to weight the
# demo distribution. Not authoritative; do not use for anything else.
POPULATION_WEIGHTS: dict[str, int] = {
    "102016": 332, "102024": 372, "102032": 107, "102041": 211, "102059": 223, "102067": 46,
    "102075": 75, "102083": 75, "102091": 63, "102105": 47, "102113": 56, "102121": 49,
    "103446": 14, "103454": 22, "103667": 1, "103675": 2, "103829": 7, "103837": 2,
    "103845": 13, "104213": 15, "104248": 5, "104256": 9, "104264": 6, "104281": 3,
    "104299": 13, "104434": 4, "104442": 3, "104485": 7, "104493": 17, "104647": 36,
    "105210": 14, "105228": 11, "105236": 11, "105244": 41, "105252": 26,
}

# Generic 町名 found in many Japanese municipalities. Faker's ja_JP town list is mostly Tokyo and
# Tochigi place names (e.g. 皇居外苑), which would look wrong in Gunma addresses.
TOWN_NAMES: tuple[str, ...] = (
    "本町", "元町", "中央町", "栄町", "緑町", "旭町", "幸町", "新町", "東町", "西町", "南町", "北町",
    "若宮町", "日吉町", "住吉町", "昭和町", "大手町", "末広町", "錦町", "寿町", "泉町", "桜町",
    "朝日町", "富士見町", "八幡町", "宮前町", "城南町", "青葉町", "紅葉町", "松原町",
)


@dataclass(frozen=True)
class SyntheticResident:
    """An invented resident with the 4情報, both identifiers and the notifying municipality."""

    resident_code: str
    individual_number: str
    full_name: str
    full_name_kana: str
    birth_date: dt.date
    sex_code: str
    municipality_code: str
    address: str


def _unique_code(fake: Faker, base_digits: int, seen: set[str], is_resident_code: bool) -> str:
    """A random base + check digit, distinct from every code in ``seen`` (which it updates)."""
    while True:
        base = fake.numerify("#" * base_digits)
        check = resident_code_check_digit(base) if is_resident_code else individual_number_check_digit(base)
        code = f"{base}{check}"
        if code not in seen:
            seen.add(code)
            return code


def _name(fake: Faker) -> tuple[str, str, str]:
    """(kanji name, katakana reading, sex code); the sex follows the gender of Faker's first-name list."""
    last_kanji, last_kana, _ = fake.last_name_pair()
    if fake.boolean():
        first_kanji, first_kana, _ = fake.first_name_male_pair()
        sex = MALE
    else:
        first_kanji, first_kana, _ = fake.first_name_female_pair()
        sex = FEMALE
    return (
        f"{last_kanji}{IDEOGRAPHIC_SPACE}{first_kanji}",
        f"{last_kana}{IDEOGRAPHIC_SPACE}{first_kana}",
        sex,
    )


def _address(fake: Faker, municipality: Municipality) -> str:
    """群馬県 + municipality (郡 included) + 町名 + N丁目N番N号 (住居表示 style)."""
    town = fake.random_element(TOWN_NAMES)
    chome = f"{fake.random_int(1, 6)}丁目"  # Faker's chome() goes to 42丁目, implausible here
    return f"群馬県{municipality.name}{town}{chome}{fake.ban()}{fake.gou()}"


def _pick_municipality(fake: Faker, municipalities: tuple[Municipality, ...]) -> Municipality:
    weights = [POPULATION_WEIGHTS.get(m.code6, 1) for m in municipalities]
    chosen: Municipality = fake.random.choices(municipalities, weights=weights, k=1)[0]
    return chosen


def generate_residents(count: int, *, seed: int, municipality_code: str | None = None) -> list[SyntheticResident]:
    """``count`` synthetic residents; the same ``seed`` always gives the same list. With
    ``municipality_code``, all live in that municipality (the one that notifies them, 住基法 30-6 ①)."""
    if count < 0:
        raise ValueError("count must not be negative")
    fake = Faker("ja_JP")
    fake.seed_instance(seed)
    municipalities = gunma_municipalities().all()
    if municipality_code is not None:
        municipalities = tuple(m for m in municipalities if m.code6 == municipality_code) or municipalities
    resident_codes: set[str] = set()
    individual_numbers: set[str] = set()
    residents: list[SyntheticResident] = []
    for _ in range(count):
        full_name, kana, sex = _name(fake)
        municipality = _pick_municipality(fake, municipalities)
        residents.append(SyntheticResident(
            resident_code=_unique_code(fake, 10, resident_codes, is_resident_code=True),
            individual_number=_unique_code(fake, 11, individual_numbers, is_resident_code=False),
            full_name=full_name,
            full_name_kana=kana,
            birth_date=fake.date_between_dates(BIRTH_FIRST, BIRTH_LAST),
            sex_code=sex,
            municipality_code=municipality.code6,
            address=_address(fake, municipality),
        ))
    return residents
