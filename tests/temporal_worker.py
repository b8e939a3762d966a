"""A worker process for the Temporal tests, killed or signalled by them.

Usage (from the repo root):
    python -m tests.temporal_worker ADDRESS TASK_QUEUE METRICS_PORT
        serves paid-telemetry's Prometheus endpoint on METRICS_PORT so a test can read what
        the worker recorded before it was SIGKILLed (tests/test_temporal.py);
    python -m tests.temporal_worker ADDRESS TASK_QUEUE OTLP_ENDPOINT SERVICE_NAME
        pushes over OTLP with a 10-minute export interval and no signal handling of its own,
        so only paid-telemetry's SIGTERM handler (flush, then die of the signal) can deliver
        what it recorded (tests/test_temporal_faults.py).
Prints "ready" once it polls.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client
from temporalio.worker import Worker

import paid_telemetry
from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner
from tests.temporal_app import ACTIVITIES, WORKFLOWS


async def main(address: str, task_queue: str, *target: str) -> None:
    if len(target) == 1:
        paid_telemetry.configure(exporter="prometheus", prometheus_port=int(target[0]), handle_sigterm=False)
    else:
        endpoint, service_name = target
        paid_telemetry.configure(exporter="otlp", otlp_endpoint=endpoint, service_name=service_name,
                                 metric_export_interval_ms=600_000, handle_sigterm=True, log_format="off")
    client = await Client.connect(address, interceptors=[TelemetryInterceptor()])
    worker = Worker(
        client, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES, workflow_runner=sandbox_runner()
    )
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
