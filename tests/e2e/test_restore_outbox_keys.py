"""After a restore, nothing silently lost (住基法 30-7, 30-42; issue 20): the outbox's idempotency key names the
notification that made a version, so a version number given again after a restore is a new change at the
agency, never a "duplicate"; and the agency's list of what it holds (`ListReceivedChanges`) is for the
prefecture's registers only, each for its own file, with every bad field named.

The restore is PostgreSQL's own: the register's database copied at T (`CREATE DATABASE … TEMPLATE`, a
consistent copy of a stopped database, as a base backup restored to T is), a change made after T and
delivered, then the register started on the copy: the person's next notification takes the same version
number as the change the restore lost."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import grpc
import pytest

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2 as rpb
from juki_services.agency import app as agency_app
from juki_services.identity import app as identity_app
from jukilib import caller, paging
from jukilib.config import TlsConfig
from jukilib.db.bootstrap import ServiceDatabase, owner_role, runtime_role
from jukilib.devcerts import DevPki
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukitools.suite import service_migrations
from tests.conftest import eventually, field_violations, fresh_database, service_config
from tests.integration.registers import MAEBASHI, REGISTERS, Person, new_person


def _tls(pki: DevPki, service: str) -> TlsConfig:
    pair = pki.servers[service]
    return TlsConfig(cert=pair.cert, key=pair.key, ca=pki.ca_cert)


@contextlib.asynccontextmanager
async def _running(service: GrpcService[Any]) -> AsyncIterator[GrpcService[Any]]:
    await service.start()
    try:
        await service.wait_ready(30)
        yield service
    finally:
        await service.stop(0.5)


def _identity(pki: DevPki, home: Path, database: ServiceDatabase, agency_port: int) -> GrpcService[Any]:
    return GrpcService(service_config("identity", pki, database, home, {"agency": f"127.0.0.1:{agency_port}"}),
                       service_migrations("identity"), identity_app.build)


async def _notify(pki: DevPki, identity: GrpcService[Any], request: Any) -> identity_pb2.ResidentVersion:
    """`request` as 前橋市's CS sends it (through the gateway, whose certificate the register trusts)."""
    async with secure_channel(f"127.0.0.1:{identity.port}", _tls(pki, "gateway")) as channel:
        answer = await identity_pb2_grpc.IdentityServiceStub(channel).ApplyNotification(
            request, metadata=((caller.ORGANIZATION_KEY, MAEBASHI),), timeout=10)
    return answer.resident_version


async def _delivered(url: str) -> None:
    """Until the register's outbox holds nothing undelivered."""
    connection = await asyncpg.connect(url)
    try:
        async def drained() -> bool:
            return not await connection.fetchval("SELECT count(*) FROM outbox WHERE state <> 'delivered'")

        await eventually(drained, timeout=20)
    finally:
        await connection.close()


def _modify(person: Person, notification_id: str, day: int) -> Any:
    person.address = f"群馬県前橋市大手町{day}丁目1番1号"
    return REGISTERS["identity"].request(person, notification_id, kind=rpb.CHANGE_KIND_MODIFY,
                                         reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY,
                                         event=dt.date(2026, 4, day))


async def test_a_version_number_given_again_after_a_restore_is_a_new_change_at_the_agency(
        admin_url: str, pki: DevPki, home: Path) -> None:
    person = new_person()
    agency_db = (await fresh_database(admin_url))["agency"]
    register_db = (await fresh_database(admin_url))["identity"]
    agency = GrpcService(service_config("agency", pki, agency_db, home, {}), service_migrations("agency"),
                         agency_app.build)
    async with _running(agency):
        async with _running(_identity(pki, home, register_db, agency.port)) as identity:
            await _notify(pki, identity, REGISTERS["identity"].request(person, "keys-1"))
            await _delivered(register_db.url)
        # T: the register's database as a restore to T rebuilds it (the register stopped, nothing connected).
        restored_db = await _copy_database(admin_url, register_db)
        async with _running(_identity(pki, home, register_db, agency.port)) as identity:
            lost = await _notify(pki, identity, _modify(person, "keys-2a", 2))
            await _delivered(register_db.url)
        async with _running(_identity(pki, home, restored_db, agency.port)) as identity:
            again = await _notify(pki, identity, _modify(person, "keys-2b", 3))
            await _delivered(restored_db.url)
    assert lost.version == again.version == 2  # the same person and version number: two different changes
    connection = await asyncpg.connect(agency_db.url)
    try:
        rows = await connection.fetch("SELECT idempotency_key, payload FROM received_change WHERE resident_code = $1",
                                      person.code)
    finally:
        await connection.close()
    held = sorted(identity_pb2.ResidentVersion.FromString(row["payload"]).change.notification_id for row in rows)
    # 住基法 30-7: both changes reached the agency; under a key of (person, version) the second was answered
    # "duplicate" and silently never delivered.
    assert held == ["keys-1", "keys-2a", "keys-2b"]
    assert sorted(row["idempotency_key"] for row in rows) == [
        f"identity/{MAEBASHI}/keys-1", f"identity/{MAEBASHI}/keys-2a", f"identity/{MAEBASHI}/keys-2b"]


