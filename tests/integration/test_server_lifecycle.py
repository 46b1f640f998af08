"""The service lifecycle an SRE relies on: health follows readiness, reflection only when asked,
SIGTERM stops a service cleanly, and JSON log lines carry the trace id."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from juki_services.agency import app as agency_app
from jukilib.config import DatabaseConfig
from jukilib.devcerts import DevPki
from jukilib.grpc.channels import secure_channel
from jukilib.grpc.server import GrpcService
from jukilib.jsonlog import JsonFormatter
from jukitools.client import health_status
from jukitools.suite import service_migrations
from tests.conftest import fresh_database, service_config, with_common


async def test_health_is_not_serving_while_the_database_is_unreachable(pki: DevPki, home: Path,
                                                                       admin_url: str) -> None:
    databases = await fresh_database(admin_url)
    config = service_config("agency", pki, databases["agency"], home, {})
    unreachable = with_common(config, database=DatabaseConfig(
        url="postgresql://juki_agency:x@127.0.0.1:1/juki", migration_url=None, acquire_timeout=1.0))
    service = GrpcService(unreachable, service_migrations("agency"), agency_app.build)
    await service.start()
    try:
        tls = config.common.tls
        for _ in range(3):
            assert await health_status(f"127.0.0.1:{service.port}", tls) == "NOT_SERVING"
            await asyncio.sleep(0.2)
    finally:
        await service.stop(0.1)


async def test_reflection_lists_the_services_only_when_enabled(pki: DevPki, home: Path, admin_url: str) -> None:
    databases = await fresh_database(admin_url)
    for enabled in (True, False):
        config = with_common(service_config("agency", pki, databases["agency"], home, {}), reflection=enabled)
        service = GrpcService(config, service_migrations("agency"), agency_app.build)
        await service.start()
        try:
            await service.wait_ready(30)
            async with secure_channel(f"127.0.0.1:{service.port}", config.common.tls) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                if enabled:
                    answers = [a async for a in stub.ServerReflectionInfo(iter([request]), timeout=5)]
                    names = {s.name for s in answers[0].list_services_response.service}
                    assert "juki.agency.v1.AgencyService" in names
                else:
                    with pytest.raises(Exception, match="UNIMPLEMENTED"):
                        _ = [a async for a in stub.ServerReflectionInfo(iter([request]), timeout=5)]
        finally:
            await service.stop(0.1)


def test_sigterm_stops_a_service_cleanly(pki: DevPki, home: Path, admin_url: str) -> None:
    databases = asyncio.run(fresh_database(admin_url))
    pair = pki.servers["agency"]
    env = {**os.environ, "JUKI_LISTEN": "127.0.0.1:0", "JUKI_DATABASE_URL": databases["agency"].url,
           "JUKI_TLS_CERT": str(pair.cert), "JUKI_TLS_KEY": str(pair.key), "JUKI_TLS_CA": str(pki.ca_cert),
           "JUKI_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "jukitools.cli", "serve", "agency"], env=env,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while not any('"message": "serving"' in line for line in lines):
        assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
        lines.append(process.stderr.readline())
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0
    assert '"message": "stopped"' in rest
    for line in [*lines, *rest.splitlines()]:
        if line.strip():
            json.loads(line)  # every log line is one JSON object


def test_log_lines_are_json_with_the_current_trace_id(span_exporter: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("identity")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        record = logging.LogRecord("juki", logging.INFO, __file__, 1, "applied", None, None)
        record.outbox_id = 7
        line = json.loads(formatter.format(record))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert (line["service"], line["message"], line["outbox_id"]) == ("identity", "applied", 7)
