"""The example platform end to end: real Temporal dev server, real uvicorn, real HTTP.

The API and worker run in this process (one in-memory metric reader sees both) and as
``python -m examples.api`` / ``python -m examples.worker`` subprocesses configured only by
environment variables, as docker-compose runs them. Every count is checked exactly against
what the runs reported over the API (the truth), never against a constant.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import examples
from examples import activities
from examples.api import ApiServer, create_app
from examples.fake_llm import AGENT_TYPES, MODELS, PROJECTS, FakeLLM
from examples.worker import build_worker
from paid_telemetry_ops.services import REPO, Service, free_port, http_ok
from tests.conftest import Recorded

pytestmark = pytest.mark.e2e
WORKFLOW = "AgentSessionWorkflow"
TERMINAL = {"completed", "failed", "cancelled", "terminated", "timed_out"}


def address(srv: Service) -> str:
    return f"127.0.0.1:{srv.ports['grpc']}"


def requests_for(n: int) -> list[tuple[str, str, str]]:
    """(project, agent type, task): every project and agent type, the costly project included."""
    return [(PROJECTS[i % 3], AGENT_TYPES[(i // 3) % 3], f"demo-task-{i}") for i in range(n)]


def github_flaky(project: str, task: str) -> bool:
    """The fake GitHub's rule (examples/activities.py): first attempt fails for these sessions."""
    return random.Random(f"github/{project}/{task}").random() < activities.GITHUB_FLAKY_SHARE


async def run_sessions(http: httpx.AsyncClient, reqs: list[tuple[str, str, str]]) -> tuple[list[dict[str, Any]], int]:
    """POST every session, poll each until it ended; returns the final reports and the GET count."""
    ids = []
    for project, agent, task in reqs:
        resp = await http.post(f"/projects/{project}/runs", json={"agent_type": agent, "task": task})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["workflow_id"])
    reports: dict[str, dict[str, Any]] = {}
    gets = 0
    deadline = time.monotonic() + 60
    while len(reports) < len(ids):
        assert time.monotonic() < deadline, f"sessions did not end: {set(ids) - set(reports)}"
        for wid in ids:
            if wid in reports:
                continue
            resp = await http.get(f"/runs/{wid}")
            gets += 1
            assert resp.status_code == 200, resp.text
            if resp.json()["status"] in TERMINAL:
                reports[wid] = resp.json()
        await asyncio.sleep(0.2)
    return [reports[w] for w in ids], gets


