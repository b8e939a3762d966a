"""Cost of one structured log line, in µs per line, next to the cost of one agent-run record.

    python bench/bench_logs.py [--lines 20000] [--repeat 5]

Lines go to a null stream, so this measures processors and rendering, not the terminal.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import paid_telemetry as pt
from paid_telemetry.logs import add_trace_context, configure_logging, log_run_end


class NullStream:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


class NullLogExporter(LogRecordExporter):
    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def per_call_us(fn: Callable[[], None], n: int, repeat: int) -> tuple[float, float]:
    """(best, median) µs per call over ``repeat`` rounds of ``n`` calls."""
    fn()
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter_ns() - start) / n / 1000)
    return min(rounds), statistics.median(rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    n, r = a.lines, a.repeat
    null = NullStream()
    results: list[tuple[str, tuple[float, float]]] = []

    def bench(name: str, fn: Callable[[], None], count: int = n) -> None:
        results.append((name, per_call_us(fn, count, r)))

    # baselines: structlog without our processors
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=null),  # type: ignore[arg-type]
    )
    plain = structlog.get_logger()
    bench("structlog, JSONRenderer only", lambda: plain.info("hello", n=1))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=null),  # type: ignore[arg-type]
    )
    std = structlog.get_logger()
    bench("structlog, level+TimeStamper+rename+JSON", lambda: std.info("hello", n=1))

    # ours, no OTLP copy
    t = pt.configure(exporter="none", handle_sigterm=False, metric_readers=[InMemoryMetricReader()])
    configure_logging(stream=null, stdlib=True)  # type: ignore[arg-type]
    ours = structlog.get_logger()
    bench("paid_telemetry, no span", lambda: ours.info("hello", n=1))
    with t.tracer.start_as_current_span("bench"):
        bench("paid_telemetry, in a span (trace stamping)", lambda: ours.info("hello", n=1))
        with pt.agent_run(project_id="p", agent_type="bench"):
            bench("paid_telemetry, in span + agent run", lambda: ours.info("hello", n=1))
    stdlib = logging.getLogger("thirdparty")
    with t.tracer.start_as_current_span("bench"):
        bench("stdlib logging record, in a span", lambda: stdlib.info("hello %d", 1))
    ev: dict[str, Any] = {}
    with t.tracer.start_as_current_span("bench"):
        bench("add_trace_context alone", lambda: add_trace_context(None, "info", ev))
    debug_dropped = structlog.get_logger()
    bench("below level (debug, filtered)", lambda: debug_dropped.debug("x"))

    # agent-run record with and without its "Agent run completed" line
    def run_only() -> None:
        with pt.agent_run(project_id="p", agent_type="bench"):
            pass

    bench("agent-run record (span + metrics), no line", run_only, n // 4)
    run = pt.agent_run(project_id="p", agent_type="bench")
    with run:
        pass
    bench("log_run_end line alone", lambda: log_run_end(run, 1.5, "completed"))

    # OTLP copy through a batch processor (null exporter): the cost the caller pays in otlp mode
    pt.shutdown()
    t = pt.configure(
        exporter="none", handle_sigterm=False, metric_readers=[InMemoryMetricReader()],
        log_processors=[BatchLogRecordProcessor(NullLogExporter(), max_queue_size=100_000)],
    )
    configure_logging(stream=null)  # type: ignore[arg-type]
    otel = structlog.get_logger()
    with t.tracer.start_as_current_span("bench"):
        bench("paid_telemetry + OTLP copy (batch queue), in a span", lambda: otel.info("hello", n=1))
    pt.shutdown()

    width = max(len(name) for name, _ in results)
    print(f"{'case':<{width}}  best µs  median µs   ({n} lines x {r} rounds; agent runs: {n // 4})")
    for name, (best, median) in results:
        print(f"{name:<{width}}  {best:7.2f}  {median:9.2f}")


if __name__ == "__main__":
    main()
