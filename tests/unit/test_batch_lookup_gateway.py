"""The gateway's handling of batch lookups, without servers: every requested code is a code touched,
every resident of a batch answer is minimised (the disclosed paths are those of all of them), the
30-44-6 check of the catalogue covers the annex batch method, and an operator credential's signature is
checked once while everything else about it is checked on every call."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from juki.annex.v1 import annex_pb2
from juki.identity.v1 import identity_pb2
from juki_services.gateway import minimise, proxy
from juki_services.gateway.policy import CatalogueError, parse_catalogue
from jukilib.domain.municipalities import MunicipalityTable, gunma_municipalities
from jukilib.errors import NotFound, PermissionDenied, Unauthenticated, to_status
from jukilib.operator_credential import issue
from tests.unit.test_minimise import INDIVIDUAL_NUMBER, RESIDENT_CODE, _annex_resident, _resident

MASK = ["name", "record.full_name", "record.full_name_kana", "record.address"]


def _batch_answer(*residents: identity_pb2.Resident | None) -> identity_pb2.BatchLookupResidentsResponse:
    answer = identity_pb2.BatchLookupResidentsResponse()
    for resident in residents:
        result = answer.results.add()
        if resident is None:
            result.error.CopyFrom(to_status(NotFound("no person with this resident code in the file",
                                                     "PERSON_NOT_FOUND")))
        else:
            result.resident.CopyFrom(resident)
    return answer


def test_every_requested_code_is_a_code_touched() -> None:
    request = identity_pb2.BatchLookupResidentsRequest(resident_codes=["11111111111", "22222222222", "11111111111"])
    assert minimise.resident_codes(request) == ["11111111111", "22222222222", "11111111111"]


def test_codes_of_a_batch_answer_are_those_of_its_residents() -> None:
    second = _resident()
    second.record.resident_code = "98765432109"
    assert minimise.resident_codes(_batch_answer(_resident(), None, second)) == [RESIDENT_CODE, "98765432109"]


def test_every_resident_of_a_batch_answer_is_cut_down_to_the_mask() -> None:
    answer = _batch_answer(*(_resident() for _ in range(50)), None)

    minimise.minimise(answer, MASK, overseas_emigrant_only=False)

    assert INDIVIDUAL_NUMBER.encode() not in answer.SerializeToString()
    for result in answer.results[:50]:
        assert result.resident.record.full_name and result.resident.record.address
        assert not result.resident.HasField("change") and result.resident.version == 0
    assert answer.results[50].error.code == 5  # the not-found result is left as it is


def test_disclosed_paths_include_a_field_only_a_later_resident_has() -> None:
    without_kana = _resident()
    without_kana.record.ClearField("full_name_kana")

    disclosed = minimise.minimise(_batch_answer(without_kana, without_kana, _resident()), MASK,
                                  overseas_emigrant_only=False)

    assert disclosed == ["name", "record.address", "record.full_name", "record.full_name_kana"]


def test_disclosed_paths_of_a_batch_under_star_list_every_field_present() -> None:
    disclosed = minimise.minimise(_batch_answer(_resident(), _resident()), ["*"], overseas_emigrant_only=False)
    assert {"record.individual_number", "change", "update_time", "name"} <= set(disclosed)


def test_one_resident_who_did_not_move_abroad_refuses_an_overseas_only_batch() -> None:
    answer = annex_pb2.BatchLookupAnnexResidentsResponse()
    for overseas in (True, False):
        answer.results.add().annex_resident.CopyFrom(_annex_resident(overseas_emigrant=overseas))
    with pytest.raises(PermissionDenied) as refused:
        minimise.minimise(answer, ["record.full_name"], overseas_emigrant_only=True)
    assert refused.value.reason == "NOT_AN_OVERSEAS_EMIGRANT"


def test_overseas_only_batch_leaves_without_any_resident_code() -> None:
    answer = annex_pb2.BatchLookupAnnexResidentsResponse()
    for _ in range(3):
        answer.results.add().annex_resident.CopyFrom(_annex_resident(overseas_emigrant=True))
    minimise.minimise(answer, ["record.full_name", "record.overseas_emigrant"], overseas_emigrant_only=True)
    assert RESIDENT_CODE.encode() not in answer.SerializeToString()


@pytest.fixture(scope="module")
def municipalities() -> MunicipalityTable:
    return gunma_municipalities()


def test_annex_provision_purpose_with_the_batch_method_must_be_limited_to_overseas_emigrants(
        municipalities: MunicipalityTable) -> None:
    text = '''version = "t"
[[organizations]]
code = "kikaku-bu"
name = "企画部"
kind = "governor_department"

[[purposes]]
code = "ANNEX-BATCH"
legal_basis = "住基法30-44-6②"
affair = "test"
recipients = ["kikaku-bu"]
methods = ["juki.annex.v1.AnnexService/BatchLookupAnnexResidents"]
fields = ["record.full_name"]
valid_from = 2024-05-27
'''
    with pytest.raises(CatalogueError, match="overseas_emigrant_only"):
        parse_catalogue(text, municipalities)
    with pytest.raises(CatalogueError, match="resident_code"):
        parse_catalogue(text.replace('fields = ["record.full_name"]',
                                     'fields = ["record.resident_code"]\noverseas_emigrant_only = true'),
                        municipalities)


class _Counting:
    """An Ed25519 public key that counts its verifications."""

    def __init__(self, key: Any) -> None:
        self._key = key
        self.verified = 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.verified += 1
        self._key.verify(signature, data)

    def public_bytes(self, *args: Any) -> bytes:
        return bytes(self._key.public_bytes(*args))


def _gateway(public_key: Any) -> proxy.Gateway:
    operators = proxy.Operators(registry=None, public_key=public_key, max_lifetime=dt.timedelta(hours=8))  # type: ignore[arg-type]
    return proxy.Gateway(lambda: None, None, None, operators=operators, counter=None)  # type: ignore[arg-type, return-value]


def test_a_credential_signature_is_verified_once_and_a_forged_one_every_time() -> None:
    private = Ed25519PrivateKey.generate()
    counting = _Counting(private.public_key())
    gateway = _gateway(counting)
    token = issue(private, "kyoiku-0001", "kyoiku-iinkai", {"provision_clerk"})

    assert gateway._genuine(token) == gateway._genuine(token)
    assert counting.verified == 1
    forged = issue(Ed25519PrivateKey.generate(), "kyoiku-0001", "kyoiku-iinkai", {"provision_clerk"})
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            gateway._genuine(forged)
    assert counting.verified == 3
