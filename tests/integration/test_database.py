"""The database layer against a real PostgreSQL: role bootstrap, the migrations runner, and the grants
that make history append-only and keep each service to its own schema."""

from __future__ import annotations

from urllib.parse import urlparse

import asyncpg
import pytest

from jukilib.db import migrations
from jukilib.db.bootstrap import ServiceDatabase
from jukitools.suite import service_migrations
from tests.conftest import fresh_database


@pytest.fixture(scope="module")
async def databases(admin_url: str) -> dict[str, ServiceDatabase]:
    return await fresh_database(admin_url)


async def test_applying_migrations_again_applies_nothing(databases: dict[str, ServiceDatabase]) -> None:
    connection = await asyncpg.connect(databases["identity"].migration_url)
    try:
        applied = await migrations.apply(connection, "identity", service_migrations("identity"), "juki_identity")
    finally:
        await connection.close()
    assert applied == []


async def test_a_changed_applied_migration_stops_start_up(databases: dict[str, ServiceDatabase]) -> None:
    changed = [migrations.Migration(m.version, m.name, m.sql + "\n-- edited") for m in service_migrations("agency")]
    connection = await asyncpg.connect(databases["agency"].migration_url)
    try:
        with pytest.raises(migrations.MigrationError, match="was changed"):
            await migrations.apply(connection, "agency", changed, "juki_agency")
    finally:
        await connection.close()


async def test_pending_migrations_are_applied_in_order_and_recorded(admin_url: str) -> None:
    databases = await fresh_database(admin_url)
    extra = migrations.Migration(9001, "9001_probe", "CREATE TABLE probe (id integer PRIMARY KEY);")
    connection = await asyncpg.connect(databases["agency"].migration_url)
    try:
        applied = await migrations.apply(connection, "agency", [*service_migrations("agency"), extra], "juki_agency")
        recorded = await connection.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    finally:
        await connection.close()
    assert applied == ["9001_probe"]
    assert [r["version"] for r in recorded] == [m.version for m in service_migrations("agency")] + [9001]
    assert recorded[-1]["checksum"] == extra.checksum


@pytest.mark.parametrize("statement", ["UPDATE person_version SET state = 2", "DELETE FROM person_version",
                                       "UPDATE person_version SET request_digest = ''"])
