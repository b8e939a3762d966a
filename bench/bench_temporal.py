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

import paid_telemetry  # noqa: E402
from paid_telemetry.temporal import TelemetryInterceptor, sandbox_runner  # noqa: E402
from paid_telemetry_ops.services import temporal_server  # noqa: E402
from tests import temporal_app as app  # noqa: E402


class _Discard(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


VARIANTS = ("plain", "telemetry", "metrics_only")


async def _round(address: str, variant: str, n: int, concurrency: int) -> tuple[float, float]:
    """(workflows per second, this process's CPU milliseconds per workflow: client + worker)."""
    interceptors = {
        "plain": [],
        "telemetry": [TelemetryInterceptor()],
        "metrics_only": [TelemetryInterceptor(tracing=False)],
    }[variant]
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
            rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(rounds):
                order = VARIANTS[r % 3:] + VARIANTS[:r % 3]  # rotate who goes first
                for variant in order:
                    rate, cpu_ms = await _round(address, variant, workflows, concurrency)
                    rates[variant].append(rate)
                    cpu[variant].append(cpu_ms)
                    print(f"round {r + 1} {variant:12}: {rate:7.1f} workflows/s, "
                          f"{cpu_ms:5.2f} ms CPU/workflow (client+worker)", flush=True)
        finally:
            srv.stop()
    data = reader.get_metrics_data()
    completed: float = sum(
        float(getattr(p, "value", 0))
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics for m in sm.metrics if m.name == "paid_workflow_completed"
        for p in m.data.data_points
    )
    paid_telemetry.shutdown()
    med = {v: statistics.median(rates[v]) for v in VARIANTS}
    cpu_med = {v: statistics.median(cpu[v]) for v in VARIANTS}
    result: dict[str, float] = {f"{v}_wf_per_s": med[v] for v in VARIANTS}
    result.update({f"{v}_cpu_ms": cpu_med[v] for v in VARIANTS})
    result["ratio"] = med["telemetry"] / med["plain"]
    result["ratio_metrics_only"] = med["metrics_only"] / med["plain"]
    # Paired: each round's variants ran back to back, so their ratio cancels slow drift in load.
    result["paired_ratio"] = statistics.median(t / p for t, p in zip(rates["telemetry"], rates["plain"], strict=True))
    result["paired_ratio_metrics_only"] = statistics.median(
        m / p for m, p in zip(rates["metrics_only"], rates["plain"], strict=True)
    )
    result["recorded_completions"] = completed
    for v in VARIANTS:
        runs = ", ".join(f"{x:.1f}" for x in rates[v])
        print(f"{v:12} median {med[v]:6.1f} wf/s, {cpu_med[v]:5.2f} ms CPU/workflow  (runs: {runs})")
    print(f"ratio of medians telemetry/plain {result['ratio']:.3f} (target >= 0.95); "
          f"metrics-only/plain {result['ratio_metrics_only']:.3f}")
    print(f"median of per-round ratios telemetry/plain {result['paired_ratio']:.3f}; "
          f"metrics-only/plain {result['paired_ratio_metrics_only']:.3f}")
    print(f"paid_workflow_completed recorded: {completed:.0f} (expected {2 * rounds * (workflows + 1)})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.rounds, args.concurrency))
