"""Temporal faults on the real services: the dev server restarted under running workflows, and a
worker process SIGTERMed after its work. Counts are read back from Prometheus (SDK -> OTLP ->
our collector build -> Prometheus), never from the process that recorded them.

(The SIGKILLed worker mid-workflow is tests/test_temporal.py's; collector and Prometheus
faults are tests/test_faults.py's.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

import paid_telemetry as pt
from examples.workflows import AgentSessionWorkflow, SessionRequest
from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner
from paid_telemetry_ops.services import REPO, Service, temporal_server
from paid_telemetry_ops.stack import Stack
from tests import temporal_app
from tests import temporal_fault_app as app
from tests.promapi import query, series, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Collector, Jaeger and Prometheus; the Temporal servers are each test's own."""
    s = Stack(tmp_path_factory.mktemp("tfaults-stack"), temporal=False, alertmanager=False)
    s.up()
    try:
        yield s
    finally:
        s.down()


def counts(prom: str, metric: str, job: str, *keys: str) -> dict[tuple[str, ...], float]:
    return {tuple(dict(k)[x] for x in keys): v for k, v in series(prom, f'{metric}{{job="{job}"}}').items()}


# -- (a) the dev server restarted with a persistent db ------------------------------------------
TIMER_S = 20.0
async def test_server_restart_with_persistent_db_resumes_and_counts_once(fstack: Stack, tmp_path: Path) -> None:
    n_timer, n_signal = 4, 4
    db = tmp_path / "x.db"
    srv = temporal_server(tmp_path / "temporal", db_file=db).start()
    address = f"127.0.0.1:{srv.ports['grpc']}"
    job = f"paid-tfaults-{uuid.uuid4().hex[:6]}"
    prom = fstack.prometheus_url
    pt.configure(exporter="otlp", otlp_endpoint=fstack.otlp_endpoint, metric_export_interval_ms=1000,
                 service_name=job, handle_sigterm=False)
    restarted: Service | None = None
    try:
        client = await Client.connect(address, interceptors=[TelemetryInterceptor()])
        tq = f"restart-{uuid.uuid4().hex[:8]}"
        worker = Worker(client, task_queue=tq, workflows=app.WORKFLOWS, activities=app.ACTIVITIES,
                        workflow_runner=sandbox_runner())
        async with worker:
            # timers long enough to still be pending while the server is down, even when the wait
            # for the started counts below takes 10 s on a loaded machine
            timers = [await client.start_workflow(app.TimerWorkflow.run, TIMER_S, id=f"timer-{i}-{tq}", task_queue=tq)
                      for i in range(n_timer)]
            waiters = [await client.start_workflow(app.SignalWorkflow.run, id=f"signal-{i}-{tq}", task_queue=tq)
                       for i in range(n_signal)]
            # all started (first workflow task ran) and exported before the outage
            before = await asyncio.to_thread(wait_for, lambda: (
                got if (got := counts(prom, "paid_workflow_started_total", job, "workflow_type"))
                == {("TimerWorkflow",): n_timer, ("SignalWorkflow",): n_signal} else None
            ), 30, 0.25, "started workflows in Prometheus before the restart")
            assert counts(prom, "paid_workflow_completed_total", job, "workflow_type") == {}

            srv.stop()  # SIGTERM: the server goes away with every workflow mid-flight
            assert not srv.running()
            await asyncio.sleep(3)
            restarted = temporal_server(tmp_path / "temporal", db_file=db, port=srv.ports["grpc"],
                                        metrics_port=srv.ports["metrics"])
            await asyncio.to_thread(restarted.start)

            # the persistent db kept them: still running after the restart, then resumed
            for w in waiters:
                await w.signal(app.SignalWorkflow.proceed)
            pending = [t.result() for t in timers] + [w.result() for w in waiters]
            results = await asyncio.wait_for(asyncio.gather(*pending), 90)
            assert results == ["done timer"] * n_timer + ["done signal"] * n_signal
            for h in timers:
                desc = await h.describe()
                assert desc.run_id == h.result_run_id  # the same run resumed, not a new one
            # metrics continue: a workflow started after the restart is counted too
            assert await client.execute_workflow(app.TimerWorkflow.run, 0.1, id=f"after-{tq}", task_queue=tq) \
                == "done timer"
    finally:
        pt.shutdown()
        for s in (srv, restarted):
            if s is not None:
                s.stop()

    expected = {
        "started": {("TimerWorkflow",): n_timer + 1.0, ("SignalWorkflow",): float(n_signal)},
        "completed": {("TimerWorkflow", "completed"): n_timer + 1.0, ("SignalWorkflow", "completed"): float(n_signal)},
        "activities": {("finish", "completed"): n_timer + n_signal + 1.0},
    }

    def totals() -> dict[str, Any] | None:
        got = {
            "started": counts(prom, "paid_workflow_started_total", job, "workflow_type"),
            "completed": counts(prom, "paid_workflow_completed_total", job, "workflow_type", "status"),
            "activities": counts(prom, "paid_activity_executions_total", job, "activity_type", "outcome"),
        }
        return got if got == expected else None

    await asyncio.to_thread(wait_for, totals, 30, 0.5, "exact workflow totals after the restart")
    # one series per counter the whole time, never reset: the restart did not double or restart counting
    resets = query(prom, f'resets(paid_workflow_started_total{{job="{job}"}}[10m])')
    assert {float(r["value"][1]) for r in resets} == {0.0}, resets
    assert before == {("TimerWorkflow",): n_timer, ("SignalWorkflow",): n_signal}
    assert counts(prom, "paid_workflow_duration_seconds_count", job, "workflow_type") == expected["started"]
    # the timer workflows' durations span the outage (workflow time from start to completion)
    sums = counts(prom, "paid_workflow_duration_seconds_sum", job, "workflow_type")
    assert sums[("TimerWorkflow",)] >= TIMER_S * n_timer


