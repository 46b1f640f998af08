"""What a search asked, in a form an auditor can review without the log becoming a second register.

A search by the 4 items (SearchResidents, SearchAnnexResidents) names a person by values the log must not
hold in clear. The operation log keeps, in the entry's detail, which items were given and, for each personal
value, a keyed hash (HMAC-SHA-256 under the audit hash key, `JUKI_AUDIT_HASH_KEY`; names and readings in
their degraded search form, so that the same person searched with another spacing hashes the same). An
auditor holding the key can tell that two searches asked the same, or check a value a resident names
(`juki audit hash`), and nobody without it can read a value back. The municipality code and the number of
candidates asked are not personal data and stay in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

from google.protobuf import message

from jukilib.domain import text

SEARCH_QUERY = "juki.register.v1.SearchQuery"
NAMES = frozenset({"full_name", "full_name_kana"})
IN_CLEAR = frozenset({"municipality_code", "max_candidates"})


class AuditHashKey:
    """The key of the keyed hashes of search values (a file of 32 or more random bytes, base64)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the audit hash key must hold at least 32 bytes")
        self._key = key

    @classmethod
    def load(cls, path: Path) -> AuditHashKey:
        return cls(base64.b64decode(path.read_text(encoding="ascii").strip()))

    def hash(self, item: str, value: str) -> str:
        """The keyed hash of `value` given for `item` (hex, 128 bits: enough to compare, nothing to read)."""
        normalised = text.search_key(value) if item in NAMES else value.strip()
        digest = hmac.new(self._key, f"{item}\x00{normalised}".encode(), hashlib.sha256).digest()
        return digest[:16].hex()


def ensure_audit_hash_key(path: Path) -> Path:
    """A development audit hash key (0600), created once."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n", encoding="ascii")
    return path


def _query(request: message.Message) -> message.Message | None:
    for descriptor, value in request.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.full_name == SEARCH_QUERY:
            found: message.Message = value
            return found
    return None


def _date_text(date: Any) -> str:
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}/{date.precision}"


def search_conditions(request: message.Message, key: AuditHashKey) -> dict[str, Any] | None:
    """The detail of a search request (None when `request` is not a search): the items given, a keyed hash of
    each personal value, the municipality and the number of candidates asked in clear."""
    query = _query(request)
    if query is None:
        return None
    items: dict[str, Any] = {}
    for descriptor, value in query.ListFields():
        name = descriptor.name
        if name in IN_CLEAR:
            items[name] = value
        elif name == "birth_date":
            items[name] = key.hash(name, _date_text(value))
        elif isinstance(value, str):
            items[name] = key.hash(name, value)
    return {"items": sorted(items), "values": items}
