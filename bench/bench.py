"""paid-telemetry benchmarks, each measured side by side with its baseline in one run.

    python bench/bench.py              # all sections
    python bench/bench.py record       # one agent-run record vs raw OpenTelemetry SDK calls
    python bench/bench.py record_log   # the same plus one structlog JSON line (trace stamping)
    python bench/bench.py endpoint     # embedded /metrics at 1k / 10k series vs stock OTel exporter, prometheus_client
    python bench/bench.py idle         # CPU over 60 s at 10k series while nobody scrapes
    python bench/bench.py collector    # the collector's /metrics (SDK in otlp mode) vs embedded, same counts
    python bench/bench.py temporal     # workflows/s with and without TelemetryInterceptor (bench_temporal.py)
    python bench/bench.py memory       # bytes per series: paid-telemetry vs raw OTel instruments
    python bench/bench.py genai        # GenAI span processor per LLM span vs openai-v2's own cost (bench_genai.py)

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


def record_fns(handle: pt.Telemetry) -> dict[str, Callable[[], None]]:
    """One agent-run record three ways on ``handle``'s providers: raw OTel calls, ours, ours priced."""
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

    return {"raw": raw, "ours": ours, "ours_priced": ours_priced}


def _configure_null() -> pt.Telemetry:
    return pt.configure(exporter="none", metric_readers=[InMemoryMetricReader()],
                        span_processors=[SimpleSpanProcessor(NullExporter())], handle_sigterm=False)


