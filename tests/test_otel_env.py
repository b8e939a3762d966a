"""The standard OTEL_* variables, one table row per variable, proven against real OTLP
receivers on 127.0.0.1 (HTTP/protobuf and gRPC, tests/otlp_receiver.py): where spans and
metrics arrive, over which protocol, with which headers and resource attributes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import paid_telemetry as pt
from tests.conftest import clear_telemetry_env
from tests.otlp_receiver import Receiver, grpc_receiver, http_receiver

SPAN = "invoke_agent otel-env"
RUNS = "paid_agent_runs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_telemetry_env(monkeypatch)
    monkeypatch.setenv("PAID_TELEMETRY_PROMETHEUS_PORT", "0")
    yield
    pt.shutdown()


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    got = {"http": http_receiver(), "grpc": grpc_receiver()}
    yield got
    pt.shutdown()  # while the receivers still answer
    for r in got.values():
        r.stop()


@dataclass
class Row:
    env: dict[str, str]
    traces: tuple[str, str] | None  # (receiver, HTTP path or "grpc") where the one span arrives; None: nowhere
    metrics: tuple[str, str] | None
    headers: dict[str, str] = field(default_factory=dict)  # on the trace request
    metric_headers: dict[str, str] = field(default_factory=dict)
    resource: dict[str, str] = field(default_factory=dict)  # on the exported span's resource
    prometheus: bool = False  # the embedded /metrics is served


HTTP = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
ROWS: dict[str, Row] = {
    "OTEL_EXPORTER_OTLP_ENDPOINT (grpc)": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}"}, ("grpc", "grpc"), ("grpc", "grpc")),
    "OTEL_EXPORTER_OTLP_ENDPOINT + PROTOCOL http/protobuf": Row(
        {**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}"}, ("http", "/v1/traces"), ("http", "/v1/metrics")),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT used as-is (http)": Row(
        {**HTTP, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{http}/custom/spans"}, ("http", "/custom/spans"), None,
        prometheus=True),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (grpc)": Row(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{grpc}"}, ("grpc", "grpc"), None, prometheus=True),
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT used as-is (http)": Row(
        {**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "{http}/m"},
        ("http", "/v1/traces"), ("http", "/m")),
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL overrides the base protocol": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
         "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{http}/v1/traces"}, ("http", "/v1/traces"), ("grpc", "grpc")),
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL overrides the base protocol": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
         "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "{http}/v1/metrics"}, ("grpc", "grpc"), ("http", "/v1/metrics")),
    "OTEL_EXPORTER_OTLP_HEADERS (http)": Row(
        {**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}",
         "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cr%20t,tenant=acme"},
        ("http", "/v1/traces"), ("http", "/v1/metrics"),
        headers={"x-api-key": "s3cr t", "tenant": "acme"}, metric_headers={"tenant": "acme"}),
    "OTEL_EXPORTER_OTLP_HEADERS (grpc)": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k1,tenant=acme"},
        ("grpc", "grpc"), ("grpc", "grpc"), headers={"x-api-key": "k1", "tenant": "acme"}),
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS wins for traces": Row(
        {**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "{http}", "OTEL_EXPORTER_OTLP_HEADERS": "tenant=acme",
         "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "tenant=traces-only"},
        ("http", "/v1/traces"), ("http", "/v1/metrics"), headers={"tenant": "traces-only"},
        metric_headers={"tenant": "acme"}),
    "OTEL_TRACES_EXPORTER=none": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_TRACES_EXPORTER": "none"}, None, ("grpc", "grpc")),
    "OTEL_METRICS_EXPORTER=none": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_METRICS_EXPORTER": "none"}, ("grpc", "grpc"), None),
    "OTEL_METRICS_EXPORTER=prometheus": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_METRICS_EXPORTER": "prometheus"}, ("grpc", "grpc"), None,
        prometheus=True),
    "OTEL_TRACES_EXPORTER=otlp": Row(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{grpc}"}, ("grpc", "grpc"), None,
        prometheus=True),
    "OTEL_SDK_DISABLED=true": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_SDK_DISABLED": "true"}, None, None),
    "OTEL_RESOURCE_ATTRIBUTES percent-decoded": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_RESOURCE_ATTRIBUTES": "team=a%2Cb,region=eu%20west,k=%3D"},
        ("grpc", "grpc"), ("grpc", "grpc"), resource={"team": "a,b", "region": "eu west", "k": "="}),
    "OTEL_SERVICE_NAME": Row(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}", "OTEL_SERVICE_NAME": "billing-worker"},
        ("grpc", "grpc"), ("grpc", "grpc"), resource={"service.name": "billing-worker"}),
}


def _attrs(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


@pytest.mark.parametrize("name", list(ROWS))
def test_otel_variable(name: str, receivers: dict[str, Receiver], monkeypatch: pytest.MonkeyPatch) -> None:
    row = ROWS[name]
    for var, value in row.env.items():
        monkeypatch.setenv(var, value.format(http=receivers["http"].url, grpc=receivers["grpc"].url))
    handle = pt.configure(handle_sigterm=False, metric_export_interval_ms=600_000)
    with pt.agent_run(project_id="p1", agent_type="otel-env"):
        pass
    assert pt.force_flush(10)
    for signal, expected in (("traces", row.traces), ("metrics", row.metrics)):
        for kind, receiver in receivers.items():
            got = receiver.of(signal)
            if expected is None or expected[0] != kind:
                assert got == [], f"{signal} unexpectedly at {kind}: {[r.where for r in got]}"
            else:
                assert {r.where for r in got} == {expected[1]}
    if row.traces is not None:
        receiver = receivers[row.traces[0]]
        assert receiver.span_names() == [SPAN]  # exactly one span: none dropped, none doubled
        request = receiver.of("traces")[0]
        for k, v in row.headers.items():
            assert request.headers.get(k) == v
        resource = _attrs(request.request.resource_spans[0].resource.attributes)
        assert {k: resource.get(k) for k in row.resource} == row.resource
    if row.metrics is not None:
        receiver = receivers[row.metrics[0]]
        assert RUNS in receiver.metric_names()
        for k, v in row.metric_headers.items():
            assert receiver.of("metrics")[0].headers.get(k) == v
    assert (handle.prometheus_url is not None) == row.prometheus
    if row.prometheus:
        assert handle.prometheus_url is not None
        body = urllib.request.urlopen(handle.prometheus_url, timeout=5).read().decode()
        assert 'paid_agent_runs_total{agent_type="otel-env",project_id="p1",status="completed"} 1' in body


@pytest.mark.parametrize(("env", "where"), [
    ({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "{http}/custom/logs"}, "/custom/logs"),
    ({}, "/v1/logs"),
    ({"OTEL_LOGS_EXPORTER": "none"}, None),
    ({"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "{grpc}"}, "grpc"),
])
def test_otel_logs_variables(env: dict[str, str], where: str | None, receivers: dict[str, Receiver],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from paid_telemetry.logs import configure_logging

    urls = {"http": receivers["http"].url, "grpc": receivers["grpc"].url}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", urls["http"])
    for var, value in env.items():
        monkeypatch.setenv(var, value.format(**urls))
    pt.configure(handle_sigterm=False, metric_export_interval_ms=600_000)
    configure_logging(stream=io.StringIO())
    logging.getLogger("otel-env-app").warning("hello from the app")
    assert pt.force_flush(10)
    got = [r for k in ("http", "grpc") for r in receivers[k].of("logs")]
    if where is None:
        assert got == []
        return
    assert {r.where for r in got} == {where}
    bodies = [lr.body.string_value for r in got for rl in r.request.resource_logs for sl in rl.scope_logs
              for lr in sl.log_records]
    assert bodies.count("hello from the app") == 1


def test_otel_exporter_otlp_timeout_is_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that answers after 3 s: with OTEL_EXPORTER_OTLP_TIMEOUT=300 (ms, as the
    spec says) the export gives up well before; read as seconds it would wait 300 s."""
    slow = http_receiver(delay_s=3.0)
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", slow.url + "/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        handle = pt.configure(handle_sigterm=False)
        assert handle.settings.signal_timeout_s("traces") == 0.3
        with pt.agent_run(project_id="p1", agent_type="otel-env"):
            pass
        started = time.monotonic()
        handle.tracer_provider.force_flush(10_000)
        elapsed = time.monotonic() - started
        slow.wait("traces", lambda got: len(got) >= 1)
        assert elapsed < 2.5, elapsed
    finally:
        pt.shutdown()
        slow.stop()


