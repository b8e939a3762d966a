"""Temporal next to other workers and other tools, on the real dev server (fixture ``server``):
the SDK metrics port of two workers on one host, and temporalio's own failure line carrying
the activity's trace."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import io
    import json
    import re
    import socket
    import urllib.request
    from typing import Any

    import pytest
    import structlog
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from temporalio.client import Client
    from temporalio.common import RetryPolicy
    from temporalio.exceptions import ActivityError, ApplicationError
    from temporalio.worker import Worker

    import paid_telemetry as pt
    from paid_telemetry.logs import configure_logging
    from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner, temporal_runtime
    from paid_telemetry_ops.services import free_port

pytestmark = pytest.mark.e2e


@activity.defn
async def boom(task: str) -> str:
    raise ApplicationError(f"agent crashed on {task}", non_retryable=True)


@activity.defn
async def ok(task: str) -> str:
    return task


@workflow.defn
class FailingActivityWorkflow:
    @workflow.run
    async def run(self, task: str) -> str:
        try:
            await workflow.execute_activity(boom, task, start_to_close_timeout=timedelta(seconds=30),
                                            retry_policy=RetryPolicy(maximum_attempts=1))
        except ActivityError:
            return "failed"
        return "completed"


@workflow.defn
class OkWorkflow:
    @workflow.run
    async def run(self, task: str) -> str:
        return str(await workflow.execute_activity(ok, task, start_to_close_timeout=timedelta(seconds=30)))


def address(server: Any) -> str:
    return f"127.0.0.1:{server.ports['grpc']}"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


async def test_two_workers_sdk_metrics_ports_do_not_collide(server: Any, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """The first worker takes PAID_TELEMETRY_TEMPORAL_METRICS_PORT, the second the next free one (warned)."""
    # a port whose next neighbour is free too (we hold both briefly to find them, then let go)
    for _ in range(50):
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
                break
            except OSError:
                continue
    monkeypatch.setenv("PAID_TELEMETRY_TEMPORAL_METRICS_PORT", str(base))
    pt.configure(exporter="none", handle_sigterm=False)
    try:
        caplog.set_level(logging.INFO, logger="paid_telemetry")
        first = temporal_runtime("prometheus")
        second = temporal_runtime("prometheus")
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)/metrics", caplog.text)
        assert [int(u) for u in urls] == [base, base + 1], caplog.text
        assert any(r.levelno == logging.WARNING and f"port {base} is busy" in r.getMessage() for r in caplog.records)
        queue = f"ports-{uuid.uuid4().hex[:8]}"
        client = await Client.connect(address(server), runtime=second, interceptors=[TelemetryInterceptor()])
        async with Worker(client, task_queue=queue, workflows=[OkWorkflow], activities=[ok],
                          workflow_runner=sandbox_runner()):
            assert await client.execute_workflow(OkWorkflow.run, "t", id=f"wf-{uuid.uuid4().hex[:8]}",
                                                 task_queue=queue) == "t"
        pattern = rf'temporal_workflow_completed\w*\{{[^}}]*task_queue="{queue}"'
        deadline = time.monotonic() + 15  # Core may record the completion after the client has the result
        while not re.search(pattern, second_body := scrape(f"http://127.0.0.1:{base + 1}/metrics")) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert re.search(rf'temporal_workflow_completed\w*\{{[^}}]*task_queue="{queue}"', second_body), second_body
        assert queue not in scrape(f"http://127.0.0.1:{base}/metrics")  # each worker on its own port
        del first
    finally:
        pt.shutdown()


async def test_completing_activity_as_failed_line_carries_the_trace(server: Any) -> None:
    spans = InMemorySpanExporter()
    pt.configure(exporter="none", handle_sigterm=False, span_processors=[SimpleSpanProcessor(spans)])
    buf = io.StringIO()
    configure_logging(json=True, stream=buf)
    try:
        client = await Client.connect(address(server), interceptors=[TelemetryInterceptor()])
        queue = f"fail-{uuid.uuid4().hex[:8]}"
        async with Worker(client, task_queue=queue, workflows=[FailingActivityWorkflow], activities=[boom],
                          workflow_runner=sandbox_runner()):
            result = await asyncio.wait_for(client.execute_workflow(
                FailingActivityWorkflow.run, "task-7", id=f"wf-{uuid.uuid4().hex[:8]}", task_queue=queue), 60)
        assert result == "failed"
    finally:
        structlog.reset_defaults()
        pt.shutdown()
    lines = [json.loads(x) for x in buf.getvalue().splitlines() if x.startswith("{")]
    failed = [x for x in lines if str(x.get("message", "")).startswith("Completing activity as failed")]
    assert len(failed) == 1, lines
    [run] = [s for s in spans.get_finished_spans() if s.name == "RunActivity:boom"]
    assert failed[0]["trace_id"] == format(run.context.trace_id, "032x")
    assert failed[0]["span_id"] == format(run.context.span_id, "016x")
    assert failed[0]["level"] == "warning" and "agent crashed on task-7" in json.dumps(failed[0])
