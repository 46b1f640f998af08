"""Configuration from the environment (jukilib.config, each service's `config` module): defaults, what
each service reads, and errors that name the variable.

Every error must name the offending variable and never echo a value, since values (database URLs,
file paths) may be secrets.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from juki_services.gateway.config import GatewayConfig
from juki_services.identity.config import IdentityConfig
from jukilib.config import BACKENDS, RESERVED_METHODS, SERVICES, ConfigError, Env, load_common

DATABASE_URL = "postgresql://identity:s3cret-pa55@db.internal:5432/juki"
AGENCY_TARGET = "agency.internal:7004"
GATEWAY_TARGETS = {
    "JUKI_IDENTITY_TARGET": "identity.internal:7001",
    "JUKI_ANNEX_TARGET": "annex.internal:7002",
    "JUKI_DISCLOSURE_TARGET": "disclosure.internal:7003",
    "JUKI_AGENCY_TARGET": AGENCY_TARGET,
}


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """A complete environment for the identity service, with real (dummy) PEM files."""
    env: dict[str, str] = {"JUKI_DATABASE_URL": DATABASE_URL, "JUKI_AGENCY_TARGET": AGENCY_TARGET,
                           "JUKI_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    for variable, file_name in (("JUKI_TLS_CERT", "cert.pem"), ("JUKI_TLS_KEY", "key.pem"),
                                ("JUKI_TLS_CA", "ca.pem"), ("JUKI_KEYRING_FILE", "keyring.json"),
                                ("JUKI_OPERATION_LOG_KEY", "operation-log.key"),
                                ("JUKI_OPERATOR_AUTH_PUBLIC_KEY", "operator-auth.pub"),
                                ("JUKI_AUDIT_HASH_KEY", "audit-hash.key")):
        path = tmp_path / file_name
        path.write_text("-----BEGIN DUMMY-----\n-----END DUMMY-----\n", encoding="utf-8")
        env[variable] = str(path)
    return env


def load_config(service: str, environ: dict[str, str]) -> Any:
    """What `juki serve <service>` reads: the service's own `load`."""
    return importlib.import_module(f"juki_services.{service}.config").load(environ)


