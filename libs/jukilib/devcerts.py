"""Development PKI for juki: one CA, a server certificate per service, a client certificate per caller.

Every juki service speaks mutual TLS.  For development and tests this module creates, with the
``cryptography`` package, a small private PKI under one directory::

    ca.crt / ca.key                 ECDSA P-256 CA "juki development CA (Gunma prefecture)"
    server/<service>.crt|.key       CN=<service>, SAN localhost, <service>, 127.0.0.1, ::1;
                                    EKU serverAuth + clientAuth (services call each other with it)
    client/<caller>.crt|.key        CN=<organisation code>, O="juki caller", OU=<caller>,
                                    SAN URI urn:juki:org:<organisation code>; EKU clientAuth

:func:`ensure_dev_pki` is idempotent (``juki up`` calls it on every start): existing files are kept,
missing leaves are issued with the existing CA, and only a missing CA causes a full re-issue.
Private keys are unencrypted PKCS#8 PEM, mode 0600, written atomically.

The identity in these certificates is read by :mod:`jukilib.grpc.peer` (``urn:juki:org:<code>``
is its convention), as in production.

:func:`issue_untrusted_client` makes a client certificate from a foreign CA, for tests that prove
such a certificate cannot connect.  None of this is meant for production keys.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jukilib.grpc.peer import ORG_URI_PREFIX

__all__ = [
    "CertPair",
    "DevPki",
    "ensure_dev_pki",
    "issue_untrusted_client",
]

CA_COMMON_NAME = "juki development CA (Gunma prefecture)"
CA_ORGANISATION = "群馬県 (development)"
UNTRUSTED_CA_COMMON_NAME = "juki untrusted test CA (not the development CA)"
CLIENT_ORGANISATION = "juki caller"
CA_VALIDITY = dt.timedelta(days=5 * 365 + 1)
LEAF_VALIDITY = dt.timedelta(days=365)
CLOCK_SKEW = dt.timedelta(minutes=5)
DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644


@dataclass(frozen=True)
class CertPair:
    """Paths of a PEM certificate and its PEM private key."""

    cert: Path
    key: Path

    def exists(self) -> bool:
        """Whether both files are present."""
        return self.cert.is_file() and self.key.is_file()


@dataclass(frozen=True)
class DevPki:
    """Paths of the development PKI: the CA plus server and client leaves keyed by name."""

    ca_cert: Path
    ca_key: Path
    servers: dict[str, CertPair]
    clients: dict[str, CertPair]


@dataclass(frozen=True)
class _Authority:
    """A loaded CA: certificate and signing key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


# --------------------------------------------------------------------------------------------------
# public API


def ensure_dev_pki(
    directory: Path,
    *,
    servers: Sequence[str],
    clients: Mapping[str, str],
    force: bool = False,
) -> DevPki:
    """Create (or complete) the development PKI under ``directory`` and return its paths.

    Existing files are left untouched unless ``force`` is true.  If the CA is missing, it and every
    leaf are (re)issued, since leaves of a lost CA are useless; otherwise only missing leaves are issued.
    """
    pki = _layout(directory, servers, clients)
    for sub in (directory, directory / "server", directory / "client"):
        _make_private_dir(sub)
    ca_pair = CertPair(pki.ca_cert, pki.ca_key)
    renew_all = force or not ca_pair.exists()
    authority = _new_ca(ca_pair, CA_COMMON_NAME) if renew_all else _load_authority(ca_pair)
    for name, pair in pki.servers.items():
        if renew_all or not pair.exists():
            _issue_server(authority, pair, name)
    for caller, pair in pki.clients.items():
        if renew_all or not pair.exists():
            _issue_client(authority, pair, caller, clients[caller])
    return pki


def issue_untrusted_client(directory: Path, name: str, organisation: str) -> CertPair:
    """Issue a client certificate from a foreign CA under ``directory/untrusted/``.

    The certificate looks like a genuine juki client certificate (same subject layout, same org URI)
    but chains to a self-made CA that no juki service trusts.  The foreign CA is reused if present.
    """
    if name == "ca":
        raise ValueError("'ca' is the untrusted CA's own file name")
    base = directory / "untrusted"
    _make_private_dir(base)
    ca_pair = CertPair(base / "ca.crt", base / "ca.key")
    authority = _load_authority(ca_pair) if ca_pair.exists() else _new_ca(ca_pair, UNTRUSTED_CA_COMMON_NAME)
    pair = _pair(base, name)
    _issue_client(authority, pair, name, organisation)
    return pair


# --------------------------------------------------------------------------------------------------
# layout and file handling


def _layout(directory: Path, servers: Sequence[str], clients: Mapping[str, str]) -> DevPki:
    return DevPki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        servers={name: _pair(directory / "server", name) for name in servers},
        clients={caller: _pair(directory / "client", caller) for caller in clients},
    )


def _pair(folder: Path, stem: str) -> CertPair:
    _check_file_stem(stem)
    return CertPair(folder / f"{stem}.crt", folder / f"{stem}.key")


def _check_file_stem(name: str) -> None:
    if not name or name in {".", ".."} or "/" in name or os.sep in name or "\x00" in name:
        raise ValueError(f"not usable as a certificate file name: {name!r}")


def _make_private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        path.chmod(DIR_MODE)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a temporary file beside ``path`` with ``mode``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(pair: CertPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Write the key first, so that a certificate on disk always has its key beside it."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(pair.key, key_pem, KEY_MODE)
    _write_atomic(pair.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def _load_authority(pair: CertPair) -> _Authority:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pair.key}: the CA key is not an ECDSA key")
    if key.public_key().public_numbers() != _ec_public_numbers(cert):
        raise ValueError(f"{pair.key} does not belong to {pair.cert}")
    return _Authority(cert, key)


def _ec_public_numbers(cert: x509.Certificate) -> ec.EllipticCurvePublicNumbers:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("the CA certificate does not hold an ECDSA key")
    return public.public_numbers()


# --------------------------------------------------------------------------------------------------
# issuing


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(length: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - CLOCK_SKEW, now + length


def _new_ca(pair: CertPair, cn: str) -> _Authority:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_ORGANISATION),
        ]
    )
    not_before, not_after = _validity(CA_VALIDITY)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _save(pair, cert, key)
    return _Authority(cert, key)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _issue_leaf(
    authority: _Authority,
    pair: CertPair,
    subject: x509.Name,
    sans: Iterable[x509.GeneralName],
    usages: Sequence[x509.ObjectIdentifier],
) -> None:
    key = _new_key()
    public = key.public_key()
    not_before, not_after = _validity(LEAF_VALIDITY)
    not_after = min(not_after, authority.cert.not_valid_after_utc)
    issuer_ski = authority.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False
        )
        .sign(authority.key, hashes.SHA256())
    )
    _save(pair, cert, key)


def _issue_server(authority: _Authority, pair: CertPair, name: str) -> None:
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName(name),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    _issue_leaf(authority, pair, subject, sans, usages)


def _issue_client(authority: _Authority, pair: CertPair, caller: str, organisation: str) -> None:
    if not organisation:
        raise ValueError(f"caller {caller!r} has an empty organisation code")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, organisation),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CLIENT_ORGANISATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, caller),
        ]
    )
    sans = [x509.UniformResourceIdentifier(f"{ORG_URI_PREFIX}{organisation}")]
    _issue_leaf(authority, pair, subject, sans, [ExtendedKeyUsageOID.CLIENT_AUTH])
