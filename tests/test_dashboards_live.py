"""Every dashboard query against a real Prometheus: no errors, data where the SDK feeds it,
and each answers within the record's 2 seconds over a backfilled week of history. The same
live queries also run against the stores Prometheus remote-writes to (docs/scaling.md):
VictoriaMetrics, and Thanos (two receivers sharing the series in a hashring, read through
`thanos query`): dashboards work unchanged on each.

Real services, all on 127.0.0.1: Prometheus (1 s scrapes), the SDK's embedded /metrics
endpoint, prometheus-node-exporter, our collector build (its own telemetry, and the Temporal
SDK's metrics pushed to it over OTLP, as in the deployed stack), the Temporal dev server
(backlog gauge) with a worker running workflows through paid-telemetry's interceptor, and
PostgreSQL with prometheus-postgres-exporter. Panels
whose exporters are not started here are listed in EXPECTED_EMPTY with the reason, and the
test checks they really are empty (so the list cannot go stale silently).
"""

from __future__ import annotations

import asyncio
import glob
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

import paid_telemetry as pt
from paid_telemetry.catalogue import CATALOGUE
from paid_telemetry_ops import dashbench as bench
from paid_telemetry_ops import dashboards as dash
from paid_telemetry_ops.services import (
    MissingBinary,
    Service,
    built_binary,
    find_binary,
    free_port,
    http_ok,
    tcp_ok,
    temporal_server,
)
from paid_telemetry_ops.stack import thanos_store, victoriametrics_service
from tests.promapi import wait_for

pytestmark = pytest.mark.e2e

CATALOGUE_SERIES = {s for inst in CATALOGUE for s in inst.prometheus_series}
TARGET_S = 2.0  # RDR-011: "Dashboard queries return in < 2 seconds"

# Panels whose exporter does not run in this test, and why. Checked to be empty.
EXPECTED_EMPTY: dict[str, str] = {
    "paid-infrastructure / Container CPU (cores) / A": "cAdvisor needs Docker",
    "paid-infrastructure / Container memory working set / A": "cAdvisor needs Docker",
    "paid-infrastructure / Container OOM kills / A": "cAdvisor needs Docker",
}
# Variables fed by exporters not started here.
EXPECTED_EMPTY_VARIABLES: set[tuple[str, str]] = set()

PROJECTS = ("acme", "globex", "initech")


def record_round(i: int) -> None:
    """One round of a demo-like workload touching every instrument the dashboards show."""
    h = pt.runtime.current().metrics
    for n, project in enumerate(PROJECTS):
        for status in ("completed", "completed", "failed", "cancelled"):
            try:
                with pt.agent_run(project_id=project, agent_type=("coder", "reviewer")[(i + n) % 2]) as run:
                    for _ in range(1 + (i + n) % 4):
                        run.iteration()
                    run.record_tokens(provider="openai", model="gpt-4o", input_tokens=1200, output_tokens=300,
                                      cost_cents=3.0 * (20 if project == "globex" else 1))
                    run.record_tokens(provider="anthropic", model="claude-sonnet-4-5", input_tokens=800,
                                      output_tokens=200, cost_cents=1.5)
                    run.record_quality(0.5 + 0.1 * ((i + n) % 5), prompt_slug=f"fix-bug-v{1 + n % 2}")
                    if status == "failed":
                        raise RuntimeError("agent gave up")
                    if status == "cancelled":
                        run.status = "cancelled"
            except RuntimeError:
                pass
        pt.record_pull_request("created", project_id=project)
        pt.record_pull_request("merged", project_id=project)
    pt.record_quality_score(7, project_id="acme", prompt_slug="fix-bug-v1")  # out of range: dropped, counted
    for wf_type, status in (("agent_session", None), ("agent_session", "failed"), ("pr_review", "timed_out"),
                            ("pr_review", None)):
        with pt.workflow(wf_type) as wf:
            if status:
                wf.status = status
    for service, operation, fail in (("github", "create_pull_request", False), ("openai", "chat", True)):
        try:
            with pt.external_call(service, operation):
                if fail:
                    raise ConnectionError("503")
        except ConnectionError:
            pass
    for activity, outcome, seconds in (("run_agent", "completed", 1.2), ("call_llm", "failed", 0.4),
                                       ("call_llm", "completed", 0.3)):
        h.activity_executions.add(1, h.activity_outcome_labels.get((activity, outcome)))
        h.activity_duration.record(seconds, h.activity_labels.get((activity,)))
    h.activity_retries.add(1, h.activity_labels.get(("call_llm",)))


