"""LLM usage from GenAI spans, proven with the real clients and instrumentations.

The real ``openai`` client instrumented by ``opentelemetry-instrumentation-openai-v2`` and the real
``anthropic`` client instrumented by OpenLLMetry's ``opentelemetry-instrumentation-anthropic`` (plus
the anthropic SDK's own span) call a small OpenAI/Anthropic-compatible server on 127.0.0.1; the
counted tokens and cost must equal genai-prices' own ``calc_price`` for the usage the server reported.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from genai_prices import Usage, calc_price
from opentelemetry import baggage, context
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

import paid_telemetry as pt
from paid_telemetry.catalogue import GENAI_TOKEN_USAGE
from paid_telemetry.settings import resolve
from tests.conftest import Recorded, make_recorded
from tests.llm_server import LLMServer

_n = itertools.count()
MSG = [{"role": "user", "content": "hi"}]


def project() -> str:
    """A fresh project per test: the module shares one cumulative reader."""
    return f"proj-{next(_n)}"


def cents(provider: str, model: str, **usage: int) -> float:
    return float(calc_price(Usage(**usage), model_ref=model, provider_id=provider).total_price * Decimal(100))


@pytest.fixture(scope="module")
def rec() -> Iterator[Recorded]:
    r = make_recorded()
    kw = {"tracer_provider": r.handle.tracer_provider, "meter_provider": r.handle.meter_provider}
    OpenAIInstrumentor().instrument(**kw)
    AnthropicInstrumentor().instrument(**kw)
    yield r
    OpenAIInstrumentor().uninstrument()
    AnthropicInstrumentor().uninstrument()
    pt.shutdown()


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMServer]:
    with LLMServer() as s:
        yield s


@pytest.fixture
def client(llm: LLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.url + "/v1", api_key="test", max_retries=0)


def tokens(rec: Recorded, proj: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for key, value in rec.points("paid_tokens").items():
        labels = dict(key)
        if labels["project_id"] == proj:
            out[(labels["provider"], labels["model"], labels["type"])] = value
    return out


def dropped(rec: Recorded, instrument: str, reason: str) -> float:
    return rec.value("paid_telemetry_dropped_records", instrument=instrument, reason=reason) or 0


def scopes_of(rec: Recorded, metric: str) -> dict[str, int]:
    """Data points of ``metric`` per instrumentation scope (who emitted it)."""
    out: dict[str, int] = {}
    data = rec.reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metric:
                    out[sm.scope.name] = out.get(sm.scope.name, 0) + len(m.data.data_points)
    return out


def test_chat_in_a_run_counts_exact_tokens_and_genai_prices_cost(rec: Recorded, client: openai.OpenAI) -> None:
    p = project()
    with pt.agent_run(p, "support") as run:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={
            "x-usage": "1200,80", "x-response-model": "gpt-4o-mini-2024-07-18"})
        client.chat.completions.create(model="gpt-4o", messages=MSG, extra_headers={"x-usage": "50,7"})
    assert tokens(rec, p) == {
        ("openai", "gpt-4o-mini-2024-07-18", "input"): 1200, ("openai", "gpt-4o-mini-2024-07-18", "output"): 80,
        ("openai", "gpt-4o", "input"): 50, ("openai", "gpt-4o", "output"): 7,
    }
    expected = cents("openai", "gpt-4o-mini-2024-07-18", input_tokens=1200, output_tokens=80) + cents(
        "openai", "gpt-4o", input_tokens=50, output_tokens=7)
    assert rec.value("paid_cost_cents", project_id=p, provider="openai") == pytest.approx(expected, rel=1e-12)
    assert (run.input_tokens, run.output_tokens) == (1250, 87)
    assert run.cost_cents == pytest.approx(expected, rel=1e-12)
    run_span = next(s for s in rec.spans() if s.attributes.get("paid.agent_run.id") == run.run_id)
    assert run_span.attributes["gen_ai.usage.input_tokens"] == 1250
    assert run_span.attributes["paid.cost_cents"] == pytest.approx(expected, rel=1e-12)


def test_streaming_with_usage_counts_and_without_usage_counts_a_drop(rec: Recorded, client: openai.OpenAI) -> None:
    p = project()
    before = dropped(rec, "paid_tokens", "no_usage")
    with pt.agent_run(p):
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_headers={"x-usage": "300,40"})
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hello"
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                extra_headers={"x-usage": "999,999"}):
            pass
    assert tokens(rec, p) == {("openai", "gpt-4o-mini", "input"): 300, ("openai", "gpt-4o-mini", "output"): 40}
    assert rec.value("paid_cost_cents", project_id=p, provider="openai") == pytest.approx(
        cents("openai", "gpt-4o-mini", input_tokens=300, output_tokens=40), rel=1e-12)
    assert dropped(rec, "paid_tokens", "no_usage") == before + 1


def test_error_response_counts_nothing_but_a_no_usage_drop(rec: Recorded, client: openai.OpenAI) -> None:
    p = project()
    before = dropped(rec, "paid_tokens", "no_usage")
    with pytest.raises(openai.BadRequestError), pt.agent_run(p) as run:
        client.chat.completions.create(model="error-model", messages=MSG)
    assert run.status == "failed"
    assert tokens(rec, p) == {}
    assert rec.value("paid_cost_cents", project_id=p, provider="openai") is None
    assert dropped(rec, "paid_tokens", "no_usage") == before + 1


def test_unknown_model_counts_tokens_without_cost(rec: Recorded, client: openai.OpenAI) -> None:
    p = project()
    before = dropped(rec, "paid_cost_cents", "unpriced_model")
    with pt.agent_run(p) as run:
        client.chat.completions.create(model="house-model-7", messages=MSG, extra_headers={"x-usage": "11,22"})
    assert tokens(rec, p) == {("openai", "house-model-7", "input"): 11, ("openai", "house-model-7", "output"): 22}
    assert rec.value("paid_cost_cents", project_id=p, provider="openai") is None
    assert dropped(rec, "paid_cost_cents", "unpriced_model") == before + 1
    assert (run.input_tokens, run.cost_cents) == (11, 0)


async def test_concurrent_calls_are_attributed_to_their_own_runs(rec: Recorded, llm: LLMServer) -> None:
    aclient = openai.AsyncOpenAI(base_url=llm.url + "/v1", api_key="test", max_retries=0)
    projects = [project() for _ in range(3)]

    async def agent(i: int) -> pt.AgentRun:
        proj = projects[i % 3]
        async with pt.agent_run(proj, "worker") as run:
            for j in range(2):  # interleaved with the other runs' calls (the server delays each)
                await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={
                    "x-usage": f"{100 * (i + 1) + j},{i + 1}", "x-delay": "0.05"})
            if i % 2:
                stream = await aclient.chat.completions.create(
                    model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True},
                    extra_headers={"x-usage": f"{1000 * (i + 1)},0"})
                async for _ in stream:
                    await asyncio.sleep(0)
        return run

    runs = await asyncio.gather(*(agent(i) for i in range(6)))
    for i, run in enumerate(runs):
        want = sum(100 * (i + 1) + j for j in range(2)) + (1000 * (i + 1) if i % 2 else 0)
        assert run.input_tokens == want, i
        assert run.output_tokens == 2 * (i + 1)
    for k, proj in enumerate(projects):
        members = [i for i in range(6) if i % 3 == k]
        assert tokens(rec, proj)[("openai", "gpt-4o-mini", "input")] == sum(runs[i].input_tokens for i in members)
        assert rec.value("paid_cost_cents", project_id=proj, provider="openai") == pytest.approx(
            sum(runs[i].cost_cents for i in members), rel=1e-12)
    await aclient.close()


def test_outside_a_run_usage_goes_to_the_baggage_project_else_unassigned(
    rec: Recorded, client: openai.OpenAI
) -> None:
    p = project()
    unassigned = tokens(rec, "unassigned").get(("openai", "gpt-4o-mini", "input"), 0)
    token = context.attach(baggage.set_baggage("paid.project_id", p))
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-usage": "70,3"})
    finally:
        context.detach(token)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-usage": "5,1"})
    assert tokens(rec, p) == {("openai", "gpt-4o-mini", "input"): 70, ("openai", "gpt-4o-mini", "output"): 3}
    assert tokens(rec, "unassigned")[("openai", "gpt-4o-mini", "input")] == unassigned + 5


def test_a_call_recorded_by_hand_too_is_counted_once(rec: Recorded, client: openai.OpenAI) -> None:
    p = project()
    with pt.agent_run(p) as run:
        # after the call (its span has ended): the hand record is recognised as the same call
        r = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-usage": "400,20"})
        assert r.usage is not None
        run.record_tokens(provider="openai", model="gpt-4o-mini", input_tokens=r.usage.prompt_tokens,
                          output_tokens=r.usage.completion_tokens)
        # during a stream (its span still open): the span is recognised when it ends
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_headers={"x-usage": "60,6"})
        for chunk in stream:
            if chunk.usage is not None:
                run.record_tokens(provider="openai", model="gpt-4o-mini", input_tokens=60, output_tokens=6)
        # a different call recorded by hand only (another client) is counted
        run.record_tokens(provider="openai", model="gpt-4o-mini", input_tokens=1, output_tokens=1)
    assert tokens(rec, p) == {("openai", "gpt-4o-mini", "input"): 461, ("openai", "gpt-4o-mini", "output"): 27}
    assert (run.input_tokens, run.output_tokens) == (461, 27)


def test_anthropic_with_openllmetry_counts_cache_tokens_once_priced_like_genai_prices(
    rec: Recorded, llm: LLMServer
) -> None:
    """OpenLLMetry's span and the anthropic SDK's own span describe one call: counted once."""
    p = project()
    client = anthropic.Anthropic(base_url=llm.url, api_key="test", max_retries=0)
    with pt.agent_run(p) as run:
        client.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=MSG,  # type: ignore[arg-type]
                               extra_headers={"x-usage": "1000,50,200,300"})
    llm_spans = [s for s in rec.spans() if s.attributes.get("gen_ai.operation.name") == "chat"
                 and s.attributes.get("gen_ai.provider.name") == "anthropic" and s.parent
                 and s.parent.span_id == run._span.get_span_context().span_id]
    assert {s.instrumentation_scope.name for s in llm_spans} >= {"opentelemetry.instrumentation.anthropic"}
    model = "claude-3-5-haiku-latest"
    assert tokens(rec, p) == {("anthropic", model, "input"): 500, ("anthropic", model, "cache_read"): 200,
                              ("anthropic", model, "cache_write"): 300, ("anthropic", model, "output"): 50}
    want = cents("anthropic", model, input_tokens=1000, cache_read_tokens=200, cache_write_tokens=300,
                 output_tokens=50)
    assert rec.value("paid_cost_cents", project_id=p, provider="anthropic") == pytest.approx(want, rel=1e-12)
    assert run.input_tokens == 1000


def test_instrumentations_metrics_are_not_emitted_twice(rec: Recorded, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG, extra_headers={"x-usage": "3,3"})
    for metric in ("gen_ai.client.token.usage", "gen_ai.client.operation.duration"):
        emitters = scopes_of(rec, metric)
        assert "paid_telemetry" not in emitters
        assert "opentelemetry.util.genai.handler" in emitters  # the OpenAI v2 instrumentation's own


# -- spans from an instrumentation without metrics, and the older attribute generation -----------
@pytest.fixture
def own() -> Iterator[Recorded]:
    r = make_recorded()
    yield r
    pt.shutdown()


def llm_span(rec: Recorded, attrs: dict[str, Any], *, scope: str = "legacy.llm") -> None:
    tracer = rec.handle.tracer_provider.get_tracer(scope)
    with tracer.start_as_current_span("chat", attributes=attrs):
        pass


def test_older_attribute_generation_and_provider_names_are_normalised(own: Recorded) -> None:
    with pt.agent_run("p-old"):
        # OpenLLMetry before gen_ai.operation.name / gen_ai.usage.input_tokens existed
        llm_span(own, {"gen_ai.system": "OpenAI", "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o",
                       "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 2})
        llm_span(own, {"gen_ai.system": "az.ai.openai", "gen_ai.operation.name": "chat",
                       "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 20,
                       "gen_ai.usage.output_tokens": 4})
        llm_span(own, {"gen_ai.provider.name": "gcp.vertex_ai", "gen_ai.operation.name": "generate_content",
                       "gen_ai.request.model": "gemini-2.5-pro", "gen_ai.usage.input_tokens": 30,
                       "gen_ai.usage.output_tokens": 6})
        # an agent span carrying totals is not an LLM call
        llm_span(own, {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 999})
    assert {(dict(k)["provider"], dict(k)["type"]): v for k, v in own.points("paid_tokens").items()} == {
        ("openai", "input"): 10, ("openai", "output"): 2, ("azure", "input"): 20, ("azure", "output"): 4,
        ("google", "input"): 30, ("google", "output"): 6,
    }
    assert own.value("paid_cost_cents", project_id="p-old", provider="azure") == pytest.approx(
        cents("azure", "gpt-4o", input_tokens=20, output_tokens=4), rel=1e-12)
    assert own.value("paid_cost_cents", project_id="p-old", provider="google") == pytest.approx(
        cents("google", "gemini-2.5-pro", input_tokens=30, output_tokens=6), rel=1e-12)


def test_one_response_seen_by_two_providers_processors_counts_once(own: Recorded) -> None:
    """After a reconfigure an instrumentation may still hold the first (global) tracer provider,
    whose processor is another GenAISpanProcessor: sibling spans of one call still count once."""
    from opentelemetry.sdk.trace import TracerProvider

    from paid_telemetry.genai_spans import GenAISpanProcessor

    old = TracerProvider()
    old.add_span_processor(GenAISpanProcessor())
    attrs = {"gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat",
             "gen_ai.request.model": "claude-3-5-haiku-latest", "gen_ai.response.id": "msg_twice",
             "gen_ai.usage.input_tokens": 9, "gen_ai.usage.output_tokens": 1}
    with pt.agent_run("p-two") as run, own.handle.tracer.start_as_current_span("outer"):
        llm_span(own, attrs)
        with old.get_tracer("sdk").start_as_current_span("anthropic.messages.create", attributes=attrs):
            pass
    assert run.input_tokens == 9
    assert own.value("paid_tokens", project_id="p-two", provider="anthropic",
                     model="claude-3-5-haiku-latest", type="input") == 9


def test_hand_record_while_the_llm_span_is_current_marks_it(own: Recorded) -> None:
    tracer = own.handle.tracer_provider.get_tracer("wrapper.llm")
    attrs = {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    with pt.agent_run("p-mark") as run:
        with tracer.start_as_current_span("chat gpt-4o", attributes=attrs) as span:
            run.record_tokens(provider="openai", model="gpt-4o", input_tokens=5, output_tokens=5)
            span.set_attributes({"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 7})
        llm_span(own, {**attrs, "gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 3})  # not marked
    assert own.value("paid_tokens", project_id="p-mark", provider="openai", model="gpt-4o", type="input") == 8
    assert (run.input_tokens, run.output_tokens) == (8, 8)


def test_span_project_attribute_and_int_project_ids(own: Recorded) -> None:
    attrs = {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
             "gen_ai.usage.input_tokens": 4, "gen_ai.usage.output_tokens": 1}
    with pt.agent_run(45) as run:
        llm_span(own, {**attrs, "paid.project_id": "45"})  # the run's own project, as a string
        llm_span(own, {**attrs, "paid.project_id": "other"})  # someone else's call inside the run
    assert run.input_tokens == 4
    assert own.value("paid_tokens", project_id="45", provider="openai", model="gpt-4o", type="input") == 4
    assert own.value("paid_tokens", project_id="other", provider="openai", model="gpt-4o", type="input") == 4


def test_semconv_metrics_are_emitted_for_an_instrumentation_without_them(own: Recorded) -> None:
    llm_span(own, {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                   "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
                   "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 5})
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06"}
    usage = own.points("gen_ai.client.token.usage")
    assert {k: (p.count, p.sum) for k, p in usage.items()} == {
        tuple(sorted({**base, "gen_ai.token.type": "input"}.items())): (1, 100),
        tuple(sorted({**base, "gen_ai.token.type": "output"}.items())): (1, 5),
    }
    point = usage[tuple(sorted({**base, "gen_ai.token.type": "input"}.items()))]
    assert tuple(point.explicit_bounds) == GENAI_TOKEN_USAGE.buckets
    (duration,) = own.points("gen_ai.client.operation.duration").values()
    assert duration.count == 1 and 0 <= duration.sum < 1


def test_genai_spans_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve({"PAID_TELEMETRY_GENAI_SPANS": "0"}).genai_spans is False
    assert resolve({}).genai_spans is True
    off = make_recorded(genai_spans=False)
    try:
        with pt.agent_run("p-off") as run:
            llm_span(off, {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat",
                           "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100})
        assert off.points("paid_tokens") == {}
        assert run.input_tokens == 0
    finally:
        pt.shutdown()
