"""Workflows per second on the real Temporal dev server, with and without TelemetryInterceptor.

Both variants run in the same process against the same server, in alternating rounds (so
drift and neighbours' load hit both alike), with the same sandbox runner and workflow (one
activity per workflow). The telemetry variant records to a real OTel SDK pipeline: metrics
into an in-memory reader, spans through a BatchSpanProcessor to an exporter that discards.

    python bench/bench_temporal.py [--workflows 200] [--rounds 5] [--concurrency 50]

Target: telemetry throughput >= 95% of plain.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.temporal_app (the workflow definitions)

from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.worker import Worker  # noqa: E402
from tests import temporal_app as app  # noqa: E402

import paid_telemetry  # noqa: E402
from paid_telemetry.services import temporal_server  # noqa: E402
from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner  # noqa: E402


class _Discard(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _round(address: str, telemetry: bool, n: int, concurrency: int) -> tuple[float, float]:
    """(workflows per second, this process's CPU milliseconds per workflow: client + worker)."""
    interceptors = [TelemetryInterceptor()] if telemetry else []
    client = await Client.connect(address, interceptors=interceptors)
    tq = f"bench-{uuid.uuid4().hex[:8]}"
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.execute_workflow(app.HelloWorkflow.run, str(i), id=f"{tq}-{i}", task_queue=tq)

    worker = Worker(
        client, task_queue=tq, workflows=[app.HelloWorkflow], activities=[app.greet],
        workflow_runner=sandbox_runner(),
    )
    async with worker:
        await one(-1)  # warm-up: sandbox import of the workflow module, first poll
        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return n / elapsed, cpu * 1000 / n


async def main(workflows: int, rounds: int, concurrency: int) -> dict[str, float]:
    reader = InMemoryMetricReader()
    paid_telemetry.configure(
        exporter="none", metric_readers=[reader], span_processors=[BatchSpanProcessor(_Discard())],
        handle_sigterm=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        srv = temporal_server(Path(tmp))
        srv.start()
        try:
            address = f"127.0.0.1:{srv.ports['grpc']}"
            plain: list[float] = []
            instrumented: list[float] = []
            cpu: dict[bool, list[float]] = {False: [], True: []}
            for r in range(rounds):
                order = (False, True) if r % 2 == 0 else (True, False)
                for telemetry in order:
                    rate, cpu_ms = await _round(address, telemetry, workflows, concurrency)
                    (instrumented if telemetry else plain).append(rate)
                    cpu[telemetry].append(cpu_ms)
                    print(f"round {r + 1} {'telemetry' if telemetry else 'plain    '}: {rate:7.1f} workflows/s, "
                          f"{cpu_ms:5.2f} ms CPU/workflow (client+worker)", flush=True)
        finally:
            srv.stop()
    data = reader.get_metrics_data()
    completed = sum(
        p.value
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics for m in sm.metrics if m.name == "paid_workflow_completed"
        for p in m.data.data_points
    )
    paid_telemetry.shutdown()
    result = {
        "plain_median": statistics.median(plain),
        "telemetry_median": statistics.median(instrumented),
        "ratio": statistics.median(instrumented) / statistics.median(plain),
        "recorded_completions": completed,
        "plain_cpu_ms": statistics.median(cpu[False]),
        "telemetry_cpu_ms": statistics.median(cpu[True]),
    }
    print(f"plain     median {result['plain_median']:.1f} wf/s  (runs: {', '.join(f'{x:.1f}' for x in plain)})")
    print(f"telemetry median {result['telemetry_median']:.1f} wf/s  "
          f"(runs: {', '.join(f'{x:.1f}' for x in instrumented)})")
    print(f"CPU per workflow (client+worker process, median): plain {result['plain_cpu_ms']:.2f} ms, "
          f"telemetry {result['telemetry_cpu_ms']:.2f} ms")
    print(f"ratio {result['ratio']:.3f} (target >= 0.95); paid_workflow_completed recorded: {completed:.0f} "
          f"(expected {rounds * (workflows + 1)})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.rounds, args.concurrency))
