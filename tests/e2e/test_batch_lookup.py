"""The batch lookup through the real gateway: answers in request order, an unknown code and a former code
answered NOT_FOUND in their own results (住基法 30-4: a former 住民票コード leads to nobody for a provision
purpose), no internal person id given to the organ, every resident cut down to the purpose's mask, one
operation-log row naming every resident code touched, volume caps counting records (not calls), the
30-44-6 limits of the annex file applied to every resident of a batch, and bad requests refused naming
the field."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki.identity.v1 import identity_pb2, identity_pb2_grpc
from juki.register.v1 import register_pb2
from juki_services.gateway.policy import DEFAULT_CATALOGUE
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident
from tests.conftest import RunningSuite
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _log_rows, _reason, _resident, _violated_fields
from tests.e2e.test_operators import gateway_replica
from tests.e2e.test_volume_caps import _details, _identity

BATCH = "identity.BatchLookupResidents"
SCHOLARSHIP = "EDU-SCHOLARSHIP-30-15-2-2"  # kyoiku-iinkai; a mask without 個人番号 or change information
UNKNOWN = "70000000000"
TEST_PURPOSES = """
[[purposes]]
code = "TEST-BATCH-CAPPED"
legal_basis = "住基法30-15①(1) 別表第五"
affair = "volume caps of the batch lookup under test"
recipients = ["kikaku-bu"]
methods = ["juki.identity.v1.IdentityService/BatchLookupResidents"]
fields = ["name", "record.full_name"]
operator_roles = ["provision_clerk"]
max_records_per_call = 3
max_records_per_day = 4
valid_from = 2015-06-01

[[purposes]]
code = "TEST-BATCH-LARGE"
legal_basis = "住基法30-15①(1) 別表第五"
affair = "a per-call cap above the batch lookup's own limit, under test"
recipients = ["kikaku-bu"]
methods = ["juki.identity.v1.IdentityService/BatchLookupResidents"]
fields = ["name", "record.full_name"]
operator_roles = ["provision_clerk"]
max_records_per_call = 2000
max_records_per_day = 2000
valid_from = 2015-06-01

[[purposes]]
code = "TEST-BATCH-OVERSEAS-30-44-6"
legal_basis = "住基法30-44-6②"
affair = "the batch lookup of the annex file for 国外転出者 under test"
recipients = ["kikaku-bu"]
methods = ["juki.annex.v1.AnnexService/BatchLookupAnnexResidents"]
fields = ["name", "record.full_name", "record.overseas_emigrant"]
overseas_emigrant_only = true
operator_roles = ["provision_clerk"]
max_records_per_call = 10
max_records_per_day = 100
valid_from = 2015-06-01
"""


@dataclasses.dataclass(frozen=True)
class Residents:
    first: SyntheticResident
    changed: SyntheticResident
    """Recorded, then given a new 住民票コード (`new_code`); its own code is now a former one."""
    new_code: str


@pytest.fixture(scope="module")
async def residents(suite: RunningSuite) -> Residents:
    first, changed, spare = _resident(120), _resident(121), _resident(122)
    for index, resident in ((120, first), (121, changed)):
        await _call(suite, "maebashi-cs", "identity.ApplyNotification",
                    birth_notification(resident, f"batch-e2e-{index}", EVENT_DATE, NOTIFY_TIME), "CS-NOTIFY-30-6")
    change = birth_notification(changed, "batch-e2e-code", EVENT_DATE + dt.timedelta(days=1), NOTIFY_TIME)
    change.change.kind = register_pb2.CHANGE_KIND_MODIFY
    change.change.reason = register_pb2.CHANGE_REASON_RESIDENT_CODE_CHANGE_REQUEST
    change.previous_resident_code, change.record.resident_code = changed.resident_code, spare.resident_code
    await _call(suite, "maebashi-cs", "identity.ApplyNotification", change, "CS-NOTIFY-30-6")
    return Residents(first, changed, spare.resident_code)


@pytest.fixture(scope="module")
async def replica(suite: RunningSuite, home: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A gateway replica whose catalogue adds the test purposes above."""
    catalogue = tmp_path_factory.mktemp("batch") / "purposes.toml"
    catalogue.write_text(DEFAULT_CATALOGUE.read_text(encoding="utf-8") + TEST_PURPOSES, encoding="utf-8")
    async with gateway_replica(suite, home, catalogue) as address:
        yield address


def _batch(*codes: str) -> identity_pb2.BatchLookupResidentsRequest:
    return identity_pb2.BatchLookupResidentsRequest(resident_codes=list(codes))


