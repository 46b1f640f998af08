"""AIP-158 pagination: page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json

from jukilib.boundary import acceptable_text
from jukilib.errors import FieldViolation, InvalidArgument


def page_size(requested: int, *, default: int = 50, maximum: int = 500) -> int:
    """The effective page size; negative sizes are refused, larger than `maximum` are capped."""
    if requested < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    return min(requested or default, maximum)


def encode_token(position: dict[str, int | str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_token(token: str, *, keys: tuple[str, ...]) -> dict[str, int | str] | None:
    """The position in a token from `encode_token`, or None for an empty token."""
    if not token:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        position = None
    if not isinstance(position, dict) or set(position) != set(keys) or not all(
            isinstance(v, int) or (isinstance(v, str) and acceptable_text(v)) for v in position.values()):
        raise invalid_token()  # tokens are not signed: a forged one may hold anything JSON can
    return position


def invalid_token() -> InvalidArgument:
    """The error for a page token this method did not issue (tokens are not signed: callers can forge)."""
    return InvalidArgument([FieldViolation("page_token", "is not a token returned by this method")])


MAX_POSITION = 2**63 - 1
"""Every integer position (an offset, a sequence number) is a PostgreSQL bigint that is not negative."""


def int_at(position: dict[str, int | str], key: str) -> int:
    """An integer position from a decoded token; a forged non-integer, a negative one or one beyond a
    bigint (which reached SQL as an error: INTERNAL) is INVALID_ARGUMENT."""
    value = position[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_POSITION:
        raise invalid_token()
    return value
