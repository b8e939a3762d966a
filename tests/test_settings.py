"""Bad settings: each raises one clear ConfigurationError (arguments, PAID_TELEMETRY_*) or is
ignored with one warning (OTEL_*, as the OTel spec says), and recording keeps working after
each; a failed configure() leaves the previous set-up working; other libraries' instruments
and tracers on the global providers survive a reconfigure."""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import paid_telemetry as pt
from paid_telemetry import runtime
from paid_telemetry import settings as config
from tests.conftest import clear_telemetry_env

RUNS = "paid_agent_runs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    clear_telemetry_env(monkeypatch)
    yield
    pt.shutdown()


@dataclass
class Case:
    """A bad value: env variables and/or configure() arguments, and what must happen."""

    env: dict[str, str] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, Any, str] | None = None  # (setting, value, text in `allowed`)
    fallback: tuple[str, Any] | None = None  # (Settings field, the value used instead)
    warns: str = ""  # the variable named in the one warning


def err(var: str, value: str, allowed: str) -> Case:
    return Case(env={var: value}, error=(var, value, allowed))


def arg(setting: str, value: Any, allowed: str) -> Case:
    return Case(kwargs={setting: value}, error=(setting, value, allowed))


def fb(var: str, value: str, field_name: str, used: Any) -> Case:
    return Case(env={var: value}, fallback=(field_name, used), warns=var)


INT_LIMIT = "an integer from 1 to 1000000"
PORT = "a TCP port (0: any free port) from 0 to 65535"
SECONDS = "a number of seconds greater than 0 and at most 3600"
CENTS = "a finite number of cents from 0 to 1e+15"
BUDGETS = "comma-separated project=cents pairs"
BOOL = "true or false (or 1/0, yes/no, on/off)"
LABEL_LEN = "an integer from 16 to 65536"

