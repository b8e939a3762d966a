"""The core SDK on OTel's in-memory reader and exporter: names, labels, values, bad input."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.trace import StatusCode

import paid_telemetry as pt
from paid_telemetry import catalogue as cat
from paid_telemetry import settings as config
from tests.conftest import Recorded, make_recorded

REPO = Path(__file__).resolve().parents[1]
DROPPED = "paid_telemetry_dropped_records"


def test_completed_run_records_counter_histograms_and_span(recorded: Recorded) -> None:
    with pt.agent_run(project_id=42, agent_type="coder", run_id="run-1") as run:
        run.iteration()
        run.iteration()
        run.iteration()
        run.record_tokens(provider="openai", model="gpt-4o", input_tokens=1000, output_tokens=500, cost_cents=1.5)
    assert recorded.points("paid_agent_runs") == {
        (("agent_type", "coder"), ("project_id", "42"), ("status", "completed")): 1
    }
    dur = recorded.value("paid_agent_run_duration", project_id="42", agent_type="coder")
    assert dur.count == 1 and 0 <= dur.sum < 1
    assert tuple(dur.explicit_bounds) == (60, 120, 300, 600, 1200, 1800, 3600)
    it = recorded.value("paid_agent_iterations", project_id="42", agent_type="coder")
    assert (it.count, it.sum) == (1, 3)
    assert tuple(it.explicit_bounds) == (1, 2, 3, 5, 10, 15, 20)
    assert recorded.points("paid_tokens") == {
        (("model", "gpt-4o"), ("project_id", "42"), ("provider", "openai"), ("type", "input")): 1000,
        (("model", "gpt-4o"), ("project_id", "42"), ("provider", "openai"), ("type", "output")): 500,
    }
    assert recorded.points("paid_cost_cents") == {(("project_id", "42"), ("provider", "openai")): 1.5}
    (span,) = recorded.spans()
    assert span.name == "invoke_agent coder"
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "invoke_agent"
    assert attrs["gen_ai.agent.name"] == "coder"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.usage.input_tokens"] == 1000
    assert attrs["gen_ai.usage.output_tokens"] == 500
    assert attrs["paid.agent_run.id"] == "run-1"
    assert attrs["paid.project_id"] == "42"
    assert attrs["paid.agent_run.status"] == "completed"
    assert span.status.status_code is StatusCode.UNSET
    # ids never become labels
    assert all("run-1" not in str(k) for k in recorded.points("paid_agent_runs"))


def test_failed_run_reraises_untouched_and_marks_span(recorded: Recorded) -> None:
    boom = ValueError("model refused")
    with pytest.raises(ValueError) as info, pt.agent_run(project_id="p", agent_type="coder"):
        raise boom
    assert info.value is boom
    assert recorded.value("paid_agent_runs", project_id="p", agent_type="coder", status="failed") == 1
    (span,) = recorded.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    assert recorded.value("paid_agent_run_duration", project_id="p", agent_type="coder").count == 1


async def test_cancelled_async_run(recorded: Recorded) -> None:
    started = asyncio.Event()

    async def agent() -> None:
        async with pt.agent_run(project_id="p", agent_type="slow"):
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(agent())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorded.points("paid_agent_runs") == {
        (("agent_type", "slow"), ("project_id", "p"), ("status", "cancelled")): 1
    }


def test_status_can_be_set_by_caller(recorded: Recorded) -> None:
    with pt.agent_run(project_id="p", agent_type="a") as run:
        run.status = "failed"
    assert recorded.value("paid_agent_runs", project_id="p", agent_type="a", status="failed") == 1


def test_decorators_for_every_function_kind_take_project_from_argument(recorded: Recorded) -> None:
    @pt.agent_run(agent_type="sync")
    def sync_agent(project_id: str, x: int) -> int:
        run = pt.current_run()
        assert run is not None and run.project_id == project_id
        return x * 2

    @pt.agent_run(agent_type="async")
    async def async_agent(project_id: str) -> str:
        return project_id

    @pt.agent_run(project_id="fixed", agent_type="gen")
    def gen_agent(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    @pt.agent_run(agent_type="agen")
    async def agen_agent(project_id: str):  # type: ignore[no-untyped-def]
        for i in range(2):
            yield i

    async def consume() -> list[int]:
        return [i async for i in agen_agent(project_id="pa")]

    assert sync_agent("p1", 2) == 4
    assert sync_agent(project_id="p2", x=1) == 2
    assert asyncio.run(async_agent("p3")) == "p3"
    assert list(gen_agent(3)) == [0, 1, 2]
    assert asyncio.run(consume()) == [0, 1]
    assert pt.current_run() is None
    assert recorded.points("paid_agent_runs") == {
        (("agent_type", "sync"), ("project_id", "p1"), ("status", "completed")): 1,
        (("agent_type", "sync"), ("project_id", "p2"), ("status", "completed")): 1,
        (("agent_type", "async"), ("project_id", "p3"), ("status", "completed")): 1,
        (("agent_type", "gen"), ("project_id", "fixed"), ("status", "completed")): 1,
        (("agent_type", "agen"), ("project_id", "pa"), ("status", "completed")): 1,
    }
    assert len(recorded.spans()) == 5


def test_cost_is_priced_with_genai_prices(recorded: Recorded) -> None:
    cases = [("openai", "gpt-4o", 1234, 567), ("anthropic", "claude-sonnet-4-5", 250_000, 1000),
             ("anthropic", "claude-sonnet-4-5", 1000, 1000)]
    for i, (provider, model, tin, tout) in enumerate(cases):
        with pt.agent_run(project_id=f"p{i}", agent_type="a") as run:
            run.record_tokens(provider=provider, model=model, input_tokens=tin, output_tokens=tout)
        expected = calc_price(Usage(input_tokens=tin, output_tokens=tout), model_ref=model, provider_id=provider)
        cents = recorded.value("paid_cost_cents", project_id=f"p{i}", provider=provider)
        assert cents == pytest.approx(float(expected.total_price * Decimal(100)), rel=1e-9), (provider, model)
    assert recorded.points(DROPPED) == {}


def test_unknown_model_records_tokens_but_no_cost(recorded: Recorded) -> None:
    pt.record_token_usage(provider="acme-ai", model="mystery-1", input_tokens=10, output_tokens=5, project_id="p")
    assert recorded.value("paid_tokens", project_id="p", provider="acme-ai", model="mystery-1", type="input") == 10
    assert recorded.points("paid_cost_cents") == {}
    assert recorded.value(DROPPED, instrument="paid_cost_cents", reason="unpriced_model") == 1


def test_standalone_helpers(recorded: Recorded) -> None:
    pt.record_quality_score(0.75, project_id="p", prompt_slug="fix-bug")
    pt.record_pull_request("created", project_id="p")
    pt.record_pull_request("merged", project_id="p")
    with pt.external_call("github", "create_pull_request"):
        pass
    with pytest.raises(TimeoutError), pt.external_call("openai", "chat"):
        raise TimeoutError
    with pt.external_call("github", "merge") as call:
        call.outcome = "error"  # an HTTP 5xx that did not raise

    @pt.workflow("nightly_report")
    def nightly() -> None:
        pass

    nightly()
    with pytest.raises(RuntimeError), pt.workflow("nightly_report"):
        raise RuntimeError
    q = recorded.value("paid_quality_score", project_id="p", prompt_slug="fix-bug")
    assert (q.count, q.sum) == (1, 0.75)
    assert tuple(q.explicit_bounds) == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert recorded.points("paid_pull_requests") == {
        (("event", "created"), ("project_id", "p")): 1, (("event", "merged"), ("project_id", "p")): 1,
    }
    assert recorded.points("paid_external_api_requests") == {
        (("operation", "create_pull_request"), ("outcome", "success"), ("service", "github")): 1,
        (("operation", "chat"), ("outcome", "error"), ("service", "openai")): 1,
        (("operation", "merge"), ("outcome", "error"), ("service", "github")): 1,
    }
    assert recorded.value("paid_external_api_request_duration", service="openai", operation="chat").count == 1
    assert recorded.points("paid_workflow_started") == {(("workflow_type", "nightly_report"),): 2}
    assert recorded.points("paid_workflow_completed") == {
        (("status", "completed"), ("workflow_type", "nightly_report")): 1,
        (("status", "failed"), ("workflow_type", "nightly_report")): 1,
    }
    assert recorded.value("paid_workflow_duration", workflow_type="nightly_report").count == 2


def test_quality_score_inside_run_takes_run_project(recorded: Recorded) -> None:
    with pt.agent_run(project_id="p9", agent_type="a") as run:
        run.record_quality(0.5, prompt_slug="s")
        pt.record_quality_score(0.25, prompt_slug="s")
        pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=3, cost_cents=0.1)
    assert recorded.value("paid_quality_score", project_id="p9", prompt_slug="s").count == 2
    assert recorded.value("paid_tokens", project_id="p9", provider="openai", model="gpt-4o", type="input") == 3


BAD_INPUTS = [
    ("negative tokens", lambda: pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=-5,
                                                      cost_cents=1, project_id="p"), "paid_tokens", "negative"),
    ("nan cost", lambda: pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=5,
                                               cost_cents=math.nan, project_id="p"), "paid_cost_cents", "not_finite"),
    ("inf tokens", lambda: pt.record_token_usage(provider="openai", model="gpt-4o", output_tokens=math.inf,
                                                 cost_cents=1, project_id="p"), "paid_tokens", "not_finite"),
    ("huge tokens", lambda: pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=10**15,
                                                  cost_cents=1, project_id="p"), "paid_tokens", "out_of_range"),
    ("string tokens", lambda: pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens="lots",
                                                    cost_cents=1, project_id="p"), "paid_tokens", "wrong_type"),
    ("score above 1", lambda: pt.record_quality_score(1.5, prompt_slug="s", project_id="p"),
     "paid_quality_score", "out_of_range"),
    ("score None", lambda: pt.record_quality_score(None, prompt_slug="s", project_id="p"),  # type: ignore[arg-type]
     "paid_quality_score", "wrong_type"),
    ("empty project", lambda: pt.record_pull_request("created", project_id=""), "paid_pull_requests", "empty_label"),
    ("10 kB label", lambda: pt.record_pull_request("created", project_id="x" * 10_000),
     "paid_pull_requests", "label_too_long"),
    ("unknown event", lambda: pt.record_pull_request("exploded", project_id="p"), "paid_pull_requests",
     "invalid_value"),
    ("list label", lambda: pt.record_pull_request("created", project_id=["a"]), "paid_pull_requests", "wrong_type"),
]


@pytest.mark.parametrize(("case", "call", "instrument", "reason"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_counted_warned_once_and_never_raised(
    recorded: Recorded, caplog: pytest.LogCaptureFixture, case: str, call, instrument: str, reason: str  # type: ignore[no-untyped-def]
) -> None:
    with caplog.at_level(logging.WARNING, logger="paid_telemetry"):
        call()
        call()
    assert recorded.value(DROPPED, instrument=instrument, reason=reason) == 2
    warnings = [r for r in caplog.records if reason in r.getMessage()]
    assert len(warnings) == 1, case


def test_sanitised_labels_are_recorded(recorded: Recorded) -> None:
    pt.record_pull_request("created", project_id="")
    pt.record_pull_request("created", project_id="y" * 500)
    pt.record_pull_request("exploded", project_id="p")
    assert recorded.points("paid_pull_requests") == {
        (("event", "created"), ("project_id", "unknown")): 1,
        (("event", "created"), ("project_id", "y" * 128)): 1,
        (("event", "other"), ("project_id", "p")): 1,
    }


def test_strict_mode_raises(strict_recorded: Recorded) -> None:
    with pytest.raises(pt.TelemetryInputError, match="negative"):
        pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=-1, cost_cents=1, project_id="p")
    with pytest.raises(pt.TelemetryInputError, match="out_of_range"):
        pt.record_quality_score(2.0, prompt_slug="s", project_id="p")
    # unknown models are a fact of life, not a bug: counted but never raised
    pt.record_token_usage(provider="acme-ai", model="m", input_tokens=1, project_id="p")


def test_cardinality_budget_folds_overflow_and_counts_it() -> None:
    rec = make_recorded(cardinality_limit=10)
    try:
        for i in range(1000):
            with pt.agent_run(project_id=f"project-{i}", agent_type="coder"):
                pass
        runs = rec.points("paid_agent_runs")
        assert len(runs) == 11
        assert runs[(("agent_type", "_overflow"), ("project_id", "_overflow"), ("status", "completed"))] == 990
        assert rec.value(DROPPED, instrument="paid_agent_runs", reason="cardinality_overflow") == 990
        assert len(rec.handle.metrics.run_labels) <= 11
        assert len(rec.handle.metrics.known_projects) <= 10
    finally:
        pt.shutdown()


def test_budget_gauge_reports_configured_and_default_budgets() -> None:
    rec = make_recorded(budgets_cents={"big": 50_000}, default_budget_cents=2_500)
    try:
        pt.record_token_usage(provider="openai", model="gpt-4o", input_tokens=1, cost_cents=1, project_id="small")
        assert rec.points("paid_project_daily_budget_cents") == {
            (("project_id", "big"),): 50_000.0, (("project_id", "small"),): 2_500.0,
        }
    finally:
        pt.shutdown()


def test_unconfigured_sdk_is_a_silent_noop() -> None:
    pt.shutdown()
    with pt.agent_run(project_id="p", agent_type="a") as run:
        run.record_tokens(provider="openai", model="gpt-4o", input_tokens=1, output_tokens=1)
    assert run.status == "completed"


def test_configure_twice_replaces_the_previous_setup() -> None:
    first = make_recorded()
    second = make_recorded()
    try:
        with pt.agent_run(project_id="p", agent_type="a"):
            pass
        assert first.points("paid_agent_runs") == {}
        assert second.value("paid_agent_runs", project_id="p", agent_type="a", status="completed") == 1
    finally:
        pt.shutdown()


def test_settings_arguments_win_over_environment_over_defaults() -> None:
    env = {
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,team=agents",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "2500",
        "PAID_TELEMETRY_CARDINALITY_LIMIT": "50",
        "PAID_TELEMETRY_BUDGETS": "a=100,b=200.5",
        "PAID_TELEMETRY_STRICT": "true",
    }
    s = config.resolve(env, service_name="from-arg")
    assert s.service_name == "from-arg"
    assert s.exporter == "otlp"  # an OTLP endpoint makes otlp the default
    assert s.otlp_endpoint == "http://collector:4317"
    assert s.otlp_protocol == "http/protobuf"
    assert s.metric_export_interval_ms == 2500
    assert s.environment == "staging"
    assert s.resource_attributes["team"] == "agents"
    assert s.cardinality_limit == 50
    assert s.budgets_cents == {"a": 100.0, "b": 200.5}
    assert s.strict is True
    assert config.resolve({}).exporter == "prometheus"
    assert config.resolve({}).prometheus_host == "127.0.0.1"
    assert config.resolve(env, exporter="none").exporter == "none"
    with pytest.raises(ValueError):
        config.resolve({}, exporter="carrier-pigeon")


def test_shutdown_is_bounded_with_a_dead_collector() -> None:
    import time

    from paid_telemetry_ops.services import free_port

    dead = free_port()  # nothing listens here, outside the ephemeral range: no outgoing connection lands on it
    pt.configure(exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{dead}", handle_sigterm=False,
                 export_timeout_s=1.0, shutdown_timeout_s=2.0)
    for i in range(100):
        with pt.agent_run(project_id=f"p{i % 3}", agent_type="a"):
            pass
    start = time.monotonic()
    pt.shutdown()
    assert time.monotonic() - start < 3.0


def test_metrics_doc_is_generated_from_the_catalogue() -> None:
    assert (REPO / "docs" / "metrics.md").read_text() == cat.render_markdown()


def test_catalogue_prometheus_names_are_the_records() -> None:
    names = {i.name: i.prometheus_name for i in cat.CATALOGUE}
    assert names["paid_agent_runs"] == "paid_agent_runs_total"
    assert names["paid_agent_run_duration"] == "paid_agent_run_duration_seconds"
    assert names["paid_agent_iterations"] == "paid_agent_iterations"
    assert names["paid_tokens"] == "paid_tokens_total"
    assert names["paid_cost_cents"] == "paid_cost_cents_total"
    assert names["paid_workflow_started"] == "paid_workflow_started_total"
    assert names["paid_workflow_completed"] == "paid_workflow_completed_total"
    assert names["paid_quality_score"] == "paid_quality_score"
    assert len(set(names.values())) == len(names)


FOREIGN_PROVIDERS = """
import logging, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
reader, spans = InMemoryMetricReader(), InMemorySpanExporter()
tp = TracerProvider(); tp.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tp); metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(message)s")
import paid_telemetry as pt
handle = pt.configure(exporter="none", handle_sigterm=False)
with pt.agent_run(project_id="p", agent_type="a"):
    pass
