"""GenAI spans to Prometheus end to end: the real openai client instrumented by openai-v2, the SDK
in otlp mode, our collector build, Prometheus; exact tokens and genai-prices cost per project."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

import paid_telemetry as pt
from paid_telemetry_ops.stack import Stack
from tests.llm_server import LLMServer
from tests.promapi import query, wait_for

pytestmark = pytest.mark.e2e
JOB = "paid-genai-e2e"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def instrumented(stack: Stack) -> Iterator[pt.Telemetry]:
    handle = pt.configure(exporter="otlp", otlp_endpoint=stack.otlp_endpoint, metric_export_interval_ms=1000,
                          service_name=JOB, handle_sigterm=False)
    OpenAIInstrumentor().instrument(tracer_provider=handle.tracer_provider, meter_provider=handle.meter_provider)
    yield handle
    OpenAIInstrumentor().uninstrument()
    pt.shutdown()


def test_llm_usage_reaches_prometheus_per_project(stack: Stack, instrumented: pt.Telemetry) -> None:
    calls = {"genai-a": [(1200, 80), (300, 40)], "genai-b": [(50, 5)]}
    with LLMServer() as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="test", max_retries=0)
        for project, usages in calls.items():
            with pt.agent_run(project, "e2e"):
                for tin, tout in usages:
                    client.chat.completions.create(model="gpt-4o-mini", messages=MSG,  # type: ignore[arg-type]
                                                   extra_headers={"x-usage": f"{tin},{tout}"})
                stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSG,  # type: ignore[arg-type]
                                                        stream=True, stream_options={"include_usage": True},
                                                        extra_headers={"x-usage": "10,1"})
                for _ in stream:
                    pass
    expected_tokens = {}
    expected_cents = {}
    for project, usages in calls.items():
        usages = [*usages, (10, 1)]
        expected_tokens[(project, "input")] = sum(u[0] for u in usages)
        expected_tokens[(project, "output")] = sum(u[1] for u in usages)
        expected_cents[project] = sum(
            float(calc_price(Usage(input_tokens=i, output_tokens=o), model_ref="gpt-4o-mini",
                             provider_id="openai").total_price * Decimal(100)) for i, o in usages)
    assert pt.force_flush()
    prom = stack.prometheus_url

    def tokens() -> dict[tuple[str, str], float] | None:
        rows = query(prom, f'paid_tokens_total{{job="{JOB}", provider="openai", model="gpt-4o-mini"}}')
        got = {(r["metric"]["project_id"], r["metric"]["type"]): float(r["value"][1]) for r in rows}
        return got if got == expected_tokens else None

    wait_for(tokens, timeout=40, what=f"paid_tokens_total == {expected_tokens}")
    rows = query(prom, f'paid_cost_cents_total{{job="{JOB}", provider="openai"}}')
    got = {r["metric"]["project_id"]: float(r["value"][1]) for r in rows}
    assert got.keys() == expected_cents.keys()
    for project, cents in expected_cents.items():
        assert got[project] == pytest.approx(cents, rel=1e-9)
    # the standard GenAI histogram arrives once: the instrumentation's, not a second copy of ours
    seen: list[object] = []

    def histogram() -> dict[str, float] | None:
        rows = query(prom, f'gen_ai_client_token_usage_count{{job="{JOB}"}}')
        seen[:] = [(r["metric"], r["value"][1]) for r in rows]
        got: dict[str, float] = {}
        for r in rows:
            key = r["metric"]["gen_ai_token_type"]
            got[key] = got.get(key, 0) + float(r["value"][1])
        return got if got == {"input": n_calls, "output": n_calls} else None

    n_calls = sum(len(u) + 1 for u in calls.values())  # + one stream per run
    try:
        wait_for(histogram, timeout=20, what=f"{n_calls} input and output gen_ai.client.token.usage records")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; series: {seen}") from None
