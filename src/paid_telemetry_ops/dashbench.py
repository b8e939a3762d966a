"""Prove the Grafana dashboards against a real Prometheus: every panel query, and its speed.

Used by ``tests/test_dashboards_live.py`` and ``bench/bench_dashboards.py``:

- :func:`panel_queries` lists every query of every dashboard with Grafana's template
  variables substituted (``$__rate_interval`` -> a window, ``$project_id`` -> ``.*``...);
- :func:`write_openmetrics` writes days of demo-like history (the demo's projects, agents,
  models, workflows, plus node / PostgreSQL / collector / Temporal series) as OpenMetrics,
  which :func:`backfill` turns into TSDB blocks with ``promtool tsdb create-blocks-from openmetrics``;
- :func:`time_range_queries` times each query over a range the way Grafana asks it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from paid_telemetry import catalogue as cat
from paid_telemetry_ops import dashboards
from paid_telemetry_ops.services import Service, find_binary, free_port, http_ok

# -- queries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel: str      # title
    ref: str        # refId
    expr: str       # as written in the dashboard (with variables)
    instant: bool = False  # Grafana sends it to /api/v1/query at the range's end

    @property
    def key(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, rate_interval: str = "1m", values: dict[str, str] | None = None) -> str:
    """Grafana's interpolation for our dashboards: filters -> ``.*`` (All), intervals -> windows."""
    given = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": "24h", **(values or {})}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return given.get(name, ".*")

    return _VAR.sub(repl, expr)


def panel_queries(rendered: dict[str, dict[str, Any]] | None = None) -> list[PanelQuery]:
    """Every target of every dashboard (rendered by the generator unless given)."""
    out = []
    for d in (rendered or dashboards.render_all()).values():
        for p in d["panels"]:
            for t in p.get("targets", []):
                out.append(PanelQuery(d["uid"], p["title"], t["refId"], t["expr"], bool(t.get("instant"))))
    return out


def variable_queries(rendered: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, str, str, str]]:
    """(dashboard uid, variable, metric selector, label) of every label_values() variable."""
    out = []
    for d in (rendered or dashboards.render_all()).values():
        for v in d["templating"]["list"]:
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
            if m:
                out.append((d["uid"], v["name"], substitute(m.group(1)), m.group(2)))
    return out


# -- Prometheus HTTP API --------------------------------------------------------------------


class QueryError(RuntimeError):
    """Prometheus answered with an error (bad PromQL, timeout...)."""


