"""Minimisation of answers to the purpose's field mask, and what a message touches.

Every message in an answer that carries a `record` (a resident, a version, ...) is cut down to the
paths the purpose allows: fields outside the mask are absent from the bytes that leave the gateway.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import field_mask_pb2, message
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from jukilib.errors import PermissionDenied

RESIDENT_CODE_FIELDS = frozenset({"resident_code", "subject_resident_code"})
RESIDENT_CODE_LISTS = frozenset({"resident_codes"})
"""Repeated fields of 住民票コード (a batch lookup's request)."""


def child_type(descriptor: FieldDescriptor) -> Descriptor | None:
    """The message type of a field holding messages to walk into (not a map's entries), else None."""
    message_type = descriptor.message_type if descriptor.type == FieldDescriptor.TYPE_MESSAGE else None
    if message_type is None or (descriptor.is_repeated and message_type.GetOptions().map_entry):
        return None
    return message_type


def _reaches(message_type: Descriptor, wanted: Callable[[Descriptor], bool], seen: frozenset[str] = frozenset(),
             ) -> bool:
    """Whether a message of this type can hold, at any depth, a field `wanted` says yes to (a type that
    contains itself counts as reaching: the walk then looks)."""
    if message_type.full_name in seen:
        return True
    if wanted(message_type):
        return True
    inner = seen | {message_type.full_name}
    return any(_reaches(child, wanted, inner) for f in message_type.fields if (child := child_type(f)))


def _carries_codes(message_type: Descriptor) -> bool:
    return any(f.name in RESIDENT_CODE_FIELDS or f.name in RESIDENT_CODE_LISTS for f in message_type.fields)


def _carries_record(message_type: Descriptor) -> bool:
    return "record" in message_type.fields_by_name


@functools.cache
def _code_plan(message_type: Descriptor) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, bool], ...]]:
    """(code fields, code list fields, (message field, repeated) that may lead to codes) of a message
    type: the walk of `resident_codes` reads only these (a ChangeInfo or a Timestamp never holds a
    住民票コード), by name, without listing every set field."""
    codes = tuple(f.name for f in message_type.fields
                  if f.name in RESIDENT_CODE_FIELDS and f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated)
    lists = tuple(f.name for f in message_type.fields
                  if f.name in RESIDENT_CODE_LISTS and f.type == FieldDescriptor.TYPE_STRING and f.is_repeated)
    children = tuple((f.name, bool(f.is_repeated)) for f in message_type.fields
                     if (child := child_type(f)) and _reaches(child, _carries_codes))
    return codes, lists, children


@functools.cache
def _resource_plan(message_type: Descriptor) -> tuple[bool, tuple[tuple[str, bool], ...]]:
    """(whether the type is a resource, (message field, repeated) that may lead to one) of a type: the
    walk of `resources` reads only these, by name (a batch answer has 1,000 results to walk)."""
    if _carries_record(message_type):
        return True, ()
    return False, tuple((f.name, bool(f.is_repeated)) for f in message_type.fields
                        if (child := child_type(f)) and _reaches(child, _carries_record))


def resources(msg: message.Message) -> list[message.Message]:
    """Messages in `msg` (itself included) that carry a `record` field."""
    found: list[message.Message] = []
    _collect_resources(msg, found)
    return found


def _collect_resources(msg: message.Message, found: list[message.Message]) -> None:
    is_resource, children = _resource_plan(msg.DESCRIPTOR)
    if is_resource:
        found.append(msg)
        return
    _descend(msg, children, _collect_resources, found)


def _descend(msg: message.Message, children: tuple[tuple[str, bool], ...],
             collect: Callable[[message.Message, list[Any]], None], found: list[Any]) -> None:
    """`collect` into each set message field named in `children` ((name, repeated) of a plan)."""
    for name, repeated in children:
        if repeated:
            for child in getattr(msg, name):
                collect(child, found)
        elif msg.HasField(name):
            collect(getattr(msg, name), found)


def record_versions(msg: message.Message, found: Sequence[message.Message] | None = None) -> list[str]:
    """Version resource names (`residents/{id}/versions/{n}`) of the records in `msg` (its `resources`,
    when the caller has them already); read before minimisation, which may leave the name and version
    out of what leaves."""
    versions: list[str] = []
    for resource in resources(msg) if found is None else found:
        fields = resource.DESCRIPTOR.fields_by_name
        if "name" not in fields or "version" not in fields:
            continue
        name, version = getattr(resource, "name"), getattr(resource, "version")  # noqa: B009
        if name and version:
            versions.append(name if "/versions/" in name else f"{name}/versions/{version}")
    return versions


