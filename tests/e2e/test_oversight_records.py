"""The oversight leaves evidence (issue 19): each review of the operation log is recorded with who reviewed which
period, the findings and the follow-up; incidents are kept with the items of a report to the Personal
Information Protection Commission (個人情報の保護に関する法律 第68条); both through the gateway as an auditor, so
each change is also in the hash-chained log. `juki pia report` gives the figures of the PIA's threshold
judgement (特定個人情報保護評価指針 第6) from the system itself."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from pypdf import PdfReader

from juki.gateway.v1 import audit_records_pb2 as pb
from juki.gateway.v1 import audit_records_pb2_grpc
from jukilib.domain.dates import JAPAN
from jukilib.grpc.channels import secure_channel
from jukitools.cli_oversight import assessment_due, pia_figures, pia_lines
from jukitools.client import purpose_metadata
from jukitools.demo.notifications import birth_notification
from tests.conftest import RunningSuite
from tests.e2e.test_audit import _identity
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _resident
from tests.e2e.test_operation_log_completeness import _detail, _entries
from tests.e2e.test_operators import _reason, _violations

NOW = dt.datetime.now(dt.UTC)


async def _call(suite: RunningSuite, method: str, request: Any, caller: str = "auditor") -> Any:
    async with secure_channel(suite.gateway, suite.client_tls(caller)) as channel:
        stub = audit_records_pb2_grpc.AuditRecordServiceStub(channel)
        return await getattr(stub, method)(
            request, metadata=purpose_metadata("AUDIT-RECORDS", credential=suite.credential(caller)), timeout=10)


def _review(**changes: Any) -> pb.AuditReview:
    review = pb.AuditReview(findings="深夜の照会 2 件を確認; 業務上の理由あり", follow_up="なし",
                            entry_sequences=[3, 1])
    review.start_time.FromDatetime(NOW - dt.timedelta(days=7))
    review.end_time.FromDatetime(NOW)
    for field, value in changes.items():
        if field in ("start_time", "end_time"):
            getattr(review, field).FromDatetime(value)
        else:
            setattr(review, field, value)
    return review


async def test_a_review_is_recorded_with_its_reviewer_period_findings_and_follow_up(suite: RunningSuite) -> None:
    created = await _call(suite, "CreateAuditReview", pb.CreateAuditReviewRequest(audit_review=_review()))
    assert (created.reviewer, created.findings, list(created.entry_sequences)) == (
        "kansa-0001", "深夜の照会 2 件を確認; 業務上の理由あり", [1, 3])
    listed = await _call(suite, "ListAuditReviews", pb.ListAuditReviewsRequest())
    assert created.name in {r.name for r in listed.audit_reviews}
    [row] = await _entries(suite, "detail LIKE $1", f"%{created.name}%")
    assert (row["operator"], row["status"]) == ("kansa-0001", "OK")
    assert _detail(row)["entry_sequences"] == [1, 3]


async def test_a_review_without_findings_or_with_an_inverted_period_is_refused_naming_the_fields(
        suite: RunningSuite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(suite, "CreateAuditReview", pb.CreateAuditReviewRequest(audit_review=_review(
            findings="", end_time=NOW - dt.timedelta(days=30))))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(refused.value) == {"audit_review.findings", "audit_review.end_time"}


async def test_only_an_auditor_keeps_the_oversight_records(suite: RunningSuite) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(suite, "ListIncidents", pb.ListIncidentsRequest(), caller="kikaku-bu")
    assert (refused.value.code(), _reason(refused.value)) == (grpc.StatusCode.PERMISSION_DENIED,
                                                              "PURPOSE_NOT_GRANTED")


def _incident() -> pb.Incident:
    incident = pb.Incident(summary="窓口端末の画面を第三者が撮影したおそれ", data_items=["氏名", "住所"],
                           persons_affected=3, cause="端末の配置", serious=True)
    incident.occur_time.FromDatetime(NOW - dt.timedelta(days=2))
    incident.discover_time.FromDatetime(NOW - dt.timedelta(days=1))
    return incident


async def test_an_incident_is_kept_and_its_handling_logged_before_and_after(suite: RunningSuite) -> None:
    created = await _call(suite, "CreateIncident", pb.CreateIncidentRequest(incident=_incident()))
    assert (created.state, created.recorded_by, created.persons_affected) == (pb.INCIDENT_STATE_OPEN, "kansa-0001", 3)
    update = pb.Incident(name=created.name, state=pb.INCIDENT_STATE_REPORTED)
    update.commission_report_time.FromDatetime(NOW)
    reported = await _call(suite, "UpdateIncident", pb.UpdateIncidentRequest(
        incident=update, update_mask=field_mask_pb2.FieldMask(paths=["state", "commission_report_time"])))
    assert reported.state == pb.INCIDENT_STATE_REPORTED and reported.summary == created.summary
    rows = await _entries(suite, "detail LIKE $1", f"%{created.name}%")
    assert [(_detail(r)["before"], _detail(r)["after"]["state"]) for r in rows] == [  # type: ignore[index]
        (None, "open"), ({"state": "open", "serious": True, "persons_affected": 3, "commission_report_time": None},
                         "reported")]
    assert "窓口端末" not in json.dumps([r["detail"] for r in rows])  # the texts stay in the register


async def test_an_incident_missing_its_items_is_refused_naming_the_fields(suite: RunningSuite) -> None:
    incident = _incident()
    incident.ClearField("data_items")
    incident.summary = ""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(suite, "CreateIncident", pb.CreateIncidentRequest(incident=incident))
    assert _violations(refused.value) == {"incident.data_items", "incident.summary"}


@pytest.mark.parametrize(("persons", "handlers", "serious", "due"), [
    (999, 0, False, "評価の実施は義務付けられない (対象人数1,000人未満)"),
    (9_999, 600, True, "基礎項目評価"),
    (50_000, 10, False, "基礎項目評価"),
    (50_000, 500, False, "基礎項目評価及び重点項目評価 (取扱者数500人以上又は重大事故)"),
    (200_000, 10, False, "基礎項目評価及び重点項目評価"),
    (200_000, 10, True, "基礎項目評価及び全項目評価"),
    (1_900_000, 0, False, "基礎項目評価及び全項目評価"),
])
def test_the_threshold_judgement_follows_the_guideline(persons: int, handlers: int, serious: bool, due: str) -> None:
    assert assessment_due(persons, handlers, serious) == due


async def test_the_pia_figures_come_from_the_system(suite: RunningSuite, tmp_path: Path) -> None:
    from juki_services.disclosure.notices import render

    await _call(suite, "CreateIncident", pb.CreateIncidentRequest(incident=_incident()))
    birth = birth_notification(_resident(191), "pia-birth-191", EVENT_DATE, NOTIFY_TIME)
    await _identity(suite, "maebashi-cs", "ApplyNotification", birth, "CS-NOTIFY-30-6")
    figures = await pia_figures(_Registers(suite), dt.datetime.now(JAPAN).date())  # type: ignore[arg-type]
    assert figures.persons["identity"] > 0 and figures.serious_incidents >= 1
    assert figures.handlers >= 5  # the demo operators who read resident data, from the log
    text = "\n".join(pia_lines(figures))
    assert "対象人数" in text and "取扱者数" in text and "重大事故" in text
    reader = PdfReader(io.BytesIO(render("特定個人情報保護評価 しきい値判断の数値", pia_lines(figures))))
    assert "対象人数" in "".join(page.extract_text() for page in reader.pages)


class _Registers:
    """The test suite's URLs in the shape `pia_figures` asks of a LocalSuite."""

    def __init__(self, suite: RunningSuite) -> None:
        self._suite = suite

    def database_url(self, service: str) -> str:
        return self._suite.database_url(service)

    def operation_log_url(self) -> str:
        return self._suite.database_url("gateway")
