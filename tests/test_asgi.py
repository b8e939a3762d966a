"""paid_telemetry.asgi against a real Starlette app served by a real uvicorn on loopback.

Requests are real HTTP (httpx). Metrics are read from OTel's InMemoryMetricReader and from the
embedded Prometheus endpoint; spans from InMemorySpanExporter.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

import paid_telemetry
from paid_telemetry.asgi import DEFAULT_EXCLUDED_PATHS, PaidASGIMiddleware, instrument_app, starlette_route_resolver

pytestmark = pytest.mark.e2e

ASGI_SCOPE = "opentelemetry.instrumentation.asgi"
DURATION = "http.server.request.duration"
RUNS = "/projects/{project_id}/runs"
# Fragments of raw paths the tests request: none may appear in any metric attribute.
RAW = ("/projects/1", "/projects/2", "/projects/3", "/projects/5", "/projects/7", "run-abc123", "acme-42",
       "u-99", "/nope", "/metrics", "/health")


# -- the app under test ----------------------------------------------------------------------
async def list_runs(request: Request) -> JSONResponse:
    return JSONResponse({"project": request.path_params["project_id"], "runs": []})


async def create_run(request: Request) -> JSONResponse:
    return JSONResponse({"project": request.path_params["project_id"], "run": "r-1"}, status_code=201)


async def get_run(request: Request) -> JSONResponse:
    return JSONResponse({"run": request.path_params["run_id"]})


async def member(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.path_params))


async def fail(_request: Request) -> Response:
    raise RuntimeError("boom")


async def metrics(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("# nothing\n")


async def health(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def paid_api() -> Starlette:
    return Starlette(routes=[
        Route("/projects/{project_id}/runs", list_runs, methods=["GET"]),
        Route("/projects/{project_id}/runs", create_run, methods=["POST"]),
        Route("/projects/{project_id}/runs/{run_id}", get_run),
        Mount("/orgs/{org_id}", routes=[Route("/members/{member_id}", member)]),
        Route("/fail", fail),
        Route("/metrics", metrics),
        Route("/health", health),
        Route("/healthz", health),
    ])


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a 127.0.0.1 socket we bound (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn died on start"
        assert time.monotonic() < deadline, "uvicorn did not start within 10s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


# -- reading the in-memory data ----------------------------------------------------------------
def asgi_metrics(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            if sm.scope.name == ASGI_SCOPE:
                for m in sm.metrics:
                    out[m.name] = m
    return out


def duration_counts(reader: InMemoryMetricReader) -> Counter[tuple[str | None, str, int]]:
    m = asgi_metrics(reader).get(DURATION)
    counts: Counter[tuple[str | None, str, int]] = Counter()
    for p in m.data.data_points if m else []:
        a = p.attributes
        counts[(a.get("http.route"), a["http.request.method"], a["http.response.status_code"])] += p.count
    return counts


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """The middleware records after the response is sent: the client can be a moment ahead."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def memory() -> Iterator[tuple[InMemoryMetricReader, InMemorySpanExporter]]:
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    paid_telemetry.configure(exporter="none", metric_readers=[reader], span_processors=[SimpleSpanProcessor(spans)],
                             handle_sigterm=False)
    yield reader, spans
    paid_telemetry.shutdown()


def server_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans()
            if s.instrumentation_scope and s.instrumentation_scope.name == ASGI_SCOPE]


