"""Logs inside Temporal workflows and activities, on the real dev server (sandboxed workflows).

The worker runs with ``max_cached_workflows=0``, so every workflow task replays the history
from the start: a workflow that logs at three points executes those statements 1 + 2 + 3 = 6
times, and exactly three lines must be written.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import io
    import json
    from collections.abc import Iterator
    from pathlib import Path

    import pytest
    import structlog
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from temporalio.client import Client
    from temporalio.contrib.opentelemetry import TracingInterceptor
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    import paid_telemetry as pt
    from paid_telemetry.logs import configure_logging
    from paid_telemetry_ops.services import Service, temporal_server

log = structlog.get_logger()
probe = logging.getLogger("paid_test.replay_probe")


@activity.defn
async def greet(name: str) -> str:
    log.info("activity ran", who=name)
    return f"hi {name}"


@workflow.defn
class LoggingWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        log.info("workflow started", who=name)
        probe.info("probe 1")
        first = await workflow.execute_activity(greet, name, start_to_close_timeout=timedelta(seconds=30))
        log.info("between activities")
        probe.info("probe 2")
        second = await workflow.execute_activity(greet, name + "!", start_to_close_timeout=timedelta(seconds=30))
        log.info("workflow finished")
        probe.info("probe 3")
        return first + " " + second


class Counting(logging.Handler):
    """Counts every record the workflow code produces, replayed or not (no filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    srv = temporal_server(Path(tmp_path_factory.mktemp("temporal"))).start(timeout=90)
    yield srv
    srv.stop()


@pytest.mark.e2e
async def test_workflow_and_activity_lines_on_the_real_server(server: Service) -> None:
    spans, otel_logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    t = pt.configure(
        exporter="none", handle_sigterm=False,
        span_processors=[SimpleSpanProcessor(spans)], log_processors=[SimpleLogRecordProcessor(otel_logs)],
    )
    buf = io.StringIO()
    counting = Counting()
    probe.addHandler(counting)
    root = logging.getLogger()
    root_level = root.level
    configure_logging(stream=buf)
    try:
        client = await Client.connect(
            f"127.0.0.1:{server.ports['grpc']}", interceptors=[TracingInterceptor(t.tracer)]
        )
        runner = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(
                "paid_telemetry", "structlog", "opentelemetry"
            )
        )
        queue = f"logs-{uuid.uuid4().hex[:8]}"
        wf_id = f"wf-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client, task_queue=queue, workflows=[LoggingWorkflow], activities=[greet],
            workflow_runner=runner, max_cached_workflows=0,
        ):
            with t.tracer.start_as_current_span("client request") as client_span:
                handle = await client.start_workflow(LoggingWorkflow.run, "ada", id=wf_id, task_queue=queue)
                result = await asyncio.wait_for(handle.result(), 60)
        assert result == "hi ada hi ada!"
        run_id = handle.result_run_id
        assert run_id
    finally:
        probe.removeHandler(counting)
        structlog.reset_defaults()
        for h in [h for h in root.handlers if getattr(h, "paid_telemetry", False)]:
            root.removeHandler(h)
        root.setLevel(root_level)
        pt.shutdown()

    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    mine = [x for x in lines if x.get("workflow_id") == wf_id]
    trace_id = format(client_span.get_span_context().trace_id, "032x")

    # replay really happened (probe saw 1 + 2 + 3 executions) but each statement wrote one line
    assert counting.messages == ["probe 1", "probe 1", "probe 2", "probe 1", "probe 2", "probe 3"]
    wf_msgs = [x["message"] for x in mine if "activity_type" not in x]
    assert wf_msgs == ["workflow started", "probe 1", "between activities", "probe 2", "workflow finished", "probe 3"]

    for x in mine:
        assert x["run_id"] == run_id and x["workflow_type"] == "LoggingWorkflow"
    # workflow code runs in the context the interceptor propagated: the client's StartWorkflow span
    [start_span] = [s for s in spans.get_finished_spans() if s.name == "StartWorkflow:LoggingWorkflow"]
    start_span_id = format(start_span.context.span_id, "016x")
    [started] = [x for x in mine if x["message"] == "workflow started"]
    started.pop("timestamp")
    assert started == {
        "level": "info", "message": "workflow started", "who": "ada",
        "workflow_id": wf_id, "run_id": run_id, "workflow_type": "LoggingWorkflow",
        "trace_id": trace_id, "span_id": start_span_id,
    }
    for x in mine:
        if "activity_type" not in x:
            assert (x["trace_id"], x["span_id"]) == (trace_id, start_span_id)
    [probe1] = [x for x in mine if x["message"] == "probe 1"]
    assert probe1["logger"] == "paid_test.replay_probe" and probe1["level"] == "info"

    # activity lines: Temporal identity plus the trace of the client's span and the activity's own span
    act = [x for x in mine if "activity_type" in x]
    assert [x["who"] for x in act] == ["ada", "ada!"]
    run_spans = {
        format(s.context.span_id, "016x"): s for s in spans.get_finished_spans() if s.name == "RunActivity:greet"
    }
    assert len(run_spans) == 2
    for x in act:
        span = run_spans[x["span_id"]]
        assert format(span.context.trace_id, "032x") == trace_id
        x.pop("timestamp")
        assert x == {
            "level": "info", "message": "activity ran", "who": x["who"],
            "workflow_id": wf_id, "run_id": run_id, "workflow_type": "LoggingWorkflow",
            "activity_type": "greet", "activity_id": x["activity_id"], "attempt": 1,
            "trace_id": trace_id, "span_id": x["span_id"],
        }
    assert sorted(x["activity_id"] for x in act) == ["1", "2"]

    # the OTLP copies (emitted from inside the sandbox too) carry the same ids natively, once each
    all_records = [r.log_record for r in otel_logs.get_finished_logs()]
    records = [r for r in all_records if (r.attributes or {}).get("workflow_id") == wf_id]
    assert [r.body for r in records] == [x["message"] for x in mine]
    for rec, x in zip(records, mine, strict=True):
        assert (format(rec.trace_id, "032x"), format(rec.span_id, "016x")) == (x["trace_id"], x["span_id"])
