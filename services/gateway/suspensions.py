"""Usage suspensions (利用停止, 個人情報保護法 98 … 101; 番号法 30) as the gateway enforces them.

While a 利用停止請求 is handled, and for good once decided "stop", the gateway refuses every answer that
carries records of the person under a purpose the case names (FAILED_PRECONDITION `USAGE_SUSPENDED`, in
the operation log like every refusal). The disclosure service owns the cases and decides, per case, which
purposes are refused now (`UsageSuspensionCase.suspended_purposes`); the gateway only looks them up.

How the gateway knows them: each replica holds the whole list in memory (`ListActiveUsageSuspensions`,
called with the gateway's own certificate and exposed to nobody) and reads it again every
`refresh_seconds` (1 s), like the operator registry; a case answer that passes through the replica
(create, verify, decide, notify, close) updates its copy at once, so a suspension is in force on that
replica the moment the desk has its answer, and on every other within a second.

When the list cannot be read: fail closed for the purposes a suspension can name, and only for them. A
replica whose copy is older than `max_staleness` (10 s) refuses answers with records under those purposes
(UNAVAILABLE `USAGE_SUSPENSIONS_UNKNOWN`) instead of risking a provision the law has stopped; organs
retry. Everything else (a municipality's 30-6 notification, the disclosure service's reads for the
person's own cases, audit) goes on: no suspension can name it. While the disclosure service is down no
new case can be opened either, so the copy misses at most what another replica opened in the second
before the outage; the bound covers a replica cut off alone.

A deployment without a disclosure service (`juki bench lookup` runs identity and the gateway alone) has no
case to enforce and sets `fail_closed` off: the gateway then decides on the copy it has, empty if it never
read one, at the same cost.

The refusal follows the person, not a code (住基法 30-4: a 住民票コード can change after the case was opened).
A case names the person's resources in the files (`persons`: `residents/{id}`, `annexResidents/{id}`, ids
that never change), and every resource of an answer is checked by its person as well as by its code, before
minimisation cuts the name. A case answer passing through carries the codes (in force here at once); its
persons arrive with the next read of the list, within a second.

The hot path costs one clock read and, only when some suspension exists, one set lookup per 住民票コード and
per resource of the answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import message

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki_services.gateway.policy import PROVISION_RECIPIENT_KINDS, Catalogue
from jukilib.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unavailable
from jukilib.supervision import Heartbeat

logger = logging.getLogger(__name__)

SERVICE = "/juki.disclosure.v1.DisclosureService/"
CREATE = f"{SERVICE}CreateUsageSuspensionCase"
LIST_ACTIVE = "ListActiveUsageSuspensions"
"""The method only the gateway calls (not routed)."""
SUSPENDABLE_KINDS = PROVISION_RECIPIENT_KINDS
"""Organisations whose receipt of a person's records (提供 to another executive organ, 移転 to a department)
a 利用停止請求 can stop. Not the file's own upkeep by 市町村課 (30-6 / 30-41 ingest, 12-5 reports, retention:
duties of the law itself), municipalities notifying, the agency, the disclosure desk and service (the person's
own requests), auditors or administrators."""
CASE_TYPE = dpb.UsageSuspensionCase.DESCRIPTOR.full_name
READ_FAILURES = (grpc.aio.AioRpcError, OSError, TimeoutError, Unavailable)

Fetch = Callable[[], Awaitable[list[dpb.UsageSuspension]]]
Entry = tuple[frozenset[str], frozenset[str], frozenset[str]]
"""(every 住民票コード of the person, purposes refused, the person's resources in the files)."""


def person_of(resource_name: str) -> str:
    """The person a resource belongs to: `residents/{id}` of `residents/{id}/versions/{n}` (likewise annex)."""
    return "/".join(resource_name.split("/", 2)[:2])


def suspendable_purposes(catalogue: Catalogue) -> frozenset[str]:
    """Codes of the purposes a 利用停止請求 may name: those granted to an organisation of a suspendable kind."""
    organizations = [o for o in catalogue.organizations.values() if o.kind in SUSPENDABLE_KINDS]
    return frozenset(p.code for p in catalogue.purposes.values() if any(p.grants(o) for o in organizations))


def check_request(path: str, request: message.Message, catalogue: Catalogue) -> None:
    """A new case names only purposes a suspension can stop (INVALID_ARGUMENT naming each other one): the
    catalogue is the gateway's, so the gateway checks the codes before the case is opened."""
    if path != CREATE or not isinstance(request, dpb.CreateUsageSuspensionCaseRequest):
        return
    allowed = suspendable_purposes(catalogue)
    violations = [FieldViolation(f"usage_suspension_case.purposes[{i}]",
                                 "must be a purpose of the catalogue under which records are provided or used")
                  for i, code in enumerate(request.usage_suspension_case.purposes) if code not in allowed]
    if violations:
        raise InvalidArgument(violations)


@dataclass
class _Suspendable:
    """The suspendable purposes of one catalogue version (recomputed when the catalogue changes)."""

    catalogue: Catalogue | None = None
    codes: frozenset[str] = frozenset()


class Suspensions:
    """One replica's copy of the suspensions in force."""

    def __init__(self, fetch: Fetch, *, refresh_seconds: float = 1.0, max_staleness: float = 10.0,
                 fail_closed: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._fail_closed = fail_closed
        self._refresh_seconds = refresh_seconds
        self._max_staleness = max_staleness
        self._clock = clock
        self._cases: dict[str, Entry] = {}
        self._seen: dict[str, tuple[float, Entry]] = {}
        """Cases seen passing through since the read in progress started: kept over what that read returns."""
        self._index: Mapping[str, frozenset[str]] = {}
        self._read_at = -math.inf
        self._failed_at = -math.inf
        self._lock = asyncio.Lock()
        self._suspendable = _Suspendable()

    def _purposes_of(self, catalogue: Catalogue) -> frozenset[str]:
        if self._suspendable.catalogue is not catalogue:
            self._suspendable = _Suspendable(catalogue, suspendable_purposes(catalogue))
        return self._suspendable.codes

    def decide(self, purpose: str, codes: Iterable[str], catalogue: Catalogue, persons: Iterable[str] = ()) -> bool:
        """Refuse an answer carrying records of a person whose suspension names `purpose` (FAILED_PRECONDITION).
        True when the copy is too old to decide on: `check` reads it first. Synchronous: the hot path of every
        answer with records pays one membership test and one clock read, and a set lookup per 住民票コード only
        while some suspension exists."""
        if purpose not in self._purposes_of(catalogue):
            return False
        if self._fail_closed and self._clock() - self._read_at > self._max_staleness:
            return True
        index = self._index
        if not index:  # no suspension anywhere: nothing per record (a batch answer has 1,000)
            return False
        if (any(purpose in index.get(code, ()) for code in codes if code in index)
                or any(purpose in index.get(person, ()) for person in map(person_of, persons) if person in index)):
            # No personal data in the message: the log entry holds the codes, the case holds the rest.
            raise FailedPrecondition("the person has asked to stop the use or provision of their records under "
                                     "this purpose (利用停止請求)", "USAGE_SUSPENDED", {"purpose": purpose})
        return False

    async def check(self, purpose: str, codes: Iterable[str], catalogue: Catalogue,
                    persons: Iterable[str] = ()) -> None:
        """`decide`, reading the list first when the copy is stale or was never read (UNAVAILABLE if it cannot)."""
        codes, persons = list(codes), list(persons)
        if self.decide(purpose, codes, catalogue, persons):
            await self._read_now()
            self.decide(purpose, codes, catalogue, persons)

    async def _read_now(self) -> None:
        """Read the list before deciding (a stale or never-read copy); UNAVAILABLE when it cannot be read. After
        a failure, calls are refused at once until the next refresh is due (no pile-up of waiting reads)."""
        now = self._clock()
        if now - self._failed_at < self._refresh_seconds:
            raise Unavailable("the usage suspensions cannot be read", "USAGE_SUSPENSIONS_UNKNOWN")
        async with self._lock:
            if self._clock() - self._read_at <= self._max_staleness:
                return
            try:
                await self._read()
            except READ_FAILURES as exc:
                self._failed_at = self._clock()
                logger.error("usage suspensions cannot be read; provisions under suspendable purposes are refused",
                             extra={"error_type": type(exc).__name__})
                raise Unavailable("the usage suspensions cannot be read", "USAGE_SUSPENSIONS_UNKNOWN") from None

    async def refresh(self) -> None:
        async with self._lock:
            await self._read()

    async def _read(self) -> None:
        started = self._clock()
        listed = await self._fetch()
        cases = {s.usage_suspension_case: (frozenset(s.resident_codes), frozenset(s.purposes), frozenset(s.persons))
                 for s in listed}
        # What passed through this replica while the read ran is newer than what the read saw.
        self._seen = {name: seen for name, seen in self._seen.items() if seen[0] >= started}
        for name, (_, entry) in self._seen.items():
            cases[name] = entry
        self._cases = cases
        self._reindex()
        self._read_at = started

    def observe(self, answer: message.Message) -> None:
        """A case answered through this replica: in force here at once (before the answer leaves)."""
        if answer.DESCRIPTOR.full_name != CASE_TYPE:
            return
        assert isinstance(answer, dpb.UsageSuspensionCase)
        known = self._cases.get(answer.name)  # the case answer does not carry the persons: the list does
        entry = (frozenset(answer.resident_codes), frozenset(answer.suspended_purposes),
                 known[2] if known else frozenset())
        self._seen[answer.name] = (self._clock(), entry)
        self._cases[answer.name] = entry
        self._reindex()

    def _reindex(self) -> None:
        index: dict[str, set[str]] = {}
        for codes, purposes, persons in self._cases.values():
            if purposes:
                for key in codes | persons:  # 住民票コード (digits) and resource names never collide
                    index.setdefault(key, set()).update(purposes)
        self._index = {code: frozenset(purposes) for code, purposes in index.items()}

    async def run(self, heartbeat: Heartbeat) -> None:
        """Refresh every `refresh_seconds` until cancelled; a failed read is retried on the next tick."""
        while True:
            try:
                await self.refresh()
                heartbeat.beat()
            except READ_FAILURES as exc:  # the copy ages; `check` fails closed past max_staleness
                logger.warning("usage suspensions refresh failed", extra={"error_type": type(exc).__name__})
            await asyncio.sleep(self._refresh_seconds)
