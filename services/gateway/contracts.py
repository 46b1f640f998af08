"""What the gateway's contracts say about each method, derived from the protos (never a hand-kept list).

- `RECORD_METHODS`: methods that answer personal data read from the files or the operation log: the answer
  type reaches a file's record (`IdentityRecord`, `AnnexRecord`) or a provision record of the operation log
  (a message listing the `record_versions` provided), and the request carries none (a notification's
  answer echoes what the municipality itself sent). A purpose granting one must carry volume caps (policy load rule 3).
- `ANNEX_READS`: the record-answering methods of the annex file (package `juki.annex.v1`, answer reaching
  `AnnexRecord`): 住基法 30-44-6 is keyed on these, whatever a purpose's label says.
- `resource_types(method)`: the message types of an answer that carry a `record` (what the gateway cuts to
  a purpose's field mask, `minimise.resources`).
A method added to a proto lands in these sets by its types alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from google.protobuf.descriptor import Descriptor, FileDescriptor, MethodDescriptor

from juki.agency.v1 import agency_pb2
from juki.annex.v1 import annex_pb2
from juki.disclosure.v1 import disclosure_pb2
from juki.gateway.v1 import audit_records_pb2, operation_log_pb2, operator_admin_pb2
from juki.identity.v1 import identity_pb2
from juki_services.gateway.minimise import child_type

CONTRACTS: tuple[FileDescriptor, ...] = (identity_pb2.DESCRIPTOR, annex_pb2.DESCRIPTOR, agency_pb2.DESCRIPTOR,
                                         operation_log_pb2.DESCRIPTOR, operator_admin_pb2.DESCRIPTOR,
                                         disclosure_pb2.DESCRIPTOR, audit_records_pb2.DESCRIPTOR)
FILE_RECORDS = frozenset({identity_pb2.IdentityRecord.DESCRIPTOR.full_name, annex_pb2.AnnexRecord.DESCRIPTOR.full_name})
ANNEX_RECORD = annex_pb2.AnnexRecord.DESCRIPTOR.full_name
ANNEX_PACKAGE = annex_pb2.DESCRIPTOR.package
PROVISION_FIELD = "record_versions"


def _all_methods() -> dict[str, MethodDescriptor]:
    return {f"{service.full_name}/{method.name}": method
            for file in CONTRACTS for service in file.services_by_name.values() for method in service.methods}


METHODS: dict[str, MethodDescriptor] = _all_methods()
"""Every method the gateway's contracts define, by full name (`package.Service/Method`)."""


def _types(root: Descriptor, wanted: Callable[[Descriptor], bool]) -> list[Descriptor]:
    """Every message type reachable from `root` (itself included) that `wanted` says yes to."""
    found: dict[str, Descriptor] = {}
    todo, seen = [root], set()
    while todo:
        current = todo.pop()
        if current.full_name in seen:
            continue
        seen.add(current.full_name)
        if wanted(current):
            found[current.full_name] = current
        todo.extend(child for f in current.fields if (child := child_type(f)) is not None)
    return list(found.values())


def _holds_file_record(message_type: Descriptor, records: frozenset[str] = FILE_RECORDS) -> bool:
    field = message_type.fields_by_name.get("record")
    return field is not None and field.message_type is not None and field.message_type.full_name in records


def _holds_provision(message_type: Descriptor) -> bool:
    """A provision record of the operation log (提供状況: who received which versions of the person); a
    disclosure case's own list of versions is its workflow, answered to the desk handling the case."""
    return message_type.file.package == operation_log_pb2.DESCRIPTOR.package and (
        PROVISION_FIELD in message_type.fields_by_name)


def _answers_personal_data(method: MethodDescriptor) -> bool:
    if _types(method.input_type, _holds_file_record):
        return False  # the answer echoes the record the caller sent (a notification)
    return bool(_types(method.output_type, lambda t: _holds_file_record(t) or _holds_provision(t)))


def _reads_annex_file(method: MethodDescriptor) -> bool:
    annex = frozenset({ANNEX_RECORD})
    return (method.containing_service.file.package == ANNEX_PACKAGE
            and not _types(method.input_type, lambda t: _holds_file_record(t, annex))
            and bool(_types(method.output_type, lambda t: _holds_file_record(t, annex))))


RECORD_METHODS = frozenset(name for name, method in METHODS.items() if _answers_personal_data(method))
ANNEX_READS = frozenset(name for name, method in METHODS.items() if _reads_annex_file(method))


@functools.cache
def resource_types(method: str) -> tuple[Descriptor, ...]:
    """The message types in `method`'s answer that carry a `record` (the resources a mask applies to)."""
    descriptor = METHODS.get(method)
    if descriptor is None:
        return ()
    return tuple(_types(descriptor.output_type, lambda t: "record" in t.fields_by_name))
