"""The embedded /metrics endpoint, scraped over real HTTP: every catalogue name, label set
and bucket boundary exactly as RDR-011 lists them."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

import paid_telemetry as pt
from paid_telemetry import catalogue as cat
from tests.exposition import check_body, same_samples, samples, scrape
from tests.workload import Labels, check_samples, normalise_le, record_known_workload


def parse(text: str) -> tuple[dict[str, dict[Labels, float]], dict[str, dict[Labels, dict[str, float]]]]:
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    buckets: dict[str, dict[Labels, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if s.name.endswith("_bucket"):
                le = normalise_le(labels.pop("le"))
                buckets[s.name][tuple(sorted(labels.items()))][le] = s.value
            else:
                samples[s.name][tuple(sorted(labels.items()))] = s.value
    return samples, buckets


@pytest.fixture
def endpoint() -> Iterator[pt.Telemetry]:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    yield handle
    pt.shutdown()


def test_endpoint_serves_every_catalogue_metric_exactly(endpoint: pt.Telemetry) -> None:
    assert endpoint.prometheus_url is not None
    assert endpoint.prometheus_url.startswith("http://127.0.0.1:")  # never a public interface by default
    expected = record_known_workload()
    text = urllib.request.urlopen(endpoint.prometheus_url, timeout=5).read().decode()
    samples, buckets = parse(text)
    check_samples(samples, expected, buckets)
    exposed = set(samples) | set(buckets)
    for inst in cat.CATALOGUE:
        for name in inst.prometheus_series:
            assert name in exposed, f"{name} missing from /metrics"
    # IDs never become labels
    assert "run_id" not in text and "agent_run_id" not in text and "trace_id" not in text
    # resource attributes are on target_info
    (target,) = samples["target_info"]
    assert dict(target)["service_name"] == "paid"


def test_endpoint_with_10k_series_answers_under_50ms() -> None:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, cardinality_limit=20_000)
    try:
        t = pt.runtime.current()
        for i in range(10_000):
            t.metrics.agent_runs.add(1, t.metrics.run_labels.get((f"p{i}", "coder", "completed")))
        url: Any = handle.prometheus_url
        urllib.request.urlopen(url, timeout=10).read()  # warm-up
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=10).read()
            timings.append(time.perf_counter() - start)
        assert body.count(b"paid_agent_runs_total{") == 10_000
        # Scrapes right after a render get the reused body (bounded age, see docs/endpoint.md); the
        # fresh render time is bench/bench.py's figure. This bound leaves room for a loaded CI
        # machine while still catching a regression by an order of magnitude.
        assert min(timings) < 0.25, timings
    finally:
        pt.shutdown()


# -- odd input never blanks, freezes or invalidates the body (issue 16) ------------------------
def _dropped(body: str, reason: str, instrument: str) -> float:
    key = ("paid_telemetry_dropped_records_total", (("instrument", instrument), ("reason", reason)))
    got = samples(body).get(key)
    return 0.0 if got is None else float(got.value)


def test_resource_attribute_keys_are_sanitised_and_collisions_merged() -> None:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, resource_attributes={
        "1st": "x", "team-name": "y", "__reserved": "z", "команда": "w", "__name__": "q",
        "a.b": "1", "a_b": "2", "a-b": "3", "_private": "p",
    })
    try:
        url: Any = handle.prometheus_url
        text = scrape(url)[1]
        _ct, om = scrape(url, openmetrics=True)
        got = check_body(text, om)
        (target,) = [dict(k[1]) for k in got if k[0] == "target_info"]
        assert {k: v for k, v in target.items() if not k.startswith(("service_", "telemetry_", "deployment_"))} == {
            "key_1st": "x", "team_name": "y", "key__reserved": "z", "key_______": "w", "key__name__": "q",
            "a_b": "3;1;2",  # "a-b" < "a.b" < "a_b": joined in the order of the original keys
            "key_private": "p",
        }
    finally:
        pt.shutdown()


def test_lone_surrogates_are_replaced_counted_and_the_endpoint_stays_fresh(caplog: pytest.LogCaptureFixture) -> None:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        url: Any = handle.prometheus_url
        bad = b"proj-\xff".decode("utf-8", "surrogateescape")  # what os.fsdecode gives for a bad byte
        with pt.agent_run(project_id=bad, agent_type="coder"):  # before the first scrape
            pass
        foreign = handle.meter_provider.get_meter("other.lib").create_counter("other.calls")
        foreign.add(1, {"path\udc80": "v\udcff"})  # a foreign instrument: the guard never sees it
        text, om = scrape(url)[1], scrape(url, openmetrics=True)[1]
        got = check_body(text, om)
        runs = ("paid_agent_runs_total", (("agent_type", "coder"), ("project_id", "proj-\ufffd"),
                                          ("status", "completed")))
        assert got[runs].value == 1
        assert got[("other_calls_total", (("path_", "v\ufffd"),))].value == 1
        assert _dropped(text, "not_utf8", "paid_agent_runs") == 1
        # the next scrape reflects new recordings: never a frozen or empty body
        with pt.agent_run(project_id=bad, agent_type="coder"):
            pass
        assert samples(scrape(url)[1])[runs].value == 2
    finally:
        pt.shutdown()


def test_same_name_from_two_scopes_is_one_family_told_apart_by_scope() -> None:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        mp = handle.meter_provider
        mp.get_meter("lib.one").create_counter("shared.requests", description="lib one").add(1, {"route": "/a"})
        mp.get_meter("lib.two", "2.0").create_counter("shared.requests", description="lib two").add(2, {"route": "/a"})
        url: Any = handle.prometheus_url
        text, om = scrape(url)[1], scrape(url, openmetrics=True)[1]
        got = check_body(text, om)
        assert text.count("# HELP shared_requests_total ") == 1 and text.count("# TYPE shared_requests_total ") == 1
        assert {k[1]: s.value for k, s in got.items() if k[0] == "shared_requests_total"} == {
            (("otel_scope_name", "lib.one"), ("route", "/a")): 1,
            (("otel_scope_name", "lib.two"), ("otel_scope_version", "2.0"), ("route", "/a")): 2,
        }
    finally:
        pt.shutdown()


def test_bool_and_sequence_values_render_as_the_otel_exporter_does() -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=True)
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                          metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        c = handle.meter_provider.get_meter("lib").create_counter("flags")
        c.add(1, {"ok": True, "tags": ("a", "b"), "n": 3, "ratio": 0.5, "bits": (True, False)})
        c.add(1, {"ok": False, "tags": ("é",), "n": -1, "ratio": 1e-9, "bits": ()})
        url: Any = handle.prometheus_url
        ours = {k[1] for k in check_body(scrape(url)[1], scrape(url, openmetrics=True)[1]) if k[0] == "flags_total"}
        stock = {
            tuple((k, v) for k, v in sorted(s.labels.items()) if not k.startswith("otel_scope_"))
            for fam in text_string_to_metric_families(generate_latest(registry).decode())
            for s in fam.samples if s.name == "flags_total"
        }
        assert ours == stock
        assert (("bits", "[true, false]"), ("n", "3"), ("ok", "true"), ("ratio", "0.5"),
                ("tags", '["a", "b"]')) in ours
    finally:
        pt.shutdown()


def test_a_series_that_cannot_be_rendered_is_skipped_counted_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from opentelemetry.metrics import Observation

    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        meter = handle.meter_provider.get_meter("lib")
        # A counter observing a negative total is not a counter value Prometheus accepts (the SDK
        # itself drops NaN observations).
        meter.create_observable_counter("odd", callbacks=[lambda _o: [
            Observation(-1.0, {"k": "neg"}), Observation(-2.5, {"k": "neg2"}), Observation(5, {"k": "ok"}),
        ]])
        with pt.agent_run(project_id="p", agent_type="coder"):
            pass
        url: Any = handle.prometheus_url
        with caplog.at_level(logging.WARNING, logger="paid_telemetry"):
            got = check_body(scrape(url)[1], scrape(url, openmetrics=True)[1])  # two renders
            handle.force_flush()  # fresh data for the next scrape, whatever the reuse window
            text = scrape(url)[1]
        assert {k[1]: s.value for k, s in got.items() if k[0] == "odd_total"} == {(("k", "ok"),): 5}
        assert got[("paid_agent_runs_total", (("agent_type", "coder"), ("project_id", "p"),
                                              ("status", "completed")))].value == 1
        # 2 series skipped per render; the 3rd scrape sees the counts of the first two renders
        assert _dropped(text, "unrenderable", "prometheus_endpoint") == 4
        warnings = [r for r in caplog.records if "prometheus_endpoint" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    finally:
        pt.shutdown()


def test_render_isolates_a_failing_series() -> None:
    """A data point whose attribute cannot even be turned into text costs only itself."""
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from paid_telemetry.export.prometheus import render

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    points = [NumberDataPoint({"k": v}, 0, 0, 1) for v in ("a", Broken(), "b")]  # type: ignore[dict-item]
    data = MetricsData([ResourceMetrics(Resource({"service.name": "x"}), [ScopeMetrics(
        InstrumentationScope("lib"), [Metric("calls", None, None, Sum(points, AggregationTemporality.CUMULATIVE,
                                                                      True))], "")], "")])
    problems: list[tuple[str, str]] = []
    text = render(data, problems=problems).decode()
    om = render(data, openmetrics=True).decode()
    got = check_body(text, om)
    same_samples(text, om)
    assert {k[1] for k in got if k[0] == "calls_total"} == {(("k", "a"),), (("k", "b"),)}
    assert [p[0] for p in problems] == ["unrenderable"]


# -- OpenMetrics and exemplars (issue 13) ------------------------------------------------------
def test_openmetrics_is_negotiated_and_carries_exemplars_of_the_recording_span() -> None:
    from opentelemetry import trace

    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        with pt.agent_run(project_id="p", agent_type="coder"):
            ctx = trace.get_current_span().get_span_context()
        url: Any = handle.prometheus_url
        ct, text = scrape(url)
        assert ct == "text/plain; version=0.0.4; charset=utf-8" and " # {" not in text
        ct, om = scrape(url, openmetrics=True)
        assert ct == "application/openmetrics-text; version=1.0.0; charset=utf-8"
        check_body(text, om)
        exemplars = {
            (s.name, s.exemplar.labels["trace_id"], s.exemplar.labels["span_id"])
            for fam in om_families(om) for s in fam.samples if s.exemplar is not None
        }
        trace_id, span_id = f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
        assert ("paid_agent_run_duration_seconds_bucket", trace_id, span_id) in exemplars
        assert ("paid_agent_iterations_bucket", trace_id, span_id) in exemplars
        # text/plain, */* or nothing: the text format
        for accept in ("text/plain", "*/*", "application/json", "application/openmetrics-text;q=0"):
            req = urllib.request.Request(url, headers={"Accept": accept})
            assert urllib.request.urlopen(req, timeout=5).headers["Content-Type"].startswith("text/plain"), accept
    finally:
        pt.shutdown()


# -- no work when nobody asks ------------------------------------------------------------------
def test_no_background_rendering_and_a_bounded_body_age() -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from paid_telemetry.export.prometheus import EmbeddedPrometheusReader

    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        assert not [t for t in threading.enumerate() if t.name == "paid-telemetry-metrics"]
        reader = handle.providers.endpoint.reader
        time.sleep(1.0)
        assert reader.renders == 0  # nobody scraped: nothing rendered
    finally:
        pt.shutdown()
    # the reuse window: min(max_age_s, render time / max_cpu_share); here max_age_s decides
    reader = EmbeddedPrometheusReader(max_age_s=0.5, max_cpu_share=1e-9)
    counter = MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("c")
    counter.add(1)
    start = time.monotonic()  # before the render: the window runs from its collection
    assert b"c_total 1\n" in reader.body()
    counter.add(1)
    body = reader.body()
    if time.monotonic() - start < 0.5:
        assert b"c_total 1\n" in body and reader.renders == 1  # reused
    deadline = time.monotonic() + 5
    while b"c_total 2\n" not in reader.body():
        assert time.monotonic() < deadline, "the body never became fresh"
        time.sleep(0.05)
    assert time.monotonic() - start >= 0.5 - 0.05 or reader.renders == 2


# -- the HTTP server (issue 21) ----------------------------------------------------------------
@pytest.fixture
def small_server() -> Iterator[tuple[str, Any]]:
    """An endpoint with a short read timeout, serving a real provider's metrics."""
    from opentelemetry.sdk.metrics import MeterProvider

    from paid_telemetry.export.prometheus import EmbeddedPrometheusReader, serve

    reader = EmbeddedPrometheusReader()
    MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("c").add(7)
    server = serve(reader, "127.0.0.1", 0, max_threads=4, read_timeout_s=1.0)
    host, port = server.server_address[:2]
    yield f"http://{host!s}:{port}/metrics", server
    server.shutdown()
    server.server_close()


