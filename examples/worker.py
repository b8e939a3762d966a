"""The Temporal worker: ``python -m examples.worker``.

The client carries ``TelemetryInterceptor`` (see ``examples.connect``), which temporalio
passes on to every worker built from it; ``sandbox_runner()`` lets workflow modules import
paid_telemetry and structlog without the sandbox re-importing them. While it runs, the worker
touches ``PAID_WORKER_HEARTBEAT_FILE`` (if set) every 15 s: docker-compose's healthcheck reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import timedelta
from pathlib import Path

import structlog
from temporalio.client import Client
from temporalio.worker import Worker

import paid_telemetry as pt
from examples import configure_telemetry, connect, task_queue
from examples.activities import open_pull_request, run_agent
from examples.workflows import AgentSessionWorkflow
from paid_telemetry.temporal import sandbox_runner

log = structlog.get_logger()
HEARTBEAT_INTERVAL_S = 15.0


def build_worker(client: Client, *, queue: str | None = None) -> Worker:
    """The example worker (not started): ``async with build_worker(client):`` runs it."""
    return Worker(
        client,
        task_queue=queue or task_queue(),
        workflows=[AgentSessionWorkflow],
        activities=[run_agent, open_pull_request],
        workflow_runner=sandbox_runner(),
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def heartbeat(path: Path, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
    """Touch ``path`` every ``interval_s`` until cancelled."""
    while True:
        path.touch()
        await asyncio.sleep(interval_s)


async def run(stop: asyncio.Event) -> None:
    client = await connect()
    beat_file = os.environ.get("PAID_WORKER_HEARTBEAT_FILE")
    beat = asyncio.create_task(heartbeat(Path(beat_file))) if beat_file else None
    try:
        async with build_worker(client):
            log.info("worker polling", task_queue=task_queue())
            await stop.wait()
            log.info("worker stopping")
    finally:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat


def main() -> None:
    configure_telemetry("paid-worker", metrics_port=9466)

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    asyncio.run(_main())
    pt.shutdown()


if __name__ == "__main__":
    main()