def collector_config(ports: dict[str, int]) -> str:
    dead = free_port()  # nothing listens: the exporter fails, as when Jaeger is down
    return f"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: 127.0.0.1:{ports["otlp_http"]}}}
processors:
  batch: {{timeout: 200ms}}
exporters:
  prometheus: {{endpoint: 127.0.0.1:{ports["prom_exporter"]}}}
  otlp_grpc/down:
    endpoint: 127.0.0.1:{dead}
    tls: {{insecure: true}}
    retry_on_failure: {{enabled: false}}
    timeout: 1s
service:
  pipelines:
    metrics: {{receivers: [otlp], processors: [batch], exporters: [prometheus, otlp_grpc/down]}}
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp_grpc/down]}}
  telemetry:
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus: {{host: 127.0.0.1, port: {ports["self"]}}}
"""


class TemporalDriver:
    """A worker (paid-telemetry's interceptor; SDK metrics over OTLP to the collector) and a client
    running successful, retried and failing workflows until stopped, in a thread of its own."""

    TASK_QUEUE = "paid-dashboards"

    def __init__(self, address: str, otlp_http_port: int) -> None:
        self.address = address
        self.otlp = f"http://127.0.0.1:{otlp_http_port}"
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="temporal-driver", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the fixture
            self.error = exc

    async def _main(self) -> None:
        from temporalio.client import Client, WorkflowFailureError
        from temporalio.worker import Worker

        from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner, temporal_runtime
        from tests import temporal_app as app

        rt = temporal_runtime("otlp", otlp_endpoint=self.otlp, otlp_http=True,
                              metric_periodicity=timedelta(milliseconds=500))
        client = await Client.connect(self.address, interceptors=[TelemetryInterceptor()], runtime=rt)
        tq = self.TASK_QUEUE
        async with Worker(client, task_queue=tq, workflows=app.WORKFLOWS, activities=app.ACTIVITIES,
                          workflow_runner=sandbox_runner()):
            while not self.stop.is_set():
                tag = uuid.uuid4().hex[:8]
                await client.execute_workflow(app.HelloWorkflow.run, tag, id=f"hello-{tag}", task_queue=tq)
                await client.execute_workflow(app.RetryWorkflow.run, 1, id=f"retry-{tag}", task_queue=tq)
                try:
                    await client.execute_workflow(app.FailWorkflow.run, id=f"fail-{tag}", task_queue=tq)
                except WorkflowFailureError:
                    pass
                self.rounds += 1
                await asyncio.sleep(0.3)


def postgres_services(port: int, exporter_port: int) -> tuple[Service, Service, Path]:
    """A throw-away PostgreSQL cluster (trust auth, loopback) and postgres-exporter scraping it.

    PostgreSQL refuses to run as root: as root, it runs as the ``postgres`` user, in a
    directory of its own under /tmp (pytest's tmp dirs are private to root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    if not found[-1]:
        raise MissingBinary("initdb not found; install it with: apt-get install -y postgresql")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="paid-dash-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True, timeout=120)
    pg = Service("postgres", [*as_user, str(bindir / "postgres"), "-D", str(root / "data"), "-k", str(root),
                              "-p", str(port), "-c", "listen_addresses=127.0.0.1"],
                 root, ready=lambda: tcp_ok(port))
    exporter = Service(
        "postgres-exporter",
        [find_binary("prometheus-postgres-exporter"), f"--web.listen-address=127.0.0.1:{exporter_port}"],
        root / "exporter", ready=lambda: http_ok(f"http://127.0.0.1:{exporter_port}/metrics"),
        env={"DATA_SOURCE_NAME": f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"},
    )
    return pg, exporter, root


class FeedCollector:
    """A separate OTel SDK pipeline (not paid-telemetry's) pushing points and spans to the collector."""

    def __init__(self, otlp_http_port: int) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        base = f"http://127.0.0.1:{otlp_http_port}"
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"),
                                               export_interval_millis=500)
        self.mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
        self.counter = self.mp.get_meter("feed").create_counter("feed_points")
        self.tp = TracerProvider(shutdown_on_exit=False)
        self.tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
        self.tracer = self.tp.get_tracer("feed")

    def tick(self) -> None:
        self.counter.add(1)
        with self.tracer.start_as_current_span("feed"):
            pass

    def close(self) -> None:
        self.mp.shutdown()
        self.tp.shutdown()


@dataclass
class Live:
    url: str
    services: list[Service]
    store: str  # VictoriaMetrics, fed by Prometheus' remote_write
    thanos: str  # thanos query over two receivers, fed by the same remote_write

    def base(self, backend: str) -> str:
        return {"prometheus": self.url, "victoriametrics": self.store, "thanos": self.thanos}[backend]


BACKENDS = ("prometheus", "victoriametrics")  # the backfilled week: Prometheus' TSDB and VictoriaMetrics
LIVE_BACKENDS = (*BACKENDS, "thanos")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("dash-live")
    services: list[Service] = []
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                          service_name="dashboards-live")
    assert handle.prometheus_url
    sdk_target = handle.prometheus_url.removeprefix("http://").split("/")[0]
    feed: FeedCollector | None = None
    driver: TemporalDriver | None = None
    pg_root: Path | None = None
    stop = threading.Event()
    try:
        node_port = free_port()
        node = Service("node-exporter", [find_binary("prometheus-node-exporter"),
                                         f"--web.listen-address=127.0.0.1:{node_port}"],
                       work / "node", ready=lambda: http_ok(f"http://127.0.0.1:{node_port}/metrics"))
        services.append(node.start(30))
        cports = {k: free_port() for k in ("otlp_http", "prom_exporter", "self")}
        (work / "collector").mkdir()
        (work / "collector" / "config.yaml").write_text(collector_config(cports))
        collector = Service("otelcol", [built_binary("otelcol-paid"), "--config", str(work / "collector" /
                                                                                     "config.yaml")],
                            work / "collector", ready=lambda: http_ok(f"http://127.0.0.1:{cports['self']}/metrics"))
        services.append(collector.start(60))
        feed = FeedCollector(cports["otlp_http"])
        temporal = temporal_server(work / "temporal")
        # The backlog gauge is emitted every minute by default: every second here.
        temporal.argv = [*temporal.argv, "--dynamic-config-value", 'matching.backlogMetricsEmitInterval="1s"']
        services.append(temporal.start(60))
        pg_port, pg_exporter_port = free_port(), free_port()
        pg, pg_exporter, pg_root = postgres_services(pg_port, pg_exporter_port)
        services.append(pg.start(60))
        services.append(pg_exporter.start(30))
        driver = TemporalDriver(f"127.0.0.1:{temporal.ports['grpc']}", cports["otlp_http"])
        driver.thread.start()
        vm = victoriametrics_service(work, fresh=True)
        services.append(vm.start(60))
        store = f"http://127.0.0.1:{vm.ports['http']}"
        thanos = thanos_store(work)
        for svc in thanos.services:
            services.append(svc.start(60))
        dead_target = free_port()
        config = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
remote_write:
  - url: {store}/api/v1/write
    queue_config: {{batch_send_deadline: 1s}}
  - url: {thanos.write_url}
    queue_config: {{batch_send_deadline: 1s}}
scrape_configs:
  - job_name: paid
    static_configs: [{{targets: ['{sdk_target}']}}]
  - job_name: node
    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]
  - job_name: otel-collector-self
    static_configs: [{{targets: ['127.0.0.1:{cports["self"]}']}}]
  - job_name: otel-collector
    honor_labels: true
    static_configs: [{{targets: ['127.0.0.1:{cports["prom_exporter"]}']}}]
  - job_name: temporal
    static_configs: [{{targets: ['127.0.0.1:{temporal.ports["metrics"]}']}}]
  - job_name: postgres
    static_configs: [{{targets: ['127.0.0.1:{pg_exporter_port}']}}]
  - job_name: unreachable
    static_configs: [{{targets: ['127.0.0.1:{dead_target}']}}]
