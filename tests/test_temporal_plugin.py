"""``paid_telemetry.temporal.Plugin`` on a real Temporal dev server: one line registers the
interceptor (client and worker), the sandbox passthrough and the SDK runtime metrics."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import paid_telemetry
from paid_telemetry.temporal import SANDBOX_PASSTHROUGH, Plugin, TelemetryInterceptor, temporal_runtime
from paid_telemetry_ops.services import Service, free_port
from tests import temporal_app as app
from tests.test_temporal import Captured, address, prom_value, scrape_settled


@pytest.fixture
def tel() -> Iterator[Captured]:
    cap = Captured()
    paid_telemetry.configure(exporter="none", metric_readers=[cap.reader], handle_sigterm=False,
                             span_processors=[SimpleSpanProcessor(cap.spans)])
    try:
        yield cap
    finally:
        paid_telemetry.shutdown()


def test_plugin_is_exported_by_both_paths() -> None:
    import paid_telemetry.integrations.temporal as integration

    assert "Plugin" in integration.__all__
    assert Plugin is integration.Plugin


async def test_one_line_plugin_records_metrics_spans_and_sdk_metrics(tel: Captured, server: Service) -> None:
    port = free_port()
    plugin = Plugin(mode="prometheus", prometheus_bind=f"127.0.0.1:{port}")
    client = await Client.connect(address(server), plugins=[plugin])
    assert plugin.runtime is not None and client.service_client.config.runtime is plugin.runtime
    tq = f"tq-{uuid.uuid4().hex[:12]}"
    # No interceptors, no workflow_runner: the plugin supplies both (temporal_app imports paid_telemetry).
    worker = Worker(client, task_queue=tq, workflows=[app.HelloWorkflow], activities=app.ACTIVITIES)
    runner = worker.config(active_config=True)["workflow_runner"]
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert set(SANDBOX_PASSTHROUGH) <= set(runner.restrictions.passthrough_modules)
    # the interceptor is the client's (which temporalio hands to the worker): registered once
    client_interceptors = client.config(active_config=True)["interceptors"]
    assert [i for i in client_interceptors if isinstance(i, TelemetryInterceptor)] == [plugin.interceptor]
    async with worker:
        for i in range(2):
            assert await client.execute_workflow(
                app.HelloWorkflow.run, str(i), id=f"plugin-{uuid.uuid4().hex[:8]}", task_queue=tq) == f"hello {i}"
        text = await scrape_settled(f"http://127.0.0.1:{port}/metrics", "temporal_workflow_completed", 2,
                                    task_queue=tq, workflow_type="HelloWorkflow")
    assert tel.series("paid_workflow_started") == {("HelloWorkflow",): 2}
    assert tel.series("paid_workflow_completed") == {("completed", "HelloWorkflow"): 2}
    assert tel.series("paid_activity_executions") == {("greet", "completed"): 2}
    names = [s.name for s in tel.spans.get_finished_spans()]
    assert names.count("StartWorkflow:HelloWorkflow") == 2
    assert names.count("RunActivity:greet") == 2
    assert prom_value(text, "temporal_workflow_completed", task_queue=tq, workflow_type="HelloWorkflow") == 2


async def test_plugin_keeps_a_given_runtime_and_extends_a_given_sandbox(tel: Captured, server: Service) -> None:
    rt = temporal_runtime("prometheus", prometheus_bind=f"127.0.0.1:{free_port()}")
    plugin = Plugin(extra_passthrough=("tests",))
    client = await Client.connect(address(server), plugins=[plugin], runtime=rt)
    assert plugin.runtime is None and client.service_client.config.runtime is rt
    base = SandboxedWorkflowRunner()
    base = dataclasses.replace(base, restrictions=base.restrictions.with_passthrough_modules("json"))
    worker = Worker(client, task_queue="tq-unused", workflows=[app.HelloWorkflow], workflow_runner=base)
    runner = worker.config(active_config=True)["workflow_runner"]
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert {"json", "tests", *SANDBOX_PASSTHROUGH} <= set(runner.restrictions.passthrough_modules)