async def _copy_database(admin_url: str, source: ServiceDatabase) -> ServiceDatabase:
    """A copy of `source`'s database as it is now (no one connected to it), with the same roles."""
    name = urlparse(source.url).path.lstrip("/")
    copy = f"{name}_restored"
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
        for role in (runtime_role(source.schema), owner_role(source.schema)):  # per-database role settings
            await connection.execute(f'ALTER ROLE {role} IN DATABASE "{copy}" SET search_path = {source.schema}')
    finally:
        await connection.close()

    def renamed(url: str) -> str:
        return urlparse(url)._replace(path=f"/{copy}").geturl()

    return dataclasses.replace(source, url=renamed(source.url), migration_url=renamed(source.migration_url))


# --- ListReceivedChanges: the registers' view of the agency's copy --------------------------------------------

@pytest.fixture(scope="module")
async def listing_agency(admin_url: str, pki: DevPki, home: Path) -> AsyncIterator[tuple[GrpcService[Any], str]]:
    agency_db = (await fresh_database(admin_url))["agency"]
    async with _running(GrpcService(service_config("agency", pki, agency_db, home, {}), service_migrations("agency"),
                                    agency_app.build)) as agency:
        yield agency, agency_db.url


async def _record(pki: DevPki, port: int, changes: list[tuple[str, identity_pb2.ResidentVersion]]) -> None:
    async with secure_channel(f"127.0.0.1:{port}", _tls(pki, "identity")) as channel:
        request = agency_pb2.BatchRecordIdentityChangesRequest()
        for key, version in changes:
            request.requests.add(idempotency_key=key).resident_version.CopyFrom(version)
        await agency_pb2_grpc.AgencyServiceStub(channel).BatchRecordIdentityChanges(request, timeout=10)


async def _list(pki: DevPki, port: int, as_service: str, request: agency_pb2.ListReceivedChangesRequest,
                ) -> agency_pb2.ListReceivedChangesResponse:
    async with secure_channel(f"127.0.0.1:{port}", _tls(pki, as_service)) as channel:
        answer: agency_pb2.ListReceivedChangesResponse = await agency_pb2_grpc.AgencyServiceStub(
            channel).ListReceivedChanges(request, timeout=10)
    return answer


def _since(moment: dt.datetime, file: int = agency_pb2.FILE_IDENTITY, **fields: Any
           ) -> agency_pb2.ListReceivedChangesRequest:
    request = agency_pb2.ListReceivedChangesRequest(file=file, **fields)  # type: ignore[arg-type]
    request.received_since.FromDatetime(moment)
    return request


async def test_the_identity_register_pages_through_every_change_received_since_a_time(
        listing_agency: tuple[GrpcService[Any], str], pki: DevPki) -> None:
    agency, _ = listing_agency
    before = [(f"identity/{MAEBASHI}/list-old-{n}", _version(n)) for n in range(2)]
    await _record(pki, agency.port, before)
    since = dt.datetime.now(dt.UTC)
    after = [(f"identity/{MAEBASHI}/list-new-{n}", _version(n)) for n in range(7)]
    await _record(pki, agency.port, after)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await _list(pki, agency.port, "identity", _since(since, page_size=3, page_token=token))
        pages += 1
        seen.extend(change.idempotency_key for change in page.received_changes)
        assert all(change.WhichOneof("version") == "resident_version" for change in page.received_changes)
        token = page.next_page_token
        if not token:
            break
    assert seen == [key for key, _ in after] and pages >= 3
    first = (await _list(pki, agency.port, "identity", _since(since, page_size=1))).received_changes[0]
    assert first.resident_code == after[0][1].record.resident_code
    assert first.resident_version == after[0][1] and first.receive_time.ToDatetime(dt.UTC) >= since


