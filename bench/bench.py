"""paid-telemetry benchmarks, each measured side by side with its baseline in one run.

    python bench/bench.py            # all sections
    python bench/bench.py record     # one agent-run record vs raw OpenTelemetry SDK calls
    python bench/bench.py endpoint   # embedded /metrics at 1k / 10k / 50k series

Not a test: numbers depend on the machine; docs/performance.md records them with the
machine and versions.
"""

from __future__ import annotations

import gc
import platform
import statistics
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import paid_telemetry as pt
from paid_telemetry import catalogue as cat


class NullExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_call_us(fn: Callable[[], None], n: int, repeat: int = 7) -> float:
    """Median over ``repeat`` runs of the mean cost of one call, in microseconds."""
    for _ in range(min(n, 2000)):
        fn()
    runs = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def bench_record(n: int = 20_000) -> dict[str, float]:
    """One full agent-run record: span + runs counter + 2 histograms + 2 token counters + cost."""
    handle = pt.configure(exporter="none", metric_readers=[InMemoryMetricReader()],
                          span_processors=[SimpleSpanProcessor(NullExporter())], handle_sigterm=False)
    tracer = handle.tracer_provider.get_tracer("raw")
    meter = handle.meter_provider.get_meter("raw")
    runs = meter.create_counter("raw_agent_runs")
    dur = meter.create_histogram("raw_duration", unit="s",
                                 explicit_bucket_boundaries_advisory=cat.AGENT_RUN_DURATION.buckets)
    iters = meter.create_histogram("raw_iterations", explicit_bucket_boundaries_advisory=cat.AGENT_ITERATIONS.buckets)
    tokens = meter.create_counter("raw_tokens")
    cost = meter.create_counter("raw_cost")
    projects = [f"project-{i}" for i in range(50)]
    state = {"i": 0}

    def raw() -> None:
        i = state["i"] = state["i"] + 1
        project = projects[i % 50]
        start = time.perf_counter()
        with tracer.start_as_current_span(
            "invoke_agent coder",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder",
                        "paid.agent_run.id": str(i), "paid.project_id": project},
        ) as span:
            tokens.add(1000, {"project_id": project, "provider": "openai", "model": "gpt-4o", "type": "input"})
            tokens.add(500, {"project_id": project, "provider": "openai", "model": "gpt-4o", "type": "output"})
            cost.add(1.5, {"project_id": project, "provider": "openai"})
            runs.add(1, {"project_id": project, "agent_type": "coder", "status": "completed"})
            labels = {"project_id": project, "agent_type": "coder"}
            dur.record(time.perf_counter() - start, labels)
            iters.record(3, labels)
            span.set_attributes({"gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 500})

    def ours() -> None:
        i = state["i"] = state["i"] + 1
        with pt.agent_run(project_id=projects[i % 50], agent_type="coder") as run:
            run.iteration()
            run.iteration()
            run.iteration()
            run.record_tokens(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500,
                              cost_cents=1.5)

    def ours_priced() -> None:
        i = state["i"] = state["i"] + 1
        with pt.agent_run(project_id=projects[i % 50], agent_type="coder") as run:
            run.iteration()
            run.record_tokens(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500)

    results = {}
    # interleave to share the machine's noise fairly
    raw_runs, our_runs, priced_runs = [], [], []
    for _ in range(3):
        raw_runs.append(per_call_us(raw, n, repeat=3))
        our_runs.append(per_call_us(ours, n, repeat=3))
        priced_runs.append(per_call_us(ours_priced, n, repeat=3))
    results["raw_otel_us"] = min(raw_runs)
    results["paid_telemetry_us"] = min(our_runs)
    results["paid_telemetry_priced_us"] = min(priced_runs)
    results["ratio"] = results["paid_telemetry_us"] / results["raw_otel_us"]
    results["ratio_priced"] = results["paid_telemetry_priced_us"] / results["raw_otel_us"]
    pt.shutdown()
    return results


def bench_endpoint(series_counts: tuple[int, ...] = (1_000, 10_000, 50_000)) -> list[dict[str, float]]:
    """Response time of the embedded endpoint, next to the stock OTel Prometheus exporter."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    out = []
    for count in series_counts:
        registry = CollectorRegistry(auto_describe=True)
        stock = PrometheusMetricReader(registry=registry)
        tracemalloc.start()
        handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                              cardinality_limit=count + 10, metric_readers=[stock])
        t = pt.runtime.current()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            t.agent_runs.add(1, t.run_labels.get((f"p{i}", "coder", "completed")))
        memory_per_series = (tracemalloc.get_traced_memory()[0] - before) / count
        tracemalloc.stop()
        url = handle.prometheus_url or ""
        first_start = time.perf_counter()
        urllib.request.urlopen(url, timeout=60).read()
        first = time.perf_counter() - first_start
        timings = []
        for _ in range(10):
            start = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=60).read()
            timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        generate_latest(registry)
        stock_s = time.perf_counter() - start
        reader = handle.prometheus_reader
        out.append({
            "series": count,
            "scrape_ms_median": statistics.median(timings) * 1000,
            "scrape_ms_p95": sorted(timings)[int(0.95 * (len(timings) - 1))] * 1000,
            "first_scrape_ms": first * 1000,
            "render_ms": reader.last_render_s * 1000,
            "stock_exporter_ms": stock_s * 1000,
            "bytes": len(body),
            "memory_bytes_per_series": memory_per_series,
        })
        pt.shutdown()
    return out


def main(argv: list[str]) -> None:
    sections = set(argv) or {"record", "endpoint"}
    print(f"# paid-telemetry {pt.__version__} on Python {platform.python_version()}, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}")
    if "record" in sections:
        r = bench_record()
        print("\n## One agent-run record (span + runs counter + 2 histograms + 2 token counters + cost)")
        print(f"raw OTel SDK calls         : {r['raw_otel_us']:7.1f} us")
        print(f"paid_telemetry.agent_run   : {r['paid_telemetry_us']:7.1f} us  "
              f"ratio {r['ratio']:.2f}x (target <= 1.3x)")
        print(f"  with genai-prices pricing: {r['paid_telemetry_priced_us']:7.1f} us  ratio {r['ratio_priced']:.2f}x")
    if "endpoint" in sections:
        print("\n## Embedded /metrics endpoint (target < 50 ms at 10k series)")
        print("series | scrape median ms | p95 ms | first (sync) ms | render ms | stock exporter ms | bytes/series mem")
        for e in bench_endpoint():
            print(f"{e['series']:6d} | {e['scrape_ms_median']:16.1f} | {e['scrape_ms_p95']:6.1f} | "
                  f"{e['first_scrape_ms']:15.1f} | {e['render_ms']:9.1f} | {e['stock_exporter_ms']:17.1f} | "
                  f"{e['memory_bytes_per_series']:.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