def _config_error(service: str, environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(service, environ)
    return str(excinfo.value)


def _assert_no_value_in(message: str, environ: dict[str, str]) -> None:
    for name, value in environ.items():
        assert value not in message, f"the value of {name} leaked into the error message"


def test_complete_environment_loads(environ: dict[str, str]) -> None:
    config = load_config("identity", environ)

    assert isinstance(config, IdentityConfig)
    assert config.common.service == "identity"
    assert config.common.database.url == DATABASE_URL
    assert config.common.tls.cert == Path(environ["JUKI_TLS_CERT"])
    assert config.common.tls.key == Path(environ["JUKI_TLS_KEY"])
    assert config.common.tls.ca == Path(environ["JUKI_TLS_CA"])
    assert config.agency_target == AGENCY_TARGET
    assert config.keyring_file == Path(environ["JUKI_KEYRING_FILE"])


def test_missing_database_url_is_named_in_the_error_without_any_value(environ: dict[str, str]) -> None:
    del environ["JUKI_DATABASE_URL"]

    message = _config_error("identity", environ)

    assert "JUKI_DATABASE_URL" in message
    _assert_no_value_in(message, environ)


def test_blank_database_url_counts_as_missing(environ: dict[str, str]) -> None:
    environ["JUKI_DATABASE_URL"] = "   "

    assert "JUKI_DATABASE_URL" in _config_error("identity", environ)


def test_malformed_integer_names_the_variable_and_not_the_value(environ: dict[str, str]) -> None:
    environ["JUKI_DB_POOL_MAX"] = "abc"

    message = _config_error("identity", environ)

    assert "JUKI_DB_POOL_MAX" in message
    assert "abc" not in message


def test_integer_below_its_minimum_names_the_variable(environ: dict[str, str]) -> None:
    environ["JUKI_DB_POOL_MAX"] = "0"

    assert "JUKI_DB_POOL_MAX" in _config_error("identity", environ)


def test_bad_choice_names_the_variable_and_not_the_value(environ: dict[str, str]) -> None:
    environ["JUKI_RESIDENT_CODE_CHECK"] = "maybe"

    message = _config_error("identity", environ)

    assert "JUKI_RESIDENT_CODE_CHECK" in message
    assert "maybe" not in message


def test_bad_flag_names_the_variable(environ: dict[str, str]) -> None:
    environ["JUKI_REFLECTION"] = "perhaps"

    message = _config_error("identity", environ)

    assert "JUKI_REFLECTION" in message
    assert "perhaps" not in message


def test_defaults_apply_when_optional_variables_are_unset(environ: dict[str, str]) -> None:
    config = load_config("identity", environ)

    assert config.common.listen == "127.0.0.1:0"
    assert config.resident_code_check == "warn"
    assert config.common.reflection is False
    assert config.common.log_level == "INFO"
    assert config.common.database.migration_url is None
    assert config.common.database.pool_min == 1
    assert config.common.database.pool_max == 10
    assert config.relay.retry.attempts == 12
    environ["JUKI_GATEWAY_TARGET"] = "gateway.internal:7000"
    assert load_config("disclosure", environ).target_days == 14
    assert load_config("gateway", {**environ, **GATEWAY_TARGETS}).policy_file is None


def test_the_notices_issuer_and_section_come_from_the_environment_with_the_seed_as_default(
        environ: dict[str, str]) -> None:
    environ["JUKI_GATEWAY_TARGET"] = "gateway.internal:7000"
    office = load_config("disclosure", environ).office
    assert (office.issuer, office.section, office.telephone) == (
        "群馬県知事", "群馬県生活こども部県民活動支援・広聴課情報公開係", "027-226-2270")  # the seed's 請求先
    environ.update({"JUKI_NOTICE_ISSUER": "群馬県知事 山田一郎", "JUKI_NOTICE_SECTION": "県民活動支援・広聴課",
                    "JUKI_NOTICE_TELEPHONE": "027-000-0000", "JUKI_NOTICE_NUMBER_PREFIX": "県広"})
    office = load_config("disclosure", environ).office
    assert (office.issuer, office.section, office.telephone) == ("群馬県知事 山田一郎", "県民活動支援・広聴課",
                                                                 "027-000-0000")
    assert office.document_number(2026, 5) == "県広第2026-000005号"


def test_explicit_values_override_the_defaults(environ: dict[str, str]) -> None:
    environ.update({
        "JUKI_LISTEN": "0.0.0.0:7001",
        "JUKI_RESIDENT_CODE_CHECK": "REJECT",
        "JUKI_DB_POOL_MAX": "3",
        "JUKI_REFLECTION": "yes",
        "JUKI_LOG_LEVEL": "debug",
    })

    config = load_config("identity", environ)

    assert config.common.listen == "0.0.0.0:7001"
    assert config.resident_code_check == "reject"
    assert config.common.database.pool_max == 3
    assert config.common.reflection is True
    assert config.common.log_level == "DEBUG"


def test_identity_trusts_only_the_gateway_by_default(environ: dict[str, str]) -> None:
    assert load_config("identity", environ).common.trusted_peers == frozenset({"gateway"})


def test_agency_also_trusts_the_relays_of_identity_and_annex_by_default(environ: dict[str, str]) -> None:
    trusted = load_config("agency", environ).common.trusted_peers

    assert {"gateway", "identity", "annex"} <= trusted


def test_trusted_peers_can_be_overridden(environ: dict[str, str]) -> None:
    environ["JUKI_TRUSTED_PEERS"] = "gateway, ops-tool ,"

    assert load_config("identity", environ).common.trusted_peers == frozenset({"gateway", "ops-tool"})


def test_gateway_loads_with_every_backend_target(environ: dict[str, str]) -> None:
    environ.update(GATEWAY_TARGETS)

    config = load_config("gateway", environ)

    assert set(config.targets) == set(BACKENDS)
    assert config.targets["identity"] == GATEWAY_TARGETS["JUKI_IDENTITY_TARGET"]


@pytest.mark.parametrize("missing", sorted(GATEWAY_TARGETS))
def test_gateway_requires_every_backend_target(environ: dict[str, str], missing: str) -> None:
    environ.update(GATEWAY_TARGETS)
    del environ[missing]

    message = _config_error("gateway", environ)

    assert missing in message
    _assert_no_value_in(message, environ)


def test_gateway_requires_the_operator_authentication_public_key(environ: dict[str, str]) -> None:
    environ.update(GATEWAY_TARGETS)
    del environ["JUKI_OPERATOR_AUTH_PUBLIC_KEY"]

    assert "JUKI_OPERATOR_AUTH_PUBLIC_KEY" in _config_error("gateway", environ)


def test_gateway_reads_operator_credential_and_registry_settings(environ: dict[str, str]) -> None:
    environ.update(GATEWAY_TARGETS)
    environ.update({"JUKI_OPERATOR_CREDENTIAL_MAX_HOURS": "4", "JUKI_OPERATOR_REGISTRY_REFRESH_SECONDS": "0.5"})

    config = load_config("gateway", environ)

    assert config.operator_auth_key == Path(environ["JUKI_OPERATOR_AUTH_PUBLIC_KEY"])
    assert (config.operator_credential_max_hours, config.operator_registry_refresh) == (4.0, 0.5)


def test_gateway_keeps_an_open_case_answer_for_the_configured_seconds(environ: dict[str, str]) -> None:
    environ.update(GATEWAY_TARGETS)
    assert load_config("gateway", environ).open_case_cache_seconds == 5.0
    environ["JUKI_OPEN_CASE_CACHE_SECONDS"] = "2.5"
    assert load_config("gateway", environ).open_case_cache_seconds == 2.5
    environ["JUKI_OPEN_CASE_CACHE_SECONDS"] = "soon"
    assert "JUKI_OPEN_CASE_CACHE_SECONDS" in _config_error("gateway", environ)


@pytest.mark.parametrize("service", ["identity", "annex"])
def test_registers_require_the_agency_target(environ: dict[str, str], service: str) -> None:
    del environ["JUKI_AGENCY_TARGET"]

    assert "JUKI_AGENCY_TARGET" in _config_error(service, environ)


@pytest.mark.parametrize("service", ["identity", "annex"])
def test_registers_read_the_disclosure_target_for_the_retention_purge(environ: dict[str, str], service: str) -> None:
    # Optional: without it a register serves everything but the purge, which it refuses (fail closed).
    assert load_config(service, environ).disclosure_target == ""
    environ["JUKI_DISCLOSURE_TARGET"] = "disclosure.internal:7000"
    assert load_config(service, environ).disclosure_target == "disclosure.internal:7000"


def test_disclosure_also_trusts_the_registers_for_the_one_method_reserved_to_them(environ: dict[str, str]) -> None:
    environ["JUKI_GATEWAY_TARGET"] = "gateway.internal:7000"
    assert load_config("disclosure", environ).common.trusted_peers == frozenset({"gateway", "identity", "annex"})
    assert RESERVED_METHODS["disclosure"] == {
        "/juki.disclosure.v1.DisclosureService/ListRetentionHolds": frozenset({"identity", "annex"})}


def test_agency_needs_no_target(environ: dict[str, str]) -> None:
    del environ["JUKI_AGENCY_TARGET"]

    assert load_config("agency", environ).gateway_target is None


def test_disclosure_requires_the_gateway_target(environ: dict[str, str]) -> None:
    del environ["JUKI_AGENCY_TARGET"]

    assert "JUKI_GATEWAY_TARGET" in _config_error("disclosure", environ)
    environ["JUKI_GATEWAY_TARGET"] = "gateway.internal:7000"
    assert load_config("disclosure", environ).gateway_target == "gateway.internal:7000"


@pytest.mark.parametrize("variable", ["JUKI_TLS_CERT", "JUKI_TLS_KEY", "JUKI_TLS_CA"])
def test_tls_path_that_does_not_exist_is_refused_naming_the_variable(
    environ: dict[str, str], tmp_path: Path, variable: str
) -> None:
    environ[variable] = str(tmp_path / "no-such-file.pem")

    message = _config_error("identity", environ)

    assert variable in message
    assert "no-such-file" not in message


def test_tls_path_that_is_a_directory_is_refused(environ: dict[str, str], tmp_path: Path) -> None:
    environ["JUKI_TLS_CA"] = str(tmp_path)

    assert "JUKI_TLS_CA" in _config_error("identity", environ)


@pytest.mark.parametrize("variable", ["JUKI_TLS_CERT", "JUKI_TLS_KEY", "JUKI_TLS_CA"])
def test_missing_tls_variable_is_named(environ: dict[str, str], variable: str) -> None:
    del environ[variable]

    assert variable in _config_error("identity", environ)


def test_unknown_service_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="unknown service"):
        load_common("registry", Env(environ))