names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
print("METRICS", "paid_agent_runs" in names, "SPANS", [s.name for s in spans.get_finished_spans()],
      "OWNS", handle.owns_providers)
"""


def test_providers_installed_by_another_tool_are_reused() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FOREIGN_PROVIDERS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "reusing the global tracer and meter providers another tool installed" in out.stdout
    assert "METRICS True SPANS ['invoke_agent a'] OWNS False" in out.stdout


def test_configure_leaves_the_process_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's self-metrics are switched on for our processors only, not for the whole process."""
    monkeypatch.delenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", raising=False)
    before = dict(os.environ)
    rec = make_recorded()
    try:
        with pt.agent_run(project_id="p", agent_type="a"):
            pass
        assert dict(os.environ) == before
        names = {m.name for rm in rec.reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics}
        # The per-span counters cost ~40 µs a run: off unless the user asks (next test); the
        # processors' per-batch accounting is what TelemetrySpansDropped reads.
        assert "otel.sdk.span.started" not in names
        assert "otel.sdk.span.live" not in names
    finally:
        pt.shutdown()


@pytest.mark.parametrize("value", ["true", "TRUE"])
def test_per_span_sdk_metrics_when_the_user_asks(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true (the SDK's own switch) turns our tracer's
    otel.sdk.span.started/live on too: 3 runs started, none live after they end."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", value)
    rec = make_recorded()
    try:
        for _ in range(3):
            with pt.agent_run(project_id="p", agent_type="a"):
                pass
        points = {m.name: [(dict(p.attributes), p.value) for p in m.data.data_points]
                  for rm in rec.reader.get_metrics_data().resource_metrics
                  for sm in rm.scope_metrics for m in sm.metrics if m.name.startswith("otel.sdk.span.")}
        assert points == {
            "otel.sdk.span.started": [({"otel.span.parent.origin": "none",
                                        "otel.span.sampling_result": "RECORD_AND_SAMPLE"}, 3)],
            "otel.sdk.span.live": [({"otel.span.sampling_result": "RECORD_AND_SAMPLE"}, 0)],
        }
        assert os.environ["OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"] == value
    finally:
        pt.shutdown()
