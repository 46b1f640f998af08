"""The juki alert and recording rules of ops/prometheus, read from their text (the project has no YAML parser):
for their tests (tests/unit/test_alert_rules.py holds this reader to what promtool and Prometheus load) and for
tests that evaluate an alert's expression on a live Prometheus (`alert_expression`)."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

PROMETHEUS = Path(__file__).resolve().parents[1] / "ops" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RECORDING = PROMETHEUS / "recording.yml"

# PromQL words that are not series names.
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool", "rate",
    "irate", "increase", "deriv", "delta", "idelta", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "count_over_time", "histogram_quantile", "vector", "scalar", "abs", "round", "clamp_min",
    "clamp_max", "time", "absent", "absent_over_time", "label_replace", "predict_linear", "changes", "resets", "le",
    "inf", "nan",
})


@dataclass(frozen=True)
class Rule:
    """One rule of a rule file, as written: its name (alert or record), expression and its other lines."""

    kind: str
    name: str
    expr: str
    body: str

    def field(self, key: str) -> str:
        """The value of a `key: value` line of the rule (labels and annotations), unquoted; '' if none."""
        found = re.search(rf"^\s+{key}: (.*)$", self.body, re.MULTILINE)
        return found.group(1).strip().strip("'\"") if found else ""


def rules(path: Path) -> list[Rule]:
    text = re.sub(r"^\s*#.*\n", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    starts = [m for m in re.finditer(r"^\s+- (alert|record): (\S+)\s*$", text, re.MULTILINE)]
    found = []
    for start, end in zip(starts, [*starts[1:], None], strict=True):
        body = text[start.end(): end.start() if end else len(text)]
        body = re.split(r"^\s+- name: ", body, flags=re.MULTILINE)[0]
        expr = re.split(r"^\s+(for|labels|annotations): ", body.split("expr:", 1)[1], flags=re.MULTILINE)[0]
        found.append(Rule(start.group(1), start.group(2), expr, body))
    return found


def alerts() -> list[Rule]:
    return [rule for rule in rules(ALERTS) if rule.kind == "alert"]


def recorded() -> set[str]:
    return {rule.name for path in (ALERTS, RECORDING) for rule in rules(path) if rule.kind == "record"}


def alert_expression(name: str) -> str:
    """The PromQL expression of alert `name`, e.g. to query a live Prometheus with it (a test may lower a
    threshold it cannot wait for: `.replace("> 900", "> 5")`)."""
    (alert,) = [rule for rule in alerts() if rule.name == name]
    return textwrap.dedent(alert.expr.strip().removeprefix("|").strip("\n")).strip()


def series_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers outside strings, label matchers, grouping clauses and
    ranges that are not PromQL's own words, numbers or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set(re.findall(r"(?<![\w.:$])[A-Za-z_:][\w:]*", expr))
    return {name for name in names if name.lower() not in PROMQL_WORDS}
