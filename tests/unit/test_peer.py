"""Reading the identity in a TLS peer's certificate (jukilib.grpc.peer)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jukilib.devcerts import DevPki, ensure_dev_pki
from jukilib.grpc.peer import Peer, certificate_identity, common_name, organisation_from_certificate, peer_of

CLIENTS = {"maebashi-cs": "102016", "kyoiku-iinkai": "kyoiku-iinkai", "auditor": "audit-office"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("peer") / "pki", servers=("gateway",), clients=CLIENTS)


class _Context:
    """The part of a servicer context `peer_of` reads."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def _peer(auth: dict[str, list[bytes]]) -> Peer | None:
    context: Any = _Context(auth)
    return peer_of(context)


def test_organisation_from_certificate_returns_the_san_org(pki: DevPki) -> None:
    for caller, code in CLIENTS.items():
        assert organisation_from_certificate(pki.clients[caller].cert.read_bytes()) == code


def test_organisation_from_certificate_falls_back_to_the_common_name(pki: DevPki) -> None:
    assert organisation_from_certificate(pki.servers["gateway"].cert.read_bytes()) == "gateway"


def test_organisation_from_certificate_of_garbage_is_none() -> None:
    assert organisation_from_certificate(b"not a certificate") is None
    assert common_name(b"") is None


def test_common_name(pki: DevPki) -> None:
    assert common_name(pki.clients["maebashi-cs"].cert.read_bytes()) == "102016"
    assert common_name(pki.ca_cert.read_bytes()) == "juki development CA (Gunma prefecture)"


def test_identity_carries_the_fingerprint_of_the_der_certificate(pki: DevPki) -> None:
    pem = pki.clients["auditor"].cert.read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert certificate_identity(pem) == Peer(common_name="audit-office", organisation="audit-office",
                                             fingerprint=hashlib.sha256(der).hexdigest())


def test_peer_of_a_call_reads_its_client_certificate(pki: DevPki) -> None:
    peer = _peer({"x509_pem_cert": [pki.servers["gateway"].cert.read_bytes()]})
    assert peer is not None and (peer.common_name, peer.organisation) == ("gateway", "gateway")


@pytest.mark.parametrize("auth", [{}, {"x509_pem_cert": []}, {"x509_pem_cert": [b"garbage"]}])
def test_peer_of_a_call_without_a_readable_certificate_is_none(auth: dict[str, list[bytes]]) -> None:
    assert _peer(auth) is None

