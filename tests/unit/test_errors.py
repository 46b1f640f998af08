"""Domain errors as rich `google.rpc.Status` (jukilib.errors) and the translation of any exception
into what a caller may see (jukilib.errors.translate).
"""

from __future__ import annotations

from typing import TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2

from jukilib.errors import (
    ERROR_DOMAIN,
    STATUS_DETAILS_KEY,
    FieldViolation,
    Internal,
    InvalidArgument,
    JukiError,
    PermissionDenied,
    ResourceExhausted,
    code_name,
    status_trailer,
    to_status,
    translate,
)

M = TypeVar("M", bound=message.Message)


def _unpack(packed: any_pb2.Any, kind: type[M]) -> M:
    unpacked = kind()
    assert packed.Unpack(unpacked), f"detail is {packed.type_url}, not {kind.DESCRIPTOR.full_name}"
    return unpacked


def _error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    assert status.details, "status has no details"
    return _unpack(status.details[0], error_details_pb2.ErrorInfo)


def test_invalid_argument_carries_every_field_violation_in_bad_request() -> None:
    error = InvalidArgument([
        FieldViolation("record.full_name", "is required", "REQUIRED_FIELD"),
        FieldViolation("record.sex_code", "is not a code of the sex code table"),
    ])

    status = to_status(error)

    assert len(status.details) == 2
    bad_request = _unpack(status.details[1], error_details_pb2.BadRequest)
    assert [(v.field, v.description, v.reason) for v in bad_request.field_violations] == [
        ("record.full_name", "is required", "REQUIRED_FIELD"),
        ("record.sex_code", "is not a code of the sex code table", "INVALID_FIELD"),
    ]


def test_invalid_argument_puts_error_info_first_with_the_juki_domain() -> None:
    status = to_status(InvalidArgument([FieldViolation("page_size", "must not be negative")]))

    info = _error_info(status)
    assert info.domain == ERROR_DOMAIN == "juki.pref.gunma.jp"
    assert info.reason == "INVALID_ARGUMENT"
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] == 3


def test_invalid_argument_default_message_names_the_fields() -> None:
    error = InvalidArgument([FieldViolation("a.b", "x"), FieldViolation("c", "y")])

    assert str(error) == "invalid request: a.b, c"
    assert to_status(error).message == "invalid request: a.b, c"


def test_permission_denied_maps_to_status_code_7_with_its_reason_and_metadata() -> None:
    error = PermissionDenied("not granted", "PURPOSE_NOT_GRANTED", {"purpose": "EDU-LICENCE-30-15-2-1"})

    status = to_status(error)

    assert status.code == 7
    assert status.message == "not granted"
    info = _error_info(status)
    assert info.reason == "PURPOSE_NOT_GRANTED"
    assert info.domain == "juki.pref.gunma.jp"
    assert dict(info.metadata) == {"purpose": "EDU-LICENCE-30-15-2-1"}


def test_resource_exhausted_carries_retry_info_with_the_delay() -> None:
    status = to_status(ResourceExhausted("slow down", "RATE_LIMITED", retry_after_seconds=2.5))

    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert _error_info(status).reason == "RATE_LIMITED"
    retry = _unpack(status.details[1], error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 2
    assert retry.retry_delay.nanos == 500_000_000


def test_status_trailer_carries_the_serialized_status() -> None:
    error = PermissionDenied("no", "UNTRUSTED_PEER")

    ((key, value),) = status_trailer(error)

    assert key == STATUS_DETAILS_KEY == "grpc-status-details-bin"
    assert status_pb2.Status.FromString(value) == to_status(error)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (grpc.StatusCode.OK, "OK"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    ],
)
def test_code_name_is_the_upper_snake_case_name(code: grpc.StatusCode, name: str) -> None:
    assert code_name(code) == name


# --- translate ------------------------------------------------------------------------------------


def test_domain_errors_pass_through_translate_unchanged() -> None:
    error = PermissionDenied("no", "UNKNOWN_ORGANIZATION")

    assert translate(error) is error


def test_unique_violation_becomes_already_exists_without_the_duplicate_value() -> None:
    exc = asyncpg.exceptions.UniqueViolationError("duplicate key value (resident_code)=(12345678901)")

    error = translate(exc)

    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    status = to_status(error)
    assert "12345678901" not in status.message
    assert b"12345678901" not in status.SerializeToString()


def test_serialization_failure_becomes_aborted() -> None:
    exc = asyncpg.exceptions.SerializationError("could not serialize access")

    error = translate(exc)

    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "CONCURRENT_UPDATE"


def test_unexpected_exception_becomes_internal_without_its_text() -> None:
    error = translate(RuntimeError("secret 山田"))

    assert isinstance(error, Internal)
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.message == "internal error"
    status = to_status(error)
    assert "secret" not in status.message
    assert "山田".encode() not in status.SerializeToString()


def test_postgres_error_without_a_mapped_sqlstate_becomes_internal() -> None:
    exc = asyncpg.exceptions.CheckViolationError("new row violates check constraint (sex_code)=(7)")

    error = translate(exc)

    assert error.code == grpc.StatusCode.INTERNAL
    assert "sex_code" not in error.message


@pytest.mark.parametrize("exc", [asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
                                 asyncpg.exceptions.CrashShutdownError("terminating connection"),
                                 asyncpg.exceptions.ConnectionFailureError("connection lost"),
                                 asyncpg.exceptions.ConnectionDoesNotExistError("connection does not exist"),
                                 asyncpg.exceptions.TargetServerAttributeNotMatched("no host is read-write"),
                                 asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction")])
def test_a_database_restarting_or_a_lost_connection_is_unavailable(exc: BaseException) -> None:
    # a restart of PostgreSQL answered ApplyNotification INTERNAL; a CS resends on UNAVAILABLE (idempotent);
    # during a failover no host of the URL takes writes for a moment (jukitools.standby)
    error = translate(exc)

    assert error.code == grpc.StatusCode.UNAVAILABLE and error.reason == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize("exc", [TimeoutError(), TimeoutError()])
def test_timeout_becomes_unavailable(exc: BaseException) -> None:
    error = translate(exc)

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.reason == "DEPENDENCY_TIMEOUT"


def test_connection_refused_becomes_unavailable() -> None:
    error = translate(ConnectionRefusedError("connect to 10.0.0.5:5432 failed"))

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert "10.0.0.5" not in error.message


def test_translated_errors_are_juki_errors() -> None:
    for exc in (RuntimeError("x"), TimeoutError(), asyncpg.exceptions.UniqueViolationError("x")):
        assert isinstance(translate(exc), JukiError)