# -- (b) a worker SIGTERMed while idle flushes its last metrics -----------------------------------
def _examples_worker(address: str, tq: str, endpoint: str, job: str, log: Path) -> subprocess.Popen[bytes]:
    """``python -m examples.worker`` configured by env only, with a 10-minute export interval."""
    env = {
        **os.environ, "TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": tq,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        "OTEL_SERVICE_NAME": job, "PAID_TEMPORAL_SDK_METRICS": "0", "FAKE_LLM_LATENCY_SCALE": "0",
        "PAID_WORKER_HEARTBEAT_FILE": str(log.with_suffix(".beat")),
    }
    return subprocess.Popen([sys.executable, "-m", "examples.worker"], cwd=REPO, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _bare_worker(address: str, tq: str, endpoint: str, job: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.Popen([sys.executable, "-m", "tests.temporal_worker", address, tq, endpoint, job],
                            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@pytest.mark.parametrize("kind", ["examples_worker", "bare_worker"])
async def test_sigterm_on_idle_worker_flushes_its_last_metrics(fstack: Stack, tmp_path: Path, kind: str) -> None:
    """examples.worker stops itself on SIGTERM (then ``pt.shutdown()``); the bare worker has no
    handler of its own, so paid-telemetry's (``handle_sigterm``) must flush before it dies."""
    srv = temporal_server(tmp_path / "temporal").start()
    address = f"127.0.0.1:{srv.ports['grpc']}"
    tq = f"sigterm-{uuid.uuid4().hex[:8]}"
    job = f"paid-sigterm-{kind}-{uuid.uuid4().hex[:6]}"
    prom = fstack.prometheus_url
    log = tmp_path / "worker.log"
    n = 6
    start = _examples_worker if kind == "examples_worker" else _bare_worker
    proc = start(address, tq, fstack.otlp_endpoint, job, log)
    try:
        client = await Client.connect(address)  # no interceptor: only the worker process records
        statuses: Counter[str] = Counter()
        if kind == "examples_worker":
            for i in range(n):
                handle = await client.start_workflow(
                    AgentSessionWorkflow.run, SessionRequest("acme", "coder", f"sigterm-{i}"),
                    id=f"{tq}-{i}", task_queue=tq)
                try:
                    await asyncio.wait_for(handle.result(), 60)
                    statuses["completed"] += 1
                except WorkflowFailureError:
                    statuses["failed"] += 1
            workflow_type = "AgentSessionWorkflow"
        else:
            for i in range(n):
                await asyncio.wait_for(client.execute_workflow(
                    temporal_app.TracedWorkflow.run, "acme", id=f"{tq}-{i}", task_queue=tq), 60)
                statuses["completed"] += 1
            workflow_type = "TracedWorkflow"
        assert proc.poll() is None, log.read_text()[-3000:]
        # idle now; nothing exported yet (10-minute interval): wait past two scrapes to be sure
        await asyncio.sleep(5)
        assert series(prom, f'{{job="{job}", __name__=~"paid_.+"}}') == {}
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        srv.stop()
    # examples.worker handles SIGTERM itself and exits 0; the bare worker dies of the signal
    # after paid-telemetry's handler flushed (as SIGTERM should end a process)
    assert code == (0 if kind == "examples_worker" else -signal.SIGTERM), log.read_text()[-3000:]

    expected = {
        "started": {(workflow_type,): float(n)},
        "completed": {(workflow_type, s): float(v) for s, v in statuses.items()},
        "runs": {("acme", "coder", s): float(v) for s, v in statuses.items()},
    }

    def delivered() -> dict[str, Any] | None:
        got = {
            "started": counts(prom, "paid_workflow_started_total", job, "workflow_type"),
            "completed": counts(prom, "paid_workflow_completed_total", job, "workflow_type", "status"),
            "runs": counts(prom, "paid_agent_runs_total", job, "project_id", "agent_type", "status"),
        }
        return got if got == expected else None

    await asyncio.to_thread(wait_for, delivered, 30, 0.5, "the SIGTERM flush in Prometheus")
    print(f"\n{kind}: SIGTERM -> exit -> queryable in Prometheus: {time.monotonic() - t_signal:.1f}s")
