"""Admission before the policy: revoked certificates and rate limits (fake clocks, no sleeping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from juki_services.gateway.admission import DenyList, RateLimiter
from jukilib.errors import PermissionDenied, ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_allows_a_burst_then_answers_with_a_retry_delay() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=20, clock=clock)
    for _ in range(20):
        limiter.take("kyoiku-iinkai", "ORGANIZATION_RATE_LIMIT")
    with pytest.raises(ResourceExhausted) as exhausted:
        limiter.take("kyoiku-iinkai", "ORGANIZATION_RATE_LIMIT")
    assert exhausted.value.reason == "ORGANIZATION_RATE_LIMIT"
    assert exhausted.value.retry_after_seconds == pytest.approx(0.1)
    limiter.take("senkyo-kanri-iinkai", "ORGANIZATION_RATE_LIMIT")  # another key has its own bucket
    clock.now += 0.1
    limiter.take("kyoiku-iinkai", "ORGANIZATION_RATE_LIMIT")


def test_revocation_takes_effect_after_the_file_changes(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "revoked.txt"
    path.write_text("# none yet\n")
    deny = DenyList(path, clock=clock)
    deny.check("ab" * 32)
    path.write_text(f"{'AB' * 32}  # stolen terminal\n")
    clock.now += 1.5
    with pytest.raises(PermissionDenied) as revoked:
        deny.check("ab" * 32)
    assert revoked.value.reason == "CERTIFICATE_REVOKED"


def test_unreadable_revocation_list_keeps_the_previous_one(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "revoked.txt"
    path.write_text("cd" * 32 + "\n")
    deny = DenyList(path, clock=clock)
    with pytest.raises(PermissionDenied):
        deny.check("cd" * 32)
    path.unlink()
    clock.now += 2
    with pytest.raises(PermissionDenied):
        deny.check("cd" * 32)
