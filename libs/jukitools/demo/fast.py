"""Synthetic Gunma residents fast enough for prefecture-sized files (≈2 M persons in seconds).

The Faker-based generator of `jukitools.demo.residents` makes several Faker calls per person, far too
slow for an initial-load benchmark. This one draws whole columns at once from a seeded
`random.Random` (`choices` and `randbytes` loop in C) over vocabularies built once from Faker's ja_JP
provider lists: paired kanji/kana names (a name and its reading correspond; surnames weighted by
Faker's frequencies, half men and half women) and addresses in the municipalities weighted as in
`residents.POPULATION_WEIGHTS`. Identifiers are unique within one generation and carry valid check
digits: 個人番号 by `individual_number_check_digit`, 住民票コード by the hypothesised
`resident_code_check_digit` (DOMAIN §2.2, UNVERIFIED). As in residents.py, the synthetic 個人番号 is
not derived from the 住民票コード.

Output: column blocks, `SyntheticResident` objects (the type of residents.py), or JSON lines in the
file format of `juki load` (the register's record in proto JSON, `preserving_proto_field_name`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import operator
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from faker.providers.person.ja_JP import Provider as JapanesePersons

from jukilib.domain.codes import individual_number_check_digit, resident_code_check_digit
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.domain.sex import FEMALE, MALE
from jukitools.demo.residents import (
    BIRTH_FIRST,
    BIRTH_LAST,
    IDEOGRAPHIC_SPACE,
    POPULATION_WEIGHTS,
    TOWN_NAMES,
    SyntheticResident,
)

BLOCK = 50_000
T = TypeVar("T")
_SPLIT = 100_000  # check-digit tables cover 5 digits each
REGISTERS = ("identity", "annex")


class _CheckDigits:
    """Appends a mod-11 weighted check digit to integer bases by table look-up, in C-level loops.

    The weights are read off the reference function (`check_digit`) one digit position at a time,
    and the tables are verified against it on random bases, so a change of the reference formula
    fails here loudly instead of producing invalid codes.
    """

    def __init__(self, check_digit: Callable[[str], int], length: int, rng: random.Random) -> None:
        self.length = length
        weights = [11 - check_digit(f"{10 ** position:0{length}d}") for position in range(length)]
        # Weighted digit sums of the low 5 digits, of the next 5 and of what is left (at most 1 digit).
        self._tables = [self._table(weights[start:start + 5]) for start in range(0, length, 5)]
        max_sum = 9 * sum(weights)
        self._digit_of_sum = [0 if total % 11 <= 1 else 11 - total % 11 for total in range(max_sum + 1)]
        self._format = f"{{:0{length}d}}{{}}".format
        sample = [rng.randrange(10 ** length) for _ in range(2_000)]
        if self.codes(sample) != [f"{base:0{length}d}{check_digit(f'{base:0{length}d}')}" for base in sample]:
            raise AssertionError("the check-digit formula is not a mod-11 weighted digit sum any more")

    @staticmethod
    def _table(weights: list[int]) -> list[int]:
        table = [0]
        for weight in weights:  # extend digit by digit: value = digit × 10^k + lower part
            table = [digit * weight + lower for digit in range(10) for lower in table]
        return table

    def digits(self, bases: list[int]) -> list[int]:
        """The check digit of every base."""
        low, middle, *high = self._tables
        sums = map(operator.add, map(low.__getitem__, [base % _SPLIT for base in bases]),
                   map(middle.__getitem__, [base // _SPLIT % _SPLIT for base in bases]))
        if high:
            sums = map(operator.add, sums, map(high[0].__getitem__, [base // _SPLIT ** 2 for base in bases]))
        return list(map(self._digit_of_sum.__getitem__, sums))

    def codes(self, bases: list[int]) -> list[str]:
        """Every base with its check digit, as a code."""
        return list(map(self._format, bases, self.digits(bases)))


@dataclass(frozen=True)
class _Name:
    full_name: str
    kana: str
    sex_code: str
    json: str
    """`"full_name":…,"full_name_kana":…,"kana_confirmed":true,"sex_code":…`"""


@dataclass(frozen=True)
class _Place:
    municipality_code: str
    street: str
    """群馬県 + municipality + 町名 + 丁目; the 番/号 are drawn separately."""
    identity_json: str
    annex_json: str
    """`"<municipality field>":…,"address":"<street>` (the address string left open)."""


class _Vocabulary:
    """Everything drawn from, built once; names (with their sex) and streets come pre-combined, so
    that one draw gives several items."""

    def __init__(self) -> None:
        last = JapanesePersons.last_name_pairs  # OrderedDict: (kanji, kana, romaji) → frequency
        space = IDEOGRAPHIC_SPACE
        names: list[_Name] = []
        name_weights: list[float] = []
        for (last_kanji, last_kana, _), frequency in last.items():
            for sex, firsts in ((MALE, JapanesePersons.first_name_male_pairs),
                                (FEMALE, JapanesePersons.first_name_female_pairs)):
                for first_kanji, first_kana, _ in firsts:
                    name, kana = f"{last_kanji}{space}{first_kanji}", f"{last_kana}{space}{first_kana}"
                    names.append(_Name(name, kana, sex, _json_fields(
                        full_name=name, full_name_kana=kana, kana_confirmed=True, sex_code=sex)))
                    name_weights.append(float(frequency) / len(firsts))
        self.names = _expanded(names, name_weights)
        municipalities = gunma_municipalities().all()
        streets = [f"{town}{chome}丁目" for town in TOWN_NAMES for chome in range(1, 7)]
        places = [
            _Place(m.code6, f"群馬県{m.name}{street}",
                   _json_fields(address_municipality_code=m.code6) + f',"address":"群馬県{m.name}{street}',
                   _json_fields(domicile_municipality_code=m.code6) + f',"address":"群馬県{m.name}{street}')
            for m in municipalities for street in streets]
        self.places = _expanded(places, [POPULATION_WEIGHTS.get(m.code6, 1) for m in municipalities for _ in streets])
        self.numbers = [f"{ban}番{gou}号" for ban in range(1, 28) for gou in range(1, 21)]
        first, days = BIRTH_FIRST.toordinal(), (BIRTH_LAST - BIRTH_FIRST).days + 1
        self.births = [dt.date.fromordinal(first + offset) for offset in range(days)]
        self.birth_json = [f'"birth_date":{{"precision":"DATE_PRECISION_DAY","year":{day.year},"month":{day.month},'
                           f'"day":{day.day},"original_text":"{day.isoformat()}"}}' for day in self.births]
        # The address is closed by template: nothing drawn into it may need escaping.
        if any(json.dumps(text, ensure_ascii=False) != f'"{text}"' for text in [*streets, *self.numbers]):
            raise AssertionError("an address part needs JSON escaping")


def _expanded(items: list[T], weights: Sequence[float], size: int = 400_000) -> list[T]:
    """`items` repeated in proportion to `weights` (to about 1/`size`), so that drawing from the list
    uniformly (fast) is drawing by weight."""
    scale = size / sum(weights)
    return [item for item, weight in zip(items, weights, strict=True) for _ in range(max(1, round(weight * scale)))]


def _json_fields(**fields: object) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))[1:-1]


def _unique_bases(rng: random.Random, count: int, limit: int) -> list[int]:
    """`count` distinct integers in [0, limit), in random order (64-bit draws reduced modulo `limit`:
    the bias, below 1e-8, does not matter for synthetic data)."""
    found: dict[int, None] = {}
    while len(found) < count:
        wanted = count - len(found) + 16
        draws = struct.unpack(f"<{wanted}Q", rng.randbytes(8 * wanted))
        found.update(dict.fromkeys([draw % limit for draw in draws]))
    return list(itertools.islice(found, count))


@dataclass(frozen=True)
class _Draw:
    """One block as drawn: index i of every list is one person."""

    code_bases: list[int]
    code_digits: list[int]
    number_bases: list[int]
    number_digits: list[int]
    names: list[_Name]
    places: list[_Place]
    numbers: list[str]
    births: list[int]


@dataclass(frozen=True)
class ResidentColumns:
    """One block of synthetic residents, column by column (index i of every list is one person)."""

    resident_code: list[str]
    individual_number: list[str]
    full_name: list[str]
    full_name_kana: list[str]
    birth_date: list[dt.date]
    sex_code: list[str]
    municipality_code: list[str]
    address: list[str]

    def __len__(self) -> int:
        return len(self.resident_code)


class FastResidents:
    """Seeded generator: the same seed and count always give the same residents."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._vocabulary = _Vocabulary()
        self._resident_codes = _CheckDigits(resident_code_check_digit, 10, self._rng)
        self._individual_numbers = _CheckDigits(individual_number_check_digit, 11, self._rng)

    def _draws(self, count: int, block: int) -> Iterator[_Draw]:
        if count < 0:
            raise ValueError("count must not be negative")
        rng, v = self._rng, self._vocabulary
        code_bases = _unique_bases(rng, count, 10 ** 10)
        number_bases = _unique_bases(rng, count, 10 ** 11)
        birth_indexes = range(len(v.births))
        for start in range(0, count, block):
            size = min(block, count - start)
            codes, numbers = code_bases[start:start + size], number_bases[start:start + size]
            yield _Draw(
                code_bases=codes, code_digits=self._resident_codes.digits(codes),
                number_bases=numbers, number_digits=self._individual_numbers.digits(numbers),
                names=rng.choices(v.names, k=size),
                places=rng.choices(v.places, k=size),
                numbers=rng.choices(v.numbers, k=size),
                births=rng.choices(birth_indexes, k=size),
            )

    def blocks(self, count: int, block: int = BLOCK) -> Iterator[ResidentColumns]:
        """`count` residents in blocks of at most `block`; identifiers unique over all blocks."""
        births = self._vocabulary.births
        for d in self._draws(count, block):
            yield ResidentColumns(
                resident_code=[f"{base:010d}{digit}" for base, digit in zip(d.code_bases, d.code_digits, strict=True)],
                individual_number=[f"{base:011d}{digit}"
                                   for base, digit in zip(d.number_bases, d.number_digits, strict=True)],
                full_name=[name.full_name for name in d.names],
                full_name_kana=[name.kana for name in d.names],
                birth_date=[births[i] for i in d.births],
                sex_code=[name.sex_code for name in d.names],
                municipality_code=[place.municipality_code for place in d.places],
                address=[place.street + number for place, number in zip(d.places, d.numbers, strict=True)],
            )

    def jsonl_blocks(self, count: int, register: str = "identity", block: int = BLOCK) -> Iterator[str]:
        """`count` residents as JSON lines of `juki load` for the register (`identity` or `annex`), one
        string of up to `block` lines at a time. No event date or notification id: the loader's
        defaults apply. Every line is valid proto JSON of the register's record."""
        if register not in REGISTERS:
            raise ValueError("register must be identity or annex")
        births = self._vocabulary.birth_json
        for d in self._draws(count, block):
            if register == "identity":
                lines = [f'{{"resident_code":"{code:010d}{code_digit}","individual_number":"{number:011d}'
                         f'{number_digit}",{name.json},{births[born]},{place.identity_json}{house}"}}\n'
                         for code, code_digit, number, number_digit, name, born, place, house in zip(
                             d.code_bases, d.code_digits, d.number_bases, d.number_digits, d.names, d.births,
                             d.places, d.numbers, strict=True)]
            else:
                lines = [f'{{"resident_code":"{code:010d}{code_digit}",{name.json},{births[born]},'
                         f'{place.annex_json}{house}"}}\n'
                         for code, code_digit, name, born, place, house in zip(
                             d.code_bases, d.code_digits, d.names, d.births, d.places, d.numbers, strict=True)]
            yield "".join(lines)


def generate_residents(count: int, *, seed: int) -> list[SyntheticResident]:
    """Like `residents.generate_residents` (same type), but fast; the residents themselves differ."""
    residents: list[SyntheticResident] = []
    for block in FastResidents(seed).blocks(count):
        residents.extend(itertools.starmap(SyntheticResident, zip(
            block.resident_code, block.individual_number, block.full_name, block.full_name_kana,
            block.birth_date, block.sex_code, block.municipality_code, block.address, strict=True)))
    return residents


def write_jsonl(out: IO[bytes] | Path, count: int, *, seed: int, register: str = "identity") -> int:
    """Write `count` residents as UTF-8 JSON lines to a path or binary stream; returns the count."""
    if isinstance(out, Path):
        with out.open("wb") as stream:
            return write_jsonl(stream, count, seed=seed, register=register)
    for text in FastResidents(seed).jsonl_blocks(count, register):
        out.write(text.encode())
    return count
