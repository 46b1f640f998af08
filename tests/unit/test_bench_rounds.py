"""`juki bench lookup` measures the single-lookup paths in alternating rounds and combines each path's
rounds into one figure."""

from __future__ import annotations

from jukitools.bench_lookup import _combined, _shares


def test_the_lookups_are_shared_out_among_the_rounds() -> None:
    assert _shares(20_000, 3) == [6667, 6667, 6666]
    assert _shares(5, 8) == [1, 1, 1, 1, 1]
    assert _shares(10, 0) == [10]


def test_a_path_is_its_rounds_together() -> None:
    rounds = [
        {"calls": 100, "seconds": 1.0, "errors": 0, "samples": [0.010] * 100, "cpu_us": {"identity": 1000.0}},
        {"calls": 300, "seconds": 1.0, "errors": 1, "samples": [0.030] * 300, "cpu_us": {"identity": 2000.0}},
    ]
    combined = _combined(rounds)
    assert combined["per_second"] == 200.0 and combined["errors"] == 1 and combined["rounds"] == 2
    assert combined["latency_ms"] == {"p50": 30.0, "p99": 30.0}
    assert combined["cpu_us"] == {"identity": 1750.0}  # weighted by each round's calls