def test_head_is_answered_and_unknown_paths_are_404(small_server: tuple[str, Any]) -> None:
    url, _ = small_server
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""
        length = int(resp.headers["Content-Length"])
    assert length == len(urllib.request.urlopen(url, timeout=5).read()) > 0
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.replace("/metrics", "/nope"), timeout=5)
    assert err.value.code == 404


def _http_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("paid-telemetry-http_"))


@pytest.mark.parametrize("first_bytes", [b"", b"GET /metr"], ids=["silent", "partial-request"])
def test_200_half_open_clients_hold_no_threads_and_are_closed(small_server: tuple[str, Any],
                                                              first_bytes: bytes) -> None:
    url, server = small_server
    host, port = server.server_address[:2]
    clients = []
    try:
        for _ in range(200):
            c = socket.create_connection((host, port), timeout=5)
            if first_bytes:
                c.sendall(first_bytes)
            clients.append(c)
        # a real scrape is answered while all 200 are connected
        assert b"c_total 7" in urllib.request.urlopen(url, timeout=5).read()
        assert _http_threads() <= server.max_threads
        # each one is closed by the server after the read timeout (1 s here)
        deadline = time.monotonic() + 15
        for c in clients:
            c.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert c.recv(1024) in (b"",) or first_bytes  # EOF, or a 4xx/timeout answer
            except ConnectionResetError:
                pass
        assert time.monotonic() < deadline
        assert _http_threads() <= server.max_threads
        assert b"c_total 7" in urllib.request.urlopen(url, timeout=5).read()
    finally:
        for c in clients:
            c.close()