async def test_answers_come_in_request_order_and_former_or_unknown_codes_are_answered_not_found(
        suite: RunningSuite, residents: Residents) -> None:
    first, changed = residents.first, residents.changed
    answer, _ = await _call(suite, "kyoiku-iinkai", BATCH, _batch(
        residents.new_code, first.resident_code, UNKNOWN, changed.resident_code), SCHOLARSHIP)

    # 住基法 30-4 / 30-15: the former code of a person leads an organ to nobody, as an unknown code.
    assert [r.WhichOneof("result") for r in answer.results] == ["resident", "resident", "error", "error"]
    assert [r.resident.record.full_name for r in answer.results] == [changed.full_name, first.full_name, "", ""]
    for error in (answer.results[2].error, answer.results[3].error):
        info = error_details_pb2.ErrorInfo()
        assert error.code == code_pb2.NOT_FOUND and error.details[0].Unpack(info) and info.reason == "PERSON_NOT_FOUND"
    # The register's internal id would outlive every change of identifier: an organ never receives it.
    assert [r.resident.name for r in answer.results[:2]] == ["", ""]
    assert b"residents/" not in answer.SerializeToString()


async def test_every_resident_of_a_batch_is_cut_down_to_the_purpose_mask(
        suite: RunningSuite, residents: Residents) -> None:
    first, changed = residents.first, residents.changed
    answer, _ = await _call(suite, "kyoiku-iinkai", BATCH, _batch(first.resident_code, residents.new_code),
                            SCHOLARSHIP)

    wire = answer.SerializeToString()
    for resident in (first, changed):
        assert resident.individual_number.encode() not in wire
    for result in answer.results:
        assert result.resident.record.individual_number == "" and result.resident.record.address
        assert not result.resident.HasField("change") and not result.resident.HasField("update_time")


async def test_one_log_row_names_every_resident_code_the_batch_touched(
        suite: RunningSuite, residents: Residents) -> None:
    first, changed = residents.first, residents.changed
    _, request_id = await _call(suite, "kyoiku-iinkai", BATCH, _batch(
        first.resident_code, changed.resident_code, UNKNOWN), SCHOLARSHIP)

    rows = await _log_rows(suite, request_id)
    assert len(rows) == 1
    row = rows[0]
    assert (row["method"], row["purpose"], row["decision"], row["status"]) == (
        "/juki.identity.v1.IdentityService/BatchLookupResidents", SCHOLARSHIP, 1, "OK")
    # Asked (the unknown code and the former one included); answered: only the code held now.
    assert row["resident_codes"] == sorted({first.resident_code, changed.resident_code, UNKNOWN})
    assert "record.individual_number" not in row["disclosed_fields"]
    assert "record.full_name" in row["disclosed_fields"]


async def test_more_than_a_thousand_codes_are_refused_naming_the_field(suite: RunningSuite, replica: str) -> None:
    # Under a purpose whose per-call cap is above the contract's limit: the register's own limit answers.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with secure_channel(replica, suite.client_tls("kikaku-bu")) as channel:
            request_id = str(uuid.uuid4())
            try:
                await identity_pb2_grpc.IdentityServiceStub(channel).BatchLookupResidents(
                    _batch(*(f"{70_000_000_000 + i}" for i in range(1001))),
                    metadata=purpose_metadata("TEST-BATCH-LARGE", request_id=request_id,
                                              credential=suite.credential("kikaku-bu")), timeout=10)
            except grpc.aio.AioRpcError as error:
                error.request_id = request_id  # type: ignore[attr-defined]
                raise
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violated_fields(refused.value) == {"resident_codes"}
    rows = await _log_rows(suite, refused.value.request_id)  # type: ignore[attr-defined]
    assert [(r["status"], len(r["resident_codes"])) for r in rows] == [("INVALID_ARGUMENT", 1001)]


async def test_malformed_code_is_named_with_its_index(suite: RunningSuite, residents: Residents) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(suite, "kyoiku-iinkai", BATCH, _batch(residents.first.resident_code, "12-34"), SCHOLARSHIP)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violated_fields(refused.value) == {"resident_codes[1]"}


async def test_volume_caps_count_the_records_a_batch_answers(
        suite: RunningSuite, replica: str, residents: Residents) -> None:
    credential = suite.credential("kikaku-bu")
    first, changed = residents.first.resident_code, residents.new_code

    async def batch(*codes: str) -> object:
        return await _identity(suite, replica, "BatchLookupResidents", _batch(*codes), "TEST-BATCH-CAPPED",
                               credential)

    with pytest.raises(grpc.aio.AioRpcError) as too_many:  # 4 codes asked, 3 allowed per call
        await batch(first, changed, UNKNOWN, residents.changed.resident_code)
    assert (too_many.value.code(), _details(too_many.value)[0]) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                    "VOLUME_CAP_PER_CALL")
    await batch(first, changed)  # 2 records of the 4 a day
    await batch(first, UNKNOWN)  # 1 record: an unknown code discloses nothing and is not counted
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:  # 2 more would make 5
        await batch(first, changed)
    assert (exhausted.value.code(), _details(exhausted.value)[0]) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                                      "VOLUME_CAP_PER_DAY")
    await batch(changed, UNKNOWN)  # the 4th record still fits


