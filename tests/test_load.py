"""Load run through the example platform on the real stack: nothing lost, nothing double-counted.

3,000 agent runs and 300 ``AgentSessionWorkflow`` sessions (60 of them started through the
HTTP API) on the stack's real Temporal server, the SDK pushing over OTLP to our collector
build, Prometheus scraping it. The truth comes from what the workflows and activities
*returned* (the deterministic fake LLM decides tokens and failures); at the end Prometheus
must equal it exactly, the collector's own accounting must balance (accepted = sent,
nothing refused or failed) and the SDK must report zero drops. Bounded in count and time,
loopback only. Throughput, collector memory and ingest lag are printed (docs/performance.md).

Agent runs beyond the 300 sessions execute the example's own ``run_agent`` activity in
temporalio's ``ActivityEnvironment`` (no server round trip): one workflow per agent run would
measure the Temporal dev server, not the telemetry pipeline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import examples
import paid_telemetry as pt
from examples import activities
from examples.api import ApiServer, create_app
from examples.fake_llm import AGENT_TYPES, MODELS, PROJECTS, FakeLLM
from examples.worker import build_worker
from examples.workflows import AgentSessionWorkflow, SessionRequest, SessionResult
from paid_telemetry_ops.stack import Stack
from tests.promapi import query, series, wait_for

pytestmark = pytest.mark.e2e

N_WORKFLOWS = 300
N_VIA_API = 60
N_AGENT_RUNS = 3000  # in total: N_WORKFLOWS inside sessions + the rest run directly
WORKFLOW = "AgentSessionWorkflow"
Outcome = dict[str, Any]


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of our own: the collector's accounting and memory must be this run's alone."""
    s = Stack(tmp_path_factory.mktemp("load-stack"), alertmanager=False)
    s.up()
    try:
        yield s
    finally:
        s.down()


# -- the collector's own metrics -----------------------------------------------------------
def collector_self(stack: Stack) -> dict[str, float]:
    """{metric name: sum over its series} from the collector's own /metrics, names as exposed
    (this release has no ``_total`` suffix on its counters; prometheus_client's parser would add one)."""
    url = f"http://127.0.0.1:{stack.ports['collector_self']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{", 1)[0].split(" ", 1)[0], line.rsplit(" ", 1)[1]
            out[name] += float(value)
    return dict(out)