def test_client_disconnects_are_logged_quietly(capfd: pytest.CaptureFixture[str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from paid_telemetry.export.prometheus import EmbeddedPrometheusReader, serve

    reader = EmbeddedPrometheusReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    c = meter.create_counter("big")
    for i in range(20_000):  # a ~1 MB body: far more than the socket buffers hold
        c.add(1, {"label": f"{i:06d}" * 5})
    server = serve(reader, "127.0.0.1", 0)
    host, port = server.server_address[:2]
    try:
        with caplog.at_level(logging.DEBUG, logger="paid_telemetry"):
            for _ in range(5):
                s = socket.create_connection((host, port), timeout=5)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                # Reset before the answer: the server's first write fails. (Waiting for the answer to
                # start made the test flaky: loopback buffers often took the whole body before the RST.)
                s.close()
            deadline = time.monotonic() + 20
            while not [r for r in caplog.records if "went away" in r.getMessage()]:
                assert time.monotonic() < deadline, "no disconnect was seen"
                time.sleep(0.1)
        err = capfd.readouterr().err
        assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err
        assert all(r.levelno == logging.DEBUG for r in caplog.records if "went away" in r.getMessage())
        assert b"big_total" in urllib.request.urlopen(f"http://{host!s}:{port}/metrics", timeout=30).read()
    finally:
        server.shutdown()
        server.server_close()
