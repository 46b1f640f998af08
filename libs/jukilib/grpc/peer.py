"""Who is on the other end of a call: the identity in the TLS peer's certificate (every juki server
requires mutual TLS).

A caller's certificate (issued by the prefecture's CA) names the calling organisation in a SAN URI
`urn:juki:org:<code>` and in its CN; a service's certificate names the service in its CN. `peer_of` is
the one way to read it: the gateway takes the organisation and the fingerprint (its deny list of
revoked certificates), a backend the CN (only the gateway may call it).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from grpc import aio

ORG_URI_PREFIX = "urn:juki:org:"
PEM_CERT_KEY = "x509_pem_cert"
"""The auth-context property holding the peer's certificate as PEM."""


@dataclass(frozen=True)
class Peer:
    """The identity in a peer's certificate."""

    common_name: str
    """The subject CN ('' when it has none)."""
    organisation: str
    """The organisation code: the `urn:juki:org:<code>` SAN URI, else the CN."""
    fingerprint: str
    """SHA-256 of the certificate (DER), in hex."""


def peer_of(context: aio.ServicerContext[Any, Any]) -> Peer | None:
    """The identity in the TLS client certificate of the call, None without one (or an unreadable one)."""
    pem = next(iter(context.auth_context().get(PEM_CERT_KEY) or ()), None)
    return certificate_identity(pem) if pem is not None else None


@functools.lru_cache(maxsize=4096)
def certificate_identity(pem: bytes) -> Peer | None:
    """The identity in a PEM certificate, None if it cannot be parsed. Parsed once per certificate: a
    caller presents the same one on every call."""
    cert = _parse_pem(pem)
    if cert is None:
        return None
    name = _subject_common_name(cert) or ""
    organisation = next((uri.removeprefix(ORG_URI_PREFIX) for uri in _san_uris(cert)
                         if uri.startswith(ORG_URI_PREFIX) and len(uri) > len(ORG_URI_PREFIX)), name)
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Peer(common_name=name, organisation=organisation, fingerprint=fingerprint)


def organisation_from_certificate(pem: bytes) -> str | None:
    """The org code of a PEM leaf: its `urn:juki:org:<code>` SAN URI, else its CN, else None."""
    identity = certificate_identity(pem)
    return (identity.organisation or None) if identity is not None else None


def common_name(pem: bytes) -> str | None:
    """The subject common name of a PEM certificate, or None if absent or unparsable."""
    identity = certificate_identity(pem)
    return (identity.common_name or None) if identity is not None else None


def _parse_pem(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _subject_common_name(cert: x509.Certificate) -> str | None:
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
