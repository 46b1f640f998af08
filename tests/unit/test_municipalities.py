"""The packaged Gunma municipality table (docs/domain.md §4.7)."""

from __future__ import annotations

import pytest

from jukilib.domain.codes import is_valid_municipality_code
from jukilib.domain.municipalities import (
    Municipality,
    MunicipalityKind,
    MunicipalityTable,
    gunma_municipalities,
    parse_municipality_csv,
)


def test_gunma_has_35_municipalities() -> None:
    assert len(gunma_municipalities().all()) == 35


def test_gunma_has_12_cities_15_towns_and_8_villages() -> None:
    kinds = [m.kind for m in gunma_municipalities().all()]
    assert kinds.count(MunicipalityKind.CITY) == 12
    assert kinds.count(MunicipalityKind.TOWN) == 15
    assert kinds.count(MunicipalityKind.VILLAGE) == 8


def test_every_gunma_code_has_a_valid_check_digit_and_prefix_10() -> None:
    for m in gunma_municipalities().all():
        assert is_valid_municipality_code(m.code6)
        assert m.code6.startswith("10")


def test_kind_matches_the_suffix_of_the_name() -> None:
    suffix = {MunicipalityKind.CITY: "市", MunicipalityKind.TOWN: "町", MunicipalityKind.VILLAGE: "村"}
    for m in gunma_municipalities().all():
        assert m.name.endswith(suffix[m.kind])


def test_takasaki_is_found_by_its_verified_code() -> None:
    takasaki = gunma_municipalities().get("102024")
    assert takasaki == Municipality(code6="102024", name="高崎市", kind=MunicipalityKind.CITY)
    assert takasaki.code5 == "10202"


def test_unknown_code_is_absent() -> None:
    table = gunma_municipalities()
    assert table.get("131016") is None
    assert "131016" not in table
    assert 102024 not in table
    assert "102016" in table


def test_names_are_unique() -> None:
    names = [m.name for m in gunma_municipalities().all()]
    assert len(set(names)) == len(names)


def test_loader_rejects_a_code_with_a_wrong_check_digit_naming_the_row() -> None:
    text = "code6,name,kind\n102016,前橋市,city\n102025,高崎市,city\n"
    expected = r"line 3: municipality code '102025' \(高崎市\) fails its check digit"
    with pytest.raises(ValueError, match=expected):
        parse_municipality_csv(text)


def test_loader_rejects_a_code_outside_the_prefecture() -> None:
    with pytest.raises(ValueError, match="line 2"):
        parse_municipality_csv("code6,name,kind\n131016,千代田区,city\n", prefecture_code="10")


def test_loader_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        parse_municipality_csv("code6,name,kind\n102016,前橋市,ward\n")


def test_loader_rejects_a_wrong_header() -> None:
    with pytest.raises(ValueError, match="header"):
        parse_municipality_csv("code,name,kind\n102016,前橋市,city\n")


def test_table_rejects_duplicate_codes() -> None:
    m = Municipality(code6="102016", name="前橋市", kind=MunicipalityKind.CITY)
    with pytest.raises(ValueError, match="duplicate"):
        MunicipalityTable([m, m])