CASES: dict[str, Case] = {
    # PAID_TELEMETRY_* variables: ConfigurationError naming the variable, the value and what is allowed.
    "cardinality lots": err("PAID_TELEMETRY_CARDINALITY_LIMIT", "lots", INT_LIMIT),
    "cardinality 0": err("PAID_TELEMETRY_CARDINALITY_LIMIT", "0", INT_LIMIT),
    "cardinality -5": err("PAID_TELEMETRY_CARDINALITY_LIMIT", "-5", INT_LIMIT),
    "cardinality 1.5": err("PAID_TELEMETRY_CARDINALITY_LIMIT", "1.5", INT_LIMIT),
    "cardinality full-width": err("PAID_TELEMETRY_CARDINALITY_LIMIT", "\uff11\uff12", INT_LIMIT),
    "port http": err("PAID_TELEMETRY_PROMETHEUS_PORT", "http", PORT),
    "port -1": err("PAID_TELEMETRY_PROMETHEUS_PORT", "-1", PORT),
    "port 70000": err("PAID_TELEMETRY_PROMETHEUS_PORT", "70000", PORT),
    "host unresolvable": err("PAID_TELEMETRY_PROMETHEUS_HOST", "no-such-host.invalid", "resolves"),
    "host not local": err("PAID_TELEMETRY_PROMETHEUS_HOST", "192.0.2.1", "an address of this machine"),
    "host is a URL": err("PAID_TELEMETRY_PROMETHEUS_HOST", "http://localhost", "a host name or IP address"),
    "export timeout soon": err("PAID_TELEMETRY_EXPORT_TIMEOUT", "soon", SECONDS),
    "export timeout 0": err("PAID_TELEMETRY_EXPORT_TIMEOUT", "0", SECONDS),
    "export timeout inf": err("PAID_TELEMETRY_EXPORT_TIMEOUT", "inf", SECONDS),
    "shutdown timeout inf": err("PAID_TELEMETRY_SHUTDOWN_TIMEOUT", "inf", SECONDS),
    "shutdown timeout nan": err("PAID_TELEMETRY_SHUTDOWN_TIMEOUT", "nan", SECONDS),
    "shutdown timeout -3": err("PAID_TELEMETRY_SHUTDOWN_TIMEOUT", "-3", SECONDS),
    "shutdown timeout 1e9": err("PAID_TELEMETRY_SHUTDOWN_TIMEOUT", "1e9", SECONDS),
    "budgets lots": err("PAID_TELEMETRY_BUDGETS", "acme=lots,globex=200", BUDGETS),
    "budgets no =": err("PAID_TELEMETRY_BUDGETS", "acme", BUDGETS),
    "budgets negative": err("PAID_TELEMETRY_BUDGETS", "acme=-5", BUDGETS),
    "budgets nan": err("PAID_TELEMETRY_BUDGETS", "acme=nan", BUDGETS),
    "default budget nan": err("PAID_TELEMETRY_DEFAULT_BUDGET_CENTS", "nan", CENTS),
    "default budget -100": err("PAID_TELEMETRY_DEFAULT_BUDGET_CENTS", "-100", CENTS),
    "default budget inf": err("PAID_TELEMETRY_DEFAULT_BUDGET_CENTS", "inf", CENTS),
    "default budget $": err("PAID_TELEMETRY_DEFAULT_BUDGET_CENTS", "$100", CENTS),
    "label length 0": err("PAID_TELEMETRY_MAX_LABEL_LENGTH", "0", LABEL_LEN),
    "label length -1": err("PAID_TELEMETRY_MAX_LABEL_LENGTH", "-1", LABEL_LEN),
    "label length ten": err("PAID_TELEMETRY_MAX_LABEL_LENGTH", "ten", LABEL_LEN),
    "strict maybe": err("PAID_TELEMETRY_STRICT", "maybe", BOOL),
    "sigterm 2": err("PAID_TELEMETRY_HANDLE_SIGTERM", "2", BOOL),
    "logs enabled": err("PAID_TELEMETRY_LOGS", "enabled", BOOL),
    "exporter pigeon": err("PAID_TELEMETRY_EXPORTER", "carrier-pigeon", "one of 'otlp', 'prometheus', 'console'"),
    "log format xml": err("PAID_TELEMETRY_LOG_FORMAT", "xml", "one of 'json', 'console', 'off'"),
    "log level loud": err("PAID_TELEMETRY_LOG_LEVEL", "loud", "one of 'debug', 'info'"),
    "certificate missing": err("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "a readable PEM file"),
    "traces client key missing": err("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/nonexistent/key.pem",
                                     "a readable PEM file"),
    # configure() arguments: ConfigurationError naming the argument.
    "arg cardinality str": arg("cardinality_limit", "50", INT_LIMIT),
    "arg port bool": arg("prometheus_port", True, PORT),
    "arg port 70000": arg("prometheus_port", 70000, PORT),
    "arg shutdown nan": arg("shutdown_timeout_s", math.nan, SECONDS),
    "arg shutdown inf": arg("shutdown_timeout_s", math.inf, SECONDS),
    "arg default budget -1": arg("default_budget_cents", -1, CENTS),
    "arg budgets lots": arg("budgets_cents", {"acme": "lots"}, "a mapping of project ids to budgets in cents"),
    "arg exporter": arg("exporter", "carrier-pigeon", "one of 'otlp', 'prometheus'"),
    "arg traces prometheus": arg("traces_exporter", "prometheus", "one of 'otlp', 'console', 'none'"),
    "arg endpoint no scheme": arg("otlp_endpoint", "collector:4317", "an http:// or https:// URL"),
    "arg endpoint bad port": arg("otlp_endpoint", "http://collector:99999", "an http:// or https:// URL"),
    "arg protocol json": arg("otlp_protocol", "http/json", "one of 'grpc', 'http/protobuf'"),
    "arg label length 0": arg("max_label_length", 0, LABEL_LEN),
    "arg interval 0": arg("metric_export_interval_ms", 0, "an integer number of milliseconds from 1"),
    "arg resource non-str": arg("resource_attributes", {"team": 1}, "a mapping of non-empty string keys"),
    "arg service name empty": arg("service_name", "", "a non-empty string"),
    "arg unknown": arg("cardinality", 50, "one of: budgets_cents"),
    # OTEL_* variables: ignored with one warning, the default used (OTel SDK environment spec).
    "otel interval 10s": fb("OTEL_METRIC_EXPORT_INTERVAL", "10s", "metric_export_interval_ms", 10_000),
    "otel interval -5": fb("OTEL_METRIC_EXPORT_INTERVAL", "-5", "metric_export_interval_ms", 10_000),
    "otel timeout soon": fb("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "export_timeout_s", 5.0),
    "otel timeout 1.5": fb("OTEL_EXPORTER_OTLP_TIMEOUT", "1.5", "export_timeout_s", 5.0),
    "otel metrics timeout -1": fb("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "-1", "otlp_timeouts_s", {}),
    "otel protocol json": fb("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "otlp_protocol", "grpc"),
    "otel traces protocol": fb("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp", "otlp_protocols", {}),
    "otel traces zipkin": fb("OTEL_TRACES_EXPORTER", "zipkin", "traces_exporter", "none"),
    "otel metrics list": fb("OTEL_METRICS_EXPORTER", "otlp,console", "metrics_exporter", "prometheus"),
    "otel logs prometheus": fb("OTEL_LOGS_EXPORTER", "prometheus", "logs_exporter", "none"),
    "otel disabled yes": fb("OTEL_SDK_DISABLED", "yes", "disabled", False),
    "otel endpoint no scheme": fb("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "metrics_exporter", "prometheus"),
    "otel traces endpoint bad port": fb("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h:99999/v1/traces",
                                       "otlp_endpoints", {}),
    "otel bsp queue 0": fb("OTEL_BSP_MAX_QUEUE_SIZE", "0", "span_queue_size", 2048),
    "otel resource no =": fb("OTEL_RESOURCE_ATTRIBUTES", "novalue,team=agents", "resource_attributes",
                             {"team": "agents"}),
}


def _runs(reader: InMemoryMetricReader) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == RUNS:
                    total += sum(p.value for p in m.data.data_points)
    return total


def _record_one() -> None:
    with pt.agent_run(project_id="p1", agent_type="settings-test"):
        pass


def test_table_has_at_least_40_bad_values() -> None:
    assert len(CASES) >= 40
    assert sum(c.error is not None for c in CASES.values()) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_value_gives_clear_error_or_documented_fallback(
    name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    case = CASES[name]
    # A working set-up first (embedded /metrics on a free port).
    monkeypatch.setenv("PAID_TELEMETRY_PROMETHEUS_PORT", "0")
    first_reader = InMemoryMetricReader()
    first = pt.configure(metric_readers=[first_reader], handle_sigterm=False)
    for var, value in case.env.items():
        monkeypatch.setenv(var, value)
    reader = InMemoryMetricReader()
    caplog.set_level(logging.WARNING, logger="paid_telemetry")
    if case.error is not None:
        setting, value, allowed = case.error
        with pytest.raises(pt.ConfigurationError) as info:
            pt.configure(metric_readers=[reader], handle_sigterm=False, **case.kwargs)
        e = info.value
        assert (e.setting, e.value) == (setting, value)
        assert allowed in e.allowed
        assert str(e).startswith(f"paid-telemetry: {setting}={value!r} is not valid: expected "
                                 if not case.kwargs else f"paid-telemetry: configure({setting}={value!r}) is not valid")
        # The previous set-up is still active, not shut down, and records.
        assert runtime.active() is first
        assert first.prometheus_url is not None
        _record_one()
        assert _runs(first_reader) == 1
        assert _runs(reader) == 0
    else:
        assert case.fallback is not None
        field_name, used = case.fallback
        handle = pt.configure(metric_readers=[reader], handle_sigterm=False, **case.kwargs)
        assert getattr(handle.settings, field_name) == used
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert [w for w in warnings if case.warns in w] == [w for w in warnings if "ignoring" in w]
        assert len([w for w in warnings if case.warns in w]) == 1, warnings
        # once per process: configuring again with the same value does not warn again
        caplog.clear()
        handle = pt.configure(metric_readers=[reader := InMemoryMetricReader()], handle_sigterm=False)
        assert not [r for r in caplog.records if case.warns in r.getMessage()]
        assert runtime.active() is handle
        _record_one()
        assert _runs(reader) == 1


def test_port_in_use_falls_back_and_only_strict_mode_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy port is another worker of the same server, not a bad setting: the process serves on
    the next port (docs/deploying.md). With strict=True it is a clear error, and the previous
    set-up keeps serving."""
    import urllib.request

    first = pt.configure(prometheus_port=0, handle_sigterm=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("PAID_TELEMETRY_PROMETHEUS_PORT", str(port))
        with pytest.raises(pt.ConfigurationError) as info:
            pt.configure(handle_sigterm=False, strict=True)
        assert info.value.setting == "PAID_TELEMETRY_PROMETHEUS_PORT"
        assert info.value.value == port
        assert "a free port" in info.value.allowed and "Address already in use" in str(info.value)
        assert runtime.active() is first
        _record_one()
        assert first.prometheus_url is not None
        body = urllib.request.urlopen(first.prometheus_url, timeout=5).read().decode()
        assert 'paid_agent_runs_total{agent_type="settings-test",project_id="p1",status="completed"} 1' in body

        second = pt.configure(handle_sigterm=False)  # not strict: no error, another port
        assert second.prometheus_url is not None and f":{port}/" not in second.prometheus_url
        _record_one()
        body = urllib.request.urlopen(second.prometheus_url, timeout=5).read().decode()
        assert 'paid_agent_runs_total{agent_type="settings-test",project_id="p1",status="completed"} 1' in body
        assert ('paid_telemetry_dropped_records_total{instrument="prometheus_endpoint",reason="port_in_use"} 1'
                in body)


def test_reconfigure_on_the_same_port_keeps_serving_the_new_setup() -> None:
    import urllib.request

    first = pt.configure(prometheus_port=0, handle_sigterm=False, service_name="first")
    url = first.prometheus_url
    assert url is not None
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    _record_one()
    second = pt.configure(prometheus_port=port, handle_sigterm=False, service_name="second")
    assert second.prometheus_url == url  # the server moved to the new set-up
    _record_one()
    _record_one()
    body = urllib.request.urlopen(second.prometheus_url, timeout=5).read().decode()
    assert 'service_name="second"' in body and 'service_name="first"' not in body
    assert 'paid_agent_runs_total{agent_type="settings-test",project_id="p1",status="completed"} 2' in body


def test_disabled_sdk_records_nothing_and_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    reader = InMemoryMetricReader()
    handle = pt.configure(metric_readers=[reader], handle_sigterm=False, prometheus_port=0)
    assert handle.noop and handle.settings.disabled
    assert handle.prometheus_url is None and handle.meter_provider is None
    _record_one()
    assert reader.get_metrics_data() is None  # the reader was never attached to anything
    handle = pt.configure(metric_readers=[reader2 := InMemoryMetricReader()], handle_sigterm=False,
                          prometheus_port=0, disabled=False)  # the argument wins over the variable
    assert not handle.noop
    _record_one()
    assert _runs(reader2) == 1


def test_settings_precedence_for_overlapping_variables() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",  # milliseconds, as the spec says
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "700",
        "OTEL_METRIC_EXPORT_INTERVAL": "1500",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.0,deployment.environment.name=staging",
        "PAID_TELEMETRY_ENVIRONMENT": "prod",
    }
    s = config.resolve(env)
    assert s.export_timeout_s == 2.5
    assert s.signal_timeout_s("traces") == 0.7 and s.signal_timeout_s("metrics") == 2.5
    assert s.metric_export_interval_ms == 1500
    assert (s.environment, s.service_version) == ("prod", "1.0")  # PAID_TELEMETRY_* wins over OTEL_*
    assert config.resolve({**env, "PAID_TELEMETRY_EXPORT_TIMEOUT": "9"}).export_timeout_s == 9.0
    assert config.resolve(env, export_timeout_s=3).export_timeout_s == 3.0


GLOBAL_SCRIPT = textwrap.dedent("""
    import sys, urllib.request
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import paid_telemetry as pt

    before = metrics.get_meter("otherlib").create_counter("otherlib.before")  # created before configure()
    tracer = trace.get_tracer("otherlib")
    first_spans = InMemorySpanExporter()
    pt.configure(prometheus_port=0, handle_sigterm=False, span_processors=[SimpleSpanProcessor(first_spans)])
    after = metrics.get_meter("otherlib").create_counter("otherlib.after")  # created between configures
    before.add(1); after.add(1)
    with tracer.start_as_current_span("first-span"):
        pass
    try:
        pt.configure(prometheus_port=70000, handle_sigterm=False)
    except pt.ConfigurationError:
        pass
    before.add(1); after.add(1)  # still the first set-up: 2 each
    spans = InMemorySpanExporter()
    h = pt.configure(prometheus_port=0, handle_sigterm=False, span_processors=[SimpleSpanProcessor(spans)])
    before.add(5); after.add(7)  # counted again from 0 by the new set-up
    with tracer.start_as_current_span("second-span"):
        pass
    hist = metrics.get_meter("otherlib").create_histogram("otherlib.latency", unit="s")
    hist.record(0.5)
    body = urllib.request.urlopen(h.prometheus_url, timeout=5).read().decode()
    print("FIRST", [s.name for s in first_spans.get_finished_spans()])
    print("SECOND", [s.name for s in spans.get_finished_spans()])
    for line in body.splitlines():
        if line.startswith("otherlib"):
            print(line)
    pt.shutdown()
    before.add(1)  # after shutdown: a no-op, never an error
    with tracer.start_as_current_span("after-shutdown"):
        pass
    print("SECOND-AFTER", [s.name for s in spans.get_finished_spans()])
""")


def test_other_libraries_instruments_and_tracers_survive_reconfigure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PAID_TELEMETRY_"))}
    out = subprocess.run([sys.executable, "-c", GLOBAL_SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = [line.replace("{}", "") for line in out.stdout.splitlines()]  # no labels: `x{} 1` or `x 1`
    assert "FIRST ['first-span']" in lines
    assert "SECOND ['second-span']" in lines
    assert "SECOND-AFTER ['second-span']" in lines
    assert "otherlib_before_total 5" in lines
    assert "otherlib_after_total 7" in lines
    assert "otherlib_latency_seconds_count 1" in lines
    assert "Overriding of current" not in out.stderr
