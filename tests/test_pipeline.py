"""End to end on real services: SDK -> OTLP -> our collector build -> Prometheus (+ exemplars),
traces -> Jaeger. The stack is started by the test session on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import paid_telemetry as pt
from paid_telemetry import catalogue as cat
from paid_telemetry_ops.stack import Stack
from tests.promapi import get_json, query, series, wait_for
from tests.workload import check_samples, normalise_le, record_known_workload

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def otlp_sdk(stack: Stack) -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    pt.configure(
        exporter="otlp", otlp_endpoint=stack.otlp_endpoint, metric_export_interval_ms=1000,
        service_name="paid-e2e", service_version="1.2.3", environment="ci",
        span_processors=[SimpleSpanProcessor(spans)], handle_sigterm=False,
    )
    yield spans
    pt.shutdown()


def _prom_samples(prom: str) -> tuple[dict[str, Any], dict[str, Any]]:
    samples: dict[str, dict[Any, float]] = defaultdict(dict)
    buckets: dict[str, dict[Any, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in query(prom, '{__name__=~"paid_.+", job="paid-e2e"}'):
        metric = dict(r["metric"])
        name = metric.pop("__name__")
        for drop in ("job", "instance"):
            metric.pop(drop, None)
        value = float(r["value"][1])
        if name.endswith("_bucket"):
            le = normalise_le(metric.pop("le"))
            buckets[name][tuple(sorted(metric.items()))][le] = value
        else:
            samples[name][tuple(sorted(metric.items()))] = value
    return samples, buckets


def test_every_catalogue_metric_reaches_prometheus_exactly(stack: Stack, otlp_sdk: InMemorySpanExporter) -> None:
    expected = record_known_workload()
    pt.force_flush()
    prom = stack.prometheus_url

    def complete() -> tuple[dict[str, Any], dict[str, Any]] | None:
        samples, buckets = _prom_samples(prom)
        runs = samples.get("paid_agent_runs_total", {})
        return (samples, buckets) if sum(runs.values()) == 6 and "paid_telemetry_dropped_records_total" in samples \
            else None

    samples, buckets = wait_for(complete, timeout=40, what="the workload in Prometheus")
    check_samples(samples, expected, buckets)
    present = set(samples) | set(buckets)
    for inst in cat.CATALOGUE:
        for name in inst.prometheus_series:
            assert name in present, f"{name} missing in Prometheus"
    # resource attributes: job/instance on every series, the rest on target_info
    info = query(prom, 'target_info{job="paid-e2e"}')
    assert len(info) == 1
    labels = info[0]["metric"]
    assert labels["service_version"] == "1.2.3"
    assert labels["deployment_environment_name"] == "ci"
    assert labels["instance"]  # service.instance.id


def test_exemplars_traces_and_logs_share_the_trace_id(
    stack: Stack, otlp_sdk: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    otlp_sdk.clear()
    from paid_telemetry.logs import configure_logging

    configure_logging(json=True)  # per test: the autouse fixture undoes logging set-up after each test
    with pt.agent_run(project_id="exemplar", agent_type="tracer") as run:
        run.iteration()
    pt.force_flush()
    (span,) = [s for s in otlp_sdk.get_finished_spans() if s.name == "invoke_agent tracer"]
    trace_id = format(span.context.trace_id, "032x")
    prom = stack.prometheus_url

    def exemplars() -> list[dict[str, Any]] | None:
        q = urllib.parse.urlencode({
            "query": 'paid_agent_run_duration_seconds_bucket{project_id="exemplar"}',
            "start": str(time.time() - 600), "end": str(time.time() + 60),
        })
        data = get_json(f"{prom}/api/v1/query_exemplars?{q}")["data"]
        found = [e for group in data for e in group["exemplars"]]
        return found or None

    found = wait_for(exemplars, timeout=40, what="exemplars in Prometheus")
    assert {e["labels"]["trace_id"] for e in found} == {trace_id}
    assert {e["labels"]["span_id"] for e in found} == {format(span.context.span_id, "016x")}

    def trace() -> dict[str, Any] | None:
        try:
            body = get_json(f"{stack.jaeger_url}/api/traces/{trace_id}")
        except urllib.error.HTTPError:
            return None
        return body if body.get("data") else None

    body = wait_for(trace, timeout=30, what="the trace in Jaeger")
    names = {s["operationName"] for s in body["data"][0]["spans"]}
    assert "invoke_agent tracer" in names

    # the run's log lines: stdout JSON and the collector's log output carry the same id
    stdout = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [end_line] = [x for x in stdout if x["message"] == "Agent run completed" and x["project_id"] == "exemplar"]
    assert end_line["trace_id"] == trace_id

    def collector_log() -> list[dict[str, Any]] | None:
        if not stack.collector_logs_file.exists():
            return None
        records = []
        for line in stack.collector_logs_file.read_text().splitlines():
            for rl in json.loads(line).get("resourceLogs", []):
                for sl in rl.get("scopeLogs", []):
                    records += [r for r in sl.get("logRecords", []) if r.get("traceId") == trace_id]
        return records or None

    records = wait_for(collector_log, timeout=30, what="the run's log record in the collector's log file")
    assert {r["body"]["stringValue"] for r in records} == {"Agent run completed"}
    assert {r["spanId"] for r in records} == {format(span.context.span_id, "016x")}


def test_ingest_lag_and_scrape_time(stack: Stack, otlp_sdk: InMemorySpanExporter) -> None:
    """Recording -> queryable takes about one export interval (1 s) plus one scrape interval (2 s)."""
    prom = stack.prometheus_url
    start = time.monotonic()
    pt.record_pull_request("merged", project_id="lag-probe")
    wait_for(lambda: series(prom, 'paid_pull_requests_total{project_id="lag-probe"}'), timeout=30, interval=0.1,
             what="the lag probe")
    lag = time.monotonic() - start
    print(f"\ningest lag: {lag:.2f}s (export 1s + scrape 2s)")
    assert lag < 10
    scrape = query(prom, 'scrape_duration_seconds{job="otel-collector"}')
    assert scrape and float(scrape[0]["value"][1]) < 5.0  # the record's target
    jobs = {"otel-collector", "otel-collector-self", "prometheus", "jaeger", "temporal"}
    up = wait_for(lambda: (lambda s: s if {dict(k)["job"] for k in s} >= jobs else None)(
        series(prom, "up == 1", drop=("instance",))), timeout=20, what="every pipeline target up")
    assert {dict(k)["job"] for k in up} >= jobs


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time
    import paid_telemetry as pt
    pt.configure(exporter="otlp", otlp_endpoint=sys.argv[1], service_name="paid-sigterm",
                 metric_export_interval_ms=600_000)  # no periodic export: only the SIGTERM flush can deliver
    for _ in range(7):
        with pt.agent_run(project_id="sigterm", agent_type="worker"):
            pass
    print("ready", flush=True)
    time.sleep(60)
""")