def interleaved(fns: dict[str, Callable[[], None]], n: int, rounds: int = 3) -> dict[str, float]:
    """Best of ``rounds`` interleaved measurements per function (shares the machine's noise fairly)."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            runs[name].append(per_call_us(fn, n, repeat=3))
    return {name: min(v) for name, v in runs.items()}


def bench_record(n: int = 20_000) -> dict[str, float]:
    """One full agent-run record: span + runs counter + 2 histograms + 2 token counters + cost."""
    fns = record_fns(_configure_null())
    best = interleaved(fns, n)
    results = {"raw_otel_us": best["raw"], "paid_telemetry_us": best["ours"],
               "paid_telemetry_priced_us": best["ours_priced"]}
    results["ratio"] = results["paid_telemetry_us"] / results["raw_otel_us"]
    results["ratio_priced"] = results["paid_telemetry_priced_us"] / results["raw_otel_us"]
    pt.shutdown()
    return results


def bench_record_log(n: int = 10_000) -> dict[str, float]:
    """One agent-run record plus one structlog JSON line inside it, vs the raw OTel record.

    Baselines: the raw OTel record alone, and the raw record plus a plain structlog line
    (JSONRenderer only, no trace ids). Ours: ``agent_run`` + one line through paid-telemetry's
    processors (trace/span/run ids stamped). Lines go to bench_logs' null stream.
    """
    import logging

    import structlog
    from bench_logs import NullStream  # bench/ is on sys.path when run as a script

    from paid_telemetry.logs import configure_logging

    null = NullStream()
    handle = _configure_null()
    fns = record_fns(handle)
    plain = structlog.wrap_logger(
        structlog.WriteLogger(file=null),  # type: ignore[arg-type]
        processors=[structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    configure_logging(stream=null)  # type: ignore[arg-type]
    ours_log = structlog.get_logger()
    raw, ours = fns["raw"], fns["ours"]

    def raw_plus_plain_line() -> None:
        raw()
        plain.info("llm reply", step=1, input_tokens=1000, output_tokens=500)

    def ours_with_line() -> None:
        with pt.agent_run(project_id="p", agent_type="coder") as run:
            run.iteration()
            run.iteration()
            run.iteration()
            run.record_tokens(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500,
                              cost_cents=1.5)
            ours_log.info("llm reply", step=1, input_tokens=1000, output_tokens=500)

    best = interleaved({"raw": raw, "raw_line": raw_plus_plain_line, "ours": ours,
                        "ours_line": ours_with_line}, n)
    pt.shutdown()
    structlog.reset_defaults()
    return {
        "raw_otel_us": best["raw"], "raw_plus_plain_line_us": best["raw_line"],
        "paid_telemetry_us": best["ours"], "paid_telemetry_line_us": best["ours_line"],
        "ratio_vs_raw": best["ours_line"] / best["raw"],
        "ratio_vs_raw_plus_line": best["ours_line"] / best["raw_line"],
        "line_cost_us": best["ours_line"] - best["ours"],
    }


def _best_ms(fn: Callable[[], Any], times: int) -> tuple[float, float]:
    """(median ms, min ms) of ``times`` calls."""
    timings = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000, min(timings) * 1000


def bench_endpoint(series_counts: tuple[int, ...] = (1_000, 10_000)) -> list[dict[str, float]]:
    """Fresh render time and scrape latency of the embedded endpoint, next to the stock OTel
    exporter (PrometheusMetricReader + prometheus_client exposition, on the same provider) and a
    plain prometheus_client counter with the same series, all in this run."""

    return [_bench_endpoint_at(count) for count in series_counts]


def _bench_endpoint_at(count: int) -> dict[str, float]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client import Counter as PromCounter

    times = 10 if count <= 1_000 else 5
    registry = CollectorRegistry(auto_describe=True)
    stock = PrometheusMetricReader(registry=registry)
    tracemalloc.start()
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                          cardinality_limit=count + 10, metric_readers=[stock])
    t = pt.runtime.current()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        t.metrics.agent_runs.add(1, t.metrics.run_labels.get((f"p{i}", "coder", "completed")))
    memory_per_series = (tracemalloc.get_traced_memory()[0] - before) / count
    tracemalloc.stop()
    reader = handle.providers.endpoint.reader
    url = handle.prometheus_url or ""
    om_req = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    reader.max_age_s = 0.0  # every scrape renders fresh
    fresh_http, _ = _best_ms(lambda: urllib.request.urlopen(url, timeout=120).read(), times)
    fresh_om, _ = _best_ms(lambda: urllib.request.urlopen(om_req, timeout=120).read(), times)
    ours_render, _ = _best_ms(lambda: reader.body(False), times)
    reader.max_age_s = 3600.0
    reader.max_cpu_share = 1e-9  # the reuse window: what a second scraper within it gets
    reader.body(False)
    cached_http, _ = _best_ms(lambda: urllib.request.urlopen(url, timeout=120).read(), times)
    reader.max_age_s, reader.max_cpu_share = 1.0, 0.5
    reader.body(False)
    window_ms = min(reader.max_age_s, reader.last_render_s / reader.max_cpu_share) * 1000
    stock_ms, _ = _best_ms(lambda: generate_latest(registry), times)
    body = urllib.request.urlopen(url, timeout=120).read()
    pt.shutdown()
    native_registry = CollectorRegistry()
    native = PromCounter("paid_agent_runs", "runs", ["project_id", "agent_type", "status"],
                         registry=native_registry)
    for i in range(count):
        native.labels(f"p{i}", "coder", "completed").inc()
    native_ms, _ = _best_ms(lambda: generate_latest(native_registry), times)
    return {
        "series": count, "ours_render_ms": ours_render, "ours_fresh_scrape_ms": fresh_http,
        "ours_fresh_openmetrics_ms": fresh_om, "ours_cached_scrape_ms": cached_http,
        "reuse_window_ms": window_ms, "stock_exporter_ms": stock_ms, "prometheus_client_ms": native_ms,
        "bytes": len(body), "memory_bytes_per_series": memory_per_series,
    }

def bench_idle(count: int = 10_000, seconds: float = 60.0) -> dict[str, float]:
    """CPU the process uses over ``seconds`` while nobody scrapes, holding ``count`` series
    (after one scrape, as in a process whose scraper went away)."""
    import resource

    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                          cardinality_limit=count + 10)
    t = pt.runtime.current()
    for i in range(count):
        t.metrics.agent_runs.add(1, t.metrics.run_labels.get((f"p{i}", "coder", "completed")))
    urllib.request.urlopen(handle.prometheus_url or "", timeout=120).read()
    time.sleep(2.0)  # let start-up work (price table warm-up) finish
    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    cpu0, wall0 = cpu(), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu() - cpu0, time.monotonic() - wall0
    renders = handle.providers.endpoint.reader.renders
    pt.shutdown()
    return {"series": count, "seconds": wall, "cpu_s": used, "core_share_pct": 100 * used / wall,
            "renders": renders}


def _scrape_ms(url: str, times: int = 10) -> tuple[float, float, int]:
    """(median ms, p95 ms, body bytes) of ``times`` GETs of ``url``."""
    timings, body = [], b""
    for _ in range(times):
        start = time.perf_counter()
        body = urllib.request.urlopen(url, timeout=120).read()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000, sorted(timings)[int(0.95 * (len(timings) - 1))] * 1000, len(body)


def _embedded_scrape(count: int) -> float:
    """Median scrape ms of the embedded endpoint holding ``count`` agent-run series (fresh renders)."""
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, cardinality_limit=count + 10)
    t = pt.runtime.current()
    for i in range(count):
        t.metrics.agent_runs.add(1, t.metrics.run_labels.get((f"p{i}", "coder", "completed")))
    url = handle.prometheus_url or ""
    handle.providers.endpoint.reader.max_age_s = 0.0
    median, _p95, _ = _scrape_ms(url)
    pt.shutdown()
    return median


def bench_collector(series_counts: tuple[int, ...] = (1_000, 10_000, 50_000)) -> list[dict[str, float]]:
    """The collector's Prometheus endpoint (fed by the SDK in otlp mode) next to the embedded one.

    One local stack (our collector build, no Temporal/Jaeger/Alertmanager); the collector is
    restarted for each count so it holds exactly that many agent-run series (plus its own few).
    """
    import tempfile
    from pathlib import Path

    from paid_telemetry_ops.stack import Stack

    def collector_rss(stack: Stack) -> float:
        url = f"http://127.0.0.1:{stack.ports['collector_self']}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("otelcol_process_memory_rss"))

    out = []
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp), temporal=False, jaeger=False,
                                                     alertmanager=False) as stack:
        for count in series_counts:
            stack.services["collector"].stop()
            stack.services["collector"] = stack.collector_service().start()
            time.sleep(1.0)
            rss_before = collector_rss(stack)
            # otlp mode as users run it; the periodic export is 10 minutes away, force_flush pushes.
            # Requests are split at metric_export_batch_size points (one request for 50k series would
            # pass gRPC's 4 MiB limit and be refused whole).
            pt.configure(exporter="otlp", otlp_endpoint=stack.otlp_endpoint, metric_export_interval_ms=600_000,
                         handle_sigterm=False, cardinality_limit=count + 10, service_name="bench")
            t = pt.runtime.current()
            for i in range(count):
                t.metrics.agent_runs.add(1, t.metrics.run_labels.get((f"p{i}", "coder", "completed")))
            push_start = time.perf_counter()
            pt.force_flush()
            push_s = time.perf_counter() - push_start
            deadline = time.monotonic() + 120
            while True:  # until the collector exposes every series
                body = urllib.request.urlopen(stack.collector_metrics_url, timeout=120).read().decode()
                if body.count("paid_agent_runs_total{") >= count or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            got = body.count("paid_agent_runs_total{")
            median, p95, size = _scrape_ms(stack.collector_metrics_url)
            rss = collector_rss(stack)
            pt.shutdown()
            embedded = _embedded_scrape(count)
            out.append({
                "series": count, "exposed": got, "collector_ms_median": median, "collector_ms_p95": p95,
                "embedded_ms_median": embedded, "ratio_collector_to_embedded": median / embedded,
                "push_s": push_s, "bytes": size, "collector_rss_mib": rss / 2**20,
                "collector_bytes_per_series": (rss - rss_before) / count,
            })
    return out


def bench_temporal(workflows: int = 100, rounds: int = 12, concurrency: int = 50) -> dict[str, float]:
    """bench/bench_temporal.py's alternating rounds (plain / interceptor / metrics only).

    12 rounds: rounds of one variant differ by ~12 % on a 2-core machine, so 3 rounds could
    not tell a 5 % cost from noise (measured: 3-round ratios ranged 0.89-1.05)."""
    import asyncio

    import bench_temporal  # bench/ is on sys.path when run as a script

    result: dict[str, float] = asyncio.run(bench_temporal.main(workflows, rounds, concurrency))
    return result


def bench_memory(count: int = 1_900) -> dict[str, float]:
    """Bytes per series (tracemalloc) for paid-telemetry's instruments vs raw OTel instruments.

    ``count`` stays under OTel's default cardinality limit (2000 per instrument without a view):
    past it the raw instruments fold every new series into one overflow point and look free.

    Each series: one agent-run counter point and one duration histogram point (its 14 buckets),
    recorded through ``pt.runtime.current()``'s cached label sets or with raw attribute dicts.
    """
    handle = pt.configure(exporter="none", metric_readers=[InMemoryMetricReader()], handle_sigterm=False,
                          cardinality_limit=count + 10)
    meter = handle.meter_provider.get_meter("raw")
    raw_runs = meter.create_counter("raw_agent_runs")
    raw_dur = meter.create_histogram("raw_duration", unit="s",
                                     explicit_bucket_boundaries_advisory=cat.AGENT_RUN_DURATION.buckets)
    t = pt.runtime.current()

    def measure(record: Callable[[int], None]) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            record(i)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used / count

    def ours(i: int) -> None:
        t.metrics.agent_runs.add(1, t.metrics.run_labels.get((f"m{i}", "coder", "completed")))
        t.metrics.agent_duration.record(1.5, t.metrics.run_hist_labels.get((f"m{i}", "coder")))

    def raw(i: int) -> None:
        raw_runs.add(1, {"project_id": f"r{i}", "agent_type": "coder", "status": "completed"})
        raw_dur.record(1.5, {"project_id": f"r{i}", "agent_type": "coder"})

    raw_b = measure(raw)
    ours_b = measure(ours)
    pt.shutdown()
    return {"series": count, "raw_otel_bytes": raw_b, "paid_telemetry_bytes": ours_b, "ratio": ours_b / raw_b}


SECTIONS = ("record", "record_log", "endpoint", "idle", "collector", "temporal", "memory", "genai")


def main(argv: list[str]) -> None:
    unknown = set(argv) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    sections = set(argv) or set(SECTIONS)
    print(f"# paid-telemetry {pt.__version__} on Python {platform.python_version()}, {platform.machine()}, "
          f"{platform.processor() or platform.platform()}")
    if "record" in sections:
        r = bench_record()
        print("\n## One agent-run record (span + runs counter + 2 histograms + 2 token counters + cost)")
        print(f"raw OTel SDK calls         : {r['raw_otel_us']:7.1f} us")
        print(f"paid_telemetry.agent_run   : {r['paid_telemetry_us']:7.1f} us  "
              f"ratio {r['ratio']:.2f}x (target <= 1.3x)")
        print(f"  with genai-prices pricing: {r['paid_telemetry_priced_us']:7.1f} us  ratio {r['ratio_priced']:.2f}x")
    if "record_log" in sections:
        r = bench_record_log()
        print("\n## One agent-run record + one structlog JSON line inside it (trace stamping)")
        print(f"raw OTel record                       : {r['raw_otel_us']:7.1f} us")
        print(f"raw OTel record + plain structlog line: {r['raw_plus_plain_line_us']:7.1f} us")
        print(f"agent_run (+ its own run-end line)    : {r['paid_telemetry_us']:7.1f} us")
        print(f"agent_run + stamped JSON line         : {r['paid_telemetry_line_us']:7.1f} us  "
              f"ratio {r['ratio_vs_raw']:.2f}x vs raw record, {r['ratio_vs_raw_plus_line']:.2f}x vs raw + plain line"
              f" (the line adds {r['line_cost_us']:.1f} us)")
    if "endpoint" in sections:
        print("\n## Embedded /metrics endpoint vs the stock OTel exporter and prometheus_client (fresh renders)")
        print("series | ours render ms | ours fresh scrape ms | OpenMetrics ms | reused-body scrape ms "
              "| reuse window ms | stock OTel exporter ms | prometheus_client ms | bytes/series mem")
        for e in bench_endpoint():
            print(f"{e['series']:6d} | {e['ours_render_ms']:14.1f} | {e['ours_fresh_scrape_ms']:20.1f} | "
                  f"{e['ours_fresh_openmetrics_ms']:14.1f} | {e['ours_cached_scrape_ms']:21.1f} | "
                  f"{e['reuse_window_ms']:15.1f} | {e['stock_exporter_ms']:21.1f} | "
                  f"{e['prometheus_client_ms']:20.1f} | {e['memory_bytes_per_series']:.0f}")
    if "idle" in sections:
        r = bench_idle()
        print(f"\n## Idle CPU, nobody scraping, {r['series']} series (target < 0.5% of a core)")
        print(f"{r['cpu_s']:.3f} s CPU over {r['seconds']:.1f} s = {r['core_share_pct']:.3f}% of a core; "
              f"renders while idle: {r['renders'] - 1}")
    if "collector" in sections:
        print("\n## The collector's /metrics (SDK in otlp mode -> our collector build) vs the embedded endpoint")
        print("series | exposed | collector median ms | p95 ms | embedded median ms | ratio | push s "
              "| body bytes | collector RSS MiB | collector bytes/series")
        for e in bench_collector():
            print(f"{e['series']:6d} | {e['exposed']:7d} | {e['collector_ms_median']:19.1f} | "
                  f"{e['collector_ms_p95']:6.1f} | {e['embedded_ms_median']:18.1f} | "
                  f"{e['ratio_collector_to_embedded']:5.2f} | {e['push_s']:6.2f} | {e['bytes']:10d} | "
                  f"{e['collector_rss_mib']:17.1f} | {e['collector_bytes_per_series']:.0f}")
    if "temporal" in sections:
        print("\n## Temporal workflows per second, with and without TelemetryInterceptor (target >= 0.95)")
        r = bench_temporal()
        print(f"ratio telemetry/plain {r['ratio']:.3f} (paired {r['paired_ratio']:.3f}); "
              f"metrics-only/plain {r['ratio_metrics_only']:.3f} (paired {r['paired_ratio_metrics_only']:.3f})")
    if "memory" in sections:
        r = bench_memory()
        print("\n## Memory per series (counter point + duration histogram point, tracemalloc)")
        print(f"raw OTel instruments: {r['raw_otel_bytes']:7.0f} bytes/series")
        print(f"paid-telemetry      : {r['paid_telemetry_bytes']:7.0f} bytes/series  ratio {r['ratio']:.2f}x "
              f"(includes the cached label sets)")
    if "genai" in sections:
        import bench_genai  # bench/ is on sys.path when run as a script

        print("\n## GenAI span processor per LLM span vs the OpenAI v2 instrumentation's own cost (target < 10%)")
        bench_genai.report(bench_genai.run(2000, 7), 2000, 7)


if __name__ == "__main__":
    main(sys.argv[1:])
