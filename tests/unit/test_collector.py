"""The collector setting of processes that handle many records at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from jukilib.collector import YOUNG_COLLECTION_THRESHOLD, collect_young_rarely


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_young_collections_start_rarely_and_older_generations_keep_theirs(thresholds: tuple[int, int, int]) -> None:
    collect_young_rarely()
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, thresholds[1], thresholds[2])

