"""The one catalogue of Paid's instruments.

Code creates instruments from it, ``docs/metrics.md`` is generated from it, and the
tests, alert rules and dashboards are checked against it. Names are written so that
the OpenTelemetry-to-Prometheus translation (unit suffix, ``_total`` for counters)
yields exactly the names of RDR-011.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"  # observable gauge, read at collection time


_UNIT_SUFFIX = {"s": "seconds", "By": "bytes"}


@dataclass(frozen=True, slots=True)
class Instrument:
    """One metric: what it is called, what it means, and what it may be split by."""

    name: str
    kind: Kind
    unit: str
    description: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None

    @property
    def prometheus_name(self) -> str:
        """The metric family name Prometheus shows (histograms add _bucket/_sum/_count)."""
        name = self.name.replace(".", "_")
        suffix = _UNIT_SUFFIX.get(self.unit)
        if suffix and not name.endswith("_" + suffix):
            name = f"{name}_{suffix}"
        if self.kind is Kind.COUNTER:
            name += "_total"
        return name

    @property
    def prometheus_series(self) -> tuple[str, ...]:
        """Every sample name this instrument produces in Prometheus."""
        base = self.prometheus_name
        if self.kind is Kind.HISTOGRAM:
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)


AGENT_RUNS = Instrument(
    "paid_agent_runs", Kind.COUNTER, "",
    "Agent runs that ended, by final status (completed, failed, cancelled).",
    ("project_id", "agent_type", "status"),
)
AGENT_RUN_DURATION = Instrument(
    "paid_agent_run_duration", Kind.HISTOGRAM, "s",
    "Wall-clock duration of an agent run, from start to end whatever its status.",
    ("project_id", "agent_type"),
    (60, 120, 300, 600, 1200, 1800, 3600),
)
AGENT_ITERATIONS = Instrument(
    "paid_agent_iterations", Kind.HISTOGRAM, "",
    "Iterations (LLM/tool loops) an agent run took.",
    ("project_id", "agent_type"),
    (1, 2, 3, 5, 10, 15, 20),
)
TOKENS = Instrument(
    "paid_tokens", Kind.COUNTER, "",
    "LLM tokens used, by type: input (not from or into a prompt cache), cache_read, cache_write, output.",
    ("project_id", "provider", "model", "type"),
)
COST_CENTS = Instrument(
    "paid_cost_cents", Kind.COUNTER, "",
    "LLM spend in US cents, given by the caller or priced with genai-prices.",
    ("project_id", "provider"),
)
WORKFLOW_STARTED = Instrument(
    "paid_workflow_started", Kind.COUNTER, "",
    "Workflow executions started (once per execution, never on replay).",
    ("workflow_type",),
)
WORKFLOW_COMPLETED = Instrument(
    "paid_workflow_completed", Kind.COUNTER, "",
    "Workflow executions that ended, by status "
    "(completed, failed, cancelled, continued_as_new, timed_out).",
    ("workflow_type", "status"),
)
WORKFLOW_DURATION = Instrument(
    "paid_workflow_duration", Kind.HISTOGRAM, "s",
    "Workflow execution duration in workflow time, start to end.",
    ("workflow_type",),
    (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
ACTIVITY_EXECUTIONS = Instrument(
    "paid_activity_executions", Kind.COUNTER, "",
    "Activity attempts that ended, by outcome (completed, failed, cancelled).",
    ("activity_type", "outcome"),
)
ACTIVITY_DURATION = Instrument(
    "paid_activity_duration", Kind.HISTOGRAM, "s",
    "Duration of one activity attempt.",
    ("activity_type",),
    (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600),
)
ACTIVITY_RETRIES = Instrument(
    "paid_activity_retries", Kind.COUNTER, "",
    "Activity attempts that were retries (attempt > 1).",
    ("activity_type",),
)
QUALITY_SCORE = Instrument(
    "paid_quality_score", Kind.HISTOGRAM, "",
    "Quality score of an agent's output, in [0, 1], by prompt.",
    ("project_id", "prompt_slug"),
    (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
EXTERNAL_REQUESTS = Instrument(
    "paid_external_api_requests", Kind.COUNTER, "",
    "Calls to external APIs (GitHub, LLM providers...), by outcome (success, error).",
    ("service", "operation", "outcome"),
)
EXTERNAL_DURATION = Instrument(
    "paid_external_api_request_duration", Kind.HISTOGRAM, "s",
    "Latency of external API calls.",
    ("service", "operation"),
    (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PULL_REQUESTS = Instrument(
    "paid_pull_requests", Kind.COUNTER, "",
    "Pull requests agents opened or got merged (event=created|merged).",
    ("project_id", "event"),
)
PROJECT_BUDGET = Instrument(
    "paid_project_daily_budget_cents", Kind.GAUGE, "",
    "Each project's daily LLM budget in US cents (configured; default 10000).",
    ("project_id",),
)
DROPPED_RECORDS = Instrument(
    "paid_telemetry_dropped_records", Kind.COUNTER, "",
    "Inputs paid-telemetry dropped, sanitised or folded instead of recording as given, by reason.",
    ("instrument", "reason"),
)

CATALOGUE: tuple[Instrument, ...] = (
    AGENT_RUNS, AGENT_RUN_DURATION, AGENT_ITERATIONS,
    TOKENS, COST_CENTS,
    WORKFLOW_STARTED, WORKFLOW_COMPLETED, WORKFLOW_DURATION,
    ACTIVITY_EXECUTIONS, ACTIVITY_DURATION, ACTIVITY_RETRIES,
    QUALITY_SCORE,
    EXTERNAL_REQUESTS, EXTERNAL_DURATION,
    PULL_REQUESTS, PROJECT_BUDGET,
    DROPPED_RECORDS,
)
BY_NAME: dict[str, Instrument] = {i.name: i for i in CATALOGUE}

# The OpenTelemetry GenAI semantic-convention client metrics, emitted from GenAI client spans
# (paid_telemetry.genai_spans) when the instrumentation that made the span does not emit them
# itself. Names, units, attributes and buckets are the semantic conventions', so stock GenAI
# dashboards work; they are not Paid's own metrics, hence not in CATALOGUE.
GENAI_TOKEN_USAGE = Instrument(
    "gen_ai.client.token.usage", Kind.HISTOGRAM, "{token}",
    "Tokens per GenAI operation, by gen_ai.token.type (input, output); semantic-convention metric.",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.token.type", "gen_ai.request.model",
     "gen_ai.response.model", "server.address", "server.port"),
    (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
GENAI_OPERATION_DURATION = Instrument(
    "gen_ai.client.operation.duration", Kind.HISTOGRAM, "s",
    "Duration of a GenAI operation (error.type set when it failed); semantic-convention metric.",
    ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
     "server.address", "server.port", "error.type"),
    (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92),
)
GENAI_SEMCONV: tuple[Instrument, ...] = (GENAI_TOKEN_USAGE, GENAI_OPERATION_DURATION)

# Closed sets of label values: anything else is sanitised to "other" and counted.
AGENT_STATUSES = ("completed", "failed", "cancelled")
# The types partition a call's tokens, so sum(paid_tokens_total) is every token once: "input" is
# input neither read from nor written to a prompt cache (all input when the caller gives no split).
# Reasoning tokens stay in "output": they are part of it and priced as output.
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write")
WORKFLOW_STATUSES = ("completed", "failed", "cancelled", "continued_as_new", "timed_out", "terminated")
ACTIVITY_OUTCOMES = ("completed", "failed", "cancelled")
EXTERNAL_OUTCOMES = ("success", "error")
PULL_REQUEST_EVENTS = ("created", "merged", "closed")

# Reasons for paid_telemetry_dropped_records_total{reason}.
DROP_REASONS = (
    "negative",          # a count/duration/cost below zero: dropped
    "not_finite",        # NaN or +-inf: dropped
    "wrong_type",        # not a number (or not a string for a label): dropped / converted
    "out_of_range",      # quality score outside [0, 1]: dropped
    "empty_label",       # empty label value: replaced by "unknown"
    "label_too_long",    # label longer than max_label_length: truncated
    "invalid_value",     # a label outside its closed set (e.g. status): replaced by "other"
    "cardinality_overflow",  # past the instrument's label-set cap: folded into "_overflow"
    "unpriced_model",    # tokens recorded, but genai-prices knows no price: no cost recorded
    "no_usage",          # a GenAI client span ended without usage (failed call, stream without usage)
    "internal_error",    # a bug in paid-telemetry caught before it reached the caller
    "not_utf8",          # a label with characters UTF-8 cannot encode (lone surrogates): replaced by U+FFFD
    "unrenderable",      # a series the /metrics endpoint could not render (instrument="prometheus_endpoint"): left out
    "port_in_use",       # the /metrics port was busy: this process serves on the next free one
    "unauthorized",      # a /metrics request without valid basic-auth credentials: refused with 401
    "tls_handshake",     # a /metrics connection whose TLS handshake failed (plaintext, untrusted cert): closed
)


def render_markdown() -> str:
    """The metrics reference (docs/metrics.md), generated so it cannot drift from code."""
    lines = [
        "# Metrics reference",
        "",
        "Generated from `src/paid_telemetry/catalogue.py` by `paid-telemetry docs metrics`;"
        " a test fails when this file is out of date.",
        "",
        "| Prometheus name | type | labels | buckets | meaning |",
        "|---|---|---|---|---|",
    ]
    for inst in CATALOGUE:
        buckets = ", ".join(f"{b:g}" for b in inst.buckets) if inst.buckets else ""
        labels = ", ".join(f"`{lab}`" for lab in inst.labels)
        lines.append(
            f"| `{inst.prometheus_name}` | {inst.kind.value} | {labels} | {buckets} | {inst.description} |"
        )
    lines += [
        "",
        "Standard GenAI client metrics (OpenTelemetry semantic conventions), emitted from GenAI client"
        " spans only when the instrumentation that made the span does not emit them itself"
        " (see [genai.md](genai.md)); labels absent on the span are omitted:",
        "",
        "| Prometheus name | type | labels | buckets | meaning |",
        "|---|---|---|---|---|",
    ]
    for inst in GENAI_SEMCONV:
        buckets = ", ".join(f"{b:g}" for b in inst.buckets) if inst.buckets else ""
        labels = ", ".join(f"`{lab.replace('.', '_')}`" for lab in inst.labels)
        lines.append(
            f"| `{inst.prometheus_name}` | {inst.kind.value} | {labels} | {buckets} | {inst.description} |"
        )
    lines += [
        "",
        "Closed label values (anything else becomes `other` and is counted as `invalid_value`):",
        "",
        f"- agent run `status`: {', '.join(AGENT_STATUSES)}",
        f"- token `type`: {', '.join(TOKEN_TYPES)}",
        f"- workflow `status`: {', '.join(WORKFLOW_STATUSES)}",
        f"- activity `outcome`: {', '.join(ACTIVITY_OUTCOMES)}",
        f"- external API `outcome`: {', '.join(EXTERNAL_OUTCOMES)}",
        f"- pull request `event`: {', '.join(PULL_REQUEST_EVENTS)}",
        "",
        "Reasons of `paid_telemetry_dropped_records_total`: "
        + ", ".join(f"`{r}`" for r in DROP_REASONS) + ".",
        "",
    ]
    return "\n".join(lines)
