"""A known workload touching every instrument of the catalogue, and the exact samples
Prometheus must show for it (used against the embedded endpoint and the full pipeline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import paid_telemetry as pt
from paid_telemetry import catalogue as cat

Labels = tuple[tuple[str, str], ...]


def lab(**kv: str) -> Labels:
    return tuple(sorted(kv.items()))


def record_known_workload() -> dict[str, dict[Labels, float]]:
    """Record the workload; return {sample name: {labels: value}} for counters and histogram counts."""
    for status, n in (("completed", 3), ("failed", 2), ("cancelled", 1)):
        for _ in range(n):
            try:
                with pt.agent_run(project_id="acme", agent_type="coder") as run:
                    run.iteration()
                    run.iteration()
                    run.record_tokens(provider="openai", model="gpt-4o", input_tokens=100, output_tokens=40,
                                      cost_cents=2.0)
                    run.record_tokens(provider="anthropic", model="claude-sonnet-4-5", input_tokens=10,
                                      output_tokens=5, cost_cents=0.5)
                    if status == "failed":
                        raise RuntimeError("boom")
                    if status == "cancelled":
                        run.status = "cancelled"
            except RuntimeError:
                pass
    pt.record_quality_score(0.35, project_id="acme", prompt_slug="fix-bug")
    pt.record_quality_score(0.95, project_id="acme", prompt_slug="fix-bug")
    with pt.workflow("agent_session"):
        pass
    try:
        with pt.workflow("agent_session"):
            raise ValueError
    except ValueError:
        pass
    with pt.external_call("github", "create_pull_request"):
        pass
    pt.record_pull_request("created", project_id="acme")
    pt.record_pull_request("merged", project_id="acme")
    pt.record_quality_score(7, project_id="acme", prompt_slug="fix-bug")  # dropped: out of range
    h = pt.runtime.current().metrics
    h.activity_executions.add(1, h.activity_outcome_labels.get(("run_agent", "completed")))
    h.activity_duration.record(0.2, h.activity_labels.get(("run_agent",)))
    h.activity_retries.add(1, h.activity_labels.get(("run_agent",)))
    return {
        "paid_agent_runs_total": {
            lab(project_id="acme", agent_type="coder", status="completed"): 3,
            lab(project_id="acme", agent_type="coder", status="failed"): 2,
            lab(project_id="acme", agent_type="coder", status="cancelled"): 1,
        },
        "paid_agent_run_duration_seconds_count": {lab(project_id="acme", agent_type="coder"): 6},
        "paid_agent_iterations_count": {lab(project_id="acme", agent_type="coder"): 6},
        "paid_agent_iterations_sum": {lab(project_id="acme", agent_type="coder"): 12},
        "paid_tokens_total": {
            lab(project_id="acme", provider="openai", model="gpt-4o", type="input"): 600,
            lab(project_id="acme", provider="openai", model="gpt-4o", type="output"): 240,
            lab(project_id="acme", provider="anthropic", model="claude-sonnet-4-5", type="input"): 60,
            lab(project_id="acme", provider="anthropic", model="claude-sonnet-4-5", type="output"): 30,
        },
        "paid_cost_cents_total": {
            lab(project_id="acme", provider="openai"): 12.0,
            lab(project_id="acme", provider="anthropic"): 3.0,
        },
        "paid_workflow_started_total": {lab(workflow_type="agent_session"): 2},
        "paid_workflow_completed_total": {
            lab(workflow_type="agent_session", status="completed"): 1,
            lab(workflow_type="agent_session", status="failed"): 1,
        },
        "paid_workflow_duration_seconds_count": {lab(workflow_type="agent_session"): 2},
        "paid_activity_executions_total": {lab(activity_type="run_agent", outcome="completed"): 1},
        "paid_activity_duration_seconds_count": {lab(activity_type="run_agent"): 1},
        "paid_activity_retries_total": {lab(activity_type="run_agent"): 1},
        "paid_quality_score_count": {lab(project_id="acme", prompt_slug="fix-bug"): 2},
        "paid_quality_score_sum": {lab(project_id="acme", prompt_slug="fix-bug"): 1.3},
        "paid_external_api_requests_total": {
            lab(service="github", operation="create_pull_request", outcome="success"): 1,
        },
        "paid_external_api_request_duration_seconds_count": {lab(service="github", operation="create_pull_request"): 1},
        "paid_pull_requests_total": {
            lab(project_id="acme", event="created"): 1, lab(project_id="acme", event="merged"): 1,
        },
        "paid_project_daily_budget_cents": {lab(project_id="acme"): 10_000},
        "paid_telemetry_dropped_records_total": {
            lab(instrument="paid_quality_score", reason="out_of_range"): 1,
        },
    }


# quality-score buckets cumulated for 0.35 and 0.95
QUALITY_BUCKETS = {"0.1": 0, "0.2": 0, "0.3": 0, "0.4": 1, "0.5": 1, "0.6": 1, "0.7": 1, "0.8": 1, "0.9": 1,
                   "1.0": 2, "+Inf": 2}


def normalise_le(le: str) -> str:
    return "+Inf" if le == "+Inf" else repr(float(le))


def check_samples(
    samples: Mapping[str, Mapping[Labels, float]],
    expected: Mapping[str, Mapping[Labels, float]],
    buckets: Mapping[str, Mapping[Labels, Any]],
) -> None:
    """Assert exact names, label sets and values; and exact bucket boundaries for every histogram."""
    for name, series in expected.items():
        got = {k: v for k, v in samples.get(name, {}).items()}
        assert set(got) == set(series), f"{name}: label sets {sorted(got)} != {sorted(series)}"
        for labels, value in series.items():
            assert got[labels] == pytest.approx(value), (name, labels)
    for inst in cat.CATALOGUE:
        if inst.buckets is None:
            continue
        bucket_name = f"{inst.prometheus_name}_bucket"
        if bucket_name not in buckets:
            continue
        want = [normalise_le(str(b)) for b in inst.buckets] + ["+Inf"]
        for labels, les in buckets[bucket_name].items():
            assert sorted(les, key=_le_key) == want, (bucket_name, labels)
            assert {k for k, _ in labels} == set(inst.labels), (bucket_name, labels)
    quality = buckets["paid_quality_score_bucket"][lab(project_id="acme", prompt_slug="fix-bug")]
    assert {k: quality[k] for k in quality} == {normalise_le(k): v for k, v in QUALITY_BUCKETS.items()}
    for inst in cat.CATALOGUE:
        for series_name in inst.prometheus_series:
            if series_name in expected:
                for labels in expected[series_name]:
                    assert {k for k, _ in labels} == set(inst.labels), series_name


def _le_key(le: str) -> float:
    return float("inf") if le == "+Inf" else float(le)
