"""The gateway's copy of the usage suspensions in force (juki_services.gateway.suspensions); no servers."""

from __future__ import annotations

import pytest

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki_services.gateway.policy import DEFAULT_CATALOGUE, Catalogue, load_catalogue
from juki_services.gateway.suspensions import Suspensions, suspendable_purposes
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.errors import FailedPrecondition, Unavailable

SCHOLARSHIP, LICENCE = "EDU-SCHOLARSHIP-30-15-2-2", "EDU-LICENCE-30-15-2-1"
PERSON, FORMER, OTHER = "11111111111", "22222222222", "33333333333"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Disclosure:
    """What the disclosure service lists, and whether it answers."""

    def __init__(self) -> None:
        self.listed: list[dpb.UsageSuspension] = []
        self.down = False
        self.reads = 0

    async def __call__(self) -> list[dpb.UsageSuspension]:
        self.reads += 1
        if self.down:
            raise OSError("unreachable")
        return list(self.listed)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities())


def _suspension(case: str, purposes: list[str], codes: tuple[str, ...] = (PERSON, FORMER)) -> dpb.UsageSuspension:
    return dpb.UsageSuspension(usage_suspension_case=case, resident_codes=codes, purposes=purposes)


def test_only_purposes_that_provide_records_to_organs_can_be_suspended(catalogue: Catalogue) -> None:
    codes = suspendable_purposes(catalogue)
    assert {SCHOLARSHIP, LICENCE, "TAX-NUMBER-30-15-1-2"} <= codes
    assert not {"CS-NOTIFY-30-6", "DISCLOSURE-RECORDS-30-32", "USAGE-SUSPENSION-98", "AUDIT-OPERATION-LOG"} & codes


async def test_every_code_of_the_person_is_refused_under_the_named_purpose_only(catalogue: Catalogue) -> None:
    disclosure, clock = Disclosure(), Clock()
    disclosure.listed = [_suspension("usageSuspensionCases/a", [SCHOLARSHIP])]
    suspensions = Suspensions(disclosure, clock=clock)
    await suspensions.refresh()
    for code in (PERSON, FORMER):
        with pytest.raises(FailedPrecondition) as refused:
            await suspensions.check(SCHOLARSHIP, [OTHER, code], catalogue)
        assert refused.value.reason == "USAGE_SUSPENDED" and code not in refused.value.message
    await suspensions.check(LICENCE, [PERSON], catalogue)
    await suspensions.check(SCHOLARSHIP, [OTHER], catalogue)


async def test_the_person_is_refused_by_their_resources_whatever_code_reached_them(catalogue: Catalogue) -> None:
    """住基法 30-4: a code given after the case was opened is not in the case; the person's resource is."""
    disclosure, clock = Disclosure(), Clock()
    listed = _suspension("usageSuspensionCases/p", [SCHOLARSHIP], codes=(PERSON,))
    listed.persons.extend(["residents/r1", "annexResidents/a1"])
    disclosure.listed = [listed]
    suspensions = Suspensions(disclosure, clock=clock)
    await suspensions.refresh()
    for name in ("residents/r1", "residents/r1/versions/3", "annexResidents/a1/versions/1"):
        with pytest.raises(FailedPrecondition):
            await suspensions.check(SCHOLARSHIP, [OTHER], catalogue, [name])
    await suspensions.check(SCHOLARSHIP, [OTHER], catalogue, ["residents/r2", "residents/r2/versions/1"])
    await suspensions.check(LICENCE, [OTHER], catalogue, ["residents/r1"])
    # A case answer passing through keeps the persons the list gave (the answer does not carry them).
    suspensions.observe(dpb.UsageSuspensionCase(name="usageSuspensionCases/p", resident_codes=[PERSON],
                                                suspended_purposes=[SCHOLARSHIP]))
    with pytest.raises(FailedPrecondition):
        await suspensions.check(SCHOLARSHIP, [OTHER], catalogue, ["residents/r1"])


async def test_a_case_passing_through_is_in_force_at_once_and_survives_a_read_that_missed_it(
        catalogue: Catalogue) -> None:
    disclosure, clock = Disclosure(), Clock()
    suspensions = Suspensions(disclosure, clock=clock)
    await suspensions.refresh()
    case = dpb.UsageSuspensionCase(name="usageSuspensionCases/b", resident_codes=[PERSON],
                                   suspended_purposes=[SCHOLARSHIP])
    suspensions.observe(case)
    with pytest.raises(FailedPrecondition):
        await suspensions.check(SCHOLARSHIP, [PERSON], catalogue)

    class Racing(Disclosure):
        async def __call__(self) -> list[dpb.UsageSuspension]:
            clock.now += 0.5
            suspensions.observe(case)  # the case is opened while the read is under way, and the read misses it
            return []

    suspensions._fetch = Racing()
    await suspensions.refresh()
    with pytest.raises(FailedPrecondition):
        await suspensions.check(SCHOLARSHIP, [PERSON], catalogue)
    decided = dpb.UsageSuspensionCase(name="usageSuspensionCases/b", resident_codes=[PERSON])
    suspensions.observe(decided)  # decided not to stop and notified: lifted at once
    await suspensions.check(SCHOLARSHIP, [PERSON], catalogue)


async def test_a_stale_copy_fails_closed_for_suspendable_purposes_only(catalogue: Catalogue) -> None:
    disclosure, clock = Disclosure(), Clock()
    suspensions = Suspensions(disclosure, clock=clock, max_staleness=10.0)
    await suspensions.refresh()
    disclosure.down = True
    clock.now += 11
    with pytest.raises(Unavailable) as refused:
        await suspensions.check(SCHOLARSHIP, [OTHER], catalogue)
    assert refused.value.reason == "USAGE_SUSPENSIONS_UNKNOWN"
    reads = disclosure.reads
    with pytest.raises(Unavailable):  # refused at once, no second read within the refresh interval
        await suspensions.check(SCHOLARSHIP, [OTHER], catalogue)
    assert disclosure.reads == reads
    await suspensions.check("CS-NOTIFY-30-6", [OTHER], catalogue)  # no suspension can name it
    disclosure.down = False
    clock.now += 2
    await suspensions.check(SCHOLARSHIP, [OTHER], catalogue)  # read again inline, then decided


async def test_a_never_read_copy_reads_before_deciding(catalogue: Catalogue) -> None:
    disclosure = Disclosure()
    disclosure.listed = [_suspension("usageSuspensionCases/c", [LICENCE])]
    suspensions = Suspensions(disclosure, clock=Clock())
    with pytest.raises(FailedPrecondition):
        await suspensions.check(LICENCE, [FORMER], catalogue)


async def test_without_a_disclosure_service_the_gateway_may_decide_on_what_it_has(catalogue: Catalogue) -> None:
    # The lookup benchmark runs no disclosure service, so no case can exist; fail_closed off decides on the
    # (empty) copy instead of refusing for want of a read.
    disclosure = Disclosure()
    disclosure.down = True
    suspensions = Suspensions(disclosure, clock=Clock(), fail_closed=False)
    await suspensions.check(SCHOLARSHIP, [PERSON], catalogue)
    assert disclosure.reads == 0
