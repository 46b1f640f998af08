"""The alert rules shipped in ops/prometheus (issue 21): valid for Prometheus, unit-tested with promtool firing
and not firing, each linked to its section of docs/runbook.md, and written only on the metrics of the contract
(ops/prometheus/metrics.txt), so that an alert cannot wait for a series nobody exports.

promtool (Debian's `prometheus` package, installed by .ci/run) checks and runs the rules; the structure is read
from the files' text (`tests/prometheus_rules.py`: the project has no YAML parser), held to what promtool
and a real Prometheus load.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus_rules import (
    ALERTS,
    PROMETHEUS,
    RECORDING,
    alert_expression,
    alerts,
    recorded,
    rules,
    series_names,
)

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = (ALERTS, RECORDING)
TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "golden-signals.json"
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook_url")
SEVERITIES = {"critical", "warning"}

def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    return found


def _contract() -> set[str]:
    lines = (PROMETHEUS / "metrics.txt").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


@dataclass(frozen=True)
class Case:
    """One `alert_rule_test` entry of a promtool test file: the alert and whether it expects it firing."""

    alertname: str
    fires: bool


def _cases(path: Path) -> Iterator[Case]:
    text = path.read_text(encoding="utf-8")
    for found in re.finditer(r"alertname: (\S+)\s*\n\s+exp_alerts:(.*)\n(\s*)(\S*)", text):
        empty = found.group(2).strip() == "[]"
        yield Case(found.group(1), fires=not empty and found.group(4) == "-")


def test_promtool_accepts_the_rule_files() -> None:
    result = subprocess.run([_promtool(), "check", "rules", *map(str, RULE_FILES)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout)]
    # The text reader of this module sees exactly the rules Prometheus sees.
    assert counts == [len(rules(path)) for path in RULE_FILES]


def test_promtool_unit_tests_of_every_rule_file_pass() -> None:
    assert TESTS, "no promtool test files in ops/prometheus/tests"
    result = subprocess.run([_promtool(), "test", "rules", *map(str, TESTS)], capture_output=True, text=True,
                            timeout=300, check=False, cwd=PROMETHEUS / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = [case for path in TESTS for case in _cases(path)]
    for alert in alerts():
        assert Case(alert.name, fires=True) in cases, f"{alert.name}: no promtool test sees it fire"
        assert Case(alert.name, fires=False) in cases, f"{alert.name}: no promtool test sees it quiet"
    unknown = {case.alertname for case in cases} - {alert.name for alert in alerts()}
    assert not unknown, f"tests of alerts that do not exist: {unknown}"


def test_every_alert_has_a_severity_a_summary_a_description_and_its_runbook_section() -> None:
    anchors = _runbook_anchors()
    names = [alert.name for alert in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique (each has one runbook section)"
    for alert in alerts():
        assert alert.field("severity") in SEVERITIES, f"{alert.name}: severity {alert.field('severity')!r}"
        for annotation in REQUIRED_ANNOTATIONS:
            assert alert.field(annotation), f"{alert.name}: no {annotation}"
        path, _, anchor = alert.field("runbook_url").partition("#")
        assert path == "docs/runbook.md" and anchor == alert.name.lower(), f"{alert.name}: {path}#{anchor}"
        assert anchor in anchors, f"{alert.name}: docs/runbook.md has no section #{anchor}"


def test_alert_texts_name_only_bounded_labels() -> None:
    """Annotations may name the scrape's job and instance and the contract's bounded labels: never a label
    that could carry a person (there is none in the contract: this keeps it so)."""
    bounded = {"job", "instance", "register", "organization", "pool", "state", "kind", "reason", "outcome"}
    for alert in alerts():
        used = set(re.findall(r"\$labels\.(\w+)", alert.body))
        assert used <= bounded, f"{alert.name} names labels {used - bounded}"


def test_rules_read_only_metrics_of_the_contract_or_recorded_by_therules() -> None:
    known = _contract() | recorded()
    for path in RULE_FILES:
        for rule in rules(path):
            unknown = series_names(rule.expr) - known
            assert not unknown, f"{path.name} {rule.name} reads series outside metrics.txt: {sorted(unknown)}"


def test_dashboard_reads_only_metrics_of_the_contract_or_recorded_by_therules() -> None:
    known = _contract() | recorded()
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert exprs
    for expr in exprs:
        unknown = series_names(expr.replace("$__rate_interval", "5m")) - known
        assert not unknown, f"dashboard query {expr!r} reads series outside metrics.txt: {sorted(unknown)}"


def test_the_series_reader_finds_series_and_skips_labels_functions_and_clauses() -> None:
    expr = ('sum by (job, rpc_method) (rate(rpc_server_duration_milliseconds_count{rpc_service!="x"}[5m])) '
            '/ on (job) group_left max(juki_outbox_backlog offset 5m) > 0.5 and job:juki_x:ratio_rate5m')
    assert series_names(expr) == {"rpc_server_duration_milliseconds_count", "juki_outbox_backlog",
                                  "job:juki_x:ratio_rate5m"}


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel's query, as a recording rule, passes `promtool check rules` (Grafana's `$__rate_interval`
    read as 5m): a query Prometheus cannot parse would be an empty panel on the day it is needed."""
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    exprs = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    dashboard_rules = tmp_path / "dashboard.yml"
    dashboard_rules.write_text("groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:query_{n}\n        expr: {json.dumps(expr.replace('$__rate_interval', '5m'))}\n"
        for n, expr in enumerate(exprs)), encoding="utf-8")
    result = subprocess.run([_promtool(), "check", "rules", str(dashboard_rules)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_promtool_accepts_the_compose_stack_prometheus_config() -> None:
    """ops/prometheus/prometheus.yml (the compose stack's) is valid and loads both rule files."""
    result = subprocess.run([_promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_compose_prometheus_scrapes_every_service_at_its_metrics_address() -> None:
    """Each juki service of docker/compose.yaml serves /metrics on the port Prometheus scrapes it at, under
    its own name as the job (the rules and the dashboard group by job)."""
    config = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    jobs = dict(re.findall(r"- job_name: (\w+)\s+static_configs:\s+- targets: \[\"([\w.-]+:\d+)\"\]", config))
    compose = (ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8")
    port = re.search(r"JUKI_METRICS_ADDRESS: 0\.0\.0\.0:(\d+)", compose)
    assert port is not None, "docker/compose.yaml sets no JUKI_METRICS_ADDRESS"
    for service in ("gateway", "identity", "annex", "disclosure", "agency"):
        assert jobs.get(service) == f"{service}:{port.group(1)}"
        assert re.search(rf"^  {service}:\n    <<: \*juki-service", compose, re.MULTILINE), service
    for service in ("prometheus", "grafana", "jaeger", "otel-collector"):
        assert re.search(rf"^  {service}:$", compose, re.MULTILINE), f"compose has no {service} service"


def test_every_runbook_section_says_what_it_means_how_to_confirm_what_to_do_and_when_to_escalate() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    for alert in alerts():
        section = text.split(f"\n## {alert.name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Means**", "**Confirm**", "**Do**", "**Escalate**"):
            assert part in section, f"docs/runbook.md#{alert.name.lower()} has no {part}"


def test_a_real_prometheus_loads_every_rule_of_the_compose_config(tmp_path: Path) -> None:
    """The compose stack's config started in a real Prometheus: every alert of alerts.yml and every recording
    rule is loaded and evaluates without error (its API is the authority the text reader above is held to)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, f"--config.file={PROMETHEUS / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        groups = _rule_groups(f"http://127.0.0.1:{port}", deadline=time.monotonic() + 30)
    finally:
        server.terminate()
        server.wait(timeout=30)
    loaded = [rule for group in groups for rule in group["rules"]]
    assert sorted(r["name"] for r in loaded if r["type"] == "alerting") == sorted(a.name for a in alerts())
    assert {r["name"] for r in loaded if r["type"] == "recording"} == recorded()
    assert all(r["health"] != "err" for r in loaded), [r for r in loaded if r["health"] == "err"]


def _rule_groups(address: str, *, deadline: float) -> list[dict[str, Any]]:
    """The rule groups a starting Prometheus serves, once it has evaluated each group at least once."""
    while True:
        try:
            with urllib.request.urlopen(f"{address}/api/v1/rules", timeout=5) as answer:
                groups: list[dict[str, Any]] = json.load(answer)["data"]["groups"]
            if groups and all(group.get("lastEvaluation", "").startswith("20") for group in groups):
                return groups
        except OSError:
            pass
        assert time.monotonic() < deadline, "Prometheus did not serve its rules in time"
        time.sleep(0.5)


def test_an_alerts_expression_can_be_taken_for_a_live_query() -> None:
    expression = alert_expression("JukiOutboxStuck")
    assert expression.startswith("max by (job, register) (juki_outbox_oldest_age_seconds) > 900")
    assert "for:" not in expression and "labels" not in expression
