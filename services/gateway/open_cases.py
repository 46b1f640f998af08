"""Disclosure and correction work names an open case (issue 19; 住基法 30-32 … 30-35, 個人情報保護法 76 … 102).

A purpose with `open_case_required = true` (the disclosure service's reads for a case, the desk's read of a
resident's provision history) is allowed only when the call's case reference (x-juki-case-reference) names a
case of the disclosure service (`disclosureCases/{id}`, `correctionCases/{id}`, `usageSuspensionCases/{id}`, or
the follow-up of a 修正 telling organs of a corrected value, `organNotifications/{id}`) that exists and is open:
the person's records are read for the person's own request (or that follow-up) while it is handled, never under
a made-up or finished case. Otherwise PERMISSION_DENIED (`CASE_REFERENCE_NOT_A_CASE`, `CASE_NOT_FOUND`,
`CASE_NOT_OPEN`), logged like every refusal; UNAVAILABLE (`OPEN_CASE_UNKNOWN`) when the disclosure service cannot
say, so the work waits rather than reading unchecked (fail closed).

The disclosure service decides what "open" means (its state machines, `GetCaseStatus`, which the gateway
calls with its own certificate and exposes to nobody). A positive answer is kept `ttl` seconds (5), so a
case's dozens of reads cost one question; concurrent questions about one case share one call. A case answer
passing through this replica (close, reject, any transition) drops the case from the cache at once, so a
case closed here is refused here from the next call; a replica that did not see the closing call may serve
the case for what is left of its `ttl`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import message

from juki.disclosure.v1 import disclosure_pb2 as dpb
from jukilib.errors import PermissionDenied, Unavailable

CASE_NAME = re.compile(r"^(disclosureCases|correctionCases|usageSuspensionCases|organNotifications)/"
                       r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
"""A case of the disclosure service, as the service names it (lower-case UUIDs)."""
CASE_TYPES = frozenset(t.DESCRIPTOR.full_name for t in (dpb.DisclosureCase, dpb.CorrectionCase,
                                                        dpb.UsageSuspensionCase))
GET_CASE_STATUS = "GetCaseStatus"
"""The method only the gateway calls (not routed)."""

Fetch = Callable[[str], Awaitable[dpb.CaseStatus]]


class OpenCases:
    """One replica's check that a case reference names an open case."""

    def __init__(self, fetch: Fetch, *, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._clock = clock
        self._open_until: dict[str, float] = {}
        self._asking: dict[str, asyncio.Future[dpb.CaseStatus]] = {}

    async def check(self, case_reference: str) -> None:
        """Nothing when `case_reference` names an open case; PermissionDenied or Unavailable otherwise."""
        if not CASE_NAME.match(case_reference):
            raise PermissionDenied("this purpose requires the case reference of a disclosure, correction or "
                                   "usage-suspension case (x-juki-case-reference)", "CASE_REFERENCE_NOT_A_CASE")
        if self._open_until.get(case_reference, -1.0) > self._clock():
            return
        status = await self._status(case_reference)
        if not status.open:
            # No personal data: the state names where the case stands, the log entry holds the reference.
            raise PermissionDenied("the case named by the case reference is not open", "CASE_NOT_OPEN",
                                   {"state": status.state})
        if len(self._open_until) >= 10_000:
            self._open_until.clear()
        self._open_until[case_reference] = self._clock() + self._ttl

    async def _status(self, name: str) -> dpb.CaseStatus:
        """The disclosure service's answer; callers asking at once about one case share one call."""
        asking = self._asking.get(name)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(name))
            self._asking[name] = asking
            asking.add_done_callback(lambda done: self._forget(name, done))
        return await asyncio.shield(asking)

    def _forget(self, name: str, done: asyncio.Future[dpb.CaseStatus]) -> None:
        self._asking.pop(name, None)
        if not done.cancelled():
            done.exception()  # observed here: every waiter may have gone (their own deadline)

    async def _ask(self, name: str) -> dpb.CaseStatus:
        try:
            return await self._fetch(name)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise PermissionDenied("the case reference names no case", "CASE_NOT_FOUND") from None
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise PermissionDenied("the case reference names no case", "CASE_REFERENCE_NOT_A_CASE") from None
            raise Unavailable("whether the case is open cannot be checked now", "OPEN_CASE_UNKNOWN") from None
        except (OSError, TimeoutError):
            raise Unavailable("whether the case is open cannot be checked now", "OPEN_CASE_UNKNOWN") from None

    def observe(self, answer: message.Message) -> None:
        """A case answered through this replica may have changed state: ask again before the next read."""
        if answer.DESCRIPTOR.full_name in CASE_TYPES:
            self._open_until.pop(getattr(answer, "name"), None)  # noqa: B009 - every case type has a name
