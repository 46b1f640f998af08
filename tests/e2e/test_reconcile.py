"""`juki reconcile` against the agency stand-in (issue 20; 住基法 30-7 with 30-6 ④): both directions of the
comparison, and what `--apply` does: the change the register lost is applied again as the municipality's
notification, so that the municipality's resend is answered with it and never applied twice; the change the
agency lacks is shown with its outbox state (the relay sends it).

The register's database is copied at T (`CREATE DATABASE … TEMPLATE`: what a restore to T rebuilds), a change
is made and forwarded on the original after T, and a change made on the copy is not forwarded yet."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg

from juki.register.v1 import register_pb2 as rpb
from juki_services.agency import app as agency_app
from juki_services.identity.app import REGISTER
from jukilib.db.bootstrap import ServiceDatabase, owner_role, runtime_role
from jukilib.db.pool import Database
from jukilib.devcerts import DevPki
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukilib.register.api import RegisterApi
from jukitools.cli_reconcile import reconcile
from jukitools.local import LocalSuite
from jukitools.suite import ensure_keyring, service_migrations
from tests.conftest import fresh_database, service_config
from tests.e2e.test_restore_outbox_keys import _running, _tls
from tests.integration.registers import MAEBASHI, REGISTERS, Person, new_person


async def _register(config: Any, url: str) -> tuple[RegisterApi, Database]:
    config = dataclasses.replace(config, common=dataclasses.replace(
        config.common, database=dataclasses.replace(config.common.database, url=url)))
    database = Database(config.common.database)
    await database.connect()
    return REGISTERS["identity"].api(config, database), database


async def _forward(api: RegisterApi, database: Database, pki: DevPki, agency_port: int, *,
                   old_keys: bool = False) -> None:
    """What the relay does: every pending change sent to the agency under its key, marked delivered (with
    `old_keys`, under the (person, version) key of changes sent before keys named the notification)."""
    async with database.connection() as connection:
        rows = await connection.fetch(
            "SELECT o.id, o.idempotency_key, v.person_id FROM outbox o JOIN person_version v"
            " ON v.person_id = o.person_id AND v.version = o.version WHERE o.state = 'pending' ORDER BY o.id")
        versions = [await api.engine.versions(row["person_id"], 0, 100) for row in rows]
    async with secure_channel(f"127.0.0.1:{agency_port}", _tls(pki, "identity")) as channel:
        for row, history in zip(rows, versions, strict=True):
            stored = next(v for v in history if f"/{v.change.notification_id}" in row["idempotency_key"])
            key = f"identity/{stored.person_id}/{stored.version}" if old_keys else row["idempotency_key"]
            await REGISTER.forward(channel, key, api.version_message(stored))
    async with database.connection() as connection:
        await connection.execute("UPDATE outbox SET state = 'delivered' WHERE id = ANY($1::bigint[])",
                                 [row["id"] for row in rows])


def _move(person: Person, notification_id: str, day: int) -> Any:
    person.address = f"群馬県前橋市大手町{day}丁目1番1号"
    return REGISTERS["identity"].request(person, notification_id, kind=rpb.CHANGE_KIND_MODIFY,
                                         reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY,
                                         event=dt.date(2026, 4, day))


async def _copy(admin_url: str, source: ServiceDatabase) -> str:
    name = urlparse(source.url).path.lstrip("/")
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}_t" TEMPLATE "{name}"')
        for service in ("identity", "gateway"):
            for role in (runtime_role(service), owner_role(service)):
                await connection.execute(f'ALTER ROLE {role} IN DATABASE "{name}_t" SET search_path = {service}')
    finally:
        await connection.close()
    return urlparse(source.url)._replace(path=f"/{name}_t").geturl()


async def test_reconcile_finds_both_directions_and_applies_the_lost_change_as_the_municipalitys_own(
        admin_url: str, pki: DevPki, home: Path) -> None:
    person, later = new_person(), new_person()
    agency_db = (await fresh_database(admin_url))["agency"]
    databases = await fresh_database(admin_url)
    config = service_config("identity", pki, databases["identity"], home, {})
    agency = GrpcService(service_config("agency", pki, agency_db, home, {}), service_migrations("agency"),
                         agency_app.build)
    async with _running(agency):
        api, database = await _register(config, databases["identity"].url)
        try:
            await api.apply(REGISTERS["identity"].request(person, "rec-1"), MAEBASHI)
            await _forward(api, database, pki, agency.port)
        finally:
            await database.close()
        restored_url = await _copy(admin_url, databases["identity"])  # T
        since = dt.datetime.now(dt.UTC)
        api, database = await _register(config, databases["identity"].url)
        try:
            lost_request = _move(person, "rec-2", 2)
            lost: Any = await api.apply(lost_request, MAEBASHI)
            await _forward(api, database, pki, agency.port, old_keys=True)
        finally:
            await database.close()
        api, database = await _register(config, restored_url)  # the restored register
        try:
            unsent: Any = await api.apply(REGISTERS["identity"].request(later, "rec-3"), MAEBASHI)
            gateway_url = urlparse(databases["gateway"].url)._replace(path=urlparse(restored_url).path).geturl()
            pair = pki.servers["identity"]
            suite = LocalSuite(home, {
                "JUKI_DATABASE_URL": restored_url, "JUKI_OPERATION_LOG_DATABASE_URL": gateway_url,
                "JUKI_AGENCY_TARGET": f"127.0.0.1:{agency.port}", "JUKI_TLS_CERT": str(pair.cert),
                "JUKI_TLS_KEY": str(pair.key), "JUKI_TLS_CA": str(pki.ca_cert),
                "JUKI_KEYRING_FILE": str(ensure_keyring(home))})
            compared = await reconcile(suite, "identity", since, apply=False)
            applied = await reconcile(suite, "identity", since, apply=True)
            again = await reconcile(suite, "identity", since, apply=False)
            resent: Any = await api.apply(lost_request, MAEBASHI)  # 前橋市 sends rec-2 again, same id and content
            async with database.connection() as connection:
                reapplied_key = await connection.fetchval(
                    "SELECT o.idempotency_key FROM outbox o JOIN person_version v ON v.person_id = o.person_id"
                    " AND v.version = o.version WHERE v.notification_id = 'rec-2'")
            history = await api.engine.versions(api.person_id(lost.name.rsplit("/versions/", 1)[0], "name"), 0, 10)
        finally:
            await database.close()
    assert [(c.person, c.version.change.notification_id) for c in compared.lost] == [
        (lost.name.rsplit("/versions/", 1)[0], "rec-2")]
    assert [(v.notification_id, v.outbox_state) for v in compared.unsent] == [("rec-3", "pending")]
    assert unsent.version == 1
    assert (applied.applied, dict(applied.refused), len(again.lost)) == (1, {}, 0)
    # Held by the agency under a key of the old form: the re-applied version's outbox row keeps it, so the relay's
    # delivery is answered duplicate instead of recorded a second time.
    assert applied.counts()["lost_under_old_keys"] == 1
    assert reapplied_key == f"identity/{lost.name.split('/')[1]}/2"
    # 住基法 30-6: the resend is answered with the version re-applied from the agency's copy, not applied again.
    assert (resent.name, resent.version) == (lost.name, lost.version)
    assert [v.change.notification_id for v in history] == ["rec-1", "rec-2"]
    assert history[1].change.receive_time == lost.change.receive_time.ToDatetime(dt.UTC)