def test_registers_plan_generically_unless_told_otherwise(environ: dict[str, str]) -> None:
    assert load_config("identity", environ).common.database.plan_cache_mode == "force_generic_plan"
    assert load_config("annex", environ).common.database.plan_cache_mode == "force_generic_plan"
    environ["JUKI_DB_PLAN_CACHE_MODE"] = "auto"
    assert load_config("identity", environ).common.database.plan_cache_mode == "auto"
    environ["JUKI_DB_PLAN_CACHE_MODE"] = "sometimes"
    assert "JUKI_DB_PLAN_CACHE_MODE" in _config_error("identity", environ)


COMMON_REQUIRED = ("JUKI_DATABASE_URL", "JUKI_TLS_CERT", "JUKI_TLS_KEY", "JUKI_TLS_CA")
REQUIRED = {
    "identity": (*COMMON_REQUIRED, "JUKI_AGENCY_TARGET", "JUKI_KEYRING_FILE"),
    "annex": (*COMMON_REQUIRED, "JUKI_AGENCY_TARGET", "JUKI_KEYRING_FILE"),
    "disclosure": (*COMMON_REQUIRED, "JUKI_GATEWAY_TARGET", "JUKI_KEYRING_FILE"),
    "agency": COMMON_REQUIRED,
    "gateway": (*COMMON_REQUIRED, *GATEWAY_TARGETS, "JUKI_OPERATION_LOG_KEY", "JUKI_OPERATOR_AUTH_PUBLIC_KEY",
                "JUKI_CHECKPOINT_DIR", "JUKI_AUDIT_HASH_KEY"),
}
"""What each service cannot start without, and nothing else."""


