"""`juki cases` drives the whole disclosure and correction flow through the gateway as the desk's clerk:
create → verify → decide → notify → fetch the 開示決定通知書 PDF → close, and a correction to the 12-5
report and to the written result, printing states and documents but no personal data."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.disclosure.v1 import disclosure_pb2_grpc
from juki_services.gateway.registry_store import insert_operator
from jukilib.grpc.channels import secure_channel
from jukitools import cli_cases
from jukitools.client import purpose_metadata, save_credential
from jukitools.demo.notifications import birth_notification
from jukitools.demo.residents import SyntheticResident
from tests.conftest import RunningSuite, eventually, issue_credential
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call, _resident

JST = ZoneInfo("Asia/Tokyo")
ROLES = frozenset({"disclosure_clerk"})


class Clerk:
    """`juki cases …` run in this process against the test suite's gateway, as a clerk of its own (each
    operator has its own rate limit: these bursts leave the demo clerk's to the other tests)."""

    def __init__(self, suite: RunningSuite, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        desk = suite.pki.clients["disclosure-desk"]
        (home / "endpoints.json").write_text(json.dumps({
            "gateway": suite.gateway, "services": {}, "ca_cert": str(suite.pki.ca_cert), "database_url": "",
            "client_certs": {"disclosure-desk": {"cert": str(desk.cert), "key": str(desk.key)}}}))
        self.operator = f"kaiji-cli-{uuid.uuid4().hex[:8]}"
        assert suite.home is not None
        # As `juki operators login` saves it.
        save_credential(home, self.operator, issue_credential(suite.home, self.operator, "disclosure-desk", ROLES))
        self._home, self._capsys = home, capsys
        self._parser = argparse.ArgumentParser()
        cli_cases.add_parser(self._parser.add_subparsers(dest="command"))
        self.printed: list[str] = []

    async def __call__(self, *argv: str, status: int = 0) -> str:
        code = await cli_cases.run(self._parser.parse_args(["cases", *argv, "--operator", self.operator]),
                                   self._home)
        out = self._capsys.readouterr().out
        self.printed.append(out)
        assert code == status, out
        return out


@pytest.fixture
async def clerk(suite: RunningSuite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Clerk:
    """A disclosure clerk registered for this test, once the gateway knows them."""
    new = Clerk(suite, tmp_path, capsys)
    connection = await asyncpg.connect(suite.database_url("gateway"))
    try:
        await insert_operator(connection, new.operator, organization="disclosure-desk", roles=ROLES,
                              valid_from=None, valid_until=None, by="test")
    finally:
        await connection.close()
    parser = argparse.ArgumentParser()
    cli_cases.add_parser(parser.add_subparsers(dest="command"))
    probe = parser.parse_args(["cases", "list", "--operator", new.operator])

    async def known() -> bool:  # the gateway re-reads the registry every second
        answered = await cli_cases.run(probe, tmp_path) == 0
        capsys.readouterr()
        return answered

    await eventually(known, timeout=10, interval=0.5)
    return new


def _field(out: str, label: str) -> list[str]:
    """The values printed after `label:` in a case block."""
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(f"  {label}:")]


async def _document(suite: RunningSuite, name: str, purpose: str) -> dpb.DisclosureDocument:
    async with secure_channel(suite.gateway, suite.client_tls("disclosure-desk")) as channel:
        return await disclosure_pb2_grpc.DisclosureServiceStub(channel).GetDisclosureDocument(
            dpb.GetDisclosureDocumentRequest(name=name), timeout=20, metadata=purpose_metadata(
                purpose, credential=suite.credential("disclosure-desk"), request_id=str(uuid.uuid4())))


async def _disclosed(clerk: Clerk, resident: SyntheticResident) -> tuple[str, str]:
    """A disclosure case opened, verified and decided through the CLI: (case name, decision notice name)."""
    created = await clerk("create", "--resident-code", resident.resident_code, "--requester-name", "請求者 本人",
                          "--document", "my-number-card", "--scope", "identity-file", "--channel", "post")
    name = created.splitlines()[0]
    assert name.startswith("disclosureCases/") and _field(created, "state") == ["RECEIVED"]
    assert _field(await clerk("verify", name), "state") == ["IDENTITY_VERIFIED"]
    decided = await clerk("decide", name.removeprefix("disclosureCases/"))  # a bare id names a disclosure case
    assert _field(decided, "state") == ["DECIDED_DISCLOSE"]
    (notice,) = _field(decided, "document")
    return name, notice


async def test_juki_cases_takes_a_disclosure_from_request_to_closing_and_saves_the_notice(
        suite: RunningSuite, clerk: Clerk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resident = _resident(300)
    await _call(suite, "maebashi-cs", "identity.ApplyNotification",
                birth_notification(resident, "cli-cases-300", EVENT_DATE, NOTIFY_TIME), "CS-NOTIFY-30-6")
    name, notice = await _disclosed(clerk, resident)
    notified = await clerk("notify", name)
    assert _field(notified, "state") == ["NOTIFIED"] and _field(notified, "etag")

    (listed,) = (await clerk("documents", name)).splitlines()
    assert listed.startswith(f"{notice}  DECISION_NOTICE to requester, ")
    monkeypatch.chdir(tmp_path)
    await clerk("fetch", notice, "--json", "notice.json")
    saved = tmp_path / f"{notice.rsplit('/', 1)[-1]}.pdf"  # the default: <document id>.pdf here
    stored = await _document(suite, notice, "DISCLOSURE-30-32")
    pdf = saved.read_bytes()
    assert pdf.startswith(b"%PDF") and hashlib.sha256(pdf).hexdigest() == stored.pdf_sha256
    assert json.loads((tmp_path / "notice.json").read_text(encoding="utf-8"))["decision"] == "DISCLOSE"
    assert saved.stat().st_mode & 0o777 == 0o600
    other = tmp_path / "copy.pdf"
    await clerk("fetch", notice, "--output", str(other))
    assert other.read_bytes() == pdf

    closed = await clerk("close", name)
    assert _field(closed, "state") == ["CLOSED"] and _field(closed, "deadline")[0].endswith("status -")
    refused = await clerk("notify", name, status=1)  # a transition that cannot follow: one line, then details
    assert refused.splitlines()[0].startswith("FAILED_PRECONDITION: ") and "CLOSED" in refused.splitlines()[0]
    assert '"reason": "INVALID_STATE_TRANSITION"' in refused
    stale = await clerk("verify", name, "--etag", 'W/"1"', status=1)  # the etag given is sent as it is
    assert stale.splitlines()[0].startswith("ABORTED: ") and '"reason": "ETAG_MISMATCH"' in stale
    printed = "".join(clerk.printed)
    assert resident.resident_code not in printed and resident.full_name not in printed
    assert "請求者 本人" not in printed


async def test_juki_cases_extends_a_deadline_once_with_a_written_notice(
        suite: RunningSuite, clerk: Clerk, tmp_path: Path) -> None:
    received = (dt.datetime.now(JST) - dt.timedelta(days=2)).replace(hour=9, minute=15, second=0, microsecond=0)
    created = await clerk("create", "--resident-code", _resident(302).resident_code, "--requester-name", "代理人",
                          "--requester-kind", "legal-representative", "--document", "driving-licence",
                          "--document", "family-register-copy", "--scope", "identity-file", "--scope",
                          "provision-status", "--received", received.replace(tzinfo=None).isoformat())
    name = created.splitlines()[0]
    assert _field(created, "received") == [f"{received:%Y-%m-%d} 09:15 JST"]  # no offset: Japan time
    deadline = dt.date.fromisoformat(_field(created, "deadline")[0].split()[0])
    await clerk("verify", name)
    new = deadline + dt.timedelta(days=15)
    extended = await clerk("extend", name, "--reason", "記録の確認に時間を要するため",
                           "--new-deadline", new.isoformat())
    assert _field(extended, "state") == ["EXTENDED"]
    (line,) = _field(extended, "extended")
    notice = line.rsplit("notice ", 1)[1]
    assert line.startswith(f"to {new.isoformat()} on ") and notice.startswith(f"{name}/documents/")
    assert "EXTENSION_NOTICE" in await clerk("documents", name)
    again = await clerk("extend", name, "--reason", "再延長", "--new-deadline", new.isoformat(), status=1)
    assert again.startswith("FAILED_PRECONDITION: ")


async def test_juki_cases_takes_a_correction_to_the_12_5_report_and_to_the_written_result(
        suite: RunningSuite, clerk: Clerk, tmp_path: Path) -> None:
    resident = _resident(301)
    wrong = birth_notification(resident, "cli-cases-301", EVENT_DATE, NOTIFY_TIME)
    wrong.record.full_name = "誤記　次郎"
    await _call(suite, "maebashi-cs", "identity.ApplyNotification", wrong, "CS-NOTIFY-30-6")
    disclosure, _ = await _disclosed(clerk, resident)

    opened = await clerk("correct", disclosure, "--item", f"record.full_name:correct={resident.full_name}")
    correction = opened.splitlines()[0]
    assert correction.startswith("correctionCases/") and _field(opened, "state") == ["RECEIVED"]
    assert _field(opened, "items") == ["record.full_name CORRECT"] and _field(opened, "disclosure") == [disclosure]
    step = await clerk("investigate", correction, "--step", "市町村の住民票と照合した")
    assert _field(step, "state") == ["INVESTIGATING"] and len(_field(step, "step")) == 1
    reported = await clerk("conclude", correction, "--error-found", "--reason-code", "ITEM_MISMATCH")
    assert _field(reported, "state") == ["AWAITING_CS_UPDATE"]
    assert _field(reported, "12-5")[0].startswith("municipalityReports/")
    assert _field(await clerk("get", correction), "state") == ["AWAITING_CS_UPDATE"]
    assert correction in await clerk("list", "--corrections")

    # A second request on the same disclosure that the investigation finds unfounded: the written result.
    other = (await clerk("correct", disclosure, "--item", "record.full_name:correct=別の氏名")).splitlines()[0]
    await clerk("investigate", other.removeprefix("correctionCases/"), "--step", "届出書と照合した")
    concluded = await clerk("conclude", other, "--no-error")
    assert _field(concluded, "state") == ["RESULT_NOTIFIED"]
    (result,) = _field(concluded, "document")
    await clerk("fetch", result, "--output", str(tmp_path / "result.pdf"), "--json", str(tmp_path / "result.json"))
    stored = await _document(suite, result, "CORRECTION-30-35")
    pdf = (tmp_path / "result.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and hashlib.sha256(pdf).hexdigest() == stored.pdf_sha256
    assert json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))["outcome"] == "NO_ERROR"
    assert _field(await clerk("close", other), "state") == ["CLOSED"]
    printed = "".join(clerk.printed)
    assert resident.resident_code not in printed and resident.full_name not in printed
    assert "誤記　次郎" not in printed and "別の氏名" not in printed
