"""The operator registry (juki_services.gateway.operators): its decision on a verified credential (bound to
the certificate's organisation, registered, active, in effect, roles as the registry holds), and the
replica's in-memory copy, never trusted when older than 5 s."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from juki_services.gateway.operators import OperatorRecord, OperatorRegistry, Snapshot
from jukilib.errors import PermissionDenied, Unavailable
from jukilib.operator_credential import OperatorClaims

NOW = dt.datetime(2026, 11, 26, 1, 0, tzinfo=dt.UTC)
EARLIER = NOW - dt.timedelta(days=30)


def _record(operator_id: str = "kyoiku-0001", *, status: str = "active", roles: frozenset[str] = frozenset(
        {"provision_clerk"}), valid_until: dt.datetime | None = None) -> OperatorRecord:
    return OperatorRecord(operator_id, "kyoiku-iinkai", roles, status, EARLIER, valid_until, EARLIER, EARLIER)


def _claims(operator_id: str = "kyoiku-0001", organization: str = "kyoiku-iinkai",
            roles: frozenset[str] = frozenset({"provision_clerk"})) -> OperatorClaims:
    return OperatorClaims(operator_id, organization, roles, NOW, NOW + dt.timedelta(hours=8), "n" * 32, "k")


def _reason(snapshot: Snapshot, claims: OperatorClaims, organization: str = "kyoiku-iinkai") -> str:
    with pytest.raises(PermissionDenied) as refused:
        snapshot.authenticate(claims, organization, NOW)
    return refused.value.reason


def test_registered_active_operator_gets_the_roles_both_credential_and_registry_hold() -> None:
    snapshot = Snapshot({"kyoiku-0001": _record(roles=frozenset({"provision_clerk", "auditor"}))}, frozenset())
    operator = snapshot.authenticate(_claims(roles=frozenset({"provision_clerk", "administrator"})),
                                     "kyoiku-iinkai", NOW)
    assert (operator.operator_id, operator.roles) == ("kyoiku-0001", frozenset({"provision_clerk"}))


def test_credential_of_another_organisation_than_the_certificate_is_refused() -> None:
    snapshot = Snapshot({"kyoiku-0001": _record()}, frozenset())
    assert _reason(snapshot, _claims(), organization="kikaku-bu") == "CREDENTIAL_ORGANIZATION_MISMATCH"


def test_unregistered_operator_is_refused() -> None:
    assert _reason(Snapshot({}, frozenset()), _claims()) == "OPERATOR_NOT_REGISTERED"


def test_operator_registered_for_another_organisation_is_refused() -> None:
    snapshot = Snapshot({"kyoiku-0001": _record()}, frozenset())
    assert _reason(snapshot, _claims(organization="kikaku-bu"), "kikaku-bu") == "OPERATOR_NOT_REGISTERED"


def test_disabled_operator_is_refused() -> None:
    snapshot = Snapshot({"kyoiku-0001": _record(status="disabled")}, frozenset())
    assert _reason(snapshot, _claims()) == "OPERATOR_DISABLED"


def test_operator_past_their_validity_period_is_refused() -> None:
    snapshot = Snapshot({"kyoiku-0001": _record(valid_until=NOW)}, frozenset())
    assert _reason(snapshot, _claims()) == "OPERATOR_NOT_IN_EFFECT"


def test_disabled_organisation_is_refused_and_others_are_not() -> None:
    snapshot = Snapshot({}, frozenset({"kyoiku-iinkai"}))
    with pytest.raises(PermissionDenied) as refused:
        snapshot.check_organization("kyoiku-iinkai")
    assert refused.value.reason == "ORGANIZATION_DISABLED"
    snapshot.check_organization("kikaku-bu")


# --- the in-memory copy: fresh enough, or refused ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyDatabase:
    """Stands in for jukilib.db.pool.Database: answers with a registry, or fails like a lost server."""

    def __init__(self) -> None:
        self.reads = 0
        self.down = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[object]:
        if self.down:
            raise OSError("connection refused")
        self.reads += 1
        yield self

    async def fetch(self, query: str) -> list[object]:
        return []


async def test_registry_copy_is_used_while_fresh_and_read_again_when_stale() -> None:
    clock, database = Clock(), FlakyDatabase()
    registry = OperatorRegistry(database, max_staleness=5.0, clock=clock)  # type: ignore[arg-type]
    await registry.current()
    clock.now = 5.0
    await registry.current()
    assert database.reads == 1
    clock.now = 5.1
    await registry.current()
    assert database.reads == 2


async def test_registry_copy_too_old_to_trust_refuses_calls_when_it_cannot_be_read() -> None:
    clock, database = Clock(), FlakyDatabase()
    registry = OperatorRegistry(database, max_staleness=5.0, clock=clock)  # type: ignore[arg-type]
    await registry.current()
    database.down = True
    clock.now = 4.0
    await registry.current()  # still fresh enough: a disabling cannot have been missed for 5 s yet
    clock.now = 6.0
    with pytest.raises(Unavailable) as refused:
        await registry.current()
    assert refused.value.reason == "OPERATOR_REGISTRY_UNAVAILABLE"


class DisablingDatabase(FlakyDatabase):
    """A registry in which `kyoiku-iinkai` has been disabled."""

    async def fetch(self, query: str) -> list[object]:
        return [{"organization": "kyoiku-iinkai"}] if "organization_status" in query else []


async def test_system_call_is_decided_on_the_last_copy_without_reading_and_refused_past_its_bound() -> None:
    clock, database = Clock(), FlakyDatabase()
    registry = OperatorRegistry(database, max_staleness=5.0, system_max_staleness=60.0,  # type: ignore[arg-type]
                                clock=clock)
    await registry.check_system_organization("102016")  # nothing read yet: the first read is awaited
    database.down = True
    clock.now = 59.0
    await registry.check_system_organization("102016")  # too old for human work, not for a system's call
    assert database.reads == 1
    clock.now = 60.5
    with pytest.raises(Unavailable) as refused:
        await registry.check_system_organization("102016")
    assert refused.value.reason == "OPERATOR_REGISTRY_UNAVAILABLE"


async def test_system_call_of_a_disabled_organisation_is_refused_on_the_last_copy() -> None:
    clock, database = Clock(), DisablingDatabase()
    registry = OperatorRegistry(database, clock=clock)  # type: ignore[arg-type]
    await registry.refresh()
    database.down = True
    clock.now = 30.0
    with pytest.raises(PermissionDenied) as refused:
        await registry.check_system_organization("kyoiku-iinkai")
    assert refused.value.reason == "ORGANIZATION_DISABLED"
    await registry.check_system_organization("kikaku-bu")
