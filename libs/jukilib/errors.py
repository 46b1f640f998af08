"""Typed domain errors, and their translation into `google.rpc.Status` (AIP-193).

Domain code raises these; one server interceptor (`jukilib.grpc.interceptors.ErrorInterceptor`)
turns them into a gRPC status with one `ErrorInfo` and, for bad input, `BadRequest` field
violations, which `Violations` collects while a request is checked (every bad field named, nothing
stored). `translate` makes any other exception (a database's, a timeout) the error a caller may see,
and `log_unexpected` logs what nobody expected. Messages must never contain personal data: they name
fields and rules, not values.
"""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from google.type import date_pb2

from juki.register.v1 import register_pb2
from jukilib.domain import codes, dates, sex, text
from jukilib.domain.municipalities import MunicipalityTable

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


class Relayed(JukiError):
    """An upstream service's refusal passed on as it was: its code, reason and rich details."""

    def __init__(self, code: grpc.StatusCode, status: status_pb2.Status) -> None:
        self._details = list(status.details)
        info = error_details_pb2.ErrorInfo()
        reason = info.reason if any(d.Unpack(info) for d in self._details) else code.name
        super().__init__(f"the upstream service answered {code.name}", reason, {}, code)

    def details(self) -> list[any_pb2.Any]:
        return self._details