async def test_platform_counts_match_what_the_runs_reported(
    server: Service, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activities, "llm", FakeLLM(seed=7, latency_scale=0.2))
    queue = f"examples-{uuid.uuid4().hex[:8]}"
    reqs = requests_for(9)
    client = await examples.connect(address(server))
    api = ApiServer(create_app(temporal_address=address(server), queue=queue)).start()
    try:
        async with build_worker(client, queue=queue), httpx.AsyncClient(base_url=api.url, timeout=10) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            assert (await http.post("/projects/Bad Id!/runs", json={})).status_code == 422
            assert (await http.post("/projects/acme/runs", json={"agent_type": "nope"})).status_code == 422
            assert (await http.get("/runs/agent-session-none")).status_code == 404
            reports, gets = await run_sessions(http, reqs)
    finally:
        api.stop()

    # -- the truth, from the API's reports -----------------------------------------------
    status = Counter(r["status"] for r in reports)
    assert set(status) == {"completed", "failed"}, status  # the fake LLM's seed gives both
    runs = Counter((r["outcome"]["project_id"], r["outcome"]["agent_type"], r["outcome"]["status"]) for r in reports)
    assert sum(runs.values()) == 9 and all(r["outcome"]["status"] == r["status"] for r in reports)
    for r in reports:
        assert (r["status"] == "completed") == ("pull_request" in r)
        assert r["outcome"]["iterations"] >= 1 and r["outcome"]["input_tokens"] > 0

    # -- workflows and activities (the interceptor) --------------------------------------
    assert recorded.value("paid_workflow_started", workflow_type=WORKFLOW) == 9
    assert recorded.value("paid_workflow_completed", workflow_type=WORKFLOW, status="completed") == status["completed"]
    assert recorded.value("paid_workflow_completed", workflow_type=WORKFLOW, status="failed") == status["failed"]
    assert recorded.value("paid_activity_executions", activity_type="run_agent", outcome="completed") \
        == status["completed"]
    assert recorded.value("paid_activity_executions", activity_type="run_agent", outcome="failed") == status["failed"]
    flaky = sum(github_flaky(p, t) for (p, _a, t), r in zip(reqs, reports, strict=True) if r["status"] == "completed")
    assert flaky >= 1, "the chosen tasks must exercise a GitHub retry"
    assert recorded.value("paid_activity_retries", activity_type="open_pull_request") == flaky
    assert recorded.value("paid_activity_executions", activity_type="open_pull_request", outcome="failed") == flaky

    # -- agent runs, tokens, cost, quality -----------------------------------------------
    got_runs = {tuple(dict(k)[x] for x in ("project_id", "agent_type", "status")): v
                for k, v in recorded.points("paid_agent_runs").items()}
    assert got_runs == dict(runs)
    tokens: dict[tuple[str, str], float] = defaultdict(float)
    for key, value in recorded.points("paid_tokens").items():
        labels = dict(key)
        assert (labels["provider"], labels["model"]) in MODELS.values()
        tokens[(labels["project_id"], labels["type"])] += value
    expected_tokens: dict[tuple[str, str], float] = defaultdict(float)
    for r in reports:
        expected_tokens[(r["outcome"]["project_id"], "input")] += r["outcome"]["input_tokens"]
        expected_tokens[(r["outcome"]["project_id"], "output")] += r["outcome"]["output_tokens"]
    assert dict(tokens) == dict(expected_tokens)
    assert tokens[("globex", "input")] > 10 * tokens[("acme", "input")]  # the costly project
    cost = {dict(k)["project_id"] + "/" + dict(k)["provider"]: v for k, v in recorded.points("paid_cost_cents").items()}
    spent = {f"{p}/{MODELS[a][0]}" for p, a, _t in reqs}
    assert set(cost) == spent and all(v > 0 for v in cost.values()), cost
    assert sum(cost.values()) == pytest.approx(sum(r["outcome"]["cost_cents"] for r in reports), abs=0.01)
    quality = recorded.points("paid_quality_score")
    assert sum(p.count for p in quality.values()) == status["completed"]
    iterations = recorded.points("paid_agent_iterations")
    assert sum(p.sum for p in iterations.values()) == sum(r["outcome"]["iterations"] for r in reports)

    # -- GitHub and pull requests ---------------------------------------------------------
    ext = "paid_external_api_requests"
    assert recorded.value(ext, service="github", operation="create_pull_request", outcome="success") \
        == status["completed"]
    assert recorded.value(ext, service="github", operation="create_pull_request", outcome="error") == flaky
    prs = Counter(r["outcome"]["project_id"] for r in reports if r["status"] == "completed")
    got_prs = {dict(k)["project_id"]: v for k, v in recorded.points("paid_pull_requests").items()
               if dict(k)["event"] == "created"}
    assert got_prs == dict(prs)

    # -- HTTP: route templates, exact request counts, /healthz excluded ----------------------
    http_points = recorded.points("http.server.request.duration")
    by_route: Counter[tuple[str, str, int]] = Counter()
    for key, point in http_points.items():
        labels = dict(key)
        by_route[(labels["http.request.method"], labels.get("http.route", ""),
                  labels["http.response.status_code"])] += point.count
    assert by_route == Counter({
        ("POST", "/projects/{project_id}/runs", 202): 9,
        ("POST", "/projects/{project_id}/runs", 422): 2,
        ("GET", "/runs/{workflow_id}", 200): gets,
        ("GET", "/runs/{workflow_id}", 404): 1,
    })

    # -- one trace from the HTTP request to the agent run -----------------------------------
    spans = recorded.spans()
    wid = reports[0]["workflow_id"]
    (agent_span,) = [s for s in spans if s.name.startswith("invoke_agent")
                     and (s.attributes or {}).get("paid.workflow.id") == wid]
    post_traces = {s.context.trace_id for s in spans if s.name == "POST /projects/{project_id}/runs"}
    assert agent_span.context.trace_id in post_traces


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def test_processes_configured_by_environment_as_in_compose(server: Service, tmp_path: Path) -> None:
    """``python -m examples.api`` and ``python -m examples.worker`` with env vars only."""
    api_port, api_metrics, worker_metrics = free_port(), free_port(), free_port()
    heartbeat = tmp_path / "worker.heartbeat"
    common = {
        **os.environ,
        "TEMPORAL_ADDRESS": address(server),
        "TEMPORAL_TASK_QUEUE": f"examples-env-{uuid.uuid4().hex[:8]}",
        "FAKE_LLM_LATENCY_SCALE": "0.1",
        "PAID_TELEMETRY_HANDLE_SIGTERM": "true",
    }
    common.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    procs = {
        "api": subprocess.Popen(
            [sys.executable, "-m", "examples.api"], cwd=REPO, stdout=(tmp_path / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
            env={**common, "API_HOST": "127.0.0.1", "API_PORT": str(api_port),
                 "PAID_TELEMETRY_PROMETHEUS_PORT": str(api_metrics), "OTEL_SERVICE_NAME": "paid-api"},
        ),
        "worker": subprocess.Popen(
            [sys.executable, "-m", "examples.worker"], cwd=REPO, stdout=(tmp_path / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
            env={**common, "PAID_WORKER_HEARTBEAT_FILE": str(heartbeat),
                 "PAID_TELEMETRY_PROMETHEUS_PORT": str(worker_metrics), "OTEL_SERVICE_NAME": "paid-worker"},
        ),
    }
    base = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 30
        while not (http_ok(f"{base}/healthz") and heartbeat.exists()):
            logs = (tmp_path / "api.log").read_text() + (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, logs
            assert all(p.poll() is None for p in procs.values())
            time.sleep(0.2)
        ids = []
        with httpx.Client(base_url=base, timeout=10) as http:
            for project, agent, task in requests_for(3):
                resp = http.post(f"/projects/{project}/runs", json={"agent_type": agent, "task": task})
                assert resp.status_code == 202
                ids.append(resp.json()["workflow_id"])
            ended: dict[str, str] = {}
            while len(ended) < 3:
                assert time.monotonic() < deadline + 30
                for wid in ids:
                    st = http.get(f"/runs/{wid}").json()["status"]
                    if st in TERMINAL:
                        ended[wid] = st
                time.sleep(0.2)
        worker = scrape(f"http://127.0.0.1:{worker_metrics}/metrics")
        assert worker["paid_workflow_started_total"] == {(("workflow_type", WORKFLOW),): 3.0}
        assert sum(worker["paid_agent_runs_total"].values()) == 3
        by_status = Counter(ended.values())
        assert {dict(k)["status"]: v for k, v in worker["paid_workflow_completed_total"].items()} == by_status
        api = scrape(f"http://127.0.0.1:{api_metrics}/metrics")
        posts = {dict(k).get("http_route"): v for k, v in api["http_server_request_duration_seconds_count"].items()
                 if dict(k)["http_request_method"] == "POST"}
        assert posts == {"/projects/{project_id}/runs": 3.0}
        # JSON log lines on stdout, stamped with the trace
        lines = (tmp_path / "worker.log").read_text().splitlines()
        assert any('"message": "pull request opened"' in x and '"trace_id"' in x for x in lines) or \
            any('"message":"pull request opened"' in x and '"trace_id"' in x for x in lines), lines[-20:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {name: p.wait(20) for name, p in procs.items()}
    # the worker stops on its own signal handler; uvicorn re-raises SIGTERM after its graceful
    # shutdown, and paid-telemetry's handler flushes and then dies of it, as SIGTERM should
    assert codes == {"api": -signal.SIGTERM, "worker": 0}, codes
