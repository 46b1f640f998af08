"""住基法 30-44-6 in the annex register itself (defence in depth, keyed on the file, deny by default).

Every read of the annex file answers only records of 国外転出者 and never the 住民票コード. The one exception
is a call the gateway declares a subject access (`caller.Caller.subject_access`: the person's own disclosure
or correction, 30-44-13, applying 30-32 ff. to the annex file): it may see a record of a person who never
left Japan. The 住民票コード stays out even then: the disclosure service has the person's code from the case
and the identity file.

A record of a person who is not a 国外転出者 is answered as not found (NOT_FOUND, PERSON_NOT_FOUND, the same
answer as for a code nobody has): FAILED_PRECONDITION would tell the caller that the prefecture's annex file
holds this person (their 本籍 is in the prefecture) and that they live in Japan, which is more than a caller
without a 国外転出者 affair may learn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from grpc import aio

from jukilib import caller
from jukilib.errors import NotFound

OVERSEAS_EMIGRANT = "record.overseas_emigrant"
RESIDENT_CODE = "record.resident_code"


def not_found() -> NotFound:
    return NotFound("no person with this resident code in the file", "PERSON_NOT_FOUND")


def limited(who: caller.Caller | None) -> bool:
    """Whether the call is held to 国外転出者 (every call but a subject access the gateway declared)."""
    return who is None or not who.subject_access


def reading(who: caller.Caller | None) -> caller.Caller | None:
    """The caller to read the file for: its mask plus what this module reads itself (whether the person
    moved abroad; the 住民票コード, which goes to the gateway's log, `Answered`, never into the answer)."""
    if who is None or who.fields is None:
        return who
    extra = tuple(path for path in (OVERSEAS_EMIGRANT, RESIDENT_CODE) if not who.may_receive(path))
    return dataclasses.replace(who, fields=(*who.fields, *extra)) if extra else who


def admits(resource: Any, who: caller.Caller | None) -> bool:
    """Whether a resource (or version) of the annex file may be answered to `who`."""
    return not limited(who) or bool(resource.record.overseas_emigrant)


class Answered:
    """The 住民票コード taken out of one call's answer: the gateway still logs whom it answered about (the
    resident's 提供状況, 30-32, is found by code), from trailing metadata it never forwards."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def without_code(self, resource: Any) -> Any:
        """The resource without its 住民票コード (30-44-6: the annex file never answers it)."""
        if resource.record.resident_code:
            self.codes.append(resource.record.resident_code)
        resource.record.ClearField("resident_code")
        return resource

    def checked(self, resource: Any, who: caller.Caller | None) -> Any:
        """A single resource, answerable to `who`, without 住民票コード; NotFound otherwise."""
        if not admits(resource, who):
            raise not_found()
        return self.without_code(resource)

    def kept(self, resources: Iterable[Any], who: caller.Caller | None) -> list[Any]:
        """The resources answerable to `who`, each without 住民票コード."""
        return [self.without_code(r) for r in resources if admits(r, who)]

    def tell_gateway(self, context: aio.ServicerContext[Any, Any] | None) -> None:
        """Name the codes taken out in the call's trailing metadata (the gateway only calls backends; no
        context: called in-process, not over RPC)."""
        if self.codes and context is not None:
            context.set_trailing_metadata(((caller.ANSWERED_CODES_KEY, ",".join(dict.fromkeys(self.codes))),))