def relayed(error: grpc.aio.AioRpcError) -> Relayed:
    """`error` (a call this service made) as this service's answer: same code, same rich details, never
    the upstream's message text (it may quote a value)."""
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status.ParseFromString(value)
    return Relayed(error.code(), status)


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
# idempotent), and so is a server that takes no writes during a failover. Everything else is INTERNAL: a
# message or DETAIL never reaches a caller.
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
    # A server that became a standby (the old primary, rejoined) refuses writes: a failover, not a fault.
    (asyncpg.ReadOnlySQLTransactionError, lambda: Unavailable("the database takes no writes now",
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
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        # Every host of the URL answered, none takes writes: the standby is being promoted (a failover).
        return Unavailable("no database server takes writes now", "DATABASE_UNAVAILABLE")
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


# --- collecting the field violations of a request -------------------------------------------------

# How many of (year, month, day) a date of each precision states for certain
_KNOWN_PARTS = {dates.DatePrecision.DAY: 3, dates.DatePrecision.MONTH: 2, dates.DatePrecision.YEAR: 1}
_PRECISIONS: dict[int, dates.DatePrecision] = {
    register_pb2.DATE_PRECISION_DAY: dates.DatePrecision.DAY,
    register_pb2.DATE_PRECISION_MONTH: dates.DatePrecision.MONTH,
    register_pb2.DATE_PRECISION_YEAR: dates.DatePrecision.YEAR,
    register_pb2.DATE_PRECISION_APPROXIMATE: dates.DatePrecision.APPROXIMATE,
    register_pb2.DATE_PRECISION_UNKNOWN: dates.DatePrecision.UNKNOWN,
}


@dataclass(frozen=True)
class TimeWindow:
    """How far from now a time a caller states may lie: `max_ahead` of clock skew, `max_age` behind."""

    max_age: dt.timedelta
    max_ahead: dt.timedelta = dt.timedelta(minutes=5)


class Violations:
    """Collects field violations of one request; `raise_if_any` ends validation."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []
        self.warnings: list[str] = []
        """Fields accepted with a warning (a 住民票コード whose check digit did not match, in warn mode)."""

    def add(self, field: str, description: str, reason: str = "INVALID_FIELD") -> None:
        self.items.append(FieldViolation(field, description, reason))

    def extend(self, field: str, problems: Iterable[str]) -> None:
        for problem in problems:
            self.add(field, problem)

    def raise_if_any(self) -> None:
        for warned in self.warnings:
            # 告示436号 formula UNVERIFIED: in warn mode the code is accepted and the fact logged.
            logger.warning("resident code check digit mismatch accepted (warn mode)", extra={"field": warned})
        if self.items:
            raise InvalidArgument(self.items)

    def required_text(self, field: str, value: str, *, max_length: int) -> None:
        if not value:
            self.add(field, "is required", "REQUIRED_FIELD")
            return
        self.extend(field, text.text_problems(value, max_length=max_length))

    def optional_text(self, field: str, value: str, *, max_length: int) -> None:
        if value:
            self.extend(field, text.text_problems(value, max_length=max_length))

    def kana(self, field: str, value: str) -> None:
        if value:
            self.optional_text(field, value, max_length=200)
            if not text.is_katakana_reading(value):
                self.add(field, "must be written in full-width katakana")

    def resident_code(self, field: str, value: str, mode: codes.CheckDigitMode) -> None:
        result = codes.check_resident_code(value, mode)
        if result.error:
            self.add(field, result.error)
        elif result.warning:
            self.warnings.append(field)

    def sex_code(self, field: str, value: str) -> None:
        if not sex.is_valid_sex_code(value):
            self.add(field, "is not a code of the sex code table")

    def municipality(self, field: str, value: str, table: MunicipalityTable | None = None) -> None:
        if not codes.is_valid_municipality_code(value):
            self.add(field, "must be a 6-digit local government code with a valid check digit")
        elif table is not None and value not in table:
            self.add(field, "is not a municipality of this prefecture")

    def partial_date(self, field: str, value: object) -> None:
        problems = dates.validate_partial_date(partial_date_from_proto(value)) if _has_precision(value) else [
            "precision is required"]
        self.extend(field, problems)

    def time_within(self, field: str, value: timestamp_pb2.Timestamp, now: dt.datetime, window: TimeWindow
                    ) -> dt.datetime | None:
        """`value` as a time, when it lies within `window` around `now` (a notification time of year 530 or
        9999, a receipt of 1900, is a caller's mistake, not a fact to record)."""
        try:
            moment = value.ToDatetime(dt.UTC)
        except (ValueError, OverflowError):
            self.add(field, "is not a time between the years 1 and 9999")
            return None
        if moment > now + window.max_ahead:
            self.add(field, "must not be in the future")
        elif moment < now - window.max_age:
            self.add(field, f"must not be more than {window.max_age.days} days before now")
        else:
            return moment
        return None

    def not_after(self, field: str, value: object, limit: dt.date, what: str) -> None:
        """A partial date that must not lie after `limit`, compared as far as it is known (a birth date known
        to the month is after the event only if its month is); approximate and unknown dates are not."""
        depth = _KNOWN_PARTS.get(partial_date_from_proto(value).precision, 0) if _has_precision(value) else 0
        known = partial_date_from_proto(value) if depth else None
        if known is None or None in (parts := (known.year, known.month, known.day)[:depth]):
            return
        if parts > (limit.year, limit.month, limit.day)[:depth]:
            self.add(field, f"must not be after {what}")

    def calendar_date(self, field: str, value: date_pb2.Date) -> dt.date | None:
        try:
            return dt.date(value.year, value.month, value.day)
        except ValueError:
            self.add(field, "must be a valid calendar date")
            return None


def _has_precision(value: object) -> bool:
    return int(getattr(value, "precision", register_pb2.DATE_PRECISION_UNSPECIFIED)) in _PRECISIONS


def partial_date_from_proto(value: object) -> dates.PartialDate:
    """`juki.register.v1.PartialDate` to the domain type (unset parts as None)."""
    precision = _PRECISIONS[int(getattr(value, "precision", register_pb2.DATE_PRECISION_UNSPECIFIED))]
    return dates.PartialDate(
        precision=precision,
        year=getattr(value, "year", 0) or None,
        month=getattr(value, "month", 0) or None,
        day=getattr(value, "day", 0) or None,
        original_text=getattr(value, "original_text", ""),
    )
