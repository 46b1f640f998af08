"""`juki operators` against the suite's registry: the first administrator is registered directly, and
`login` issues a credential the gateway accepts, but only for an active registered operator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from jukitools.client import load_credential
from tests.conftest import RunningSuite
from tests.e2e.test_operators import _gateway_allowed, _lookup, _until


def _juki(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jukitools.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "JUKI_HOME": str(home), **env})


async def test_bootstrap_registers_the_first_administrator_directly(suite: RunningSuite, tmp_path: Path) -> None:
    result = _juki(tmp_path, {"JUKI_MIGRATION_DATABASE_URL": suite.owner_url("gateway")},
                   "operators", "add", "admin-0900", "--organization", "admin-office", "--role", "administrator",
                   "--bootstrap")
    assert result.returncode == 0, result.stderr
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        row = await connection.fetchrow("SELECT * FROM operator WHERE operator_id = 'admin-0900'")
    finally:
        await connection.close()
    assert (row["organization"], row["roles"], row["status"], row["created_by"]) == (
        "admin-office", ["administrator"], "active", "bootstrap")


async def test_login_issues_a_credential_the_gateway_accepts_and_refuses_a_disabled_operator(
        suite: RunningSuite, home: Path, tmp_path: Path) -> None:
    env = {"JUKI_DATABASE_URL": suite.database_url("gateway"),
           "JUKI_OPERATOR_AUTH_KEY": str(home / "operator-auth.key")}
    result = _juki(tmp_path, env, "operators", "login", "kikaku-0001", "--hours", "1")
    assert result.returncode == 0, result.stderr
    credential = load_credential(tmp_path, "kikaku-0001")

    async def accepted() -> bool:
        return _gateway_allowed(await _lookup(suite, suite.gateway, "kikaku-bu", credential))

    await _until(accepted, 5)
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        await connection.execute("INSERT INTO operator (operator_id, organization, roles, status, created_by, "
                                 "updated_by) VALUES ('kikaku-0901', 'kikaku-bu', '{provision_clerk}', 'disabled', "
                                 "'test', 'test')")
    finally:
        await connection.close()
    refused = _juki(tmp_path, env, "operators", "login", "kikaku-0901")
    assert refused.returncode == 1 and "not an active registered operator" in refused.stderr
