"""Behaviour of the development PKI generator (jukilib.devcerts)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    ClientVerifier,
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from jukilib.devcerts import DevPki, ensure_dev_pki, issue_untrusted_client
from jukilib.grpc.peer import organisation_from_certificate

SERVERS = ("gateway", "identity", "annex", "disclosure", "agency")
CLIENTS = {
    "maebashi-cs": "102016",
    "kyoiku-iinkai": "kyoiku-iinkai",
    "disclosure-desk": "disclosure-desk",
    "auditor": "audit-office",
}


def _make(directory: Path, *, force: bool = False) -> DevPki:
    return ensure_dev_pki(directory, servers=SERVERS, clients=CLIENTS, force=force)


def _all_files(pki: DevPki) -> list[Path]:
    leaves = [*pki.servers.values(), *pki.clients.values()]
    return [pki.ca_cert, pki.ca_key, *(p for pair in leaves for p in (pair.cert, pair.key))]


def _mtimes(pki: DevPki) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in _all_files(pki)}


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _store(pki: DevPki) -> Store:
    return Store([_load(pki.ca_cert)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _server_verifier(pki: DevPki, subject: x509.DNSName | x509.IPAddress) -> ServerVerifier:
    return PolicyBuilder().store(_store(pki)).time(_now()).build_server_verifier(subject)


def _client_verifier(pki: DevPki) -> ClientVerifier:
    return PolicyBuilder().store(_store(pki)).time(_now()).build_client_verifier()


LOOPBACK = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return _make(tmp_path / "pki")


def test_server_certificates_verify_against_the_ca_for_every_san(pki: DevPki) -> None:
    for name, pair in pki.servers.items():
        leaf = _load(pair.cert)
        for subject in (x509.DNSName(name), x509.DNSName("localhost"), LOOPBACK):
            verifier = _server_verifier(pki, subject)
            chain = verifier.verify(leaf, [])
            assert chain[-1] == _load(pki.ca_cert)


def test_client_certificates_verify_and_carry_the_org_uri(pki: DevPki) -> None:
    verifier = _client_verifier(pki)
    for caller, pair in pki.clients.items():
        verified = verifier.verify(_load(pair.cert), [])
        assert verified.subjects == [x509.UniformResourceIdentifier(f"urn:juki:org:{CLIENTS[caller]}")]


def test_server_certificates_also_verify_as_client_certificates(pki: DevPki) -> None:
    verifier = _client_verifier(pki)
    for pair in pki.servers.values():
        verifier.verify(_load(pair.cert), [])


def test_client_certificate_is_not_accepted_as_a_server_certificate(pki: DevPki) -> None:
    verifier = _server_verifier(pki, x509.DNSName("localhost"))
    with pytest.raises(VerificationError):
        verifier.verify(_load(pki.clients["maebashi-cs"].cert), [])


def test_untrusted_client_does_not_verify_against_the_dev_ca(pki: DevPki, tmp_path: Path) -> None:
    foreign = issue_untrusted_client(tmp_path / "pki", "intruder", "102016")
    verifier = _client_verifier(pki)
    with pytest.raises(VerificationError):
        verifier.verify(_load(foreign.cert), [])
    assert foreign.cert.parent == tmp_path / "pki" / "untrusted"
    assert organisation_from_certificate(foreign.cert.read_bytes()) == "102016"


def test_ca_has_the_expected_subject_and_constraints(pki: DevPki) -> None:
    ca = _load(pki.ca_cert)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "juki development CA (Gunma prefecture)"
    )
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "群馬県 (development)"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= dt.timedelta(days=5 * 365)


def test_leaf_usages_and_subjects(pki: DevPki) -> None:
    server = _load(pki.servers["identity"].cert)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = _load(pki.clients["auditor"].cert)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "juki caller"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "auditor"
    assert server.not_valid_after_utc - server.not_valid_before_utc <= dt.timedelta(days=825)


def test_second_call_does_not_rewrite_files(pki: DevPki, tmp_path: Path) -> None:
    before = _mtimes(pki)
    again = _make(tmp_path / "pki")
    assert again == pki
    assert _mtimes(again) == before


def test_force_regenerates_everything(pki: DevPki, tmp_path: Path) -> None:
    old_ca = pki.ca_cert.read_bytes()
    renewed = _make(tmp_path / "pki", force=True)
    assert renewed.ca_cert.read_bytes() != old_ca
    verifier = _client_verifier(renewed)
    verifier.verify(_load(renewed.clients["auditor"].cert), [])


def test_missing_leaf_is_reissued_with_the_same_ca(pki: DevPki, tmp_path: Path) -> None:
    ca_before = pki.ca_cert.read_bytes()
    before = _mtimes(pki)
    missing = pki.servers["gateway"]
    old_cert = missing.cert.read_bytes()
    missing.cert.unlink()

    again = _make(tmp_path / "pki")

    assert again.ca_cert.read_bytes() == ca_before
    new_cert = missing.cert.read_bytes()
    assert new_cert != old_cert
    verifier = _server_verifier(again, x509.DNSName("gateway"))
    verifier.verify(_load(missing.cert), [])
    untouched = {p: t for p, t in _mtimes(again).items() if p not in (missing.cert, missing.key)}
    assert untouched == {p: t for p, t in before.items() if p not in (missing.cert, missing.key)}


def test_missing_ca_reissues_every_leaf(pki: DevPki, tmp_path: Path) -> None:
    pki.ca_key.unlink()
    again = _make(tmp_path / "pki")
    verifier = _client_verifier(again)
    for pair in again.clients.values():
        verifier.verify(_load(pair.cert), [])


def test_new_leaf_for_an_added_caller_uses_the_existing_ca(pki: DevPki, tmp_path: Path) -> None:
    ca_before = pki.ca_cert.read_bytes()
    bigger = ensure_dev_pki(tmp_path / "pki", servers=SERVERS, clients={**CLIENTS, "takasaki-cs": "102024"})
    assert bigger.ca_cert.read_bytes() == ca_before
    assert organisation_from_certificate(bigger.clients["takasaki-cs"].cert.read_bytes()) == "102024"


def test_private_keys_are_mode_0600_and_directory_0700(pki: DevPki, tmp_path: Path) -> None:
    keys = [pki.ca_key, *(pair.key for pair in (*pki.servers.values(), *pki.clients.values()))]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700


def test_no_temporary_files_are_left_behind(pki: DevPki, tmp_path: Path) -> None:
    leftovers = [p for p in (tmp_path / "pki").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_unsafe_names_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file name"):
        ensure_dev_pki(tmp_path, servers=["../evil"], clients={})
