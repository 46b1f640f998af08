"""Operator credentials: who is at the terminal, signed by the prefecture's operator-authentication key.

The real Juki-net authenticates an operator by palm vein at the terminal (生体認証; 技術的基準
平成14年総務省告示第334号: 操作者の識別及び認証); the authentication server then vouches for the operator.
In juki that voucher is a short-lived credential signed with the prefecture's operator-authentication
key (Ed25519). The gateway holds only the public key, so it can check a credential but never mint one.

Format: `jkop1.<base64url(JSON claims)>.<base64url(signature)>`; the signature covers a domain tag
and the claims bytes exactly as sent. Claims:

- `sub`   operator id (an opaque staff id, never a name: it goes to the operation log),
- `org`   organisation code; the gateway requires it to equal the client certificate's organisation,
- `roles` the roles the session asks for (the gateway grants only those the registry still holds),
- `iat`, `exp`  issue and expiry time (Unix seconds); a lifetime beyond the configured maximum is refused,
- `nonce` 128 random bits, so no two credentials are alike and a credential can be named in an audit,
- `kid`   the id of the signing key (rotation).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from jukilib.errors import Unauthenticated

CREDENTIAL_KEY = "x-juki-operator-credential"
ROLES = ("provision_clerk", "disclosure_clerk", "auditor", "administrator", "report_clerk",
         "retention_clerk", "sre")
PREFIX = "jkop1"
DOMAIN_TAG = b"juki-operator-credential-v1\x00"
DEFAULT_LIFETIME = dt.timedelta(hours=8)
CLOCK_SKEW = dt.timedelta(seconds=30)
MAX_TOKEN_LENGTH = 2048
OPERATOR_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


@dataclass(frozen=True)
class OperatorClaims:
    """What a verified credential says."""

    operator: str
    organization: str
    roles: frozenset[str]
    issued_at: dt.datetime
    expires_at: dt.datetime
    nonce: str
    key_id: str


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The operator-authentication private key (PEM); only the authentication step holds it."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the operator-authentication key must be an Ed25519 private key")
    return key


def load_verification_key(path: Path) -> Ed25519PublicKey:
    """The public key that checks credentials (a private key file is accepted too; its public half is used)."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the operator-authentication key must be an Ed25519 public key")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: Ed25519PrivateKey, operator: str, organization: str, roles: frozenset[str] | set[str], *,
          now: dt.datetime | None = None, lifetime: dt.timedelta = DEFAULT_LIFETIME) -> str:
    """A signed credential for `operator` of `organization` asking for `roles`, valid for `lifetime`."""
    if not OPERATOR_ID.match(operator):
        raise ValueError("operator id must be 2-64 characters of a-z, 0-9, '.', '_', '-'")
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles must be a non-empty subset of {', '.join(ROLES)}")
    issued = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    claims = {"sub": operator, "org": organization, "roles": sorted(roles), "iat": int(issued.timestamp()),
              "exp": int((issued + lifetime).timestamp()), "nonce": secrets.token_hex(16),
              "kid": key_id_of(key.public_key())}
    payload = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return f"{PREFIX}.{_b64(payload)}.{_b64(key.sign(DOMAIN_TAG + payload))}"


def _refuse(message: str, reason: str) -> Unauthenticated:
    return Unauthenticated(f"operator credential refused: {message}", reason)


def _signed_claims(token: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    parts = token.split(".")
    if len(token) > MAX_TOKEN_LENGTH or len(parts) != 3 or parts[0] != PREFIX:
        raise _refuse("not a juki operator credential", "CREDENTIAL_MALFORMED")
    try:
        payload, signature = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise _refuse("not a juki operator credential", "CREDENTIAL_MALFORMED") from None
    try:
        public_key.verify(signature, DOMAIN_TAG + payload)
    except InvalidSignature:
        raise _refuse("signature is not valid", "CREDENTIAL_SIGNATURE_INVALID") from None
    try:
        claims = json.loads(payload)
    except ValueError:
        raise _refuse("claims are not readable", "CREDENTIAL_MALFORMED") from None
    if not isinstance(claims, dict):
        raise _refuse("claims are not readable", "CREDENTIAL_MALFORMED")
    return claims


def _parse_claims(claims: dict[str, Any]) -> OperatorClaims:
    try:
        roles = claims["roles"]
        parsed = OperatorClaims(
            operator=str(claims["sub"]), organization=str(claims["org"]),
            roles=frozenset(str(r) for r in roles) if isinstance(roles, list) else frozenset(),
            issued_at=dt.datetime.fromtimestamp(int(claims["iat"]), dt.UTC),
            expires_at=dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC),
            nonce=str(claims["nonce"]), key_id=str(claims["kid"]))
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        raise _refuse("claims are incomplete", "CREDENTIAL_MALFORMED") from None
    if not OPERATOR_ID.match(parsed.operator) or not parsed.roles or not parsed.roles <= set(ROLES):
        raise _refuse("claims are incomplete", "CREDENTIAL_MALFORMED")
    return parsed


def genuine_claims(token: str, public_key: Ed25519PublicKey) -> OperatorClaims:
    """The claims of a credential signed by the operator-authentication key, in force or not."""
    claims = _parse_claims(_signed_claims(token, public_key))
    if claims.key_id != key_id_of(public_key):
        raise _refuse("signed with another key", "CREDENTIAL_SIGNATURE_INVALID")
    return claims


def verify(token: str, public_key: Ed25519PublicKey, *, now: dt.datetime,
           max_lifetime: dt.timedelta = DEFAULT_LIFETIME) -> OperatorClaims:
    """The claims of a genuine credential in force at `now`; Unauthenticated with a reason otherwise."""
    return check_in_force(genuine_claims(token, public_key), now=now, max_lifetime=max_lifetime)


def check_in_force(claims: OperatorClaims, *, now: dt.datetime, max_lifetime: dt.timedelta) -> OperatorClaims:
    """`claims` if their lifetime is acceptable and covers `now`; Unauthenticated with a reason otherwise."""
    if claims.expires_at - claims.issued_at > max_lifetime or claims.expires_at <= claims.issued_at:
        raise _refuse("lifetime exceeds the maximum", "CREDENTIAL_LIFETIME_TOO_LONG")
    if claims.issued_at > now + CLOCK_SKEW:
        raise _refuse("issued in the future", "CREDENTIAL_NOT_YET_VALID")
    if claims.expires_at <= now:
        raise _refuse("expired; log in again", "CREDENTIAL_EXPIRED")
    return claims
