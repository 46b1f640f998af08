"""`juki status [--watch SECONDS]`: one screen for the people who keep the suite running.

Everything on it comes from each service's gRPC health (`grpc.health.v1`, asked with the SRE terminal's
certificate) and its Prometheus endpoint (`endpoints.json`, "metrics"): health, calls and server errors,
the registers' outbox, agency, review queue and 12-5 reports, the disclosure deadlines, the operation log's
newest checkpoint and whether it fails closed. It reads no record and no database: nothing on the screen
can name a person. Without `--watch` it prints once (text a script can read); with it, it redraws in place.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from jukilib.config import SERVICES
from jukitools.client import Endpoints, health_status
from jukitools.local import HEALTH_CALLER, LocalSuite

STATUS_CALLER = "sre"
"""The certificate `juki status` presents for health: the SRE terminal's (the administrators' when absent)."""
SERVER_FAULTS = frozenset({"2", "4", "13", "14", "15"})
"""Status codes counted as the service's own errors: UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE,
DATA_LOSS. A refusal (PERMISSION_DENIED, INVALID_ARGUMENT, NOT_FOUND, ...) is the service doing its job."""
CLEAR = "\x1b[H\x1b[2J"
REGISTERS = ("identity", "annex")

Labels = tuple[tuple[str, str], ...]


def add_parser(commands: Any) -> None:
    status = commands.add_parser("status", help="one screen for operators: health, backlogs, ages, cases, reports "
                                                "and the operation log, from the health and metrics endpoints only")
    status.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                        help="redraw every SECONDS until interrupted (default: print once)")


@dataclass
class Scrape:
    """One service's `/metrics`: samples by name, each a map of its labels to its value."""

    reachable: bool
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float | None:
        """The sum of the samples of `name` whose labels include `labels` (None when there is none)."""
        found = [v for key, v in self.samples.get(name, {}).items() if set(labels.items()) <= set(key)]
        return sum(found) if found else None

    def by(self, name: str, label: str) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for key, v in self.samples.get(name, {}).items():
            totals[dict(key).get(label, "")] += v
        return dict(totals)


def parse_metrics(text: str) -> dict[str, dict[Labels, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = float(sample.value)
    return dict(samples)


def _fetch(address: str, timeout: float) -> Scrape:
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as answer:
            return Scrape(True, parse_metrics(answer.read().decode("utf-8")))
    except (OSError, urllib.error.URLError, ValueError):
        return Scrape(False)


async def scrape(address: str, timeout: float = 3.0) -> Scrape:
    return await asyncio.to_thread(_fetch, address, timeout)


@dataclass
class Snapshot:
    time: dt.datetime
    health: dict[str, str]
    scrapes: dict[str, Scrape]


async def take(endpoints: Endpoints) -> Snapshot:
    """Health and metrics of every service, asked at once."""
    tls = endpoints.tls_for(STATUS_CALLER if STATUS_CALLER in endpoints.client_certs else HEALTH_CALLER)
    services = [s for s in SERVICES if s in endpoints.services]
    healths = await asyncio.gather(*(health_status(endpoints.services[s], tls) for s in services))
    scraped = await asyncio.gather(*(scrape(endpoints.metrics[s]) if s in endpoints.metrics
                                     else _absent() for s in services))
    return Snapshot(dt.datetime.now(dt.UTC), dict(zip(services, healths, strict=True)),
                    dict(zip(services, scraped, strict=True)))


async def _absent() -> Scrape:
    return Scrape(False)


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return _age(value)
    return f"{value:.0f}"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _calls(scrape: Scrape) -> tuple[float, float]:
    """(calls answered, of them server faults) since the service started."""
    counts = scrape.samples.get("rpc_server_duration_milliseconds_count", {})
    total = sum(counts.values())
    faults = sum(v for key, v in counts.items() if dict(key).get("rpc_grpc_status_code") in SERVER_FAULTS)
    return total, faults


def render(snapshot: Snapshot) -> str:
    """The screen as text: one section per concern, one line per service or register."""
    lines = [f"juki status at {snapshot.time:%Y-%m-%d %H:%M:%S} UTC (health and metrics endpoints only)", "",
             f"{'service':<12}{'health':<14}{'metrics':<10}{'calls':>10}{'errors':>9}{'loop lag':>10}"]
    for service, health in snapshot.health.items():
        scraped = snapshot.scrapes[service]
        total, faults = _calls(scraped)
        rate = f"{100 * faults / total:.1f}%" if total else "-"
        lag = scraped.value("juki_event_loop_lag_seconds")
        lines.append(f"{service:<12}{health:<14}{'up' if scraped.reachable else 'DOWN':<10}"
                     f"{f'{total:.0f}' if scraped.reachable else '-':>10}{rate if scraped.reachable else '-':>9}"
                     f"{'-' if lag is None else f'{lag * 1000:.0f}ms':>10}")
    lines += ["", "registers    outbox  oldest    dead  agency   review  reports  oldest report"]
    for register in REGISTERS:
        lines.append(_register_line(register, snapshot.scrapes.get(register, Scrape(False))))
    lines += ["", _disclosure_line(snapshot.scrapes.get("disclosure", Scrape(False))),
              _gateway_line(snapshot.scrapes.get("gateway", Scrape(False)))]
    return "\n".join(lines) + "\n"


def _register_line(register: str, scraped: Scrape) -> str:
    def get(name: str, unit: str = "") -> str:
        return _number(scraped.value(name, register=register), unit)

    up = scraped.value("juki_agency_up", register=register)
    agency = "-" if up is None else ("up" if up >= 1 else "DOWN")
    return (f"{register:<12}{get('juki_outbox_backlog'):>7}{get('juki_outbox_oldest_age_seconds', 's'):>8}"
            f"{get('juki_outbox_dead'):>8}  {agency:<7}{get('juki_review_queue_size'):>7}"
            f"{get('juki_reports_open'):>9}  {get('juki_reports_oldest_age_seconds', 's')}")


def _disclosure_line(scraped: Scrape) -> str:
    open_cases = scraped.value("juki_cases_open")
    return (f"disclosure   cases open {_number(open_cases)}, at risk {_number(scraped.value('juki_cases_at_risk'))}, "
            f"overdue {_number(scraped.value('juki_cases_overdue'))}")


def _gateway_line(scraped: Scrape) -> str:
    failing = scraped.value("juki_oplog_failing_closed")
    decisions = scraped.by("juki_gateway_decisions_total", "outcome")
    return (f"operation log  checkpoint age {_number(scraped.value('juki_checkpoint_age_seconds'), 's')}, "
            f"queue {_number(scraped.value('juki_oplog_queue_depth'))}, "
            f"failing closed {'-' if failing is None else ('YES' if failing >= 1 else 'no')}; "
            f"decisions allowed {decisions.get('allowed', 0):.0f}, denied {decisions.get('denied', 0):.0f}")


async def run(args: argparse.Namespace, suite: LocalSuite) -> int:
    endpoints = suite.endpoints()
    if args.watch is None:
        print(render(await take(endpoints)), end="")
        return 0
    interval = max(0.5, args.watch)
    while True:
        screen = render(await take(endpoints))
        print(CLEAR + screen + f"\n(every {interval:g}s; Ctrl-C to stop)", end="", flush=True)
        await asyncio.sleep(interval)
