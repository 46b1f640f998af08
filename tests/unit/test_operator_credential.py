"""Operator credentials (jukilib.operator_credential): only a genuine, unexpired credential of
reasonable lifetime is accepted, and each refusal names its reason (all UNAUTHENTICATED)."""

from __future__ import annotations

import base64
import datetime as dt
import json

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from jukilib.errors import Unauthenticated
from jukilib.operator_credential import issue, verify

NOW = dt.datetime(2026, 11, 26, 1, 0, tzinfo=dt.UTC)
KEY = Ed25519PrivateKey.generate()
CLERK = frozenset({"provision_clerk"})


def _refusal(token: str, *, now: dt.datetime = NOW, key: Ed25519PrivateKey = KEY,
             max_lifetime: dt.timedelta = dt.timedelta(hours=8)) -> str:
    with pytest.raises(Unauthenticated) as refused:
        verify(token, key.public_key(), now=now, max_lifetime=max_lifetime)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    return refused.value.reason


def test_issued_credential_verifies_to_its_claims() -> None:
    token = issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW)
    claims = verify(token, KEY.public_key(), now=NOW + dt.timedelta(hours=7))
    assert (claims.operator, claims.organization, claims.roles) == ("kyoiku-0001", "kyoiku-iinkai", CLERK)
    assert claims.expires_at - claims.issued_at == dt.timedelta(hours=8)
    assert len(claims.nonce) == 32


def test_two_credentials_of_one_operator_differ_by_their_nonce() -> None:
    assert issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW) != issue(
        KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW)


def test_credential_with_altered_claims_is_refused() -> None:
    prefix, payload, signature = issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["administrator"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _refusal(f"{prefix}.{forged}.{signature}") == "CREDENTIAL_SIGNATURE_INVALID"


def test_credential_signed_with_another_key_is_refused() -> None:
    token = issue(Ed25519PrivateKey.generate(), "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW)
    assert _refusal(token) == "CREDENTIAL_SIGNATURE_INVALID"


def test_expired_credential_is_refused() -> None:
    token = issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW, lifetime=dt.timedelta(hours=1))
    assert _refusal(token, now=NOW + dt.timedelta(hours=1)) == "CREDENTIAL_EXPIRED"


def test_credential_living_longer_than_the_maximum_is_refused() -> None:
    token = issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW, lifetime=dt.timedelta(hours=9))
    assert _refusal(token) == "CREDENTIAL_LIFETIME_TOO_LONG"
    assert _refusal(issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW),
                    max_lifetime=dt.timedelta(hours=1)) == "CREDENTIAL_LIFETIME_TOO_LONG"


def test_credential_issued_in_the_future_is_refused() -> None:
    token = issue(KEY, "kyoiku-0001", "kyoiku-iinkai", CLERK, now=NOW + dt.timedelta(minutes=5))
    assert _refusal(token) == "CREDENTIAL_NOT_YET_VALID"


@pytest.mark.parametrize("token", ["", "x", "jkop1.a.b", "jkop1..", "other.e30.e30", "jkop1.%%%.###",
                                   "jkop1." + "A" * 3000 + ".B"])
def test_malformed_credential_is_refused(token: str) -> None:
    assert _refusal(token) in ("CREDENTIAL_MALFORMED", "CREDENTIAL_SIGNATURE_INVALID")


def test_credential_cannot_be_issued_for_unknown_roles_or_bad_ids() -> None:
    with pytest.raises(ValueError, match="roles"):
        issue(KEY, "kyoiku-0001", "kyoiku-iinkai", frozenset({"superuser"}), now=NOW)
    with pytest.raises(ValueError, match="operator id"):
        issue(KEY, "山田", "kyoiku-iinkai", CLERK, now=NOW)