def api(base_url: str, path: str, params: dict[str, str] | list[tuple[str, str]], timeout: float = 30.0,
        *, method: str = "POST") -> Any:
    """Call the Prometheus API (a form POST, or GET); returns ``data`` or raises QueryError with its message."""
    form = urllib.parse.urlencode(params)
    if method == "GET":
        req = urllib.request.Request(f"{base_url}{path}?{form}")
    else:
        req = urllib.request.Request(f"{base_url}{path}", data=form.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        doc = json.load(exc)
    if doc.get("status") != "success":
        raise QueryError(f"{doc.get('errorType')}: {doc.get('error')}")
    return doc["data"]


def instant(base_url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = api(base_url, "/api/v1/query", params)
    result = data["result"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": result}]
    return list(result)


def has_finite_value(result: Iterable[dict[str, Any]]) -> bool:
    """True when at least one series has a finite sample (NaN from 0/0 is not data)."""
    for series in result:
        values = [series["value"]] if "value" in series else series.get("values", [])
        if any(math.isfinite(float(v)) for _, v in values):
            return True
    return False


def grafana_intervals(range_s: float, scrape_s: float = 15.0, max_points: int = 1000) -> tuple[int, str]:
    """(step seconds, $__rate_interval) Grafana would use for a panel showing ``range_s``."""
    raw = max(range_s / max_points, scrape_s)
    nice = (15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 21600, 43200, 86400)
    step = next((n for n in nice if n >= raw * 0.75), nice[-1])
    rate = max(step + scrape_s, 4 * scrape_s)
    return step, f"{int(rate)}s"


@dataclass(frozen=True)
class Timing:
    query: PanelQuery
    range_name: str
    seconds: float
    series: int


def time_range_queries(base_url: str, queries: Iterable[PanelQuery], ranges: dict[str, float],
                       end: float, scrape_s: float = 15.0) -> list[Timing]:
    """Send every query as Grafana would for each range (query_range with its step and
    $__rate_interval; instant targets to /api/v1/query at the end); wall-clock seconds each."""
    timings = []
    for q in queries:
        for name, range_s in ranges.items():
            step, rate = grafana_intervals(range_s, scrape_s)
            expr = substitute(q.expr, rate, {"__range": f"{int(range_s)}s"})
            if q.instant:
                path, params = "/api/v1/query", {"query": expr, "time": f"{end:.0f}"}
            else:
                path = "/api/v1/query_range"
                params = {"query": expr, "start": f"{end - range_s:.0f}", "end": f"{end:.0f}", "step": str(step)}
            t0 = time.perf_counter()
            data = api(base_url, path, params, timeout=60)
            timings.append(Timing(q, name, time.perf_counter() - t0, len(data["result"])))
    return timings


# -- real services --------------------------------------------------------------------------


def prometheus(workdir: Path, config: str, *, tsdb: Path | None = None, port: int | None = None,
               rules: str | None = None, extra: Iterable[str] = ()) -> Service:
    """A real Prometheus on 127.0.0.1 with ``config`` (YAML text) and optional rule text."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if rules is not None:
        (workdir / "rules.yml").write_text(rules)
        config += "\nrule_files: [rules.yml]\n"
    (workdir / "prometheus.yml").write_text(config)
    argv = [
        find_binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
        f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tsdb or workdir / 'tsdb'}",
        "--storage.tsdb.retention.time=15d", "--log.level=warn", *extra,
    ]
    return Service("prometheus", argv, workdir, ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"),
                   ports={"http": port})


def backfill(openmetrics: Path, tsdb: Path) -> float:
    """promtool tsdb create-blocks-from openmetrics; returns the seconds it took."""
    tsdb.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run([find_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "-q",
                    str(openmetrics), str(tsdb)], check=True, capture_output=True, timeout=1800)
    return time.perf_counter() - t0


def import_victoriametrics(base_url: str, files: Iterable[Path], extra_label: str | None = None) -> float:
    """POST OpenMetrics files to VictoriaMetrics' /api/v1/import/prometheus (timestamps in
    seconds are taken as such) and flush, so they are searchable; returns the seconds it took.
    ``extra_label`` ("name=value") is added to every series: import N copies for N x the series."""
    t0 = time.perf_counter()
    query = "?" + urllib.parse.urlencode({"extra_label": extra_label}) if extra_label else ""
    for path in files:
        req = urllib.request.Request(f"{base_url}/api/v1/import/prometheus{query}", data=path.read_bytes(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()
    with urllib.request.urlopen(f"{base_url}/internal/force_flush", timeout=120) as resp:
        resp.read()
    return time.perf_counter() - t0


# -- demo-like history ----------------------------------------------------------------------

PROJECTS = ("acme", "globex", "initech")
AGENTS = ("coder", "reviewer", "planner")
MODELS = (("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini"))
WORKFLOWS = ("agent_session", "pr_review", "nightly_report")
ACTIVITIES = ("run_agent", "call_llm", "open_pull_request", "post_comment")
EXTERNAL = (("github", "create_pull_request"), ("github", "get_repository"), ("openai", "chat"),
            ("anthropic", "messages"))
TASK_QUEUES = ("agents", "reviews", "reports")


def _labels(d: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}" if d else ""


def _wave(i: int, steps_per_day: int, phase: float) -> float:
    """A daily cycle (busy afternoons, quiet nights) in [0.2, 1.8]."""
    return 1.0 + 0.8 * math.sin(2 * math.pi * (i / steps_per_day) + phase)


class _Writer:
    """Writes each sample into the file of its 2-hour block (promtool re-reads a whole input
    file once per block it creates: one file per block keeps the backfill linear)."""

    def __init__(self, outs: Sequence[IO[str]], timestamps: list[int], block_of: list[int], steps_per_day: int) -> None:
        self.outs = outs
        self.ts = timestamps
        self.block_of = block_of
        self.spd = steps_per_day
        self.series = 0
        self.samples = 0
        self._phase = 0.0

    def family(self, name: str, kind: str) -> None:
        for out in self.outs:
            out.write(f"# TYPE {name} {kind}\n")

    def _next_phase(self) -> float:
        self._phase += 0.7
        return self._phase

    def _emit(self, sample: str, values: Iterable[str]) -> None:
        writes = [o.write for o in self.outs]
        for b, t, v in zip(self.block_of, self.ts, values, strict=True):
            writes[b](f"{sample} {v} {t}\n")
        self.series += 1
        self.samples += len(self.ts)

    def _cumulative(self, per_s: float) -> list[float]:
        phase, v, prev, out = self._next_phase(), 0.0, self.ts[0], []
        for i, t in enumerate(self.ts):
            v += per_s * (t - prev) * _wave(i, self.spd, phase)
            prev = t
            out.append(v)
        return out

    def counter(self, sample: str, labels: dict[str, str], per_s: float) -> None:
        """A counter growing ``per_s`` a second on average, with the daily wave."""
        self._emit(sample + _labels(labels), (f"{v:.3f}" for v in self._cumulative(per_s)))

    def gauge(self, sample: str, labels: dict[str, str], value: Callable[[int], float]) -> None:
        self._emit(sample + _labels(labels), (f"{value(i):.6g}" for i in range(len(self.ts))))

    def histogram(self, name: str, labels: dict[str, str], per_s: float, buckets: Iterable[float],
                  cdf: Callable[[float], float], mean: float) -> None:
        """Cumulative buckets, sum and count of observations arriving ``per_s`` a second."""
        bounds = [*buckets, math.inf]
        totals = self._cumulative(per_s)
        for bound in bounds:
            frac = 1.0 if bound == math.inf else cdf(bound)
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            self._emit(f"{name}_bucket" + _labels({**labels, "le": le}), (str(math.floor(n * frac)) for n in totals))
        self._emit(f"{name}_sum" + _labels(labels), (f"{n * mean:.3f}" for n in totals))
        self._emit(f"{name}_count" + _labels(labels), (str(math.floor(n)) for n in totals))


def _exp_cdf(mean: float) -> Callable[[float], float]:
    return lambda x: 1.0 - math.exp(-float(x) / mean)


def _score_cdf(x: float) -> float:  # scores mostly between 0.5 and 1
    return float(min(1.0, max(0.0, (x - 0.3) / 0.7)) ** 1.5)


BLOCK_S = 7200  # promtool writes 2-hour blocks (this Prometheus has no --max-block-duration)


@dataclass(frozen=True)
class History:
    series: int
    samples: int
    start: int
    end: int
    bytes: int
    files: tuple[Path, ...]


def write_openmetrics(directory: Path, *, days: float = 7.0, interval_s: int = 15, end: int | None = None) -> History:
    """Days of demo-like history, one sample per ``interval_s`` per series, ending at ``end``,
    as one OpenMetrics file per 2-hour block (``block-<start>.om``)."""
    end = int(end if end is not None else time.time() - 120)
    end -= end % interval_s
    start = end - int(days * 86400)
    ts = list(range(start, end + 1, interval_s))
    first_block = start - start % BLOCK_S
    block_of = [(t - first_block) // BLOCK_S for t in ts]
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"block-{first_block + i * BLOCK_S}.om" for i in range(block_of[-1] + 1)]
    outs = [open(p, "w", encoding="utf-8", buffering=1 << 18) for p in paths]  # noqa: SIM115
    try:
        w = _Writer(outs, ts, block_of, max(1, 86400 // interval_s))
        for (name, kind), write in _families():
            w.family(name, kind)
            write(w)
        for out in outs:
            out.write("# EOF\n")
    finally:
        for out in outs:
            out.close()
    return History(w.series, w.samples, start, end, sum(p.stat().st_size for p in paths), tuple(paths))


def backfill_history(history: History, tsdb: Path, *, delete: bool = True) -> float:
    """Turn every block file into a TSDB block; returns the seconds promtool took."""
    took = 0.0
    for path in history.files:
        took += backfill(path, tsdb)
        if delete:
            path.unlink()
    return took


def _families() -> Iterator[tuple[tuple[str, str], Callable[[_Writer], None]]]:
    """(family name, type), writer: the demo's series and the exporters' (one node, one database)."""

    def agent_runs(w: _Writer) -> None:
        for p in PROJECTS:
            for a in AGENTS:
                for status, share in (("completed", 0.8), ("failed", 0.15), ("cancelled", 0.05)):
                    w.counter("paid_agent_runs_total", {"project_id": p, "agent_type": a, "status": status},
                              0.01 * share)

    def hist(inst: cat.Instrument, combos: Iterable[dict[str, str]], per_s: float,
             cdf: Callable[[float], float], mean: float) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for labels in combos:
                w.histogram(inst.prometheus_name, labels, per_s, inst.buckets or (), cdf, mean)
        return write

    pa = [{"project_id": p, "agent_type": a} for p in PROJECTS for a in AGENTS]
    yield ("paid_agent_runs", "counter"), agent_runs
    yield ("paid_agent_run_duration_seconds", "histogram"), hist(cat.AGENT_RUN_DURATION, pa, 0.01, _exp_cdf(400), 400)
    yield ("paid_agent_iterations", "histogram"), hist(cat.AGENT_ITERATIONS, pa, 0.01, _exp_cdf(4), 4)

    def tokens(w: _Writer) -> None:
        for p in PROJECTS:
            for prov, model in MODELS:
                for typ, rate in (("input", 40.0), ("output", 8.0)):
                    w.counter("paid_tokens_total", {"project_id": p, "provider": prov, "model": model, "type": typ},
                              rate * (20 if p == "globex" else 1))

    def cost(w: _Writer) -> None:
        for p in PROJECTS:
            for prov in ("openai", "anthropic"):
                scale = 20 if p == "globex" else 1
                w.counter("paid_cost_cents_total", {"project_id": p, "provider": prov}, 0.02 * scale)

    yield ("paid_tokens", "counter"), tokens
    yield ("paid_cost_cents", "counter"), cost

    def budgets(w: _Writer) -> None:
        for p in PROJECTS:
            w.gauge("paid_project_daily_budget_cents", {"project_id": p}, lambda _i: 10000.0)

    yield ("paid_project_daily_budget_cents", "gauge"), budgets

    def wf_started(w: _Writer) -> None:
        for wt in WORKFLOWS:
            w.counter("paid_workflow_started_total", {"workflow_type": wt}, 0.02)

    def wf_completed(w: _Writer) -> None:
        for wt in WORKFLOWS:
            for st, share in (("completed", 0.9), ("failed", 0.06), ("timed_out", 0.02), ("cancelled", 0.02)):
                w.counter("paid_workflow_completed_total", {"workflow_type": wt, "status": st}, 0.02 * share)

    yield ("paid_workflow_started", "counter"), wf_started
    yield ("paid_workflow_completed", "counter"), wf_completed
    yield ("paid_workflow_duration_seconds", "histogram"), hist(
        cat.WORKFLOW_DURATION, [{"workflow_type": wt} for wt in WORKFLOWS], 0.02, _exp_cdf(300), 300)

    def act_exec(w: _Writer) -> None:
        for at in ACTIVITIES:
            for oc, share in (("completed", 0.93), ("failed", 0.06), ("cancelled", 0.01)):
                w.counter("paid_activity_executions_total", {"activity_type": at, "outcome": oc}, 0.05 * share)

    def act_retries(w: _Writer) -> None:
        for at in ACTIVITIES:
            w.counter("paid_activity_retries_total", {"activity_type": at}, 0.003)

    yield ("paid_activity_executions", "counter"), act_exec
    yield ("paid_activity_duration_seconds", "histogram"), hist(
        cat.ACTIVITY_DURATION, [{"activity_type": at} for at in ACTIVITIES], 0.05, _exp_cdf(20), 20)
    yield ("paid_activity_retries", "counter"), act_retries
    yield ("paid_quality_score", "histogram"), hist(
        cat.QUALITY_SCORE, [{"project_id": p, "prompt_slug": f"{a}-v1"} for p in PROJECTS for a in AGENTS],
        0.008, _score_cdf, 0.78)

    def ext(w: _Writer) -> None:
        for svc, op in EXTERNAL:
            for oc, share in (("success", 0.97), ("error", 0.03)):
                w.counter("paid_external_api_requests_total", {"service": svc, "operation": op, "outcome": oc},
                          0.03 * share)

    yield ("paid_external_api_requests", "counter"), ext
    yield ("paid_external_api_request_duration_seconds", "histogram"), hist(
        cat.EXTERNAL_DURATION, [{"service": s, "operation": o} for s, o in EXTERNAL], 0.03, _exp_cdf(0.8), 0.8)

    def prs(w: _Writer) -> None:
        for p in PROJECTS:
            for ev, rate in (("created", 0.002), ("merged", 0.0015), ("closed", 0.0003)):
                w.counter("paid_pull_requests_total", {"project_id": p, "event": ev}, rate)

    def dropped(w: _Writer) -> None:
        w.counter("paid_telemetry_dropped_records_total",
                  {"instrument": "paid_quality_score", "reason": "out_of_range"}, 0.0005)

    yield ("paid_pull_requests", "counter"), prs
    yield ("paid_telemetry_dropped_records", "counter"), dropped
    yield from _external_families()


def _external_families() -> Iterator[tuple[tuple[str, str], Callable[[_Writer], None]]]:
    node = {"instance": "node-exporter:9100", "job": "node"}

    def cpu(w: _Writer) -> None:
        for c in ("0", "1"):
            for mode, share in (("idle", 0.6), ("user", 0.25), ("system", 0.1), ("iowait", 0.05)):
                w.counter("node_cpu_seconds_total", {**node, "cpu": c, "mode": mode}, share)

    def mem(w: _Writer) -> None:
        w.gauge("node_memory_MemTotal_bytes", node, lambda _i: 16e9)

    def mem_avail(w: _Writer) -> None:
        w.gauge("node_memory_MemAvailable_bytes", node, lambda i: 8e9 + 2e9 * math.sin(i / 500))

    def fs(name: str, value: Callable[[int], float]) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for mp, dev in (("/", "/dev/vda1"), ("/var/lib/postgresql", "/dev/vdb1")):
                w.gauge(name, {**node, "mountpoint": mp, "device": dev, "fstype": "ext4"}, value)
        return write

    def disk(w: _Writer) -> None:
        for dev in ("vda", "vdb"):
            w.counter("node_disk_io_time_seconds_total", {**node, "device": dev}, 0.1)

    def net(name: str) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for dev in ("eth0", "lo"):
                w.counter(name, {**node, "device": dev}, 2e5)
        return write

    yield ("node_cpu_seconds", "counter"), cpu
    yield ("node_memory_MemTotal_bytes", "gauge"), mem
    yield ("node_memory_MemAvailable_bytes", "gauge"), mem_avail
    yield ("node_filesystem_avail_bytes", "gauge"), fs("node_filesystem_avail_bytes", lambda i: 4e10 - i * 1e4)
    yield ("node_filesystem_size_bytes", "gauge"), fs("node_filesystem_size_bytes", lambda _i: 1e11)
    yield ("node_disk_io_time_seconds", "counter"), disk
    yield ("node_load1", "gauge"), lambda w: w.gauge("node_load1", node, lambda i: 1 + math.sin(i / 300))
    yield ("node_network_receive_bytes", "counter"), net("node_network_receive_bytes_total")
    yield ("node_network_transmit_bytes", "counter"), net("node_network_transmit_bytes_total")
    yield ("node_uname_info", "gauge"), lambda w: w.gauge("node_uname_info", {**node, "nodename": "paid"}, lambda _i: 1)

    containers = ("paid-web", "paid-worker", "otel-collector", "prometheus", "grafana", "postgres", "temporal",
                  "jaeger", "alertmanager", "node-exporter")
    cad = {"instance": "cadvisor:8080", "job": "cadvisor"}

    def ccpu(w: _Writer) -> None:
        for c in containers:
            w.counter("container_cpu_usage_seconds_total", {**cad, "name": c}, 0.05)

    def cmem(w: _Writer) -> None:
        for c in containers:
            w.gauge("container_memory_working_set_bytes", {**cad, "name": c}, lambda i: 3e8 + 1e7 * math.sin(i / 200))

    def coom(w: _Writer) -> None:
        for c in containers:
            w.counter("container_oom_events_total", {**cad, "name": c}, 0.0)

    yield ("container_cpu_usage_seconds", "counter"), ccpu
    yield ("container_memory_working_set_bytes", "gauge"), cmem
    yield ("container_oom_events", "counter"), coom

    pg = {"instance": "postgres-exporter:9187", "job": "postgres"}
    dbs = ("paid_production", "temporal", "postgres")

    def pg_activity(w: _Writer) -> None:
        for db in dbs:
            for state in ("active", "idle", "idle in transaction"):
                w.gauge("pg_stat_activity_count", {**pg, "datname": db, "state": state}, lambda i: 5 + 3 * math.sin(i))

    def pg_counter(name: str, per_s: float) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for db in dbs:
                w.counter(name, {**pg, "datname": db}, per_s)
        return write

    yield ("pg_stat_activity_count", "gauge"), pg_activity
    yield ("pg_settings_max_connections", "gauge"), lambda w: w.gauge("pg_settings_max_connections", pg, lambda _i: 100)
    for name, per_s in (("pg_stat_database_xact_commit", 50.0), ("pg_stat_database_xact_rollback", 0.5),
                        ("pg_stat_database_blks_hit", 5000.0), ("pg_stat_database_blks_read", 50.0),
                        ("pg_stat_database_deadlocks", 0.0), ("pg_stat_database_tup_fetched", 2000.0),
                        ("pg_stat_database_tup_returned", 8000.0)):
        yield (name, "unknown"), pg_counter(name, per_s)

    col = {"instance": "otel-collector:8888", "job": "otel-collector-self"}

    def otel(name: str, per_s: float, key: str, values: Iterable[str]) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for v in values:
                w.counter(name, {**col, key: v}, per_s)
        return write

    exporters = ("prometheus", "otlp_grpc/jaeger", "file/logs")
    yield (dashboards.OTELCOL_ACCEPTED_POINTS, "unknown"), otel(dashboards.OTELCOL_ACCEPTED_POINTS, 300, "receiver",
                                                                 ["otlp"])
    yield (dashboards.OTELCOL_REFUSED_POINTS, "unknown"), otel(dashboards.OTELCOL_REFUSED_POINTS, 0, "receiver",
                                                                ["otlp"])
    yield (dashboards.OTELCOL_ACCEPTED_SPANS, "unknown"), otel(dashboards.OTELCOL_ACCEPTED_SPANS, 50, "receiver",
                                                                ["otlp"])
    yield (dashboards.OTELCOL_SENT_POINTS, "unknown"), otel(dashboards.OTELCOL_SENT_POINTS, 300, "exporter",
                                                             ["prometheus"])
    yield (dashboards.OTELCOL_FAILED_POINTS, "unknown"), otel(dashboards.OTELCOL_FAILED_POINTS, 0, "exporter",
                                                               ["prometheus"])
    yield (dashboards.OTELCOL_FAILED_SPANS, "unknown"), otel(dashboards.OTELCOL_FAILED_SPANS, 0.01, "exporter",
                                                              ["otlp_grpc/jaeger"])

    def queue(name: str, value: Callable[[int], float]) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for e in exporters[1:]:
                w.gauge(name, {**col, "exporter": e}, value)
        return write

    yield (dashboards.OTELCOL_QUEUE_SIZE, "gauge"), queue(dashboards.OTELCOL_QUEUE_SIZE, lambda i: i % 50)
    yield (dashboards.OTELCOL_QUEUE_CAPACITY, "gauge"), queue(dashboards.OTELCOL_QUEUE_CAPACITY, lambda _i: 5000)
    yield (dashboards.OTELCOL_RSS, "gauge"), lambda w: w.gauge(dashboards.OTELCOL_RSS, col, lambda i: 1.5e8)

    tmp = {"instance": "temporal:9090", "job": "temporal"}
    wrk = {"instance": "paid-worker:9465", "job": "paid-worker", "namespace": "default"}

    def backlog(w: _Writer) -> None:
        for q in TASK_QUEUES:
            for tt in ("workflow", "activity"):
                w.gauge(dashboards.TEMPORAL_BACKLOG, {**tmp, "task_queue": q, "task_type": tt},
                        lambda i: max(0.0, 20 * math.sin(i / 100)))

    def slots(w: _Writer) -> None:
        for q in TASK_QUEUES:
            for wt in ("WorkflowWorker", "ActivityWorker", "LocalActivityWorker"):
                w.gauge(dashboards.TEMPORAL_SLOTS_AVAILABLE, {**wrk, "task_queue": q, "worker_type": wt},
                        lambda i: 100 - (i % 100))

    def s2s(name: str) -> Callable[[_Writer], None]:
        base = name.removesuffix("_bucket")

        def write(w: _Writer) -> None:
            for q in TASK_QUEUES:
                w.histogram(base, {**wrk, "task_queue": q}, 0.05,
                            (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60), _exp_cdf(0.05), 0.05)
        return write

    def sdk_wf(name: str, per_s: float) -> Callable[[_Writer], None]:
        def write(w: _Writer) -> None:
            for q, wt in zip(TASK_QUEUES, WORKFLOWS, strict=True):
                w.counter(name, {**wrk, "task_queue": q, "workflow_type": wt}, per_s)
        return write

    yield (dashboards.TEMPORAL_BACKLOG, "gauge"), backlog
    yield (dashboards.TEMPORAL_SLOTS_AVAILABLE, "gauge"), slots
    for name in (dashboards.TEMPORAL_WF_TASK_SCHEDULE_TO_START, dashboards.TEMPORAL_ACTIVITY_SCHEDULE_TO_START):
        yield (name.removesuffix("_bucket"), "histogram"), s2s(name)
    yield (dashboards.TEMPORAL_WF_COMPLETED.removesuffix("_total"), "counter"), sdk_wf(
        dashboards.TEMPORAL_WF_COMPLETED, 0.02)
    yield (dashboards.TEMPORAL_WF_FAILED.removesuffix("_total"), "counter"), sdk_wf(
        dashboards.TEMPORAL_WF_FAILED, 0.001)
    yield (dashboards.TEMPORAL_STICKY_CACHE, "gauge"), lambda w: w.gauge(
        dashboards.TEMPORAL_STICKY_CACHE, wrk, lambda i: 50 + i % 20)
