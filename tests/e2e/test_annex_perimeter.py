"""住基法 30-44-6 in the annex register itself (defence in depth, keyed on the file, deny by default): whatever
purpose and mask the gateway forwards, the annex file answers reads only with records of 国外転出者 and never
with the 住民票コード, unless the gateway declared the call the person's own disclosure (30-44-13); and only
the gateway can declare it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import grpc
import pytest

from juki.annex.v1 import annex_pb2, annex_pb2_grpc
from juki.register.v1 import register_pb2
from jukilib import caller
from jukilib.grpc.channels import secure_channel
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import annex_notification
from jukitools.demo.residents import SyntheticResident
from tests.conftest import RunningSuite
from tests.e2e.test_flows import EVENT_DATE, _call, _reason, _resident

TWIN_NAME, TWIN_BIRTH = "吾妻　三郎", (1981, 8, 8)


@dataclasses.dataclass(frozen=True)
class Pair:
    home: SyntheticResident
    """Never left Japan."""
    abroad: SyntheticResident
    """A 国外転出者, recorded in Japan first; the same 4 items as `home` but the address."""
    home_name: str
    abroad_name: str


def _twin(resident: SyntheticResident) -> SyntheticResident:
    return dataclasses.replace(resident, full_name=TWIN_NAME, birth_date=dt.date(*TWIN_BIRTH))


@pytest.fixture(scope="module")
async def pair(suite: RunningSuite) -> Pair:
    home, abroad = _twin(_resident(970)), _twin(_resident(971))
    names = []
    for resident, moved, key in ((home, False, "home"), (abroad, False, "abroad")):
        answer, _ = await _call(suite, "maebashi-cs", "annex.ApplyNotification",
                                annex_notification(resident, f"perimeter-{key}", EVENT_DATE, moved_abroad=moved),
                                "CS-NOTIFY-30-41")
        names.append(answer.annex_resident_version.name.split("/versions/", maxsplit=1)[0])
    departure = annex_notification(abroad, "perimeter-abroad-2", EVENT_DATE, moved_abroad=True)
    departure.change.kind = register_pb2.CHANGE_KIND_MODIFY
    departure.change.reason = register_pb2.CHANGE_REASON_EX_OFFICIO_CORRECTION
    departure.change.event_date.day = EVENT_DATE.day + 2
    await _call(suite, "maebashi-cs", "annex.ApplyNotification", departure, "CS-NOTIFY-30-41")
    return Pair(home, abroad, *names)


def _as_gateway(purpose: str, *, subject_access: bool = False) -> tuple[tuple[str, str], ...]:
    """What the gateway would send: an organ's purpose, no field mask at all (every field), and a subject
    access only when asked."""
    return caller.Caller(organization="kikaku-bu", operator="kikaku-0001", purpose=purpose,
                         request_id="perimeter-test", subject_access=subject_access).to_metadata()


async def _direct(suite: RunningSuite, method: str, request: Any, metadata: tuple[tuple[str, str], ...],
                  ) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """Call the annex register with the gateway's certificate; (answer, trailing metadata)."""
    async with secure_channel(suite.address("annex"), suite.server_tls("gateway")) as channel:
        call = getattr(annex_pb2_grpc.AnnexServiceStub(channel), method)(request, metadata=metadata, timeout=10)
        answer = await call
        return answer, tuple(await call.trailing_metadata() or ())


async def test_the_annex_register_answers_emigrants_only_and_never_the_code_whatever_the_mask(
        suite: RunningSuite, pair: Pair) -> None:
    metadata = _as_gateway("JUKI-OWN-AFFAIRS-ANNEX")
    answer, trailers = await _direct(suite, "LookupAnnexResident", annex_pb2.LookupAnnexResidentRequest(
        resident_code=pair.abroad.resident_code), metadata)
    assert answer.record.overseas_emigrant and answer.record.full_name == TWIN_NAME
    assert answer.record.resident_code == "" and pair.abroad.resident_code.encode() not in answer.SerializeToString()
    # The code goes to the gateway alone, for the operation log (提供状況, 30-32).
    assert caller.metadata_value(trailers, caller.ANSWERED_CODES_KEY) == pair.abroad.resident_code
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _direct(suite, "LookupAnnexResident", annex_pb2.LookupAnnexResidentRequest(
            resident_code=pair.home.resident_code), metadata)
    # NOT_FOUND, as for a code nobody has: nothing tells the caller that the person's 附票 is here.
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND and _reason(refused.value) == "PERSON_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as by_name:
        await _direct(suite, "GetAnnexResident", annex_pb2.GetAnnexResidentRequest(name=pair.home_name), metadata)
    assert by_name.value.code() == grpc.StatusCode.NOT_FOUND


