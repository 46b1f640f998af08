"""Who received a wrong value: the provision history matched against the record's history (30-35).

When the municipality's 修正 changes a field the person asked to correct, every organ that was
provided that field while the wrong value stood in the file received the wrong value. The wrong
value stood from the first version (in a contiguous run ending at the version the 12-5 report found
wrong) that carried it until the version that corrected it. The gateway's provision record gives the
time, recipient, purpose, fields and the exact record versions of each provision: an organ received
the wrong value when the version it was given carries it. Provisions logged before the operation log
recorded versions are judged by time instead: the version an organ received is the one current at
that time, and it received the wrong value if it was given the field while the wrong value stood.
Pure functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format, message

IDENTITY_METHODS = ("/juki.identity.v1.", "/juki.agency.v1.AgencyService/QueryResident")
ANNEX_METHODS = ("/juki.annex.v1.",)


def field_value(version: Any, path: str) -> Any:
    return getattr(version.record, path.removeprefix("record."))


def changed_fields(versions: Sequence[Any], wrong: int, resolving: int, fields: Sequence[str]) -> list[str]:
    """The fields whose value the resolving version changed from the wrong version's."""
    by_number = {v.version: v for v in versions}
    if wrong not in by_number or resolving not in by_number:
        return []
    return [f for f in fields if field_value(by_number[wrong], f) != field_value(by_number[resolving], f)]


def wrong_since(versions: Sequence[Any], wrong: int, path: str) -> dt.datetime:
    """When the wrong value entered the file: the first version of the run that carried it."""
    ordered = sorted(versions, key=lambda v: v.version)
    index = next(i for i, v in enumerate(ordered) if v.version == wrong)
    value = field_value(ordered[index], path)
    while index > 0 and field_value(ordered[index - 1], path) == value:
        index -= 1
    since: dt.datetime = ordered[index].create_time.ToDatetime(dt.UTC)
    return since


def version_at(versions: Sequence[Any], moment: dt.datetime) -> Any | None:
    """The version current at `moment` (the newest stored by then)."""
    stored = [v for v in versions if v.create_time.ToDatetime(dt.UTC) <= moment]
    return max(stored, key=lambda v: v.version) if stored else None


def _logged_version(provision: Any, versions: Sequence[Any]) -> Any | None:
    """The version of this person the provision record names, if the log recorded it."""
    logged = set(provision.record_versions)
    return next((v for v in versions if v.name in logged), None)


RESIDENT_CODE = "record.resident_code"


def _plain(value: Any) -> Any:
    """A field's value as JSON (a nested message, e.g. a PartialDate, as its proto JSON)."""
    return json_format.MessageToDict(value) if isinstance(value, message.Message) else value


def wrong_value_recipients(file: str, versions: Sequence[Any], *, wrong: int, resolving: int, fields: Sequence[str],
                           provisions: Sequence[Any], unseen: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every organ that received a corrected field while the wrong value stood, with what it received.
    `unseen`: fields the register says changed whose values these versions do not show (the 個人番号, which this
    service never reads: 番号法 19): taken as changed, and every organ that received them is told."""
    by_number = {v.version: v for v in versions}
    if resolving not in by_number:
        return []
    until = by_number[resolving].create_time.ToDatetime(dt.UTC)
    prefixes = IDENTITY_METHODS if file == "identity" else ANNEX_METHODS
    recipients: dict[str, dict[str, Any]] = {}
    changed = changed_fields(versions, wrong, resolving, fields)
    for path in [*changed, *(f for f in fields if f in unseen and f not in changed)]:
        since, wrong_value = wrong_since(versions, wrong, path), field_value(by_number[wrong], path)
        for provision in provisions:
            moment = provision.time.ToDatetime(dt.UTC)
            if not (provision.method.startswith(prefixes) and path in provision.fields):
                continue
            received = _logged_version(provision, versions)
            if received is not None:
                if field_value(received, path) != wrong_value:
                    continue
            elif since <= moment < until:
                received = version_at(versions, moment)
            else:
                continue
            entry = recipients.setdefault(provision.recipient, {
                "organization": provision.recipient, "organization_name": provision.recipient_name,
                "purposes": [], "fields": [], "provisions": [],
                "received_resident_code": False, "received_resident_codes": [], "received_values": {}})
            _note(entry, file, provision, received, path=path, wrong_value=_plain(wrong_value), moment=moment)
    return [recipients[k] for k in sorted(recipients)]


def _note(entry: dict[str, Any], file: str, provision: Any, received: Any, *, path: str, wrong_value: Any,
          moment: dt.datetime) -> None:
    """Add one provision of the wrong value of `path` to the organ's entry."""
    # What the organ itself received, the only things its notice may name the person by (30-35): the 住民票コード
    # of the version it was given (a former code, 30-4, if it got that one), never another.
    if RESIDENT_CODE in provision.fields and received is not None and received.record.resident_code:
        entry["received_resident_code"] = True
        if received.record.resident_code not in entry["received_resident_codes"]:
            entry["received_resident_codes"].append(received.record.resident_code)
    entry["received_values"][path] = wrong_value
    if provision.purpose not in entry["purposes"]:
        entry["purposes"].append(provision.purpose)
    if path not in entry["fields"]:
        entry["fields"].append(path)
    record = {"time": moment.isoformat(), "purpose": provision.purpose, "affair": provision.affair,
              "method": provision.method, "fields": [path],
              "record_version": f"{file}:{received.name}" if received is not None else ""}
    same = next((p for p in entry["provisions"] if p["time"] == record["time"]
                 and p["method"] == record["method"]), None)
    if same is None:
        entry["provisions"].append(record)
    elif path not in same["fields"]:
        same["fields"].append(path)