def _self_signed(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def test_otel_exporter_otlp_certificate_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS with a self-signed certificate: spans arrive only when OTEL_EXPORTER_OTLP_CERTIFICATE
    names it (the exporter reads it; we never override it)."""
    # requests lets these variables override the exporter's CA file (documented in README).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    cert, key = _self_signed(tmp_path)
    tls = http_receiver(tls=(cert, key))
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", tls.url + "/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")
        pt.configure(handle_sigterm=False)
        with pt.agent_run(project_id="p1", agent_type="otel-env"):
            pass
        pt.force_flush(5)
        assert tls.of("traces") == []  # unknown CA: refused
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", cert)
        pt.configure(handle_sigterm=False)
        with pt.agent_run(project_id="p1", agent_type="otel-env"):
            pass
        assert pt.force_flush(5)
        assert tls.span_names() == [SPAN]
    finally:
        pt.shutdown()
        tls.stop()


REUSE_SCRIPT = textwrap.dedent("""
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider())
    import paid_telemetry as pt
    h = pt.configure(handle_sigterm=False)
    print("OWNED", h.owns_providers)
""")


def test_reusing_another_tools_providers_is_announced_at_info() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAID_TELEMETRY_"))}
    out = subprocess.run([sys.executable, "-c", REUSE_SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "OWNED False" in out.stdout
    info = [line for line in out.stderr.splitlines() if line.startswith("INFO paid_telemetry ")]
    assert len(info) == 1 and "reusing the global tracer and meter providers another tool installed" in info[0]


def test_bad_otel_values_warn_once_at_configure(caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    caplog.set_level(logging.WARNING, logger="paid_telemetry")
    pt.configure(handle_sigterm=False)
    pt.configure(handle_sigterm=False)
    msgs = [r.getMessage() for r in caplog.records if "OTEL_TRACES_EXPORTER" in r.getMessage()]
    assert msgs == ["paid-telemetry: ignoring OTEL_TRACES_EXPORTER='jaeger' (expected one of 'otlp', 'console', "
                    "'none' (one exporter per signal)); using the default exporter"]