def _version(n: int) -> identity_pb2.ResidentVersion:
    person = new_person()
    version = identity_pb2.ResidentVersion(name=f"residents/{n}/versions/1", version=1)
    version.record.resident_code = person.code
    version.change.municipality_code = MAEBASHI
    version.change.notification_id = f"list-{person.code}"
    return version


@pytest.mark.parametrize(("as_service", "file"), [
    ("gateway", agency_pb2.FILE_IDENTITY),   # the door for ⑤ queries: never for this list
    ("annex", agency_pb2.FILE_IDENTITY),     # a register lists its own file only
    ("identity", agency_pb2.FILE_ANNEX),
])
async def test_only_the_files_own_register_may_list_what_the_agency_holds(
        listing_agency: tuple[GrpcService[Any], str], pki: DevPki, as_service: str, file: int) -> None:
    agency, _ = listing_agency
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(pki, agency.port, as_service, _since(dt.datetime.now(dt.UTC), file=file))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("request_fields", "fields"), [
    ({"file": agency_pb2.FILE_UNSPECIFIED, "since": True}, ["file"]),
    ({"file": agency_pb2.FILE_IDENTITY, "since": False}, ["received_since"]),
    ({"file": agency_pb2.FILE_IDENTITY, "since": True, "page_size": -1}, ["page_size"]),
    ({"file": agency_pb2.FILE_IDENTITY, "since": True, "page_token": "not-a-token"}, ["page_token"]),
    ({"file": agency_pb2.FILE_IDENTITY, "since": True, "page_token": paging.encode_token({"xid": "-1", "key": ""})},
     ["page_token"]),  # forged
    ({"file": 7, "since": False, "page_size": -5}, ["file", "received_since", "page_size"]),
])
async def test_a_bad_list_request_is_refused_naming_each_field(
        listing_agency: tuple[GrpcService[Any], str], pki: DevPki, request_fields: dict[str, Any],
        fields: list[str]) -> None:
    agency, _ = listing_agency
    request = agency_pb2.ListReceivedChangesRequest(file=request_fields["file"],
                                                    page_size=request_fields.get("page_size", 0),
                                                    page_token=request_fields.get("page_token", ""))
    if request_fields["since"]:
        request.received_since.FromDatetime(dt.datetime.now(dt.UTC))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(pki, agency.port, "identity", request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == fields


async def test_a_time_outside_the_timestamp_range_is_refused_naming_it(
        listing_agency: tuple[GrpcService[Any], str], pki: DevPki) -> None:
    agency, _ = listing_agency
    request = agency_pb2.ListReceivedChangesRequest(file=agency_pb2.FILE_IDENTITY)
    request.received_since.seconds = 253402300800 + 86400  # after 9999-12-31
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(pki, agency.port, "identity", request)
    assert field_violations(refused.value) == ["received_since"]


async def test_the_annex_register_lists_the_annex_files_changes(
        listing_agency: tuple[GrpcService[Any], str], pki: DevPki) -> None:
    agency, _ = listing_agency
    since = dt.datetime.now(dt.UTC)
    versions = []
    for n in range(2):
        version = annex_pb2.AnnexResidentVersion(name=f"annexResidents/{n}/versions/1", version=1)
        version.record.resident_code = new_person().code
        version.change.municipality_code, version.change.notification_id = MAEBASHI, f"annex-list-{n}"
        versions.append(version)
    async with secure_channel(f"127.0.0.1:{agency.port}", _tls(pki, "annex")) as channel:
        request = agency_pb2.BatchRecordAnnexChangesRequest()
        for version in versions:
            change = request.requests.add(idempotency_key=f"annex/{MAEBASHI}/{version.change.notification_id}")
            change.annex_resident_version.CopyFrom(version)
        await agency_pb2_grpc.AgencyServiceStub(channel).BatchRecordAnnexChanges(request, timeout=10)
    page = await _list(pki, agency.port, "annex", _since(since, file=agency_pb2.FILE_ANNEX))
    assert [c.annex_resident_version for c in page.received_changes] == versions
    assert not page.next_page_token
    identity_page = await _list(pki, agency.port, "identity", _since(since))
    assert not [c for c in identity_page.received_changes if c.idempotency_key.startswith("annex/")]
