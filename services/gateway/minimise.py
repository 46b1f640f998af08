"""Minimisation of answers to the purpose's field mask, and what a message touches.

Every message in an answer that carries a `record` (a resident, a version, ...) is cut down to the
paths the purpose allows: fields outside the mask are absent from the bytes that leave the gateway.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import field_mask_pb2, message
from google.protobuf.descriptor import FieldDescriptor

from jukilib.errors import PermissionDenied

RESIDENT_CODE_FIELDS = frozenset({"resident_code", "subject_resident_code"})
RESIDENT_CODE_LISTS = frozenset({"resident_codes"})
"""Repeated fields of 住民票コード (a batch lookup's request)."""


def _children(msg: message.Message) -> Iterator[message.Message]:
    for descriptor, value in msg.ListFields():
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if descriptor.is_repeated:
            if descriptor.message_type is not None and not descriptor.message_type.GetOptions().map_entry:
                yield from value
        else:
            yield value


def resources(msg: message.Message) -> Iterator[message.Message]:
    """Messages in `msg` (itself included) that carry a `record` field."""
    if "record" in msg.DESCRIPTOR.fields_by_name:
        yield msg
        return
    for child in _children(msg):
        yield from resources(child)


def resident_codes(msg: message.Message) -> list[str]:
    """Every 住民票コード anywhere in `msg`."""
    found: list[str] = []
    for descriptor, value in msg.ListFields():
        if descriptor.name in RESIDENT_CODE_FIELDS and isinstance(value, str) and value:
            found.append(value)
        elif descriptor.name in RESIDENT_CODE_LISTS and descriptor.type == FieldDescriptor.TYPE_STRING:
            found.extend(code for code in value if code)
    for child in _children(msg):
        found.extend(resident_codes(child))
    return found


def _set_paths(msg: message.Message, prefix: str = "") -> list[str]:
    paths: list[str] = []
    for descriptor, value in msg.ListFields():
        path = f"{prefix}{descriptor.name}"
        if prefix == "" and descriptor.name == "record" and descriptor.type == FieldDescriptor.TYPE_MESSAGE:
            paths.extend(_set_paths(value, "record."))
            continue
        paths.append(path)
    return paths


def minimise(answer: message.Message, allowed: Sequence[str], *, overseas_emigrant_only: bool) -> list[str]:
    """Cut every resource in `answer` down to `allowed` (in place); returns the paths disclosed."""
    disclosed: set[str] = set()
    for resource in resources(answer):
        record: Any = getattr(resource, "record")  # noqa: B009 - every resource has one, by construction
        if overseas_emigrant_only and not getattr(record, "overseas_emigrant", False):
            # 住基法 30-44-6: annex use and provision only for records of 国外転出者.
            raise PermissionDenied("this purpose may receive only records of persons who moved abroad",
                                   "NOT_AN_OVERSEAS_EMIGRANT")
        if overseas_emigrant_only:
            # 住基法 30-44-6: annex data leaves for use and provision without 住民票コード, whatever the mask.
            record.ClearField("resident_code")
        if tuple(allowed) != ("*",):
            mask = field_mask_pb2.FieldMask(paths=[p for p in allowed if _valid(resource, p)])
            kept = type(resource)()
            mask.MergeMessage(resource, kept)
            resource.CopyFrom(kept)
        disclosed.update(_set_paths(resource))
    return sorted(disclosed)


def _valid(resource: message.Message, path: str) -> bool:
    mask = field_mask_pb2.FieldMask(paths=[path])
    descriptor: Any = resource.DESCRIPTOR
    return bool(mask.IsValidForDescriptor(descriptor))
