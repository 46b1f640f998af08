"""Metric labels are bounded sets (issue 21): what a label may say, whatever the call carried."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from juki.gateway.v1 import operation_log_pb2 as pb
from juki_services.gateway import metrics as gateway_metrics
from jukilib.config import ConfigError
from jukilib.telemetry import metrics_address


def _points(reader: InMemoryMetricReader, name: str) -> list[dict[str, object]]:
    data = reader.get_metrics_data()
    assert data is not None
    found = []
    for resource in json.loads(data.to_json())["resource_metrics"]:
        for scope in resource["scope_metrics"]:
            for metric in scope["metrics"]:
                if metric["name"] == name:
                    found.extend(metric["data"]["data_points"])
    return found


def test_the_metrics_endpoint_binds_the_loopback_unless_the_address_names_another() -> None:
    assert metrics_address(":9464") == ("127.0.0.1", 9464)
    assert metrics_address("9464") == ("127.0.0.1", 9464)
    assert metrics_address("0.0.0.0:9464") == ("0.0.0.0", 9464)
    for wrong in ("", "localhost", "127.0.0.1:port", "127.0.0.1:70000"):
        with pytest.raises(ConfigError, match="JUKI_METRICS_ADDRESS"):
            metrics_address(wrong)


def test_a_refusal_is_counted_by_its_code_and_free_text_never_becomes_a_label(
        metric_reader: InMemoryMetricReader) -> None:
    gateway_metrics.decided("/juki.identity.v1.IdentityService/LookupResident", "kyoiku-iinkai",
                            pb.DECISION_DENIED, "PURPOSE_NOT_GRANTED")
    gateway_metrics.decided("/juki.identity.v1.IdentityService/LookupResident", "Kyoiku Iinkai 12345678901",
                            pb.DECISION_DENIED, "message 3 refused: 12345678901 山田")
    gateway_metrics.decided("/juki.identity.v1.IdentityService/LookupResident", "102016", pb.DECISION_DENIED,
                            "OPERATOR_RATE_LIMIT")
    gateway_metrics.decided("maintenance/keys-rotate", "gateway", pb.DECISION_DENIED, "FAILED")  # not a call
    denials = {(p["attributes"]["organization"], p["attributes"]["reason"]): p["value"]
               for p in _points(metric_reader, "juki.gateway.denials")}
    assert denials[("kyoiku-iinkai", "PURPOSE_NOT_GRANTED")] >= 1
    assert denials[("other", "OTHER")] >= 1
    assert ("gateway", "FAILED") not in denials
    refusals = {p["attributes"]["kind"] for p in _points(metric_reader, "juki.gateway.refusals")}
    assert "rate_limit" in refusals
    text = json.dumps(_points(metric_reader, "juki.gateway.decisions") + _points(metric_reader, "juki.gateway.denials"),
                      ensure_ascii=False)
    assert "12345678901" not in text and "山田" not in text
