"""LLM usage from GenAI client spans: tokens and cost counted where the usage already flows.

The official OpenAI instrumentation, OpenLLMetry and Logfire put an LLM call's usage on its span
(``gen_ai.usage.*``, ``gen_ai.provider.name`` or the older ``gen_ai.system``, the request and
response model). :class:`GenAISpanProcessor`, which ``configure()`` adds to its tracer provider
(``genai_spans=False`` turns it off), turns each such span into ``paid_tokens_total`` and
``paid_cost_cents_total`` for the agent run that was current when the span started, or for the
``paid.project_id`` found on the span or in baggage, else for project ``unassigned``.
It also emits the semantic-convention GenAI metrics when the instrumentation does not.
Rules and attribute mapping: docs/genai.md.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import baggage
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from paid_telemetry import runtime
from paid_telemetry.agents import AgentRun, current_run
from paid_telemetry.catalogue import GENAI_OPERATION_DURATION, GENAI_TOKEN_USAGE, TOKENS
from paid_telemetry.costs import LLM_OPERATIONS, OUTSIDE_RUNS, record_usage
from paid_telemetry.guard import TelemetryInputError, safe_text
from paid_telemetry.pricing import provider_id

PROJECT_KEY = "paid.project_id"  # span attribute or baggage entry naming the project outside a run
UNASSIGNED = "unassigned"  # the project of usage found outside any run and without a project
_MAX_PENDING = 65_536  # spans started inside a run and not yet ended (a leak guard, never reached)
_MAX_RESPONSES = 4096  # recent response ids (the duplicate span of a call ends within milliseconds)
_METRICS_CHECK_S = 30.0  # how often to look again for an instrumentation emitting the GenAI metrics

_A_OP = "gen_ai.operation.name"
_A_PROVIDER = "gen_ai.provider.name"
_A_SYSTEM = "gen_ai.system"  # deprecated since semconv 1.37, still what many instrumentations send
_A_REQ_MODEL = "gen_ai.request.model"
_A_RESP_MODEL = "gen_ai.response.model"
_A_IN = "gen_ai.usage.input_tokens"
_A_OUT = "gen_ai.usage.output_tokens"
_A_IN_OLD = "gen_ai.usage.prompt_tokens"
_A_OUT_OLD = "gen_ai.usage.completion_tokens"
_A_CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
_A_CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
                  "gen_ai.usage.cache_creation_input_tokens")
_A_RESPONSE_ID = "gen_ai.response.id"
_A_REQUEST_TYPE = "llm.request.type"  # OpenLLMetry before it set gen_ai.operation.name


def _count(value: Any) -> int | float | None:
    """A usable token count from a span attribute (spans hold whatever the instrumentation set)."""
    if type(value) is int or type(value) is float:
        return value if 0 <= value < 1e12 else None
    return None


def _attributes(span: Any) -> Any:
    """The span's attribute mapping, read without the SDK's read-only proxy (a hot path: ~16 reads
    per LLM span; through the proxy each costs several times a dict lookup)."""
    plain = getattr(getattr(span, "_attributes", None), "_dict", None)
    return plain if isinstance(plain, dict) else getattr(span, "attributes", None)


def _usage(attrs: Any) -> tuple[int | float | None, int | float | None]:
    return _count(attrs.get(_A_IN, attrs.get(_A_IN_OLD))), _count(attrs.get(_A_OUT, attrs.get(_A_OUT_OLD)))


# Two instrumentations of one call as siblings (the anthropic SDK's own span beside OpenLLMetry's):
# same trace and gen_ai.response.id, counted once. Shared by every processor: after a second
# configure() the instrumentations may still hold the first (global) tracer provider.
_responses: dict[tuple[int, str], None] = {}


class GenAISpanProcessor(SpanProcessor):
    """Counts each LLM call's tokens and cost from its GenAI client span when the span ends."""

    def __init__(self) -> None:
        self._owners: dict[int, tuple[AgentRun | None, Any]] = {}
        # One call, two nested LLM spans (e.g. a framework's chat span around the client's):
        # the innermost counts, its LLM ancestors are "covered" and skipped.
        self._llm_parent: dict[int, int] = {}
        self._covered: dict[int, bool] = {}
        self._metrics_elsewhere: tuple[float, bool] = (-1e9, False)
        self._metric_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._instruments: tuple[Any, Any, Any] | None = None  # (meter, token histogram, duration)

    # -- span start: remember whose call it is ------------------------------------------------
    def on_start(self, span: Span, parent_context: Any = None) -> None:
        """Capture the current run (or baggage project): a stream may end in another context."""
        parent = otel_trace.get_current_span(parent_context)
        parent_attrs = _attributes(parent)
        if parent_attrs and parent_attrs.get(_A_OP) in LLM_OPERATIONS and parent.is_recording():
            links = self._llm_parent
            if len(links) >= _MAX_PENDING:
                links.clear()
            links[span.context.span_id] = parent.get_span_context().span_id
        run = current_run()
        project = None if run is not None else baggage.get_baggage(PROJECT_KEY, parent_context)
        if run is None and project is None:
            return
        owners = self._owners
        if len(owners) >= _MAX_PENDING:
            owners.clear()
        owners[span.context.span_id] = (run, project)

    # -- span end: count --------------------------------------------------------------------
    def on_end(self, span: ReadableSpan) -> None:
        span_id = span.context.span_id
        owner = self._owners.pop(span_id, None) if self._owners else None
        llm_parent = self._llm_parent.pop(span_id, None) if self._llm_parent else None
        attrs = _attributes(span)
        if not attrs:
            return
        op = attrs.get(_A_OP) or attrs.get(_A_REQUEST_TYPE)
        if op not in LLM_OPERATIONS:
            return
        t = runtime.current()
        try:
            covered = self._covered.pop(span_id, False) if self._covered else False
            if not covered:
                self._record(t, span, attrs, op, owner)
            if llm_parent is not None:  # the enclosing LLM span is the same call, counted here
                if len(self._covered) >= _MAX_PENDING:
                    self._covered.clear()
                self._covered[llm_parent] = True
        except TelemetryInputError:
            pass  # strict mode: already reported; a span processor never raises into span.end()
        except Exception as exc:
            try:
                t.guard.internal_error("genai span", exc)
            except TelemetryInputError:
                pass

    def _record(self, t: runtime.Telemetry, span: ReadableSpan, attrs: Any, op: Any,
                owner: tuple[AgentRun | None, Any] | None) -> None:
        raw_provider = attrs.get(_A_PROVIDER) or attrs.get(_A_SYSTEM)
        provider = provider_id(raw_provider) if type(raw_provider) is str else "unknown"
        request_model, response_model = attrs.get(_A_REQ_MODEL), attrs.get(_A_RESP_MODEL)
        response_id = attrs.get(_A_RESPONSE_ID)
        if type(response_id) is str:
            key = (span.context.trace_id, response_id)
            if key in _responses:
                return
            if len(_responses) >= _MAX_RESPONSES:
                try:
                    del _responses[next(iter(_responses))]
                except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                    pass
            _responses[key] = None
        if not self._instrumentation_emits_metrics(t):
            self._semconv_metrics(t, span, attrs, op)
        tin, tout = _usage(attrs)
        if tin is None and tout is None:
            detail = f"{op} {safe_text(raw_provider)[:40]}/{safe_text(request_model)[:60]}"
            t.guard.report(TOKENS.name, "no_usage", detail, may_raise=False)
            return
        tin, tout = tin or 0, tout or 0
        cache_read: float = 0
        cache_write: float = 0
        for name in _A_CACHE_READ:
            cache_read = _count(attrs.get(name)) or cache_read
        for name in _A_CACHE_WRITE:
            cache_write = _count(attrs.get(name)) or cache_write

        model = response_model or request_model
        if type(model) is not str:
            model = "unknown"
        elif (model is response_model and type(request_model) is str and request_model != model
              and t.prices.rates(provider, model) is None and t.prices.rates(provider, request_model) is not None):
            model = request_model  # e.g. a deployment-specific response name; the requested one is priced

        run, project = owner if owner is not None else (None, None)
        span_project = attrs.get(PROJECT_KEY)
        if span_project is not None and (run is None or span_project != safe_text(run.project_id)):
            run, project = None, span_project
        if run is not None:
            project = run.project_id
        elif project is None:
            project = UNASSIGNED
        ledger = run.usage_ledger() if run is not None else OUTSIDE_RUNS
        if not ledger.span(span.context.span_id, project, provider, (request_model, response_model), tin, tout):
            return  # recorded by hand already
        got_in, got_out, cents = record_usage(t, project, provider, model, tin, tout, None, cache_read, cache_write)
        if run is not None:
            run.add_usage(provider, model, got_in, got_out, cents)

    # -- the semantic-convention metrics ------------------------------------------------------
    def _instrumentation_emits_metrics(self, t: runtime.Telemetry) -> bool:
        """Whether an instrumentation in this process (OpenAI v2, OpenLLMetry...) has its own
        gen_ai.client.token.usage histogram on our meter provider: then it is the source of the
        standard GenAI metrics and we never emit a second copy. Looked up again every 30 s."""
        checked_at, found = self._metrics_elsewhere
        now = time.monotonic()
        if now - checked_at < _METRICS_CHECK_S:
            return found
        found = False
        provider = t.meter_provider or otel_metrics.get_meter_provider()
        meters = getattr(provider, "_meters", None)  # the SDK's registry; without it we cannot tell: emit
        if isinstance(meters, dict):
            prefix = GENAI_TOKEN_USAGE.name + ","
            for meter in list(meters.values()):
                if meter is not t.meter and any(
                    key.startswith(prefix) for key in list(getattr(meter, "_instrument_ids", ()))
                ):
                    found = True
                    break
        self._metrics_elsewhere = (now, found)
        return found

    def _semconv_metrics(self, t: runtime.Telemetry, span: ReadableSpan, attrs: Any, op: Any) -> None:
        raw_provider = attrs.get(_A_PROVIDER) or attrs.get(_A_SYSTEM)
        request_model, response_model = attrs.get(_A_REQ_MODEL), attrs.get(_A_RESP_MODEL)
        tin, tout = _usage(attrs)
        instruments = self._instruments
        if instruments is None or instruments[0] is not t.meter:
            tokens = t.meter.create_histogram(
                GENAI_TOKEN_USAGE.name, unit=GENAI_TOKEN_USAGE.unit, description=GENAI_TOKEN_USAGE.description,
                explicit_bucket_boundaries_advisory=GENAI_TOKEN_USAGE.buckets,
            )
            duration = t.meter.create_histogram(
                GENAI_OPERATION_DURATION.name, unit=GENAI_OPERATION_DURATION.unit,
                description=GENAI_OPERATION_DURATION.description,
                explicit_bucket_boundaries_advisory=GENAI_OPERATION_DURATION.buckets,
            )
            instruments = self._instruments = (t.meter, tokens, duration)
        error = None
        if span.status.status_code is StatusCode.ERROR:
            error = attrs.get("error.type") or "_OTHER"
        base = (op, raw_provider, request_model, response_model, attrs.get("server.address"),
                attrs.get("server.port"))
        if span.end_time is not None and span.start_time is not None:
            instruments[2].record((span.end_time - span.start_time) / 1e9, self._attrs(t, (*base, None, error)))
        if tin is not None:
            instruments[1].record(tin, self._attrs(t, (*base, "input", None)))
        if tout is not None:
            instruments[1].record(tout, self._attrs(t, (*base, "output", None)))

    def _attrs(self, t: runtime.Telemetry, key: tuple[Any, ...]) -> dict[str, Any]:
        """Semantic-convention attributes (absent ones omitted), cached and capped like our labels."""
        cached = self._metric_attrs.get(key)
        if cached is not None:
            return cached
        names = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
                 "server.address", "server.port", "gen_ai.token.type", "error.type")
        attrs = {n: v for n, v in zip(names, key, strict=True)
                 if v is not None and type(v) in (str, int) and (type(v) is int or len(v) <= 256)}
        if len(self._metric_attrs) >= t.guard.cardinality_limit:
            t.guard.report(GENAI_TOKEN_USAGE.name, "cardinality_overflow", "too many attribute sets", may_raise=False)
            return {"otel.metric.overflow": True}
        try:
            self._metric_attrs[key] = attrs
        except TypeError:
            pass
        return attrs

    def shutdown(self) -> None:
        self._owners.clear()
        self._llm_parent.clear()
        self._covered.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
