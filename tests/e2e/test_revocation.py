"""A revoked client certificate is refused within 5 seconds, without restarting the gateway."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from juki.identity.v1 import identity_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from tests.conftest import RunningSuite

CALLER = "cs-105252"  # 邑楽町 CS: used by no other test


def _fingerprint(certificate: Path) -> str:
    der = x509.load_pem_x509_certificate(certificate.read_bytes()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


async def _status(suite: RunningSuite) -> grpc.StatusCode:
    async with secure_channel(suite.gateway, suite.client_tls(CALLER)) as channel:
        try:
            await identity_pb2_grpc.IdentityServiceStub(channel).ListMunicipalityReports(
                register_pb2.ListMunicipalityReportsRequest(), metadata=purpose_metadata("CS-REPORTS-12-5"),
                timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_revoked_certificate_is_refused_within_five_seconds(suite: RunningSuite, home: Path) -> None:
    revoked = home / "revoked-certificates.txt"
    assert await _status(suite) == grpc.StatusCode.OK
    revoked.write_text(f"{_fingerprint(suite.pki.clients[CALLER].cert)}\n")
    try:
        started = time.monotonic()
        while await _status(suite) != grpc.StatusCode.PERMISSION_DENIED:
            assert time.monotonic() - started < 5, "revocation not in effect within 5 s"
            await asyncio.sleep(0.2)
    finally:
        revoked.write_text("")
