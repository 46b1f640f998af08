"""Records between protobuf and the JSON the registers store, quickly.

`google.protobuf.json_format` walks every message through pure-Python code written for every corner
of the JSON mapping, paid on every notification and every answer (docs/performance.md, "Records as
JSON"). The registers' records are plain messages (strings, 32-bit integers,
booleans, enums, nested plain messages), whose proto JSON is just the Python values. For those,
`message_to_dict` does exactly what `MessageToDict(preserving_proto_field_name=True)` does, and
`constructor_value` hands a message constructor what `ParseDict(ignore_unknown_fields=True)` would
read (tests compare them on generated records), from a plan made once per message type; every other
message goes through json_format itself.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, json_format, message

_SCALAR_KINDS = {
    descriptor.FieldDescriptor.TYPE_STRING: str, descriptor.FieldDescriptor.TYPE_BOOL: bool,
    descriptor.FieldDescriptor.TYPE_INT32: int, descriptor.FieldDescriptor.TYPE_SINT32: int,
    descriptor.FieldDescriptor.TYPE_SFIXED32: int, descriptor.FieldDescriptor.TYPE_UINT32: int,
    descriptor.FieldDescriptor.TYPE_FIXED32: int,
}


@dataclass(frozen=True)
class FieldPlan:
    name: str
    explicit: bool
    """Explicit presence (messages, `optional`): present when set, even to a default."""
    kind: type | None
    """str, bool or int for scalars; None for enums and messages."""
    names: dict[int, str] | None
    """Enum value names by number."""
    nested: dict[str, FieldPlan] | None

    @functools.cached_property
    def labels(self) -> frozenset[str]:
        """Enum value names, but the default's when presence is implicit (proto JSON leaves it out)."""
        names = self.names or {}
        return frozenset(name for number, name in names.items() if number or self.explicit)


Plan = dict[str, FieldPlan]
_PLANS: dict[str, Plan | None] = {}


def plan_of(message_descriptor: Any) -> Plan | None:
    """How to write a message as proto JSON directly, or None when it has a field whose proto JSON is not
    the Python value itself, an enum name or a plain message (repeated, 64-bit, float, bytes, well-known
    types): those go through json_format."""
    full_name = message_descriptor.full_name
    if full_name not in _PLANS:
        _PLANS[full_name] = None  # a message that contains itself is not planned
        plan: Plan = {}
        for field_descriptor in message_descriptor.fields:
            field_plan = _field_plan(field_descriptor)
            if field_plan is None:
                return None
            plan[field_descriptor.name] = field_plan
        _PLANS[full_name] = plan
    return _PLANS[full_name]


def _field_plan(field_descriptor: Any) -> FieldPlan | None:
    kind = _SCALAR_KINDS.get(field_descriptor.type)
    names, nested = None, None
    if field_descriptor.is_repeated:
        return None
    if field_descriptor.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
        inner = field_descriptor.message_type
        nested = None if inner.full_name.startswith("google.protobuf.") else plan_of(inner)
        if nested is None:
            return None
    elif field_descriptor.type == descriptor.FieldDescriptor.TYPE_ENUM:
        names = {value.number: value.name for value in field_descriptor.enum_type.values}
    elif kind is None:
        return None
    return FieldPlan(field_descriptor.name, bool(field_descriptor.has_presence), kind, names, nested)


def message_to_dict(record: message.Message) -> dict[str, Any]:
    """`json_format.MessageToDict(record, preserving_proto_field_name=True)`."""
    plan = plan_of(record.DESCRIPTOR)
    if plan is None:
        return json_format.MessageToDict(record, preserving_proto_field_name=True)
    return _planned_dict(record, plan)


def _planned_dict(record: Any, plan: Plan) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, field_plan in plan.items():
        if field_plan.explicit:
            if not record.HasField(name):
                continue
            value = getattr(record, name)
        else:
            value = getattr(record, name)
            if not value:  # implicit presence: a default value is absent
                continue
        if field_plan.nested is not None:
            result[name] = _planned_dict(value, field_plan.nested)
        elif field_plan.names is not None:
            result[name] = field_plan.names.get(value, value)
        else:
            result[name] = value
    return result


_Check = tuple[type | None, bool, "Plan | None", frozenset[str] | None]
"""(scalar kind, explicit presence, nested plan, enum labels) of one field."""
_CHECKS: dict[int, tuple[Plan, dict[str, _Check]]] = {}


def _checks(plan: Plan) -> dict[str, _Check]:
    """What `is_canonical` tests of each field, as tuples (the plan is kept with them, so its id stays its own)."""
    found = _CHECKS.get(id(plan))
    if found is None or found[0] is not plan:
        found = _CHECKS[id(plan)] = (plan, {name: (p.kind, p.explicit, p.nested, None if p.names is None else p.labels)
                                            for name, p in plan.items()})
    return found[1]


def is_canonical(fields: dict[str, Any], plan: Plan) -> bool:
    """Whether proto JSON (e.g. as parsed from a file) is already what `message_to_dict` would write."""
    checks = _checks(plan)
    for name, value in fields.items():
        check = checks.get(name)
        if check is None:
            return False
        kind, explicit, nested, labels = check
        if kind is not None:
            if type(value) is not kind or not (value or explicit):
                return False
        elif nested is not None:
            if type(value) is not dict or not is_canonical(value, nested):
                return False
        elif labels is not None and not (type(value) is str and value in labels):
            return False
    return True


def constructor_value(data: dict[str, Any], message_type: type[message.Message]) -> dict[str, Any] | message.Message:
    """What a message constructor takes, for a field of `message_type`, to hold what `data` holds (proto
    JSON as the registers store it): `data` itself when it is what `message_to_dict` writes (the
    constructor reads nested dicts and enum names in C: a batch answer of 1,000 records is built in one
    call), else the message json_format reads from it."""
    plan = plan_of(message_type.DESCRIPTOR)
    if plan is not None and is_canonical(data, plan):
        return data
    return json_format.ParseDict(data, message_type(), ignore_unknown_fields=True)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp_value(value: dt.datetime) -> dict[str, int]:
    """What a constructor takes for a Timestamp field holding the aware datetime `value`: what
    `Timestamp.FromDatetime` sets, without its pure-Python calendar walk."""
    delta = value - _EPOCH
    return {"seconds": delta.days * 86_400 + delta.seconds, "nanos": delta.microseconds * 1000}
