"""A worker process for tests/test_temporal.py: the test SIGKILLs it mid-workflow.

Usage (from the repo root): python -m tests.temporal_worker ADDRESS TASK_QUEUE METRICS_PORT
It serves paid-telemetry's Prometheus endpoint on METRICS_PORT so the test can read what
the worker recorded before it died, and prints "ready" once it polls.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.client import Client
from temporalio.worker import Worker

import paid_telemetry
from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner
from tests.temporal_app import ACTIVITIES, WORKFLOWS


async def main(address: str, task_queue: str, metrics_port: int) -> None:
    paid_telemetry.configure(exporter="prometheus", prometheus_port=metrics_port, handle_sigterm=False)
    client = await Client.connect(address, interceptors=[TelemetryInterceptor()])
    worker = Worker(
        client, task_queue=task_queue, workflows=WORKFLOWS, activities=ACTIVITIES, workflow_runner=sandbox_runner()
    )
    async with worker:
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