async def test_annex_batch_for_a_30_44_6_purpose_leaves_without_codes_and_only_for_emigrants(
        suite: RunningSuite, replica: str) -> None:
    home, abroad = _resident(123), _resident(124)
    for index, (resident, moved) in enumerate(((home, False), (abroad, True))):
        await _call(suite, "maebashi-cs", "annex.ApplyNotification",
                    annex_notification(resident, f"batch-annex-{index}", EVENT_DATE, moved_abroad=moved),
                    "CS-NOTIFY-30-41")
    async def batch(*codes: str) -> annex_pb2.BatchLookupAnnexResidentsResponse:
        async with secure_channel(replica, suite.client_tls("kikaku-bu")) as channel:
            answer: annex_pb2.BatchLookupAnnexResidentsResponse = await annex_pb2_grpc.AnnexServiceStub(
                channel).BatchLookupAnnexResidents(
                annex_pb2.BatchLookupAnnexResidentsRequest(resident_codes=list(codes)),
                metadata=purpose_metadata("TEST-BATCH-OVERSEAS-30-44-6", credential=suite.credential("kikaku-bu")),
                timeout=10)
        return answer

    answer = await batch(abroad.resident_code, abroad.resident_code)
    assert [r.annex_resident.record.full_name for r in answer.results] == [abroad.full_name] * 2
    assert abroad.resident_code.encode() not in answer.SerializeToString()
    # The annex register answers a person who never left Japan as it answers an unknown code (30-44-6).
    mixed = await batch(abroad.resident_code, home.resident_code)
    assert mixed.results[0].annex_resident.record.full_name == abroad.full_name
    assert mixed.results[1].WhichOneof("result") == "error"
    assert mixed.results[1].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert home.full_name.encode() not in mixed.SerializeToString()


async def test_own_affairs_batch_of_the_annex_file_is_bound_by_30_44_6_like_any_recipient(suite: RunningSuite) -> None:
    """住基法 30-44-6 is keyed on the file: the governor's own Juki-net desk reads the annex file only for
    国外転出者 and never with the 住民票コード (issue 18: 60 persons who never left Japan were answered)."""
    home, abroad = _resident(125), _resident(126)
    for resident, moved in ((home, False), (abroad, True)):
        await _call(suite, "maebashi-cs", "annex.ApplyNotification",
                    annex_notification(resident, f"batch-annex-own-{moved}", EVENT_DATE, moved_abroad=moved),
                    "CS-NOTIFY-30-41")
    answer, _ = await _call(suite, "shichoson-ka", "annex.BatchLookupAnnexResidents",
                            annex_pb2.BatchLookupAnnexResidentsRequest(
                                resident_codes=[abroad.resident_code, home.resident_code]),
                            "JUKI-OWN-AFFAIRS-ANNEX", case_reference="R8-BATCH-1")
    found, refused = answer.results
    assert found.annex_resident.record.full_name == abroad.full_name and found.annex_resident.HasField("change")
    # The annex register answers a person who never left Japan as it answers an unknown code.
    assert refused.WhichOneof("result") == "error" and refused.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    wire = answer.SerializeToString()
    assert abroad.resident_code.encode() not in wire and home.full_name.encode() not in wire


async def test_concurrent_single_lookups_are_each_answered_minimised_and_logged_on_their_own(
        suite: RunningSuite, residents: Residents) -> None:
    """The gateway sends concurrent single lookups to identity as batch lookups (`juki_services.gateway.coalesce`);
    each caller still gets its own answer or error, cut to the mask, and its own operation-log row."""
    first, changed = residents.first, residents.changed
    asked = [first.resident_code, changed.resident_code, UNKNOWN, residents.new_code] * 4

    async def lookup(code: str) -> tuple[Any, str]:
        try:
            return await _call(suite, "kyoiku-iinkai", "identity.LookupResident",
                               identity_pb2.LookupResidentRequest(resident_code=code), SCHOLARSHIP)
        except grpc.aio.AioRpcError as error:
            return error, error.request_id  # type: ignore[attr-defined]

    outcomes = await asyncio.gather(*(lookup(code) for code in asked))

    for code, (answer, request_id) in zip(asked, outcomes, strict=True):
        (row,) = await _log_rows(suite, request_id)
        assert (row["method"], row["purpose"], row["decision"]) == (
            "/juki.identity.v1.IdentityService/LookupResident", SCHOLARSHIP, 1)
        if code in (UNKNOWN, changed.resident_code):  # unknown, or a former code: nobody for a provision
            assert answer.code() == grpc.StatusCode.NOT_FOUND and _reason(answer) == "PERSON_NOT_FOUND"
            assert (row["status"], row["resident_codes"]) == ("NOT_FOUND", [code])
            continue
        person = first if code == first.resident_code else changed
        assert answer.record.full_name == person.full_name and answer.record.individual_number == ""
        assert not answer.HasField("change") and person.individual_number.encode() not in answer.SerializeToString()
        current = first.resident_code if person is first else residents.new_code
        assert (row["status"], row["resident_codes"]) == ("OK", sorted({code, current}))
