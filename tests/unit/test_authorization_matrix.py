"""The authorisation matrix, generated from the shipped catalogue: for every organisation × purpose ×
method the gateway exposes × operator role (or no operator), the decision is "allowed" exactly when
the catalogue file says so. The expectation is computed from the raw TOML, not from the code under test.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from typing import Any

import pytest

from juki_services.gateway.app import exposed_methods
from juki_services.gateway.policy import DEFAULT_CATALOGUE, load_catalogue
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.errors import PermissionDenied
from jukilib.operator_credential import ROLES

TODAY = dt.date(2026, 12, 1)
RAW = tomllib.loads(DEFAULT_CATALOGUE.read_text(encoding="utf-8"))
KINDS = {**{m.code6: "municipality" for m in gunma_municipalities()},
         **{o["code"]: o["kind"] for o in RAW["organizations"]}}
PURPOSES = {p["code"]: p for p in RAW["purposes"]}
METHODS = exposed_methods()
# No operator (a system's call), then an operator holding exactly one role.
OPERATORS: list[frozenset[str] | None] = [None, *(frozenset({role}) for role in ROLES)]
CATALOGUE = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities())


def _expected(organization: str, entry: dict[str, Any], method: str, roles: frozenset[str] | None) -> bool:
    recipients = set(entry["recipients"])
    in_effect = entry["valid_from"] <= TODAY and ("valid_until" not in entry or entry["valid_until"] >= TODAY)
    needed = set(entry.get("operator_roles", []))
    role_ok = not needed or (roles is not None and bool(needed & roles))
    granted = organization in recipients or f"kind:{KINDS[organization]}" in recipients
    return granted and method in entry["methods"] and role_ok and in_effect


def _allowed(organization: str, purpose: str, method: str, roles: frozenset[str] | None) -> bool:
    try:
        CATALOGUE.authorize(organization, f"/{method}", purpose, "CASE-1", TODAY, operator_roles=roles)
    except PermissionDenied:
        return False
    return True


@pytest.mark.parametrize("purpose", sorted(PURPOSES))
@pytest.mark.parametrize("organization", sorted(KINDS))
def test_decision_matches_the_catalogue_for_every_method_and_role(organization: str, purpose: str) -> None:
    wrong = [(method, sorted(roles) if roles is not None else "no operator")
             for method in METHODS for roles in OPERATORS
             if _allowed(organization, purpose, method, roles) != _expected(organization, PURPOSES[purpose], method,
                                                                            roles)]
    assert not wrong, f"{organization} × {purpose}: decisions differ from the catalogue for {wrong[:5]}"


def test_every_method_a_purpose_names_is_exposed_by_the_gateway() -> None:
    named = {method for entry in PURPOSES.values() for method in entry["methods"]}
    assert named <= set(METHODS), sorted(named - set(METHODS))


def test_matrix_covers_allowed_and_denied_calls_of_every_purpose() -> None:
    for code, entry in PURPOSES.items():
        allowed = [(o, m, r) for o in KINDS for m in entry["methods"] for r in OPERATORS
                   if _expected(o, entry, m, r)]
        assert allowed, f"{code} allows nobody: the matrix would prove nothing about it"
