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


async def heartbeat(path: Path, worker: Worker, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
    """Touch ``path`` every ``interval_s`` while ``worker`` runs: a dead worker goes stale."""
    last = -interval_s
    loop = asyncio.get_running_loop()
    while True:
        if worker.is_running and loop.time() - last >= interval_s:
            path.touch()
            last = loop.time()
        await asyncio.sleep(min(1.0, interval_s))


async def run(stop: asyncio.Event) -> None:
    """Poll until ``stop`` is set (then shut down gracefully) or the worker fails (then raise)."""
    client = await connect()
    worker = build_worker(client)
    polling = asyncio.create_task(worker.run())
    beat_file = os.environ.get("PAID_WORKER_HEARTBEAT_FILE")
    beat = asyncio.create_task(heartbeat(Path(beat_file), worker)) if beat_file else None
    stopping = asyncio.create_task(stop.wait())
    log.info("worker polling", task_queue=task_queue())
    try:
        await asyncio.wait({polling, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not polling.done():
            log.info("worker stopping")
            await worker.shutdown()
        await polling  # raises the worker's fatal error, if that is why we stopped
    finally:
        for task in (beat, stopping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


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