async def test_batch_search_and_history_follow_the_same_rule(suite: RunningSuite, pair: Pair) -> None:
    metadata = _as_gateway("JUKI-OWN-AFFAIRS-ANNEX")
    batch, _ = await _direct(suite, "BatchLookupAnnexResidents", annex_pb2.BatchLookupAnnexResidentsRequest(
        resident_codes=[pair.home.resident_code, pair.abroad.resident_code]), metadata)
    assert [r.WhichOneof("result") for r in batch.results] == ["error", "annex_resident"]
    assert batch.results[0].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    query = register_pb2.SearchQuery(full_name=TWIN_NAME, birth_date=register_pb2.PartialDate(
        precision=register_pb2.DATE_PRECISION_DAY, year=TWIN_BIRTH[0], month=TWIN_BIRTH[1], day=TWIN_BIRTH[2]))
    found, _ = await _direct(suite, "SearchAnnexResidents", annex_pb2.SearchAnnexResidentsRequest(query=query),
                             metadata)
    assert [c.annex_resident.name for c in found.candidates] == [pair.abroad_name]
    history, _ = await _direct(suite, "ListAnnexResidentVersions", annex_pb2.ListAnnexResidentVersionsRequest(
        parent=pair.abroad_name), metadata)
    # The version from before the departure (a domestic address) is not a 国外転出者's record.
    assert [v.record.overseas_emigrant for v in history.annex_resident_versions] == [True]
    assert all(not v.record.resident_code and not v.record.address for v in history.annex_resident_versions)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _direct(suite, "ListAnnexResidentVersions", annex_pb2.ListAnnexResidentVersionsRequest(
            parent=pair.home_name), metadata)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    for wire in (batch.SerializeToString(), found.SerializeToString(), history.SerializeToString()):
        assert pair.home.address.encode() not in wire
        assert pair.home.resident_code.encode() not in wire and pair.abroad.resident_code.encode() not in wire


async def test_a_subject_access_sees_a_non_emigrants_record_still_without_the_code(
        suite: RunningSuite, pair: Pair) -> None:
    # 住基法 30-44-13: the person's own disclosure (the gateway declares it for DISCLOSURE-RECORDS-30-32 only).
    answer, _ = await _direct(suite, "LookupAnnexResident", annex_pb2.LookupAnnexResidentRequest(
        resident_code=pair.home.resident_code), _as_gateway("DISCLOSURE-RECORDS-30-32", subject_access=True))
    assert answer.record.address == pair.home.address and answer.record.resident_code == ""


async def test_only_the_gateway_declares_a_subject_access(suite: RunningSuite, pair: Pair) -> None:
    # An organ that sends the key itself gets nothing more: the gateway builds the metadata it forwards.
    forged = (*purpose_metadata("ANNEX-OVERSEAS-30-44-6-2", credential=suite.credential("kikaku-bu")),
              (caller.SUBJECT_ACCESS_KEY, "granted"))
    async with secure_channel(suite.gateway, suite.client_tls("kikaku-bu")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await annex_pb2_grpc.AnnexServiceStub(channel).LookupAnnexResident(
                annex_pb2.LookupAnnexResidentRequest(resident_code=pair.home.resident_code), metadata=forged,
                timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    # And a backend takes no `x-juki-*` key from any certificate but the gateway's.
    async with secure_channel(suite.address("annex"), suite.client_tls("kikaku-bu")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:
            await annex_pb2_grpc.AnnexServiceStub(channel).LookupAnnexResident(
                annex_pb2.LookupAnnexResidentRequest(resident_code=pair.home.resident_code),
                metadata=_as_gateway("DISCLOSURE-RECORDS-30-32", subject_access=True), timeout=10)
    assert untrusted.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
