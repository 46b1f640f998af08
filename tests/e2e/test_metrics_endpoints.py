"""Every service's Prometheus endpoint on a real `juki up` (issue 21): the metrics contract, no personal data,
`juki status`, and a real Prometheus scraping the suite.

One `juki up` for the module; one scripted flow through its gateway (notifications, lookups by two organs, a
disclosure case decided with its written notice, a correction found justified with its 12-5 report, the
municipality's 修正 that resolves it, the agency's 30-8 error report and an annex notification). Then:
- each service's scrape carries the contract's names for that service (README, "Metrics"), with non-zero
  RPC counts on the server side and, where the service calls others, the client side;
- no scrape of any service holds any personal value of the flow: names, kana, addresses, dates of birth in
  every format, 住民票コード, 個人番号, case references, notification ids;
- `juki status` prints one screen a test can read, from the health and metrics endpoints;
- Debian's Prometheus (`/usr/bin/prometheus`; skipped with a message when absent) scrapes every endpoint
  once a second, and its HTTP API answers an RPC metric and a domain metric of the flow.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from juki.agency.v1 import agency_pb2, agency_pb2_grpc
from juki.disclosure.v1 import disclosure_pb2 as dpb
from juki.identity.v1 import identity_pb2
from juki.register.v1 import register_pb2
from jukilib.config import SERVICES, TlsConfig
from jukilib.domain.dates import wareki
from jukilib.grpc.channels import secure_channel
from jukitools.cli_status import parse_metrics
from jukitools.client import Endpoints
from jukitools.demo.notifications import annex_notification, birth_notification
from jukitools.demo.residents import SyntheticResident, generate_residents
from jukitools.suite import DEMO_OPERATORS, SAMPLE_CALLERS, dev_pki
from tests.conftest import eventually, issue_credential
from tests.e2e.test_disclosure import CORRECTION, _decided, _desk, _investigated
from tests.e2e.test_flows import EVENT_DATE, NOTIFY_TIME, _call
from tests.prometheus_rules import alert_expression

READY_WITHIN_SECONDS = 240
PROMETHEUS = Path("/usr/bin/prometheus")
MAEBASHI = "102016"

RPC = ("rpc_server_duration_milliseconds_bucket", "rpc_server_duration_milliseconds_sum",
       "rpc_server_duration_milliseconds_count")
RPC_CLIENT = tuple(name.replace("server", "client") for name in RPC)
RUNTIME = ("juki_event_loop_lag_seconds", "juki_db_pool_in_use", "juki_db_pool_waiting", "process_cpu_seconds_total",
           "process_resident_memory_bytes")
REGISTER = ("juki_notifications_total", "juki_ingest_lag_seconds_bucket", "juki_ingest_lag_seconds_sum",
            "juki_ingest_lag_seconds_count", "juki_outbox_backlog", "juki_outbox_oldest_age_seconds",
            "juki_outbox_dead", "juki_relay_deliveries_total", "juki_relay_delivery_duration_seconds_bucket",
            "juki_relay_delivery_duration_seconds_sum", "juki_relay_delivery_duration_seconds_count",
            "juki_agency_up", "juki_review_queue_size", "juki_reports_open", "juki_reports_oldest_age_seconds")
CONTRACT: dict[str, tuple[str, ...]] = {
    "gateway": (*RPC, *RPC_CLIENT, *RUNTIME, "juki_gateway_decisions_total", "juki_gateway_denials_total",
                "juki_gateway_refusals_total", "juki_oplog_append_failures_total",
                "juki_oplog_append_duration_seconds_bucket", "juki_oplog_append_duration_seconds_sum",
                "juki_oplog_append_duration_seconds_count", "juki_oplog_queue_depth", "juki_oplog_failing_closed",
                "juki_checkpoint_age_seconds", "juki_revocation_refresh_age_seconds"),
    "identity": (*RPC, *RPC_CLIENT, *RUNTIME, *REGISTER),
    "annex": (*RPC, *RPC_CLIENT, *RUNTIME, *REGISTER),
    "disclosure": (*RPC, *RPC_CLIENT, *RUNTIME, "juki_cases_open", "juki_cases_at_risk", "juki_cases_overdue"),
    "agency": (*RPC, *RPC_CLIENT, *RUNTIME),
}
"""The contract's names each service must expose after the flow (README, "Metrics")."""


