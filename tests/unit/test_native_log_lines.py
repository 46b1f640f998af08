"""What native code and unhandled exceptions write becomes JSON log lines without their text where it could
quote a value (jukilib.jsonlog; issue 21, every log line JSON)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from jukilib.jsonlog import JsonFormatter, log_loop_exception, log_native_line


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """The root logger's JSON lines, as a service writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("gateway"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def _entries(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_grpc_core_line_is_logged_with_its_level_and_source(lines: io.StringIO) -> None:
    log_native_line("E1207 00:53:46.401086   10217 ssl_transport_security.cc:2563] Handshake failed with error "
                    "SSL_ERROR_SSL", lines)
    (entry,) = _entries(lines)
    assert entry["logger"] == "grpc.core" and entry["level"] == "ERROR" and entry["service"] == "gateway"
    assert entry["source"] == "ssl_transport_security.cc:2563"
    assert entry["message"] == "Handshake failed with error SSL_ERROR_SSL"


def test_a_json_line_passes_unchanged_and_any_other_line_is_a_warning(lines: io.StringIO) -> None:
    log_native_line('{"level": "INFO", "message": "already JSON"}', lines)
    log_native_line("Fatal Python error: something", lines)
    first, second = _entries(lines)
    assert first == {"level": "INFO", "message": "already JSON"}
    assert second["logger"] == "stderr" and second["level"] == "WARNING"


async def test_a_task_exception_never_retrieved_is_logged_by_type_without_its_message(lines: io.StringIO) -> None:
    async def fails() -> None:
        raise ValueError("Key (resident_code)=(12345678901) already exists")

    task = asyncio.get_running_loop().create_task(fails(), name="relay-1")
    await asyncio.sleep(0)
    log_loop_exception(asyncio.get_running_loop(), {"message": "Task exception was never retrieved",
                                                     "exception": task.exception(), "future": task})
    (entry,) = [e for e in _entries(lines) if e["logger"] == "asyncio"]
    assert entry["message"] == "Task exception was never retrieved"
    assert entry["error_type"] == "ValueError" and entry["task"] == "relay-1"
    assert "12345678901" not in lines.getvalue()