# -- tests ---------------------------------------------------------------------------------------
def test_route_templates_stable_duration_and_exclusions(
    memory: tuple[InMemoryMetricReader, InMemorySpanExporter],
) -> None:
    reader, spans = memory
    app = instrument_app(paid_api())
    with served(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        for pid in (1, 2, 3):
            assert http.get(f"/projects/{pid}/runs").status_code == 200
        assert http.post("/projects/7/runs").status_code == 201
        assert http.delete("/projects/5/runs").status_code == 405
        assert http.get("/projects/1/runs/run-abc123").json() == {"run": "run-abc123"}
        assert http.get("/orgs/acme-42/members/u-99").json() == {"org_id": "acme-42", "member_id": "u-99"}
        assert http.get("/nope/123").status_code == 404
        assert http.get("/fail").status_code == 500
        for path in ("/metrics", "/metrics", "/health", "/health/", "/healthz"):
            assert http.get(path, follow_redirects=True).status_code == 200
        wait_for(lambda: sum(duration_counts(reader).values()) >= 9, "9 duration points")
        time.sleep(0.2)  # anything late (an excluded path wrongly measured) shows up now

    assert duration_counts(reader) == {
        (RUNS, "GET", 200): 3,
        (RUNS, "POST", 201): 1,
        (RUNS, "DELETE", 405): 1,
        ("/projects/{project_id}/runs/{run_id}", "GET", 200): 1,
        ("/orgs/{org_id}/members/{member_id}", "GET", 200): 1,
        (None, "GET", 404): 1,
        ("/fail", "GET", 500): 1,
    }
    found = asgi_metrics(reader)
    duration = found[DURATION]
    assert duration.unit == "s"
    assert "http.server.duration" not in found, "old (ms) conventions must not be emitted"
    runs = next(p for p in duration.data.data_points
                if p.attributes.get("http.route") == RUNS and p.attributes["http.request.method"] == "GET")
    assert dict(runs.attributes) == {
        "http.route": RUNS, "http.request.method": "GET", "http.response.status_code": 200,
        "url.scheme": "http", "network.protocol.version": "1.1",
    }
    assert 0 < runs.sum < 5 * runs.count, "durations are seconds"
    failed = next(p for p in duration.data.data_points if p.attributes.get("http.route") == "/fail")
    assert failed.attributes["error.type"] == "500"
    for m in found.values():
        for p in m.data.data_points:
            for value in p.attributes.values():
                assert not any(raw in str(value) for raw in RAW), f"{m.name} carries a raw path: {dict(p.attributes)}"

    got = server_spans(spans)
    assert all(s.kind is SpanKind.SERVER for s in got), "receive/send child spans are excluded by default"
    assert Counter(s.name for s in got) == {
        "GET /projects/{project_id}/runs": 3,
        "POST /projects/{project_id}/runs": 1,
        "DELETE /projects/{project_id}/runs": 1,
        "GET /projects/{project_id}/runs/{run_id}": 1,
        "GET /orgs/{org_id}/members/{member_id}": 1,
        "GET": 1,
        "GET /fail": 1,
    }
    paths = {s.attributes["url.path"] for s in got if s.attributes}
    assert not paths & {"/metrics", "/health", "/health/", "/healthz"}
    # ids belong on spans: the raw path is there, next to the template
    one = next(s for s in got if s.attributes and s.attributes["url.path"] == "/projects/2/runs")
    assert one.attributes is not None and one.attributes["http.route"] == RUNS
    boom = next(s for s in got if s.name == "GET /fail")
    assert boom.status.status_code is StatusCode.ERROR  # 5xx marks the server span as an error


def test_prometheus_exposition_uses_templates() -> None:
    handle = paid_telemetry.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        assert handle.prometheus_url is not None
        app = instrument_app(paid_api())
        with served(app) as base, httpx.Client(base_url=base, timeout=10) as http:
            for pid in (1, 2, 3):
                assert http.get(f"/projects/{pid}/runs").status_code == 200
            assert http.get("/metrics").status_code == 200
            assert http.get("/health").status_code == 200

            def scrape() -> str:
                return httpx.get(handle.prometheus_url, timeout=5).text  # type: ignore[arg-type]

            def runs_count() -> float:
                for fam in text_string_to_metric_families(scrape()):
                    if fam.name == "http_server_request_duration_seconds":
                        for s in fam.samples:
                            if s.name.endswith("_count") and s.labels.get("http_route") == RUNS:
                                return s.value
                return 0.0

            wait_for(lambda: runs_count() == 3.0, "3 requests in the Prometheus exposition")
            text = scrape()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        fam = families["http_server_request_duration_seconds"]
        assert fam.type == "histogram"
        counts = {tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name.endswith("_count")}
        assert counts == {
            (("http_request_method", "GET"), ("http_response_status_code", "200"), ("http_route", RUNS),
             ("network_protocol_version", "1.1"), ("url_scheme", "http")): 3.0,
        }, "one series, the template; /metrics and /health are not measured"
        assert "/projects/1" not in text and "/projects/2" not in text and "/projects/3" not in text
        assert 'http_route="/metrics"' not in text and 'http_route="/health"' not in text
    finally:
        paid_telemetry.shutdown()


def test_reconfigure_rebinds_and_plain_asgi_app_gets_no_raw_path() -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:  # no router: nothing to template
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    assert starlette_route_resolver(plain) is None
    app = instrument_app(plain)
    assert instrument_app(app) is app and isinstance(app, PaidASGIMiddleware), "instrumenting twice is a no-op"
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    spans = InMemorySpanExporter()
    with served(app) as base, httpx.Client(base_url=base, timeout=10) as http:
        paid_telemetry.configure(exporter="none", metric_readers=[first], handle_sigterm=False)
        assert http.get("/projects/9/runs").status_code == 200
        wait_for(lambda: sum(duration_counts(first).values()) == 1, "first handle's point")
        paid_telemetry.configure(exporter="none", metric_readers=[second], span_processors=[SimpleSpanProcessor(spans)],
                                 handle_sigterm=False)
        for _ in range(2):
            assert http.get("/projects/9/runs").status_code == 200
        assert http.get("/livez").status_code == 200  # excluded by default, even though the app answers it
        wait_for(lambda: sum(duration_counts(second).values()) == 2, "second handle's points")
        time.sleep(0.2)
    paid_telemetry.shutdown()
    assert duration_counts(second) == {(None, "GET", 200): 2}
    for m in asgi_metrics(second).values():
        for p in m.data.data_points:
            assert "http.route" not in p.attributes
            assert not any("/projects/9" in str(v) for v in p.attributes.values())
    got = server_spans(spans)
    assert [s.name for s in got] == ["GET", "GET"], "no template: the span is named by the method alone"
    assert "/livez" in DEFAULT_EXCLUDED_PATHS