@dataclass
class UpSuite:
    """A running `juki up`, in the shape the e2e helpers call (`gateway`, `client_tls`, `credential`)."""

    home: Path
    endpoints: Endpoints
    process: subprocess.Popen[bytes]

    @property
    def gateway(self) -> str:
        return self.endpoints.gateway

    def client_tls(self, caller: str) -> TlsConfig:
        return self.endpoints.tls_for(caller)

    def credential(self, caller: str) -> str:
        if caller not in DEMO_OPERATORS:
            return ""
        operator_id, roles = DEMO_OPERATORS[caller]
        return issue_credential(self.home, operator_id, SAMPLE_CALLERS[caller], roles)

    def server_tls(self, service: str) -> TlsConfig:
        pki = dev_pki(self.home)
        pair = pki.servers[service]
        return TlsConfig(cert=pair.cert, key=pair.key, ca=pki.ca_cert)


def _juki(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUKI_HOME": str(home)}
    env.pop("JUKI_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "jukitools.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpSuite]:
    home = tmp_path_factory.mktemp("metrics-up") / "juki-home"
    env = {**os.environ, "JUKI_HOME": str(home)}
    env.pop("JUKI_DATABASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "jukitools.cli", "up", "--residents", "30",
                                "--annex-residents", "10"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        while not (home / "endpoints.json").exists():
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise AssertionError(f"juki up exited early with {process.returncode}: {output[-3000:]}")
            assert time.monotonic() < deadline, "juki up was not ready in time"
            time.sleep(0.5)
        yield UpSuite(home, Endpoints.load(home / "endpoints.json"), process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Flow:
    residents: list[SyntheticResident]
    case_references: list[str]
    notification_ids: list[str]


def _residents() -> list[SyntheticResident]:
    made = generate_residents(3, seed=21_021)
    return [SyntheticResident(**{**r.__dict__, "municipality_code": MAEBASHI,
                                 "address": f"群馬県前橋市紅雲町{i + 1}丁目{i + 7}番{i + 3}号"})
            for i, r in enumerate(made)]


@pytest.fixture(scope="module")
async def flow(up: UpSuite) -> Flow:
    """Notifications, lookups, a disclosure case, a correction resolved by the municipality, a 30-8 report."""
    suite: Any = up
    wrongly, reported, emigrant = _residents()
    ids = ["metrics-1", "metrics-2", "metrics-3", "metrics-4", "metrics-5"]
    wrong = birth_notification(wrongly, ids[0], EVENT_DATE, NOTIFY_TIME)
    wrong.record.full_name = "誤記　花子"
    await _call(suite, "maebashi-cs", "identity.ApplyNotification", wrong, "CS-NOTIFY-30-6")
    await _call(suite, "maebashi-cs", "identity.ApplyNotification",
                birth_notification(reported, ids[1], EVENT_DATE, NOTIFY_TIME), "CS-NOTIFY-30-6")
    await _call(suite, "maebashi-cs", "annex.ApplyNotification",
                annex_notification(emigrant, ids[2], EVENT_DATE, moved_abroad=True), "CS-NOTIFY-30-41")
    lookup = identity_pb2.LookupResidentRequest(resident_code=wrongly.resident_code)
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident", lookup, "EDU-SCHOLARSHIP-30-15-2-2")
    with pytest.raises(Exception):  # noqa: B017 - a refusal, counted as a denial
        await _call(suite, "kyoiku-iinkai", "identity.LookupResident", lookup, "PASSPORT-30-15-1-1")
    disclosure, _, _ = await _decided(suite, wrongly.resident_code, [dpb.DISCLOSURE_SCOPE_IDENTITY_FILE])
    investigating = await _investigated(suite, disclosure.name, wrongly.full_name)
    waiting = await _desk(suite, "ConcludeCorrectionInvestigation", dpb.ConcludeCorrectionInvestigationRequest(
        name=investigating.name, etag=investigating.etag, error_found=True, reason_code="ITEM_MISMATCH"), CORRECTION)
    fixed = birth_notification(wrongly, ids[3], EVENT_DATE, NOTIFY_TIME + dt.timedelta(days=1))
    fixed.change.kind = register_pb2.CHANGE_KIND_MODIFY
    fixed.change.reason = register_pb2.CHANGE_REASON_CLERICAL_ERROR_CORRECTION
    fixed.change.event_date.day = 2
    await _call(suite, "maebashi-cs", "identity.ApplyNotification", fixed, "CS-NOTIFY-30-6")
    async with secure_channel(up.endpoints.services["agency"], up.server_tls("gateway")) as channel:
        await agency_pb2_grpc.AgencyServiceStub(channel).SendErrorReport(agency_pb2.SendErrorReportRequest(
            file=agency_pb2.FILE_IDENTITY, resident_code=reported.resident_code, reason_code="ITEM_MISMATCH",
            fields=["record.full_name"]), timeout=10)

    async def corrected() -> bool:
        case = await _desk(suite, "GetCorrectionCase", dpb.GetCorrectionCaseRequest(name=waiting.name), CORRECTION)
        return bool(case.state == dpb.CORRECTION_STATE_RESULT_NOTIFIED)

    await eventually(corrected, timeout=60, interval=1.0)  # the disclosure service follows the report
    return Flow([wrongly, reported, emigrant], [disclosure.name, waiting.name], ids)


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        return str(answer.read().decode("utf-8"))


def _scrapes(up: UpSuite) -> dict[str, str]:
    return {service: _scrape(address) for service, address in up.endpoints.metrics.items()}


def test_every_service_has_a_metrics_endpoint_on_the_loopback(up: UpSuite) -> None:
    saved = json.loads((up.home / "endpoints.json").read_text())
    assert set(saved["metrics"]) == set(SERVICES)
    assert all(address.startswith("127.0.0.1:") for address in saved["metrics"].values())
    for service, text in _scrapes(up).items():
        assert "process_resident_memory_bytes" in text, service


async def test_each_scrape_carries_the_contract_for_its_service(up: UpSuite, flow: Flow) -> None:
    async def complete() -> bool:  # gauges refresh every few seconds; the relay delivers a moment later
        scraped = {s: parse_metrics(text) for s, text in _scrapes(up).items()}
        return all(set(CONTRACT[s]) <= set(scraped[s]) for s in SERVICES)

    await eventually(complete, timeout=40, interval=1.0)
    scraped = {s: parse_metrics(text) for s, text in _scrapes(up).items()}
    for service in SERVICES:
        missing = sorted(set(CONTRACT[service]) - set(scraped[service]))
        assert not missing, f"{service} lacks {missing}"
        for side in ("rpc_server_duration_milliseconds_count", "rpc_client_duration_milliseconds_count"):
            counts = scraped[service][side]
            assert sum(counts.values()) > 0, f"{service}: {side} is zero"
            for labels in counts:
                assert {k for k, _ in labels} == {"rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code"}
                assert dict(labels)["rpc_grpc_status_code"].isdigit()
    gateway = scraped["gateway"]
    outcomes = {dict(labels)["outcome"] for labels in gateway["juki_gateway_decisions_total"]}
    assert outcomes == {"allowed", "denied"}
    identity = scraped["identity"]
    applied = {dict(k)["kind"]: v for k, v in identity["juki_notifications_total"].items()
               if dict(k)["outcome"] == "applied"}
    assert applied.get("record", 0) >= 2 and applied.get("modify", 0) >= 1
    assert identity["juki_agency_up"] == {(("register", "identity"),): 1.0}
    assert scraped["disclosure"]["juki_cases_at_risk"] and "juki_cases_open" in scraped["disclosure"]


def _personal_values(flow: Flow) -> list[str]:
    values: list[str] = [*flow.case_references, *flow.notification_ids, "誤記　花子"]
    for person in flow.residents:
        born = person.birth_date
        values += [person.resident_code, person.individual_number, person.full_name, person.full_name_kana,
                   person.address, born.isoformat(), f"{born:%Y%m%d}", f"{born:%Y/%m/%d}",
                   f"{born.year}年{born.month}月{born.day}日", wareki(born)]
        values += [part for part in re.split(r"[\s　]+", person.full_name) if len(part) > 1]
        values += [case_id for case in flow.case_references for case_id in case.split("/")[1:]]
    return values


async def test_no_scrape_holds_a_personal_value_of_the_flow(up: UpSuite, flow: Flow) -> None:
    values = _personal_values(flow)
    for service, text in _scrapes(up).items():
        for value in values:
            assert value not in text, f"{service}'s /metrics holds a personal value of the flow"
        for labels in (labels for series in parse_metrics(text).values() for labels in series):
            for name, value in labels:
                assert not re.fullmatch(r"\d{11,12}", value), f"{service}: label {name} holds a code"


def test_juki_status_prints_one_readable_screen(up: UpSuite, flow: Flow) -> None:
    result = _juki(up.home, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for service in SERVICES:
        (line,) = [row for row in lines if row.startswith(f"{service} ") and "SERVING" in row]
        assert " up " in line, line
    (identity,) = [row for row in lines if row.startswith("identity ") and "SERVING" not in row]
    assert identity.split()[4] == "up"  # the agency, as the relay last reached it
    assert any(row.startswith("disclosure   cases open ") for row in lines)
    assert any(row.startswith("operation log  checkpoint age ") and "failing closed no" in row for row in lines)
    for value in _personal_values(flow):
        assert value not in result.stdout


def test_juki_status_watch_redraws_in_place(up: UpSuite) -> None:
    env = {**os.environ, "JUKI_HOME": str(up.home)}
    watch = subprocess.Popen([sys.executable, "-m", "jukitools.cli", "status", "--watch", "0.5"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert watch.stdout is not None
    os.set_blocking(watch.stdout.fileno(), False)
    output = b""
    deadline = time.monotonic() + 60
    while output.count(b"juki status at") < 2 and time.monotonic() < deadline and watch.poll() is None:
        output += watch.stdout.read() or b""
        time.sleep(0.2)
    watch.send_signal(signal.SIGINT)
    watch.communicate(timeout=20)
    assert output.count(b"\x1b[H\x1b[2J") >= 2 and output.count(b"juki status at") >= 2, output[-500:]
    assert watch.returncode == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _query(port: int, expression: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def prometheus(up: UpSuite, tmp_path: Path) -> Iterator[int]:
    """Debian's Prometheus on 127.0.0.1 scraping every service each second (its own storage); its port."""
    if not PROMETHEUS.exists():
        pytest.skip("Debian's prometheus is not installed (/usr/bin/prometheus): apt-get install prometheus")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    jobs = [{"job_name": service, "scrape_interval": "1s", "static_configs": [{"targets": [address]}]}
            for service, address in up.endpoints.metrics.items()]
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                  "scrape_configs": jobs}))
    process = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_prometheus_scrapes_the_suite_and_answers_rpc_and_domain_metrics(up: UpSuite, flow: Flow,
                                                                               prometheus: int) -> None:
    port = prometheus
    # A lookup after Prometheus started, so that its first scrapes already see the calls.
    suite: Any = up
    await _call(suite, "kyoiku-iinkai", "identity.LookupResident",
                identity_pb2.LookupResidentRequest(resident_code=flow.residents[0].resident_code),
                "EDU-SCHOLARSHIP-30-15-2-2")

    seen: dict[str, Any] = {}

    async def scraped() -> bool:
        # The gateway answers LookupResident; the register sees the gateway's coalesced batch lookups.
        try:
            seen["up"] = {r["metric"]["job"] for r in _query(port, "up == 1")}
            seen["rpc"] = _query(port, "sum by (job) "
                                       '(rpc_server_duration_milliseconds_count{rpc_method="LookupResident"})')
            seen["domain"] = _query(port, 'juki_notifications_total{outcome="applied"}')
        except OSError as error:
            seen["error"] = repr(error)
            return False
        return (seen["up"] == set(SERVICES) and
                any(r["metric"]["job"] == "gateway" and float(r["value"][1]) > 0 for r in seen["rpc"]) and
                {r["metric"].get("register") for r in seen["domain"]} == {"identity", "annex"})

    try:
        await eventually(scraped, timeout=90, interval=1.0)
    except AssertionError:
        raise AssertionError(f"Prometheus did not see the suite's metrics: {seen}") from None
    backlog = _query(port, "juki_outbox_backlog")
    assert {r["metric"]["register"] for r in backlog} == {"identity", "annex"}
    assert all(r["metric"]["job"] in ("identity", "annex") for r in backlog)


async def _agency_fails(up: UpSuite, calls: int) -> None:
    async with secure_channel(up.endpoints.services["agency"], up.server_tls("gateway")) as channel:
        await agency_pb2_grpc.AgencyServiceStub(channel).SetFaultInjection(agency_pb2.SetFaultInjectionRequest(
            fault_injection=agency_pb2.FaultInjection(fail_next_calls=calls)), timeout=10)


async def test_an_agency_that_fails_makes_the_outbox_alerts_true_on_the_scraped_data(up: UpSuite, flow: Flow,
                                                                                   prometheus: int) -> None:
    """Issue 21, the fault test: the agency refuses every change (住基法 30-7: the register must still hand each
    one over), a new notification waits in the identity outbox, and on what Prometheus scraped the shipped
    alert expressions become true: `JukiAgencyUnreachable` as shipped, `JukiOutboxStuck` with its 15-minute
    age lowered to 5 s (a test cannot wait 15 minutes; its other conditions, a backlog still ageing, are
    unchanged). Both are false before the fault."""
    port = prometheus
    unreachable = alert_expression("JukiAgencyUnreachable")
    stuck = alert_expression("JukiOutboxStuck")
    assert "> 900" in stuck
    stuck = stuck.replace("> 900", "> 5")

    async def scraping() -> bool:
        try:
            return bool(_query(port, "juki_outbox_backlog"))
        except OSError:
            return False

    await eventually(scraping, timeout=90, interval=1.0)
    assert _query(port, stuck) == [] and _query(port, unreachable) == []
    await _agency_fails(up, 1_000_000)
    try:
        made = generate_residents(1, seed=21_777)[0]
        newborn = SyntheticResident(**{**made.__dict__, "municipality_code": MAEBASHI,
                                       "address": "群馬県前橋市大手町一丁目1番1号"})
        suite: Any = up
        await _call(suite, "maebashi-cs", "identity.ApplyNotification",
                    birth_notification(newborn, "metrics-fault-1", EVENT_DATE, NOTIFY_TIME), "CS-NOTIFY-30-6")
        seen: dict[str, Any] = {}

        async def alerting() -> bool:
            seen["unreachable"] = _query(port, unreachable)
            seen["stuck"] = _query(port, stuck)
            return (any(r["metric"].get("register") == "identity" for r in seen["unreachable"])
                    and any(r["metric"].get("register") == "identity" for r in seen["stuck"]))

        try:
            await eventually(alerting, timeout=150, interval=2.0)
        except AssertionError:
            raise AssertionError(f"the outbox alerts did not become true: {seen}") from None
    finally:
        await _agency_fails(up, 0)
