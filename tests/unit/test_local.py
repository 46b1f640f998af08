"""Where a command finds its settings (`jukitools.local`): the environment wins, else the suite's `.juki/`,
else a UsageError that names what is missing and how to get it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jukilib.config import UsageError
from jukitools.client import Endpoints, MissingCredential, load_credential
from jukitools.local import DATABASES, ENDPOINTS, LocalSuite, home_of, write_private_json

DATABASES_JSON = {"gateway": {"url": "postgresql://juki_gateway:pw@localhost:5/juki",
                              "migration_url": "postgresql://juki_gateway_owner:pw@localhost:5/juki"}}


def _running(home: Path) -> LocalSuite:
    write_private_json(home / DATABASES, DATABASES_JSON)
    (home / ENDPOINTS).write_text(json.dumps({
        "gateway": "localhost:5", "services": {}, "ca_cert": str(home / "ca.crt"),
        "client_certs": {"maebashi-cs": {"cert": "c", "key": "k"}, "cs-102016": {"cert": "c", "key": "k"},
                         "cs-102024": {"cert": "c", "key": "k"}}}))
    return LocalSuite(home, environ={})


def test_home_is_the_option_else_juki_home_else_dot_juki_absolute(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert home_of(None, {}) == tmp_path / ".juki"
    assert home_of(None, {"JUKI_HOME": "elsewhere"}) == tmp_path / "elsewhere"
    assert home_of("given", {"JUKI_HOME": "elsewhere"}) == tmp_path / "given"


def test_the_suite_gives_each_service_its_runtime_and_owner_role(tmp_path: Path) -> None:
    suite = _running(tmp_path)
    assert suite.database_url("gateway") == DATABASES_JSON["gateway"]["url"]
    assert suite.owner_url("gateway") == DATABASES_JSON["gateway"]["migration_url"]
    assert (tmp_path / DATABASES).stat().st_mode & 0o777 == 0o600


def test_an_explicit_environment_variable_wins_over_the_suite(tmp_path: Path) -> None:
    _running(tmp_path)
    suite = LocalSuite(tmp_path, environ={"JUKI_DATABASE_URL": "postgresql://x@db/juki",
                                          "JUKI_MIGRATION_DATABASE_URL": "postgresql://y@db/juki"})
    assert suite.database_url("gateway") == "postgresql://x@db/juki"
    assert suite.owner_url("gateway") == "postgresql://y@db/juki"


def test_no_suite_and_no_variable_names_both(tmp_path: Path) -> None:
    suite = LocalSuite(tmp_path / ".juki", environ={})
    with pytest.raises(UsageError) as missing:
        suite.database_url("gateway")
    assert f"no running suite in {tmp_path / '.juki'}" in str(missing.value)
    assert "JUKI_DATABASE_URL is not set" in str(missing.value)
    with pytest.raises(UsageError, match="JUKI_MIGRATION_DATABASE_URL is not set"):
        suite.owner_url("identity")
    with pytest.raises(UsageError, match="no running suite"):
        suite.endpoints()


def test_a_key_file_comes_from_the_option_the_variable_or_the_home(tmp_path: Path) -> None:
    (tmp_path / "operation-log.pub").write_text("pem")
    (tmp_path / "other.pub").write_text("pem")
    suite = LocalSuite(tmp_path, environ={})
    assert suite.file("JUKI_OPERATION_LOG_PUBLIC_KEY", "operation-log.pub") == tmp_path / "operation-log.pub"
    explicit = LocalSuite(tmp_path, environ={"JUKI_OPERATION_LOG_PUBLIC_KEY": str(tmp_path / "other.pub")})
    assert explicit.file("JUKI_OPERATION_LOG_PUBLIC_KEY", "operation-log.pub") == tmp_path / "other.pub"
    assert suite.file("JUKI_OPERATION_LOG_PUBLIC_KEY", "x", option=str(tmp_path / "other.pub")) == \
        tmp_path / "other.pub"
    with pytest.raises(UsageError, match=r"JUKI_KEYRING_FILE is not set and there is no .*keyring\.json"):
        suite.file("JUKI_KEYRING_FILE", "keyring.json")
    with pytest.raises(UsageError, match=r"no such file: .*absent\.pub \(from JUKI_OPERATION_LOG_PUBLIC_KEY\)"):
        LocalSuite(tmp_path, environ={"JUKI_OPERATION_LOG_PUBLIC_KEY": str(tmp_path / "absent.pub")}).file(
            "JUKI_OPERATION_LOG_PUBLIC_KEY", "operation-log.pub")


def test_an_unknown_caller_names_the_sample_callers_and_counts_the_cs(tmp_path: Path) -> None:
    endpoints = _running(tmp_path).endpoints()
    with pytest.raises(UsageError) as unknown:
        endpoints.tls_for("kyoiku")
    assert str(unknown.value) == "unknown caller 'kyoiku' (--as); known: maebashi-cs and cs-<municipality code> (2 CSs)"


def test_endpoints_of_older_files_still_load(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text(json.dumps({"gateway": "g:1", "services": {}, "ca_cert": "/ca.crt",
                                                 "database_url": "", "client_certs": {}}))
    assert Endpoints.load(tmp_path / "e.json").gateway == "g:1"


def test_a_missing_credential_says_to_log_in(tmp_path: Path) -> None:
    with pytest.raises(MissingCredential, match="run `juki operators login kyoiku-0001`") as missing:
        load_credential(tmp_path, "kyoiku-0001")
    assert isinstance(missing.value, UsageError) and isinstance(missing.value, FileNotFoundError)
