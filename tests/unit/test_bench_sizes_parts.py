"""The parts of `juki bench sizes` that need no database: the codes each lookup asks, the new persons of the
ingest left out when the loaded file holds them, and the ratios between sizes."""

from __future__ import annotations

from typing import Any

import pytest

from jukitools.bench_ingest import WARM_UP, _Workload
from jukitools.bench_lookup import _Codes
from jukitools.bench_sizes import LOAD_AND_DISK, RATES, markdown_table, ratios


def test_every_call_asks_the_next_code_of_the_sample_and_a_batch_never_repeats_one() -> None:
    codes = _Codes(["a", "b", "c"])
    assert codes.take(2) == ["a", "b"]
    assert codes.take(2) == ["c", "a"]  # from the first again: the run asks more than the file holds
    assert codes.batches(2, 1000) == (["b", "c", "a", "b", "c", "a"], 3)  # a batch is at most the file
    with pytest.raises(ValueError, match="no resident"):
        _Codes([])


def test_residents_the_register_holds_are_left_out_of_the_workload_and_others_take_their_place() -> None:
    plain = _Workload(7, (1, 2, 3), spare=5)
    generated = plain.generated()
    assert len(generated) == plain.total + 5 == 3 * WARM_UP + 6 + 5
    held = _Workload(7, (1, 2, 3), spare=5, held=(0, 10))
    residents = held.residents()
    assert len(residents) == held.total
    assert generated[0] not in residents and generated[10] not in residents
    assert residents == [r for index, r in enumerate(generated) if index not in (0, 10)][:held.total]


def _figures(postgres: float, seconds: float) -> dict[str, Any]:
    parts: dict[str, Any] = {"load": {}, "disk": {}, "cache": {}, "wal": {}}
    for part, key, _ in LOAD_AND_DISK:
        parts[part][key] = seconds if key == "seconds" else 0
    return {"persons": 1, "lookup": {"batch_size": 1000},
            "cpu_us_per_operation": {operation: {"client": 10.0, "postgres": postgres}
                                     for operation in ("lookup_gateway", "lookup_direct", "batch_lookup",
                                                       "notification_unary", "notification_stream")},
            "rates": {key: 100 for key, _ in RATES}, **parts}


def test_each_size_is_compared_with_the_first_figure_by_figure() -> None:
    compared = ratios(_figures(80.0, 2.0), _figures(200.0, 5.0))
    assert compared["cpu_us_per_operation"]["lookup_gateway"] == {"client": 1.0, "postgres": 2.5}
    assert compared["rates"]["lookups_per_second_gateway"] == 1.0 and compared["load"]["seconds"] == 2.5
    assert compared["disk"]["identity_mb_per_million_persons"] is None  # nothing to compare with 0


def test_the_table_puts_the_sizes_side_by_side_with_the_ratio_to_the_first() -> None:
    first, second = _figures(80.0, 2.0), _figures(200.0, 5.0)
    table = markdown_table({"sizes": [20, 2000], "by_size": {"20": first, "2000": second},
                            "ratios": {"2000": ratios(first, second)}}).splitlines()
    assert table[0] == "| per operation | 20 persons | 2,000 persons |"
    assert "| single lookup (gateway path): postgres CPU µs | 80.0 | 200 (2.50 ×) |" in table
    assert "| batch lookup of 1,000: client CPU µs | 10.0 | 10.0 (1.00 ×) |" in table
    assert "| initial load, seconds | 2.0 | 5.0 (2.50 ×) |" in table