async def test_register_history_is_append_only_for_the_service_role(
        databases: dict[str, ServiceDatabase], statement: str) -> None:
    connection = await asyncpg.connect(databases["identity"].url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute(statement)
    finally:
        await connection.close()


async def test_operation_log_cannot_be_changed_by_the_gateway_role(databases: dict[str, ServiceDatabase]) -> None:
    connection = await asyncpg.connect(databases["gateway"].url)
    try:
        for statement in ("UPDATE operation_log SET reason = ''", "DELETE FROM operation_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_a_service_cannot_read_another_services_schema(databases: dict[str, ServiceDatabase]) -> None:
    connection = await asyncpg.connect(databases["gateway"].url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.fetch("SELECT * FROM identity.person")
    finally:
        await connection.close()


# --- 0005: the receipt moves into the version ----------------------------------------------------------

_RECEIPTS_BEFORE_0005 = """
INSERT INTO person (id, resident_code, state, current_version, last_version, event_date, record, updated_at)
VALUES ('00000000-0000-0000-0000-000000000001', '11111111111', 1, 2, 2, '2026-02-01', '{}', now());
INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind, change_reason,
                            event_date, notify_time, receive_time, municipality_code, notification_id)
VALUES ('00000000-0000-0000-0000-000000000001', 1, '11111111111', 1, '{}', 1, 1, '2026-01-01', now(), now(),
        '102016', 'n-1'),
       ('00000000-0000-0000-0000-000000000001', 2, '11111111111', 1, '{}', 3, 1, '2026-02-01', now(), now(),
        '102016', 'n-2');
INSERT INTO notification_receipt (municipality_code, notification_id, request_digest, person_id, version, received_at)
VALUES ('102016', 'n-1', '\\x01', '00000000-0000-0000-0000-000000000001', 1, now()),
       ('102016', 'n-2', '\\x02', '00000000-0000-0000-0000-000000000001', 2, now());
"""


async def _register_before_0005(admin_url: str, schema: str) -> asyncpg.Connection:
    """A register schema as a deployment had it before 0005, holding two versions and their receipts."""
    from jukilib.register.wiring import register_migrations

    databases = await fresh_database(admin_url)
    connection = await asyncpg.connect(admin_url, database=urlparse(databases["annex"].url).path.lstrip("/"))
    await connection.execute(f"CREATE SCHEMA {schema}")
    earlier = [m for m in register_migrations() if m.version < 5]
    await migrations.apply(connection, schema, earlier, "juki_annex")
    await connection.execute(_RECEIPTS_BEFORE_0005)
    return connection


async def test_0005_moves_every_receipt_into_its_version(admin_url: str) -> None:
    from jukilib.register.wiring import register_migrations

    connection = await _register_before_0005(admin_url, "upgrade_probe")
    try:
        applied = await migrations.apply(connection, "upgrade_probe", register_migrations(), "juki_annex")
        digests = await connection.fetch("SELECT version, request_digest FROM person_version ORDER BY version")
        receipt_table = await connection.fetchval("SELECT to_regclass('upgrade_probe.notification_receipt')")
        with pytest.raises(asyncpg.UniqueViolationError):  # (municipality, notification id) stays unique
            await connection.execute(
                "INSERT INTO person_version (person_id, version, resident_code, state, record, change_kind,"
                " change_reason, event_date, notify_time, receive_time, municipality_code, notification_id,"
                " request_digest) VALUES ('00000000-0000-0000-0000-000000000001', 3, '11111111111', 1, '{}', 3, 1,"
                " '2026-03-01', now(), now(), '102016', 'n-1', '\\x03')")
    finally:
        await connection.close()
    assert applied == [m.name for m in register_migrations() if m.version >= 5]  # 0005 and what came after
    assert [(r["version"], bytes(r["request_digest"])) for r in digests] == [(1, b"\x01"), (2, b"\x02")]
    assert receipt_table is None


async def test_0005_stops_on_a_version_without_its_receipt_and_changes_nothing(admin_url: str) -> None:
    from jukilib.register.wiring import register_migrations

    connection = await _register_before_0005(admin_url, "upgrade_probe_lost")
    try:
        await connection.execute("DELETE FROM notification_receipt WHERE version = 2")
        with pytest.raises(migrations.MigrationError, match="0005_receipt_in_version"):
            await migrations.apply(connection, "upgrade_probe_lost", register_migrations(), "juki_annex")
        receipts = await connection.fetchval("SELECT count(*) FROM notification_receipt")
        column = await connection.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'upgrade_probe_lost'"
            " AND table_name = 'person_version' AND column_name = 'request_digest'")
    finally:
        await connection.close()
    assert receipts == 1 and column == 0


async def test_0018_copies_each_current_change_into_its_person_and_keeps_the_history_key(admin_url: str) -> None:
    """An upgraded register answers a lookup with the change that made the current record (0018 fills
    `person`'s new columns from the current version), and the history's key keeps every foreign key."""
    from jukilib.register.wiring import register_migrations

    connection = await _register_before_0005(admin_url, "upgrade_probe_0018")
    referring = ("SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                 "AND confrelid = 'upgrade_probe_0018.person_version'::regclass")
    try:
        before = [m for m in register_migrations() if m.version < 18]
        await migrations.apply(connection, "upgrade_probe_0018", before, "juki_annex")
        references_before = await connection.fetchval(referring)
        applied = await migrations.apply(connection, "upgrade_probe_0018", register_migrations(), "juki_annex")
        person = await connection.fetchrow(
            "SELECT change_kind, change_reason, notifying_municipality_code, notification_id FROM person")
        key = await connection.fetchval(
            "SELECT pg_get_indexdef('upgrade_probe_0018.person_version_pkey'::regclass)")
        references_after = await connection.fetchval(referring)
    finally:
        await connection.close()
    assert applied[0].startswith("0018")
    assert tuple(person) == (3, 1, "102016", "n-2")  # version 2, the current one: a 修正 by 102016
    assert "(person_id, version)" in key and "INCLUDE" not in key
    assert references_after == references_before > 0