"""
        rules = """
groups:
  - name: test
    rules:
      - alert: Watchdog
        expr: vector(1)
        labels: {severity: none}
"""
        prom = bench.prometheus(work / "prometheus", config, rules=rules)
        services.append(prom.start(60))

        def drive() -> None:
            i = 0
            while not stop.is_set():
                record_round(i)
                if feed is not None:
                    feed.tick()
                i += 1
                stop.wait(0.5)

        threading.Thread(target=drive, name="workload", daemon=True).start()
        url = f"http://127.0.0.1:{prom.ports['http']}"
        # Data is "there" once the SDK's counters have moved between scrapes and every target answered.
        deadline = time.monotonic() + 60
        ready_exprs = ("sum(rate(paid_agent_runs_total[1m])) > 0", "sum(rate(node_cpu_seconds_total[1m])) > 0",
                       f"sum(rate({dash.OTELCOL_FAILED_SPANS}[1m])) > 0", 'ALERTS{alertstate="firing"}',
                       f"sum(rate({dash.TEMPORAL_WF_FAILED}[1m])) > 0", dash.TEMPORAL_BACKLOG,
                       "sum(rate(pg_stat_database_xact_commit[1m])) > 0")
        while time.monotonic() < deadline:
            if driver.error is not None:
                raise driver.error
            if all(bench.has_finite_value(bench.instant(u, e)) for e in ready_exprs
                   for u in (url, store, thanos.query_url)):
                break
            time.sleep(1)
        else:
            pytest.fail(f"Prometheus or a store never saw the workload ({driver.rounds} Temporal rounds):\n"
                        + "\n".join(f"{e}: {bench.instant(url, e)} / {bench.instant(store, e)} / "
                                     f"{bench.instant(thanos.query_url, e)}" for e in ready_exprs)
                        + "\n" + prom.tail() + "\n" + vm.tail() + "\n"
                        + "\n".join(svc.tail() for svc in thanos.services))
        time.sleep(3)
        yield Live(url, services, store, thanos.query_url)
    finally:
        stop.set()
        if driver is not None:
            driver.stop.set()
            driver.thread.join(30)
        if feed is not None:
            feed.close()
        for s in reversed(services):
            s.stop()
        if pg_root is not None:
            shutil.rmtree(pg_root, ignore_errors=True)
        pt.shutdown()


def source_of(expr: str) -> str:
    """Who feeds a query: 'sdk' if every metric is in the catalogue, else the external exporter."""
    names = dash.metric_names(expr)
    if names <= CATALOGUE_SERIES:
        return "sdk"
    for exporter, external in dash.EXTERNAL_METRICS.items():
        if names - CATALOGUE_SERIES <= set(external):
            return exporter
    return "unknown: " + ", ".join(sorted(names - CATALOGUE_SERIES))


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
def test_every_panel_query_runs_and_returns_data(live: Live, backend: str) -> None:
    base = live.base(backend)
    queries = bench.panel_queries()
    assert len(queries) > 60
    errors, empty, unexpectedly_full = [], [], []
    sdk_with_data = 0
    for q in queries:
        expr = bench.substitute(q.expr, "1m")
        try:
            result = bench.instant(base, expr)
        except bench.QueryError as exc:
            errors.append(f"{q.key}: {exc}\n    {expr}")
            continue
        has_data = bench.has_finite_value(result)
        if q.key in EXPECTED_EMPTY:
            if has_data:
                unexpectedly_full.append(f"{q.key} has data now: remove it from EXPECTED_EMPTY")
            continue
        if not has_data:
            empty.append(f"{q.key} [{source_of(q.expr)}]: no data\n    {expr}")
        elif source_of(q.expr) == "sdk":
            sdk_with_data += 1
    assert not errors, f"queries {backend} refused:\n" + "\n".join(errors)
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert not unexpectedly_full, "\n".join(unexpectedly_full)
    assert set(EXPECTED_EMPTY) <= {q.key for q in queries}, "EXPECTED_EMPTY names a query that no longer exists"
    assert sdk_with_data >= 35


def test_expected_empty_panels_are_only_external_exporters() -> None:
    """Nothing fed by the SDK (or by an exporter this test runs) may hide in EXPECTED_EMPTY."""
    by_key = {q.key: q for q in bench.panel_queries()}
    for key, reason in EXPECTED_EMPTY.items():
        src = source_of(by_key[key].expr)
        assert src == "cadvisor", (key, src, reason)


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
def test_values_match_the_workload(live: Live, backend: str) -> None:
    """Spot-check that panels compute what they say, not just 'some data'."""
    url = live.base(backend)
    rate = bench.instant(url, bench.substitute(
        dash.ratio('paid_agent_runs_total{status="completed"}', "paid_agent_runs_total", window="1h")))
    # 2 of every 4 runs complete (completed, completed, failed, cancelled).
    assert len(rate) == 1 and float(rate[0]["value"][1]) == pytest.approx(0.5, abs=0.02)

    def totals() -> dict[str, float] | None:
        statuses = bench.instant(url, 'sum by (status) (paid_agent_runs_total{project_id=~".*"})')
        got = {s["metric"]["status"]: float(s["value"][1]) for s in statuses}
        ok = got["completed"] == pytest.approx(2 * got["failed"]) == pytest.approx(2 * got["cancelled"])
        return got if ok else None

    # The store receives remote-write batches a few seconds after Prometheus scraped them, so right
    # after a scrape its newest samples of different series can be one scrape apart: wait for a settled view.
    assert wait_for(totals, timeout=60, what="run totals in the 2:1:1 ratio the workload records")
    budget = bench.instant(url, "paid_project_daily_budget_cents")
    assert {s["metric"]["project_id"] for s in budget} == set(PROJECTS)
    assert all(float(s["value"][1]) == 10000 for s in budget)
    alerts = bench.instant(url, 'sum by (alertname, severity) (ALERTS{alertstate="firing"})')
    assert [a["metric"]["alertname"] for a in alerts] == ["Watchdog"]
    down = bench.instant(url, "max_over_time(up[15s]) == 0")  # down all along, not one slow scrape
    assert [d["metric"]["job"] for d in down] == ["unreachable"]


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
def test_variables_list_values(live: Live, backend: str) -> None:
    url = live.base(backend)
    for uid, name, selector, label in bench.variable_queries():
        values = bench.api(url, f"/api/v1/label/{label}/values", [("match[]", selector)], method="GET")
        if (uid, name) in EXPECTED_EMPTY_VARIABLES:
            assert values == [], f"{uid} ${name} has values now: remove it from EXPECTED_EMPTY_VARIABLES"
        else:
            assert values, f"{uid} ${name}: label_values({selector}, {label}) is empty"
    projects = bench.api(url, "/api/v1/label/project_id/values", [("match[]", "paid_agent_runs_total")],
                        method="GET")
    assert projects == sorted(PROJECTS)


@pytest.mark.parametrize("backend", LIVE_BACKENDS)
def test_every_rule_expression_runs(live: Live, backend: str) -> None:
    """Prometheus evaluates the rules (docs/scaling.md says why); their expressions still run
    unchanged on the store, e.g. for Grafana panels or vmalert later."""
    import yaml

    from paid_telemetry_ops.services import REPO

    rules = [r for path in sorted((REPO / "prometheus" / "rules").glob("*.yml"))
             for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    errors = []
    for rule in rules:
        try:
            bench.instant(live.base(backend), rule["expr"])
        except bench.QueryError as exc:
            errors.append(f"{rule.get('alert') or rule.get('record')}: {exc}")
    assert len(rules) > 20
    assert not errors, f"rule expressions {backend} refused:\n" + "\n".join(errors)


# -- query speed over a backfilled week -------------------------------------------------------

# Fed by Prometheus itself (rule evaluation, scrape health), so not part of the backfilled history.
HISTORY_EMPTY = {"paid-overview / Firing alerts by name / A", "paid-infrastructure / Targets down / A",
                 "paid-infrastructure / Targets up / A"}
HISTORY_INTERVAL_S = 30  # the bench script uses the record's 15 s; 30 s keeps this test near a minute


@dataclass
class Histories:
    """The same backfilled week in Prometheus' TSDB and in VictoriaMetrics."""

    hist: bench.History
    urls: dict[str, str]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Histories]:
    work = tmp_path_factory.mktemp("dash-history")
    hist = bench.write_openmetrics(work / "om", days=7, interval_s=HISTORY_INTERVAL_S)
    vm = victoriametrics_service(work, fresh=True)
    vm.start(60)
    try:
        store = f"http://127.0.0.1:{vm.ports['http']}"
        took = bench.import_victoriametrics(store, hist.files)
        series = bench.instant(store, 'count({__name__=~".+"})', at=hist.end)
        assert int(float(series[0]["value"][1])) == hist.series
        print(f"\nVictoriaMetrics imported {hist.samples:,} samples of {hist.series} series in {took:.1f} s "
              f"({hist.samples / took:,.0f} samples/s)")
        bench.backfill_history(hist, work / "tsdb")
        prom = bench.prometheus(work, "global: {scrape_interval: 15s}\nscrape_configs: []\n", tsdb=work / "tsdb")
        prom.start(120)
        try:
            yield Histories(hist, {"prometheus": f"http://127.0.0.1:{prom.ports['http']}", "victoriametrics": store})
        finally:
            prom.stop()
    finally:
        vm.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_query_answers_within_two_seconds_over_a_week(history: Histories, backend: str) -> None:
    url, hist = history.urls[backend], history.hist
    assert hist.series > 700 and hist.samples == hist.series * (7 * 86400 // HISTORY_INTERVAL_S + 1)
    queries = bench.panel_queries()
    timings = bench.time_range_queries(url, queries, {"24h": 86400, "7d": 7 * 86400}, end=hist.end)
    assert len(timings) == 2 * len(queries)
    # One timing can catch a CPU stall of the shared CI machine: a query is slow when it is slow twice.
    first_slow = [t for t in timings if t.seconds >= TARGET_S]
    again = {(t.query.key, t.range_name): t.seconds for t in bench.time_range_queries(
        url, list({t.query.key: t.query for t in first_slow}.values()), {"24h": 86400, "7d": 7 * 86400},
        end=hist.end)} if first_slow else {}
    slow = [f"{t.query.key} [{t.range_name}]: {t.seconds:.2f}s, then {again[(t.query.key, t.range_name)]:.2f}s"
            for t in first_slow if again[(t.query.key, t.range_name)] >= TARGET_S]
    assert not slow, "queries over the record's 2 s:\n" + "\n".join(slow)
    # The history really is there: SDK panels return series over the whole week.
    empty = {t.query.key for t in timings if t.series == 0}
    assert empty >= HISTORY_EMPTY, "HISTORY_EMPTY is stale"
    empty -= HISTORY_EMPTY
    assert not empty, f"no series over the backfilled week: {empty}"
    slowest = max(timings, key=lambda t: t.seconds)
    print(f"\n{backend} slowest: {slowest.query.key} [{slowest.range_name}] {slowest.seconds * 1000:.0f} ms; "
          f"median {sorted(t.seconds for t in timings)[len(timings) // 2] * 1000:.0f} ms")
    assert math.isfinite(slowest.seconds)


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_feeds_the_budget_projection(history: Histories, backend: str) -> None:
    """The cost projection over backfilled data: globex (20x the spend) is the only one over budget."""
    url, hist = history.urls[backend], history.hist
    projection = next(q for q in bench.panel_queries() if q.panel == "Projected day-end spend vs budget (UTC)")
    result = bench.instant(url, bench.substitute(projection.expr), at=hist.end)
    share = {s["metric"]["project_id"]: float(s["value"][1]) for s in result}
    assert set(share) == {"acme", "globex", "initech"}
    # acme: 2 providers x 0.02 c/s ~ 35 $/day on average (62 at the daily peak); globex 20x; budget 100 $/day.
    assert share["globex"] > 1.0 > share["acme"]
