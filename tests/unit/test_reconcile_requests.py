"""`juki reconcile --apply` applies a change the register lost as the municipality's own notification: the
request rebuilt from the version the prefecture stored (and sent to the agency) is, byte for byte, the one
the municipality sent, so its digest is the resend's and a resend is answered, never applied twice."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2 as rpb
from jukilib import protojson
from jukitools.cli_reconcile import municipality_request
from tests.integration.registers import MAEBASHI, REGISTERS, new_person

VERSION_TYPES: dict[str, Any] = {"identity": identity_pb2.ResidentVersion, "annex": annex_pb2.AnnexResidentVersion}


def _stored(register: str, request: Any) -> Any:
    """The version as the register answers and forwards it (`RegisterApi.version_fields`): the record as stored
    (`protojson.message_to_dict`), the change information completed by the prefecture."""
    version = VERSION_TYPES[register](name="residents/0/versions/3", version=3, record=protojson.message_to_dict(
        request.record))
    version.change.CopyFrom(request.change)
    version.change.municipality_code, version.change.notification_id = MAEBASHI, request.notification_id
    version.change.receive_time.FromDatetime(dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC))
    return version


@pytest.mark.parametrize("register", ["identity", "annex"])
def test_a_lost_change_is_rebuilt_as_the_request_the_municipality_sent(register: str) -> None:
    sent = REGISTERS[register].request(new_person(), "reconcile-1", kind=rpb.CHANGE_KIND_MODIFY,
                                       reason=rpb.CHANGE_REASON_ADDRESS_CHANGE_WITHIN_MUNICIPALITY)
    rebuilt = municipality_request(register, _stored(register, sent))
    assert rebuilt.SerializeToString(deterministic=True) == sent.SerializeToString(deterministic=True)
    assert hashlib.sha256(rebuilt.SerializeToString(deterministic=True)).digest() == hashlib.sha256(
        sent.SerializeToString(deterministic=True)).digest()


def test_a_lost_change_of_resident_code_carries_the_code_it_started_from() -> None:
    before, person = new_person(), new_person()
    sent = REGISTERS["identity"].request(person, "reconcile-code", kind=rpb.CHANGE_KIND_MODIFY,
                                         reason=rpb.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST,
                                         previous_code=before.code)
    rebuilt = municipality_request("identity", _stored("identity", sent), previous_code=before.code)
    assert rebuilt.SerializeToString(deterministic=True) == sent.SerializeToString(deterministic=True)
