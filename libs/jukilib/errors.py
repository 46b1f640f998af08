"""Typed domain errors, and their translation into `google.rpc.Status` (AIP-193).

Domain code raises these; one server interceptor (`jukilib.grpc.interceptors.ErrorInterceptor`)
turns them into a gRPC status with one `ErrorInfo` and, for bad input, `BadRequest` field
violations. `translate` makes any other exception (a database's, a timeout) the error a caller may see,
and `log_unexpected` logs what nobody expected. Messages must never contain personal data: they name
fields and rules, not values.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "juki.pref.gunma.jp"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (e.g. `record.individual_number`) and what is wrong."""

    field: str
    description: str
    reason: str = "INVALID_FIELD"


@dataclass
class JukiError(Exception):
    """Base of every error that may reach a caller. `reason` is UPPER_SNAKE_CASE (AIP-193)."""

    message: str
    reason: str = "UNSPECIFIED"
    metadata: Mapping[str, str] = field(default_factory=dict)
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def details(self) -> list[any_pb2.Any]:
        """The rich details of this error, ErrorInfo first."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=dict(self.metadata))
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]


class InvalidArgument(JukiError):
    """Bad input; carries `BadRequest` field violations. Nothing was changed."""

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None) -> None:
        self.violations = list(violations)
        fields = ", ".join(v.field for v in self.violations)
        super().__init__(
            message or f"invalid request: {fields}",
            reason="INVALID_ARGUMENT",
            code=grpc.StatusCode.INVALID_ARGUMENT,
        )

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description, reason=v.reason)
                for v in self.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        return [*super().details(), packed]


class NotFound(JukiError):
    def __init__(self, message: str, reason: str = "NOT_FOUND", metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason, metadata or {}, grpc.StatusCode.NOT_FOUND)


class AlreadyExists(JukiError):
    def __init__(self, message: str, reason: str = "ALREADY_EXISTS", metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason, metadata or {}, grpc.StatusCode.ALREADY_EXISTS)


class FailedPrecondition(JukiError):
    def __init__(self, message: str, reason: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason, metadata or {}, grpc.StatusCode.FAILED_PRECONDITION)


class PermissionDenied(JukiError):
    def __init__(self, message: str, reason: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message, reason, metadata or {}, grpc.StatusCode.PERMISSION_DENIED)


class Unauthenticated(JukiError):
    def __init__(self, message: str, reason: str = "UNAUTHENTICATED") -> None:
        super().__init__(message, reason, {}, grpc.StatusCode.UNAUTHENTICATED)


class Aborted(JukiError):
    def __init__(self, message: str, reason: str = "ABORTED") -> None:
        super().__init__(message, reason, {}, grpc.StatusCode.ABORTED)


class Unavailable(JukiError):
    def __init__(self, message: str, reason: str = "UNAVAILABLE") -> None:
        super().__init__(message, reason, {}, grpc.StatusCode.UNAVAILABLE)


class DeadlineExceeded(JukiError):
    def __init__(self, message: str, reason: str = "DEADLINE_EXCEEDED") -> None:
        super().__init__(message, reason, {}, grpc.StatusCode.DEADLINE_EXCEEDED)


class ResourceExhausted(JukiError):
    """Rate or volume limit reached; carries `RetryInfo`."""

    def __init__(self, message: str, reason: str, retry_after_seconds: float) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message, reason, {}, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def details(self) -> list[any_pb2.Any]:
        seconds = int(self.retry_after_seconds)
        nanos = int((self.retry_after_seconds - seconds) * 1e9)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos))
        packed = any_pb2.Any()
        packed.Pack(retry)
        return [*super().details(), packed]


class Internal(JukiError):
    def __init__(self, message: str = "internal error", reason: str = "INTERNAL") -> None:
        super().__init__(message, reason, {}, grpc.StatusCode.INTERNAL)


def to_status(error: JukiError) -> status_pb2.Status:
    """The `google.rpc.Status` sent in the `grpc-status-details-bin` trailer."""
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=error.details())


def status_trailer(error: JukiError) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying the rich status of `error`."""
    return ((STATUS_DETAILS_KEY, to_status(error).SerializeToString()),)


def code_name(code: grpc.StatusCode) -> str:
    """`OK`, `PERMISSION_DENIED`, ... as used in the operation log."""
    return str(code_pb2.Code.Name(code.value[0]))


# Database errors a caller may see, by asyncpg's exception class (STYLE: one table; the first class that
# matches wins, so a class comes before the classes it derives from). Serialization failures are retried
# by the store before they get here; if they still arrive the caller may retry. A database starting up,
# crash-restarting or whose connection was lost (class 08) is UNAVAILABLE: the caller may resend (ingest is
# idempotent). Everything else is INTERNAL: a message or DETAIL never reaches a caller.
_DATABASE_ERRORS: tuple[tuple[type[asyncpg.PostgresError], Callable[[], JukiError]], ...] = (
    (asyncpg.UniqueViolationError, lambda: AlreadyExists("the resource already exists")),
    (asyncpg.SerializationError, lambda: Aborted("concurrent update, retry", "CONCURRENT_UPDATE")),
    (asyncpg.DeadlockDetectedError, lambda: Aborted("concurrent update, retry", "CONCURRENT_UPDATE")),
    (asyncpg.QueryCanceledError, lambda: DeadlineExceeded("the database did not answer in time", "DATABASE_TIMEOUT")),
    (asyncpg.TooManyConnectionsError, lambda: Unavailable("the database is out of connections",
                                                          "DATABASE_UNAVAILABLE")),
    (asyncpg.AdminShutdownError, lambda: Unavailable("the database is shutting down", "DATABASE_UNAVAILABLE")),
    (asyncpg.CrashShutdownError, lambda: Unavailable("the database is restarting after a crash",
                                                     "DATABASE_UNAVAILABLE")),
    (asyncpg.CannotConnectNowError, lambda: Unavailable("the database is starting up", "DATABASE_UNAVAILABLE")),
    (asyncpg.PostgresConnectionError, lambda: Unavailable("the database connection was lost",
                                                          "DATABASE_UNAVAILABLE")),
)


def translate(exc: BaseException) -> JukiError:
    """Any exception to the error a caller may see; unexpected ones become INTERNAL."""
    if isinstance(exc, JukiError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        for kind, error in _DATABASE_ERRORS:
            if isinstance(exc, kind):
                return error()
    if isinstance(exc, TimeoutError):
        return Unavailable("a dependency did not answer in time", "DEPENDENCY_TIMEOUT")
    if isinstance(exc, OSError | asyncpg.InterfaceError):
        return Unavailable("a dependency is unreachable", "DEPENDENCY_UNAVAILABLE")
    return Internal()


def log_unexpected(where: str, exc: BaseException) -> None:
    """Log an unexpected exception without its message: messages of drivers can carry values."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.error("unhandled error in %s: %s", where, type(exc).__name__,
                 extra={"error_type": type(exc).__name__, "sqlstate": getattr(exc, "sqlstate", None),
                        "frames": frames})