def resident_codes(msg: message.Message) -> list[str]:
    """Every 住民票コード anywhere in `msg`."""
    found: list[str] = []
    _collect_codes(msg, found)
    return found


def _collect_codes(msg: message.Message, found: list[str]) -> None:
    codes, lists, children = _code_plan(msg.DESCRIPTOR)
    for name in codes:
        if value := getattr(msg, name):
            found.append(value)
    for name in lists:
        found.extend(code for code in getattr(msg, name) if code)
    _descend(msg, children, _collect_codes, found)


def clear_resident_codes(msg: message.Message) -> None:
    """Clear, in place, every 住民票コード anywhere in `msg` (the fields `resident_codes` reads)."""
    codes, lists, children = _code_plan(msg.DESCRIPTOR)
    for name in (*codes, *lists):
        msg.ClearField(name)
    for name, repeated in children:
        if repeated:
            for child in getattr(msg, name):
                clear_resident_codes(child)
        elif msg.HasField(name):
            clear_resident_codes(getattr(msg, name))


def minimise(answer: message.Message, allowed: Sequence[str], *, overseas_emigrant_only: bool,
             found: Sequence[message.Message] | None = None, hide_person_id: bool = False,
             no_resident_code: bool = False) -> list[str]:
    """Cut every resource in `answer` (its `resources`, when the caller has them already) down to
    `allowed` (in place); returns the paths disclosed. With `hide_person_id`, resources leave without
    their `name` (`residents/{id}`: an identifier that would outlive every change of 住民票コード and
    個人番号, which organs receiving provisions must not hold; they know the person by 住民票コード). With
    `no_resident_code` (an answer from the annex file, 住基法 30-44-6) no 住民票コード is left anywhere in it."""
    if no_resident_code:
        clear_resident_codes(answer)
    disclosed: set[str] = set()
    mask = tuple(allowed)
    plans: dict[str, _PrunePlan] = {}  # per resource type, looked up once per answer, not once per record
    undisclosed: dict[str, tuple[_PathTest, ...]] = {}  # per resource type: paths no resource set yet
    for resource in resources(answer) if found is None else found:
        record: Any = getattr(resource, "record")  # noqa: B009 - every resource has one, by construction
        if overseas_emigrant_only and not getattr(record, "overseas_emigrant", False):
            # 住基法 30-44-6: annex use and provision only for records of 国外転出者.
            raise PermissionDenied("this purpose may receive only records of persons who moved abroad",
                                   "NOT_AN_OVERSEAS_EMIGRANT")
        if overseas_emigrant_only:
            # 住基法 30-44-6: annex data leaves without 住民票コード, whatever the mask.
            record.ClearField("resident_code")
        kind = resource.DESCRIPTOR.full_name
        plan = plans.get(kind)
        if plan is None:
            plan = plans[kind] = _prune_plan(resource.DESCRIPTOR, mask, hide_person_id)
            undisclosed[kind] = _path_tests(resource.DESCRIPTOR, mask)
        _prune(resource, plan)
        if tests := undisclosed[kind]:  # a batch of 1,000 reads only the paths no record before it disclosed
            undisclosed[kind] = _disclose(resource, tests, disclosed)
    return sorted(disclosed)


@dataclasses.dataclass(frozen=True)
class _PathTest:
    """One path a resource may disclose (`record.x` or a field of the resource) and how to see it set:
    as `ListFields` does, by presence for a field that has it, else by a value other than the default."""

    path: str
    in_record: bool
    name: str
    has_presence: bool

    def is_set(self, resource: message.Message) -> bool:
        msg = getattr(resource, "record") if self.in_record else resource  # noqa: B009 - a resource has one
        return msg.HasField(self.name) if self.has_presence else bool(getattr(msg, self.name))


@functools.lru_cache(maxsize=1024)
def _path_tests(descriptor: Descriptor, allowed: tuple[str, ...]) -> tuple[_PathTest, ...]:
    """A test for every path a resource of this type can disclose under this mask (`_possible_paths`)."""
    record = _record_type(descriptor)
    tests = []
    for path in sorted(_possible_paths(descriptor, allowed)):
        in_record = path.startswith("record.")
        field = (record.fields_by_name[path.removeprefix("record.")] if in_record
                 else descriptor.fields_by_name[path])
        tests.append(_PathTest(path, in_record, field.name, field.has_presence))
    return tuple(tests)


