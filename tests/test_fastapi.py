"""FastAPI (>= 0.165 instruments itself) and paid_telemetry.asgi: exactly one layer of HTTP telemetry.

A real FastAPI app served by a real uvicorn in its own process (tests/fastapi_app.py), once
configured by paid_telemetry and once under ``opentelemetry-instrument``: each request gives
exactly one server span and one HTTP duration metric family, and ``/metrics`` passes
``promtool check metrics``. In-process tests cover the other arrangements.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from paid_telemetry.asgi import PaidASGIMiddleware, already_instrumented, instrument_app
from paid_telemetry_ops.services import find_binary, free_port
from tests.test_asgi import served

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
ROUTE = "/projects/{project_id}/runs"
DURATION_FAMILY = re.compile(r"^http_server_(request_)?duration")


def test_fastapi_is_new_enough_to_instrument_itself() -> None:
    major, minor = (int(x) for x in fastapi.__version__.split(".")[:2])
    assert (major, minor) >= (0, 165), fastapi.__version__
    assert hasattr(FastAPI(), "_native_telemetry")


@contextlib.contextmanager
def app_process(tmp_path: Path, *, foreign: bool) -> Iterator[dict[str, Any]]:
    ready = tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = f"{REPO / 'src'}:{REPO}"
    argv = [sys.executable, "-m", "tests.fastapi_app", str(ready)]
    if foreign:
        instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent)) or \
            shutil.which("opentelemetry-instrument")
        assert instrument, "opentelemetry-instrument missing: pip install -e '.[dev]' (opentelemetry-distro)"
        argv = [instrument, *argv, "--foreign"]
        env |= {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prometheus", "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port()),
                "OTEL_SERVICE_NAME": "fastapi-test",
                # instrument_app leaves this app to contrib's instrumentation: its own exclusion list applies
                "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "/healthz,/_spans,/metrics",
                # stable HTTP conventions, as Paid's dashboards expect (contrib's default is the old, ms, ones)
                "OTEL_SEMCONV_STABILITY_OPT_IN": "http"}
    log = (tmp_path / "app.log").open("wb")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            assert time.monotonic() < deadline, "app not ready in 30 s:\n" + (tmp_path / "app.log").read_text()
            time.sleep(0.05)
        time.sleep(0.05)  # the file is written in one call; let it land
        info = json.loads(ready.read_text())
        info["log"] = tmp_path / "app.log"
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def exercise(info: dict[str, Any], n: int = 5) -> tuple[list[dict[str, Any]], str]:
    with httpx.Client(base_url=info["url"], timeout=10) as http:
        for i in range(n):
            assert http.get(f"/projects/p-{i}/runs").status_code == 200
        assert http.get("/healthz").status_code == 200
        spans = http.get("/_spans").json()
    return spans, httpx.get(info["metrics"], timeout=10).text


def check_one_layer(spans: list[dict[str, Any]], body: str, tmp_path: Path, n: int = 5) -> str:
    """Exactly one server span per request and one HTTP duration family; promtool accepts /metrics."""
    server = [s for s in spans if s["kind"] == "SERVER"]
    assert len(server) == n, spans
    assert Counter(s["trace_id"] for s in server) == Counter({s["trace_id"]: 1 for s in server})  # one per trace
    assert {(s["name"], s["route"]) for s in server} == {(f"GET {ROUTE}", ROUTE)}
    assert len({s["scope"] for s in server}) == 1

    (tmp_path / "metrics.txt").write_text(body)
    promtool = subprocess.run([find_binary("promtool"), "check", "metrics"], input=body, capture_output=True,
                              text=True, timeout=30)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    helps = Counter(line.split()[2] for line in body.splitlines() if line.startswith("# HELP "))
    assert all(c == 1 for c in helps.values()), [k for k, c in helps.items() if c > 1]
    families = [f for f in text_string_to_metric_families(body) if DURATION_FAMILY.match(f.name)]
    assert len(families) == 1, [f.name for f in families]
    counts = {tuple(sorted(s.labels.items())): s.value for s in families[0].samples if s.name.endswith("_count")}
    assert sum(counts.values()) == n, counts
    assert all(dict(k)["http_route"] == ROUTE for k in counts), counts  # /healthz and /_spans are not measured
    return str(server[0]["scope"])


def test_fastapi_with_paid_telemetry_one_layer(tmp_path: Path) -> None:
    with app_process(tmp_path, foreign=False) as info:
        spans, body = exercise(info)
    scope = check_one_layer(spans, body, tmp_path)
    # paid_telemetry's providers are the global ones: FastAPI's own telemetry does the work
    assert scope == "fastapi", scope
    assert "http_server_request_duration_seconds_count" in body


def test_fastapi_under_opentelemetry_instrument_one_layer(tmp_path: Path) -> None:
    with app_process(tmp_path, foreign=True) as info:
        spans, body = exercise(info)
        assert info["wrapped"] is False  # instrument_app saw the instrumentation and left the app alone
    scope = check_one_layer(spans, body, tmp_path)
    assert scope == "opentelemetry.instrumentation.fastapi", scope
    assert "http_server_request_duration_seconds_count" in body
    log = info["log"].read_text()
    assert "already instrumented by opentelemetry-instrumentation" in log, log


def test_explicit_providers_our_layer_and_fastapi_switched_off() -> None:
    """Providers other than FastAPI's: our middleware records, FastAPI's own stays off."""
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    mp = MeterProvider(metric_readers=[reader])
    fastapi_spans, fastapi_reader = InMemorySpanExporter(), InMemoryMetricReader()
    fastapi_tp = TracerProvider()
    fastapi_tp.add_span_processor(SimpleSpanProcessor(fastapi_spans))
    api = FastAPI(telemetry={"tracer_provider": fastapi_tp,
                             "meter_provider": MeterProvider(metric_readers=[fastapi_reader])})

    @api.get("/projects/{project_id}/runs")
    async def runs(project_id: str) -> dict[str, str]:
        return {"project": project_id}

    app = instrument_app(api, tracer_provider=tp, meter_provider=mp)
    assert isinstance(app, PaidASGIMiddleware)
    with served(app) as url:
        for i in range(3):
            assert httpx.get(f"{url}/projects/{i}/runs", timeout=10).status_code == 200
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 404
    server = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert [s.name for s in server] == [f"GET {ROUTE}"] * 3
    assert {s.instrumentation_scope.name for s in server if s.instrumentation_scope} == {
        "opentelemetry.instrumentation.asgi"}
    data = reader.get_metrics_data()
    assert data is not None
    scopes = {sm.scope.name: {m.name for m in sm.metrics} for rm in data.resource_metrics for sm in rm.scope_metrics}
    assert "fastapi" not in scopes, scopes
    assert fastapi_spans.get_finished_spans() == ()  # FastAPI's own telemetry was switched off
    fastapi_data = fastapi_reader.get_metrics_data()
    assert fastapi_data is None or not any(sm.metrics for rm in fastapi_data.resource_metrics
                                           for sm in rm.scope_metrics)
    (duration,) = [m for m in data.resource_metrics[0].scope_metrics[0].metrics
                   if m.name == "http.server.request.duration"]
    assert sum(p.count for p in duration.data.data_points) == 3


def test_contrib_instrumented_apps_are_left_alone() -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    api = FastAPI()
    FastAPIInstrumentor.instrument_app(api)
    try:
        assert already_instrumented(api) and instrument_app(api) is api
    finally:
        FastAPIInstrumentor.uninstrument_app(api)
    wrapped = OpenTelemetryMiddleware(Starlette())
    assert instrument_app(wrapped) is wrapped
    listed = Starlette(middleware=[Middleware(OpenTelemetryMiddleware)])
    assert instrument_app(listed) is listed
    plain = Starlette()
    assert already_instrumented(plain) is None and isinstance(instrument_app(plain), PaidASGIMiddleware)
