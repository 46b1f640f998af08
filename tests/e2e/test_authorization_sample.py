"""The authorisation matrix, sampled through the real gateway: for every purpose of the shipped catalogue,
a recipient is let through (with its operator's credential when the purpose is human work), a
non-recipient is refused, and human work without a credential is refused. The full matrix of every
organisation × purpose × method × role is checked on the decision function (tests/unit).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import grpc
import pytest

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki_services.gateway.policy import DEFAULT_CATALOGUE, Purpose, load_catalogue
from juki_services.gateway.registry_store import insert_operator
from jukilib.config import SERVICES, TlsConfig
from jukilib.devcerts import ensure_dev_pki
from jukilib.domain.municipalities import gunma_municipalities
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.suite import SAMPLE_CALLERS, all_callers
from tests.conftest import RunningSuite, issue_credential
from tests.e2e.test_flows import _call, _resident

CATALOGUE = load_catalogue(DEFAULT_CATALOGUE, gunma_municipalities())
CALLER_OF = {organization: name for name, organization in SAMPLE_CALLERS.items()}
# Executive organs of the catalogue without a sample certificate get one here, and an operator.
OTHER_ORGANS = sorted(code for code, o in CATALOGUE.organizations.items()
                      if o.kind == "executive_organ" and code not in CALLER_OF)
SERVICE_CALLERS = ("agency", "disclosure")
"""Services that call the gateway themselves, with their server certificates."""
REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


@pytest.fixture(scope="module")
async def other_organs(suite: RunningSuite, home: Path) -> dict[str, tuple[TlsConfig, str]]:
    """Certificate and provision-clerk credential of each executive organ without a sample caller."""
    pki = ensure_dev_pki(home / "pki", servers=SERVICES, clients={**all_callers(), **{c: c for c in OTHER_ORGANS}})
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        for code in OTHER_ORGANS:
            await insert_operator(connection, f"{code}-sample", organization=code,
                                  roles=frozenset({"provision_clerk"}), valid_from=None, valid_until=None, by="test")
    finally:
        await connection.close()
    return {code: (TlsConfig(cert=pki.clients[code].cert, key=pki.clients[code].key, ca=pki.ca_cert),
                   issue_credential(home, f"{code}-sample", code, frozenset({"provision_clerk"})))
            for code in OTHER_ORGANS}


def _recipient(purpose: Purpose) -> str:
    """A caller (sample certificate name or organisation code) the purpose is granted to."""
    if "kind:municipality" in purpose.recipients:
        return "maebashi-cs"
    for service in SERVICE_CALLERS:
        if service in purpose.recipients:
            return service  # the agency stand-in and the disclosure service call with their own certificates
    return sorted(purpose.recipients, key=lambda r: r not in CALLER_OF)[0]


def _outsider(purpose: Purpose) -> str:
    return next(name for name in ("auditor", "kyoiku-iinkai") if SAMPLE_CALLERS[name] not in purpose.recipients)


@pytest.fixture(scope="module")
async def open_case(suite: RunningSuite) -> str:
    """An open disclosure case: the case reference of the purposes that require one (issue 19)."""
    case = dpb.DisclosureCase(
        subject_resident_code=_resident(987).resident_code, requester_kind=dpb.REQUESTER_KIND_PERSON,
        requester_name="請求者 本人", identity_documents=[dpb.IDENTITY_DOCUMENT_MY_NUMBER_CARD],
        channel=dpb.CHANNEL_COUNTER, scopes=[dpb.DISCLOSURE_SCOPE_PROVISION_STATUS])
    opened, _ = await _call(suite, "disclosure-desk", "disclosure.CreateDisclosureCase",
                            dpb.CreateDisclosureCaseRequest(disclosure_case=case), "DISCLOSURE-30-32")
    return str(opened.name)


async def _status(suite: RunningSuite, tls: TlsConfig, purpose: Purpose, credential: str,
                  case_reference: str = "CASE-1") -> grpc.StatusCode:
    method = sorted(m for m in purpose.methods if "StreamNotifications" not in m)[0]
    async with secure_channel(suite.gateway, tls) as channel:
        try:
            metadata = purpose_metadata(purpose.code, case_reference=case_reference, credential=credential)
            await channel.unary_unary(f"/{method}")(b"", metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _as(suite: RunningSuite, caller: str, others: dict[str, tuple[TlsConfig, str]]) -> tuple[TlsConfig, str]:
    """Certificate and operator credential of a caller."""
    if caller in others:
        return others[caller]
    caller = CALLER_OF.get(caller, caller)
    tls = suite.server_tls(caller) if caller in SERVICE_CALLERS else suite.client_tls(caller)
    return tls, suite.credential(caller)


@pytest.mark.parametrize("code", sorted(CATALOGUE.purposes))
async def test_purpose_lets_its_recipient_through_and_refuses_others(
        suite: RunningSuite, other_organs: dict[str, tuple[TlsConfig, str]], open_case: str, code: str) -> None:
    purpose = CATALOGUE.purposes[code]
    tls, credential = _as(suite, _recipient(purpose), other_organs)
    case = open_case if purpose.open_case_required else "CASE-1"

    async def let_through() -> bool:  # an operator registered just now reaches the cache within a second
        return await _status(suite, tls, purpose, credential if purpose.operator_roles else "", case) not in REFUSED

    deadline = asyncio.get_running_loop().time() + 5
    while not await let_through():
        assert asyncio.get_running_loop().time() < deadline, f"{code}: its recipient is refused"
        await asyncio.sleep(0.1)
    outsider_tls, outsider_credential = _as(suite, _outsider(purpose), other_organs)
    assert await _status(suite, outsider_tls, purpose, outsider_credential, case) == grpc.StatusCode.PERMISSION_DENIED
    if purpose.operator_roles:
        assert await _status(suite, tls, purpose, "", case) == grpc.StatusCode.PERMISSION_DENIED