def _only(environ: dict[str, str], service: str) -> dict[str, str]:
    everything = {**environ, **GATEWAY_TARGETS, "JUKI_GATEWAY_TARGET": "gateway.internal:7000"}
    return {name: everything[name] for name in REQUIRED[service]}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_starts_with_its_required_variables_alone(environ: dict[str, str], service: str) -> None:
    config = load_config(service, _only(environ, service))

    assert config.common.service == service


@pytest.mark.parametrize(("service", "missing"), [(s, v) for s in SERVICES for v in REQUIRED[s]])
def test_each_service_names_the_required_variable_that_is_missing(
        environ: dict[str, str], service: str, missing: str) -> None:
    only = _only(environ, service)
    del only[missing]

    message = _config_error(service, only)

    assert missing in message
    _assert_no_value_in(message, only)


def test_annex_reads_its_keyring_for_the_review_queue(environ: dict[str, str]) -> None:
    # The annex file holds no 個人番号, but refused notifications are kept sealed for review.
    assert load_config("annex", environ).keyring_file == Path(environ["JUKI_KEYRING_FILE"])


def test_the_wait_of_a_lone_move_half_is_configurable(environ: dict[str, str]) -> None:
    assert load_config("annex", environ).move_half_wait == 3 * 86400
    environ["JUKI_MOVE_HALF_WAIT"] = "600"
    assert load_config("identity", environ).move_half_wait == 600
    environ["JUKI_MOVE_HALF_WAIT"] = "0"
    assert "JUKI_MOVE_HALF_WAIT" in _config_error("identity", environ)


def test_gateway_reads_its_own_settings(environ: dict[str, str]) -> None:
    environ.update({**GATEWAY_TARGETS, "JUKI_RATE_OPERATOR_PER_SECOND": "5", "JUKI_CHECKPOINT_EVERY": "50",
                    "JUKI_CALL_TIMEOUT_SECONDS": "2.5"})

    config = load_config("gateway", environ)

    assert isinstance(config, GatewayConfig)
    assert (config.operator_rate, config.checkpoint_every, config.backend_timeout) == (5.0, 50, 2.5)
    assert config.operation_log_key == Path(environ["JUKI_OPERATION_LOG_KEY"])


@pytest.mark.parametrize("service", ["gateway", "disclosure", "agency"])
def test_malformed_call_timeout_is_named(environ: dict[str, str], service: str) -> None:
    environ.update({**GATEWAY_TARGETS, "JUKI_GATEWAY_TARGET": "gateway.internal:7000",
                    "JUKI_CALL_TIMEOUT_SECONDS": "soon"})

    message = _config_error(service, environ)

    assert "JUKI_CALL_TIMEOUT_SECONDS" in message
    assert "soon" not in message


def test_relay_retry_settings_are_read_and_checked(environ: dict[str, str]) -> None:
    environ.update({"JUKI_RELAY_MAX_ATTEMPTS": "4", "JUKI_RELAY_BASE_DELAY": "2", "JUKI_RELAY_MAX_DELAY": "8"})

    retry = load_config("annex", environ).relay.retry

    assert (retry.attempts, retry.base_delay, retry.max_delay) == (4, 2.0, 8.0)
    environ["JUKI_RELAY_MAX_DELAY"] = "1"
    message = _config_error("annex", environ)
    assert "JUKI_RELAY_MAX_DELAY" in message and "JUKI_RELAY_BASE_DELAY" in message
