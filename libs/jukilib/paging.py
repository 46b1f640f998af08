"""AIP-158 pagination: page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json

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
    if not isinstance(position, dict) or set(position) != set(keys):
        raise InvalidArgument([FieldViolation("page_token", "is not a token returned by this method")])
    return position