def _disclose(resource: message.Message, tests: tuple[_PathTest, ...], disclosed: set[str]
              ) -> tuple[_PathTest, ...]:
    """Add to `disclosed` the paths of `tests` set in `resource` (after pruning); returns the others."""
    left = []
    for test in tests:
        if test.is_set(resource):
            disclosed.add(test.path)
        else:
            left.append(test)
    return tuple(left)


def _record_type(descriptor: Descriptor) -> Descriptor:
    record = descriptor.fields_by_name["record"].message_type
    assert record is not None  # a resource's record is a message, by construction
    return record


def _possible_paths(descriptor: Descriptor, allowed: tuple[str, ...]) -> frozenset[str]:
    """Every path a resource of this type can disclose under this mask: a field of the resource other than
    `record`, or `record.x` for a field of its record (deeper paths disclose their `record.x`)."""
    record = _record_type(descriptor)
    record_paths = {f"record.{f.name}" for f in record.fields}
    top = {f.name for f in descriptor.fields if f.name != "record"}
    if allowed == ("*",):
        return frozenset(top | record_paths)
    possible: set[str] = set()
    for path in allowed:
        if not _valid(descriptor, path):
            continue
        parts = path.split(".")
        if parts[0] != "record":
            possible.add(parts[0])
        elif len(parts) == 1:
            possible |= record_paths
        else:
            possible.add(f"record.{parts[1]}")
    return frozenset(possible)


MaskTree = dict[str, "MaskTree | None"]
"""Field names to keep: None keeps the field whole, a tree keeps only those fields inside it."""


@functools.lru_cache(maxsize=1024)
def _mask_tree(descriptor: Descriptor, allowed: tuple[str, ...]) -> MaskTree:
    """The purpose's mask for one resource type, as a tree: the paths valid for the type (others are
    ignored); a path covers every path below it (FieldMask semantics)."""
    tree: MaskTree = {}
    for path in allowed:
        if not _valid(descriptor, path):
            continue
        node = tree
        *parents, last = path.split(".")
        for name in parents:
            child = node.setdefault(name, {})
            if child is None:  # a shorter path keeps it whole already
                break
            node = child
        else:
            node[last] = None
    return tree


@dataclasses.dataclass(frozen=True)
class _PrunePlan:
    """What to clear in a message of one type under one mask: the fields outside it, and the singular
    message fields kept only in part (with the plan of their own type)."""

    clear: tuple[str, ...]
    partly: tuple[tuple[str, _PrunePlan], ...]


@functools.lru_cache(maxsize=1024)
def _prune_plan(descriptor: Descriptor, allowed: tuple[str, ...], hide_person_id: bool) -> _PrunePlan:
    """What `minimise` clears in a resource of this type: what is outside the mask (nothing under "*"),
    and its `name` when the person's id is hidden."""
    plan = _PrunePlan((), ()) if allowed == ("*",) else _plan_of(descriptor, _mask_tree(descriptor, allowed))
    if hide_person_id and "name" not in plan.clear:
        return _PrunePlan((*plan.clear, "name"), plan.partly)
    return plan


def _plan_of(descriptor: Descriptor, tree: MaskTree) -> _PrunePlan:
    clear = tuple(f.name for f in descriptor.fields if f.name not in tree)
    partly = []
    for f in descriptor.fields:
        inner = tree.get(f.name)
        if inner is not None and f.message_type is not None and not f.is_repeated:
            partly.append((f.name, _plan_of(f.message_type, inner)))
    return _PrunePlan(clear, tuple(partly))


def _prune(msg: message.Message, plan: _PrunePlan) -> None:
    """Clear, in place, every field of `msg` outside the mask (what `FieldMask.MergeMessage` into an empty
    message keeps, without building a second message)."""
    for name in plan.clear:
        msg.ClearField(name)
    for name, inner in plan.partly:
        if msg.HasField(name):
            _prune(getattr(msg, name), inner)


def _valid(descriptor: Descriptor, path: str) -> bool:
    mask = field_mask_pb2.FieldMask(paths=[path])
    return bool(mask.IsValidForDescriptor(descriptor))
