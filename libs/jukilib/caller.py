"""Who is calling, as the gateway established it, carried to backends in metadata.

The gateway authenticates the organisation (client certificate) and the operator (a signed operator
credential, `jukilib.operator_credential`), and takes the purpose and case reference from the request;
it forwards them as `x-juki-*` metadata. Backends trust these keys
only on calls from the gateway's certificate (checked by `TrustedPeerInterceptor`) and expose them to
handlers through a context variable.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ORGANIZATION_KEY = "x-juki-organization"
OPERATOR_KEY = "x-juki-operator"
PURPOSE_KEY = "x-juki-purpose"
CASE_REFERENCE_KEY = "x-juki-case-reference"
REQUEST_ID_KEY = "x-request-id"
FORMER_IDENTIFIERS_KEY = "x-juki-former-identifiers"
"""Present (`follow`) when the purpose may find a person by a former 住民票コード or 個人番号."""
SUBJECT_ACCESS_KEY = "x-juki-subject-access"
"""Present (`granted`) when the purpose is the person's own disclosure or correction (住基法 30-44-13): the annex
file then answers records of persons who never left Japan too. Set only by the gateway (backends trust
`x-juki-*` keys only from its certificate); absent, the annex register answers 国外転出者 only (30-44-6)."""
ANSWERED_CODES_KEY = "x-juki-answered-codes"
"""Trailing metadata a register sets on a read whose answer leaves the 住民票コード out (the annex file,
住基法 30-44-6): the codes of the persons answered, comma-separated, for the gateway's operation log and
volume count only (the resident's 提供状況 is found by code, 30-32). The gateway never forwards it."""
FIELDS_KEY = "x-juki-fields"
"""The purpose's field mask (comma-separated paths in the answer's resource); absent when the purpose
may receive every field."""


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of the current RPC."""

    organization: str
    operator: str = ""
    purpose: str = ""
    case_reference: str = ""
    request_id: str = ""
    peer: str = ""
    fields: tuple[str, ...] | None = None
    """The field mask of the purpose (FieldMask paths in the resource answered), None for every field.
    The gateway minimises every answer to it whatever the backend sends; backends use it to leave
    unread what would be cut anyway (e.g. 個人番号 is never decrypted for a purpose without it)."""
    follows_former: bool = False
    """The purpose may find a person by a former identifier (住基法 30-4, 番号法 7 ②: the link from an old
    identifier to the new one serves only the affairs that need it)."""
    subject_access: bool = False
    """The purpose is the person's own disclosure or correction (住基法 30-44-13, `SUBJECT_ACCESS_KEY`)."""

    def to_metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata the gateway sends to a backend."""
        pairs = (
            (ORGANIZATION_KEY, self.organization),
            (OPERATOR_KEY, self.operator),
            (PURPOSE_KEY, self.purpose),
            (CASE_REFERENCE_KEY, self.case_reference),
            (REQUEST_ID_KEY, self.request_id),
        )
        present = tuple((k, v) for k, v in pairs if v)
        if self.follows_former:
            present = (*present, (FORMER_IDENTIFIERS_KEY, "follow"))
        if self.subject_access:
            present = (*present, (SUBJECT_ACCESS_KEY, "granted"))
        return present if self.fields is None else (*present, (FIELDS_KEY, ",".join(self.fields)))

    def may_receive(self, path: str) -> bool:
        """Whether the purpose's mask covers `path` (a mask path covers every path below it)."""
        return self.fields is None or any(path == f or path.startswith(f"{f}.") for f in self.fields)


def metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str:
    """The first value of `key` in invocation metadata, or ''."""
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return ""


def _fields(metadata: Sequence[tuple[str, str | bytes]] | None) -> tuple[str, ...] | None:
    for k, v in metadata or ():
        if k == FIELDS_KEY:
            text = v.decode() if isinstance(v, bytes) else v
            return tuple(path for path in text.split(",") if path)
    return None


def caller_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None, peer: str) -> Caller:
    """Build the caller from gateway-set metadata (backends only)."""
    return Caller(
        fields=_fields(metadata),
        organization=metadata_value(metadata, ORGANIZATION_KEY),
        operator=metadata_value(metadata, OPERATOR_KEY),
        purpose=metadata_value(metadata, PURPOSE_KEY),
        case_reference=metadata_value(metadata, CASE_REFERENCE_KEY),
        request_id=metadata_value(metadata, REQUEST_ID_KEY),
        peer=peer,
        follows_former=metadata_value(metadata, FORMER_IDENTIFIERS_KEY) == "follow",
        subject_access=metadata_value(metadata, SUBJECT_ACCESS_KEY) == "granted",
    )


_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("juki_caller", default=None)


def set_current(caller: Caller) -> contextvars.Token[Caller | None]:
    return _current.set(caller)


def reset_current(token: contextvars.Token[Caller | None]) -> None:
    _current.reset(token)


def current_or_none() -> Caller | None:
    """The caller of the RPC being handled, None outside an RPC (a command, a background task)."""
    return _current.get()


def current() -> Caller:
    """The caller of the RPC being handled. Raises if called outside an RPC."""
    caller = _current.get()
    if caller is None:
        raise RuntimeError("no caller in context: called outside an RPC handler")
    return caller
