"""A database error says which rule failed, never the row it failed on (issue 15): PostgreSQL's message
and DETAIL quote the values (`Key (resident_code)=(…) already exists`), so neither may reach a span or
the embedded server's log."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

CODE = "98765432109"


async def test_a_unique_violation_leaves_its_sqlstate_and_no_value_in_spans_or_the_server_log(
        admin_url: str, home: Path, span_exporter: InMemorySpanExporter) -> None:
    span_exporter.clear()
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute("CREATE TEMPORARY TABLE race (resident_code text PRIMARY KEY)")
        await connection.execute("INSERT INTO race VALUES ($1)", CODE)
        with pytest.raises(asyncpg.UniqueViolationError) as violation:
            await connection.execute("INSERT INTO race VALUES ($1)", CODE)
        assert CODE in str(violation.value)  # what the driver says, and must not leave the process
    finally:
        await connection.close()
    events = [event.attributes or {} for span in span_exporter.get_finished_spans() for event in span.events
              if event.name == "exception" and (event.attributes or {}).get("exception.type") == "UniqueViolationError"]
    assert [(e.get("db.response.status_code"), e.get("db.constraint")) for e in events] == [("23505", "race_pkey")]
    assert not any(CODE in span.to_json() for span in span_exporter.get_finished_spans())
    server_log = (home / "pgdata" / "log").read_text(errors="replace")
    assert "duplicate key" in server_log and CODE not in server_log