def test_sigterm_flushes_the_last_interval(stack: Stack) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, stack.otlp_endpoint], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OTEL_METRIC_EXPORT_INTERVAL": ""})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == -signal.SIGTERM
    got = wait_for(lambda: series(stack.prometheus_url, 'paid_agent_runs_total{project_id="sigterm"}'), timeout=30,
                   what="metrics flushed on SIGTERM")
    assert got == {(("agent_type", "worker"), ("project_id", "sigterm"), ("status", "completed")): 7.0}


def test_collector_scrubs_sensitive_span_attributes(stack: Stack, otlp_sdk: InMemorySpanExporter) -> None:
    with pt.agent_run(project_id="scrub", agent_type="scrubber",
                      attributes={"gen_ai.prompt": "my secret prompt", "user.email": "a@b.c", "db.password": "pw"}):
        pass
    pt.force_flush()
    (span,) = [s for s in otlp_sdk.get_finished_spans() if s.name == "invoke_agent scrubber"]
    trace_id = format(span.context.trace_id, "032x")
    body = wait_for(lambda: get_json(f"{stack.jaeger_url}/api/traces/{trace_id}").get("data"), timeout=30,
                    what="scrubbed trace")
    tags = {t["key"] for s in body[0]["spans"] for t in s["tags"]}
    assert "paid.project_id" in tags
    assert not tags & {"gen_ai.prompt", "user.email", "db.password"}


def test_collector_validates_its_own_config_and_the_build_is_cached() -> None:
    from paid_telemetry_ops.services import REPO, built_binary

    binary = built_binary("otelcol-paid")
    check = subprocess.run([binary, "validate", "--config", str(REPO / "otel-collector" / "config.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    components = subprocess.run([binary, "components"], capture_output=True, text=True, timeout=60).stdout
    for name in ("otlp", "memory_limiter", "batch", "attributes", "prometheus", "otlp_grpc", "file", "health_check"):
        assert f"name: {name}\n" in components, name
    assert components.count("v0.161.0") >= 8  # one release for every module
    start = time.monotonic()
    again = subprocess.run(["bash", str(REPO / "scripts" / "build-collector.sh")], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr
    assert "collector: cached" in again.stderr and "jaeger: cached" in again.stderr
    assert f"OTELCOL={binary}" in again.stdout
    assert time.monotonic() - start < 30