class MemorySampler:
    """Peak ``otelcol_process_memory_rss`` while the load runs (sampled every 0.5 s)."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.peak, self._stop = stack, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.peak = max(self.peak, collector_self(self.stack).get("otelcol_process_memory_rss", 0.0))
            except OSError:
                continue

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the workload --------------------------------------------------------------------------
def sessions() -> list[tuple[str, str, str]]:
    """(project, agent type, task) for every session: all projects and agent types."""
    return [(PROJECTS[i % 3], AGENT_TYPES[(i // 3) % 3], f"load-session-{i}") for i in range(N_WORKFLOWS)]


async def session_outcome(handle: WorkflowHandle[Any, SessionResult]) -> tuple[str, Outcome]:
    """(workflow status, the agent run's numbers) as the workflow returned or failed with them."""
    try:
        result = await handle.result()
    except WorkflowFailureError as exc:
        assert isinstance(exc.cause, ApplicationError), exc
        details = exc.cause.details
        assert details and isinstance(details[0], dict), exc
        return "failed", dict(details[0])
    return "completed", asdict(result.outcome)


async def run_sessions(client: Client, api_url: str, queue: str) -> list[tuple[str, Outcome, str, str]]:
    """Start every session (the first N_VIA_API through the API), wait for all to end.

    Returns (status, outcome, project, task) per session, in request order."""
    handles: list[WorkflowHandle[Any, SessionResult]] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for i, (project, agent, task) in enumerate(sessions()):
            if i < N_VIA_API:
                resp = await http.post(f"/projects/{project}/runs", json={"agent_type": agent, "task": task})
                assert resp.status_code == 202, resp.text
                wid = resp.json()["workflow_id"]
                handles.append(client.get_workflow_handle_for(AgentSessionWorkflow.run, wid))
            else:
                handles.append(await client.start_workflow(
                    AgentSessionWorkflow.run, SessionRequest(project, agent, task),
                    id=f"load-{uuid.uuid4().hex[:12]}", task_queue=queue,
                ))
    ended = await asyncio.wait_for(asyncio.gather(*(session_outcome(h) for h in handles)), 150)
    return [(st, out, p, t) for (st, out), (p, _a, t) in zip(ended, sessions(), strict=True)]


async def direct_agent_run(i: int) -> Outcome:
    """The example's ``run_agent`` activity, run in an activity context without a server."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=f"load-direct-{i}", activity_type="run_agent")
    task = activities.AgentTask(PROJECTS[i % 3], AGENT_TYPES[(i // 3) % 3], f"load-direct-{i}")
    try:
        return asdict(await env.run(activities.run_agent, task))
    except ApplicationError as exc:
        assert exc.type == activities.AGENT_FAILED
        return dict(exc.details[0])


# -- the test ------------------------------------------------------------------------------
async def test_load_totals_exact_collector_balanced_no_drops(
    lstack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Temporal's Core metrics exporter cannot be stopped and would push for ever: the collector's
    # accepted = sent balance is checked at rest, so only paid-telemetry pushes here.
    monkeypatch.setenv("PAID_TEMPORAL_SDK_METRICS", "0")
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")  # the SDK's own span accounting
    monkeypatch.setattr(activities, "llm", FakeLLM(seed=7, latency_scale=0.0))  # CPU-bound: the worst case
    job = f"paid-load-{uuid.uuid4().hex[:6]}"
    prom = lstack.prometheus_url
    pt.configure(exporter="otlp", otlp_endpoint=lstack.otlp_endpoint, metric_export_interval_ms=1000,
                 service_name=job, handle_sigterm=False, log_format="json")
    queue = f"load-{uuid.uuid4().hex[:8]}"
    try:
        with MemorySampler(lstack) as memory:
            client = await examples.connect(lstack.temporal_address)
            api = ApiServer(create_app(temporal_address=lstack.temporal_address, queue=queue)).start()
            try:
                async with build_worker(client, queue=queue):
                    t0 = time.perf_counter()
                    ended = await run_sessions(client, api.url, queue)
                    wf_s = time.perf_counter() - t0
            finally:
                api.stop()
            n_direct = N_AGENT_RUNS - N_WORKFLOWS
            t1 = time.perf_counter()
            direct = [await direct_agent_run(i) for i in range(n_direct)]
            runs_s = time.perf_counter() - t1
            workload_end = time.monotonic()

            # -- the truth ---------------------------------------------------------------
            outcomes = [out for _st, out, _p, _t in ended] + direct
            assert len(outcomes) == N_AGENT_RUNS
            status = Counter(st for st, *_ in ended)
            assert set(status) == {"completed", "failed"}, status  # the seed exercises both paths
            assert all(out["status"] == st for st, out, *_ in ended)
            runs = Counter((o["project_id"], o["agent_type"], o["status"]) for o in outcomes)
            tokens: Counter[tuple[str, str, str, str]] = Counter()
            for o in outcomes:
                provider, model = MODELS[o["agent_type"]]
                tokens[(o["project_id"], provider, model, "input")] += o["input_tokens"]
                tokens[(o["project_id"], provider, model, "output")] += o["output_tokens"]
            flaky = sum(
                activities_flaky(p, t) for st, _o, p, t in ended if st == "completed"
            )

            # -- Prometheus equals the truth, exactly -----------------------------------------
            sel = f'job="{job}"'

            def got(expr: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
                return {tuple(dict(k)[x] for x in keys): v for k, v in series(prom, expr).items()}

            expected = {
                "runs": {k: float(v) for k, v in runs.items()},
                "tokens": {k: float(v) for k, v in tokens.items() if v},
                "started": {(WORKFLOW,): float(N_WORKFLOWS)},
                "completed": {(WORKFLOW, s): float(n) for s, n in status.items()},
                "run_agent": {("completed",): float(status["completed"]), ("failed",): float(status["failed"])},
                "pr_retries": {("open_pull_request",): float(flaky)},
                "posts": {("/projects/{project_id}/runs", "202"): float(N_VIA_API)},
            }

            def actual() -> dict[str, dict[tuple[str, ...], float]]:
                return {
                    "runs": got(f"paid_agent_runs_total{{{sel}}}", ("project_id", "agent_type", "status")),
                    "tokens": got(f"paid_tokens_total{{{sel}}}", ("project_id", "provider", "model", "type")),
                    "started": got(f"paid_workflow_started_total{{{sel}}}", ("workflow_type",)),
                    "completed": got(f"paid_workflow_completed_total{{{sel}}}", ("workflow_type", "status")),
                    "run_agent": got(f'paid_activity_executions_total{{{sel},activity_type="run_agent"}}',
                                     ("outcome",)),
                    "pr_retries": got(f"paid_activity_retries_total{{{sel}}}", ("activity_type",)),
                    "posts": got(f'http_server_request_duration_seconds_count{{{sel},http_request_method="POST"}}',
                                 ("http_route", "http_response_status_code")),
                }

            last: dict[str, Any] = {}

            def matches() -> bool:
                got = last["got"] = actual()
                return got == expected

            try:
                wait_for(matches, timeout=60, interval=0.25, what="Prometheus totals equal to the truth")
            except AssertionError:
                assert last.get("got") == expected  # show the difference
                raise
            ingest_lag = time.monotonic() - workload_end
            cost_truth = sum(o["cost_cents"] for o in outcomes)
            cost = sum(series(prom, f"paid_cost_cents_total{{{sel}}}").values())
            # each outcome carries its cost rounded to 1e-4 cents
            assert cost == pytest.approx(cost_truth, abs=5e-5 * len(outcomes))
        rss_peak = memory.peak
    finally:
        pt.shutdown()  # the final export: self-metrics and the last spans and log lines

    # -- the SDK dropped nothing ------------------------------------------------------------
    # OTel's own SDK metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED): every span started was
    # handed to the exporter (no queue_full) and exported (no error_type).
    drop = ("job", "instance", "otel_component_name", "otel_component_type", "server_address", "server_port")

    def sdk_final() -> dict[str, Any] | None:
        started = sum(series(prom, f"otel_sdk_span_started_total{{{sel}}}").values())
        processed = series(prom, f"otel_sdk_processor_span_processed_total{{{sel}}}", drop=drop)
        exported = series(prom, f"otel_sdk_exporter_span_exported_total{{{sel}}}", drop=drop)
        dropped = series(prom, f"paid_telemetry_dropped_records_total{{{sel}}}")
        if not started or sum(processed.values()) != started or sum(exported.values()) != started:
            return None
        return {"started": started, "processed": processed, "exported": exported, "dropped": dropped}

    # shutdown pushed the final values
    final = wait_for(sdk_final, timeout=30, what="the SDK's span accounting after shutdown")
    assert all(v == 0 for v in final["dropped"].values()), final["dropped"]
    assert final["processed"] == {(): final["started"]}, final["processed"]  # no error_type="queue_full"
    assert final["exported"] == {(): final["started"]}, final["exported"]

    # -- the collector's own accounting balances ---------------------------------------------
    def balanced() -> dict[str, float] | None:
        c = collector_self(lstack)
        pairs = [("metric_points", "prometheus"), ("spans", "jaeger"), ("log_records", "file")]
        ok = all(c.get(f"otelcol_receiver_accepted_{kind}", 0) == c.get(f"otelcol_exporter_sent_{kind}", -1)
                 for kind, _ in pairs)
        return c if ok else None

    try:
        c = wait_for(balanced, timeout=30, what="collector accepted == sent for every signal")
    except AssertionError as err:
        now = collector_self(lstack)
        counts = {k: v for k, v in now.items() if k.startswith(("otelcol_receiver", "otelcol_exporter_s"))}
        raise AssertionError(counts) from err
    for kind in ("metric_points", "spans", "log_records"):
        assert c.get(f"otelcol_receiver_refused_{kind}", 0) == 0, kind
        assert c.get(f"otelcol_receiver_failed_{kind}", 0) == 0, kind
        assert c.get(f"otelcol_exporter_send_failed_{kind}", 0) == 0, kind
        assert c.get(f"otelcol_exporter_enqueue_failed_{kind}", 0) == 0, kind
    assert c["otelcol_receiver_accepted_spans"] == final["started"]
    assert c["otelcol_receiver_accepted_metric_points"] > 0 and c["otelcol_receiver_accepted_log_records"] > 0
    collector_scrape = query(prom, 'scrape_duration_seconds{job="otel-collector"}')

    report = {
        "agent_runs": N_AGENT_RUNS, "workflows": N_WORKFLOWS,
        "workflows_per_s": N_WORKFLOWS / wf_s, "workflow_phase_s": wf_s,
        "direct_agent_runs_per_s": n_direct / runs_s, "direct_phase_s": runs_s,
        "agent_runs_per_s_overall": N_AGENT_RUNS / (wf_s + runs_s),
        "ingest_lag_s": ingest_lag,
        "collector_rss_peak_mib": rss_peak / 2**20,
        "collector_rss_end_mib": c.get("otelcol_process_memory_rss", 0) / 2**20,
        "collector_metric_points": c["otelcol_receiver_accepted_metric_points"],
        "collector_spans": c["otelcol_receiver_accepted_spans"],
        "collector_log_records": c["otelcol_receiver_accepted_log_records"],
        "collector_scrape_s": float(collector_scrape[0]["value"][1]) if collector_scrape else float("nan"),
        "spans": final["started"], "failed_sessions": status["failed"], "github_retries": flaky,
    }
    print("\nload report: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in report.items()))
    Path(lstack.workdir / "load-report.txt").write_text(repr(report))
    assert ingest_lag < 30


def activities_flaky(project: str, task: str) -> bool:
    """The fake GitHub's rule (examples/activities.py): the first attempt of these sessions fails."""
    return random.Random(f"github/{project}/{task}").random() < activities.GITHUB_FLAKY_SHARE
