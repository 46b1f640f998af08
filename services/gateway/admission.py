"""Admission before the policy: revoked certificates and rate limits.

- Revoked client certificates: a deny list of SHA-256 fingerprints (hex, one per line, `#` comments)
  that the gateway re-reads when the file changes (checked at most once a second), so a revocation
  takes effect on every replica within seconds without a restart.
- Rate limits per organisation and per operator: token buckets (per replica); an exhausted bucket is
  answered RESOURCE_EXHAUSTED with RetryInfo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jukilib.errors import PermissionDenied, ResourceExhausted

logger = logging.getLogger(__name__)
CHECK_INTERVAL_SECONDS = 1.0


class DenyList:
    """Fingerprints of revoked certificates, reloaded when the file changes."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._checked = float("-inf")
        self._stamp: tuple[float, int] | None = None
        self._revoked: frozenset[str] = frozenset()

    def _refresh(self) -> None:
        now = self._clock()
        if self._path is None or now - self._checked < CHECK_INTERVAL_SECONDS:
            return
        self._checked = now
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime, stat.st_size)
            if stamp == self._stamp:
                return
            lines = self._path.read_text(encoding="utf-8").splitlines()
        except OSError:
            logger.error("revocation list unreadable; the previous list stays in force")
            return
        self._stamp = stamp
        self._revoked = frozenset(line.split("#")[0].strip().lower() for line in lines if line.split("#")[0].strip())
        logger.info("revocation list loaded", extra={"revoked": len(self._revoked)})

    def check(self, fingerprint: str) -> None:
        self._refresh()
        if fingerprint in self._revoked:
            raise PermissionDenied("the client certificate has been revoked", "CERTIFICATE_REVOKED")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by name: `rate` per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, reason: str) -> None:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens < 1:
            raise ResourceExhausted("rate limit reached; retry later", reason,
                                    retry_after_seconds=(1 - bucket.tokens) / self._rate)
        bucket.tokens -= 1


class Admission:
    """Everything checked about a caller before its purpose."""

    def __init__(self, deny_list: DenyList, organizations: RateLimiter, operators: RateLimiter) -> None:
        self._deny_list = deny_list
        self._organizations = organizations
        self._operators = operators

    def check(self, fingerprint: str, organization: str, operator: str) -> None:
        self.check_certificate(fingerprint)
        self.take(organization, operator)

    def check_certificate(self, fingerprint: str) -> None:
        self._deny_list.check(fingerprint)

    def take(self, organization: str, operator: str) -> None:
        """One call's tokens of the organisation's and (for human work) the operator's rate limit."""
        self._organizations.take(organization, "ORGANIZATION_RATE_LIMIT")
        if operator:
            self._operators.take(f"{organization}/{operator}", "OPERATOR_RATE_LIMIT")
