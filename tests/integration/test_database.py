"""The database layer against a real PostgreSQL: role bootstrap, the migrations runner, and the grants
that make history append-only and keep each service to its own schema."""

from __future__ import annotations

import asyncpg
import pytest

from jukilib.db import migrations
from jukilib.db.bootstrap import ServiceDatabase
from jukilib.suite import service_migrations
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
    assert [r["version"] for r in recorded] == [1, 9001]
    assert recorded[-1]["checksum"] == extra.checksum


@pytest.mark.parametrize("statement", ["UPDATE person_version SET state = 2", "DELETE FROM person_version",
                                       "DELETE FROM notification_receipt"])
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
