"""The GenAI span processor's cost per LLM span, next to the instrumentation's own cost per call.

    python bench/bench_genai.py [--calls 2000] [--rounds 7]

The real ``openai`` client (httpx in-process transport answering a fixed chat completion, so no
socket noise) is called inside an agent run, alternately uninstrumented and instrumented by
``opentelemetry-instrumentation-openai-v2`` (our processor enabled): instrumented - plain is the
instrumentation's cost plus ours. Ours alone is measured directly: the processor's ``on_start`` +
``on_end`` replayed on the real spans that run produced (tokens counted, cost priced, run totals).
Target (issue 14): ours < 10% of the instrumentation's own.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from typing import Any

import httpx
import openai
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import paid_telemetry as pt
from paid_telemetry.genai_spans import GenAISpanProcessor

BODY = {
    "object": "chat.completion", "created": 0, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280},
}
_ids = itertools.count()
MSG: Any = [{"role": "user", "content": "hi"}]


class NullExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Keep(SpanProcessor):
    """Keeps the live spans, to replay them through a processor afterwards."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if len(self.spans) < 5000:
            self.spans.append(span)


def client() -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:  # a distinct response id per call, as real ones
        body = json.dumps({**BODY, "id": f"chatcmpl-{next(_ids)}"}).encode()
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    transport = httpx.MockTransport(answer)
    return openai.OpenAI(base_url="http://llm.invalid/v1", api_key="x", max_retries=0,
                         http_client=httpx.Client(transport=transport))


def calls_us(c: openai.OpenAI, n: int) -> float:
    with pt.agent_run("bench", "bench"):
        start = time.perf_counter()
        for _ in range(n):
            c.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        return (time.perf_counter() - start) / n * 1e6


def processor_us(spans: list[Any], rounds: int) -> float:
    llm = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    readable = [s._readable_span() for s in llm]
    results = []
    with pt.agent_run("bench", "bench"):
        for _ in range(rounds):
            proc = GenAISpanProcessor()  # fresh: a replayed response id would be skipped as a duplicate
            start = time.perf_counter()
            for live, done in zip(llm, readable, strict=True):
                proc.on_start(live)
                proc.on_end(done)
            results.append((time.perf_counter() - start) / len(llm) * 1e6)
    return statistics.median(results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    keep = Keep()
    handle = pt.configure(exporter="none", handle_sigterm=False, metric_readers=[InMemoryMetricReader()],
                          span_processors=[keep, BatchSpanProcessor(NullExporter())])
    c = client()
    instrumentor = OpenAIInstrumentor()
    kw = {"tracer_provider": handle.tracer_provider, "meter_provider": handle.meter_provider}
    plain, instrumented = [], []
    calls_us(c, 200)  # warm-up: imports, genai-prices table, caches
    for _ in range(args.rounds):
        plain.append(calls_us(c, args.calls))
        instrumentor.instrument(**kw)
        keep.spans.clear()
        instrumented.append(calls_us(c, args.calls))
        instrumentor.uninstrument()
    spans = list(keep.spans)
    ours = processor_us(spans, args.rounds)
    p, i = statistics.median(plain), statistics.median(instrumented)
    instrumentation = i - p - ours
    print(f"python {platform.python_version()}, {platform.machine()}, openai {openai.__version__}, "
          f"{args.rounds} rounds x {args.calls} calls, medians")
    print(f"  client call, uninstrumented                     {p:8.1f} us")
    print(f"  client call, instrumented + paid processor      {i:8.1f} us")
    print(f"  instrumentation's own cost per call (i - p - ours) {instrumentation:6.1f} us")
    print(f"  paid GenAI processor per LLM span (on_start+on_end) {ours:5.1f} us")
    ratio = ours / instrumentation if instrumentation > 0 else float("inf")
    print(f"  processor / instrumentation                      {ratio:8.1%}  (target < 10%)")
    pt.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
