"""Agent runs: one span plus the run, duration and iteration metrics, tokens and quality.

The hot path is a few dict lookups around the OpenTelemetry calls: label sets are
cached per instrument (see guard.LabelSets) and nothing here does I/O.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Status, StatusCode

from paid_telemetry import runtime
from paid_telemetry._wrap import argument_getter, decorate, exit_status
from paid_telemetry.catalogue import AGENT_ITERATIONS, QUALITY_SCORE
from paid_telemetry.costs import LLM_OPERATIONS, OUTSIDE_RUNS, Ledger, record_usage
from paid_telemetry.guard import MAX_COUNT, MAX_SPAN_NAME, TelemetryInputError, span_text, surface

F = TypeVar("F", bound=Callable[..., Any])

_CURRENT_RUN: ContextVar[AgentRun | None] = ContextVar("paid_agent_run", default=None)

RunEndHook = Callable[["AgentRun", float, str], None]
_run_end_hooks: tuple[RunEndHook, ...] = ()


def add_run_end_hook(hook: RunEndHook) -> None:
    """Call ``hook(run, duration_seconds, status)`` when any run ends, while its span is still current.

    ``paid_telemetry.logs.configure_logging()`` registers the "Agent run completed" line here.
    A hook that raises is counted as an internal error; the run is recorded regardless.
    """
    global _run_end_hooks
    if hook not in _run_end_hooks:
        _run_end_hooks = (*_run_end_hooks, hook)


def remove_run_end_hook(hook: RunEndHook) -> None:
    global _run_end_hooks
    _run_end_hooks = tuple(h for h in _run_end_hooks if h is not hook)


# Runs entered and not yet exited, so SIGTERM can end them as cancelled. Whoever pops a run
# (its own __exit__ or end_open_runs) records its end: dict.pop is atomic, so never twice.
_open_runs: dict[int, AgentRun] = {}


def end_open_runs(status: str = "cancelled") -> int:
    """Record every open run as ended with ``status`` (on SIGTERM); returns how many.

    Called from a thread of its own: the span is ended, the context of the thread that
    opened the run is left alone (the process is going away).
    """
    ended = 0
    for key in list(_open_runs):
        run = _open_runs.pop(key, None)
        if run is not None:
            run.status = status
            try:
                run._record_end(None)
            except Exception:  # _record_end counts its own errors; never stop the others ending
                pass
            ended += 1
    return ended


def forget_open_runs() -> None:
    """In a forked child: runs opened before the fork are the parent's to record."""
    _open_runs.clear()


def current_run() -> AgentRun | None:
    """The agent run active in this context (thread / task), if any."""
    return _CURRENT_RUN.get()


class AgentRun:
    """One execution of an agent. Use as ``with``/``async with`` block or as a decorator.

    ``status`` may be set by the caller; otherwise it is ``completed`` on normal exit,
    ``failed`` on an exception (re-raised untouched) and ``cancelled`` on cancellation.
    """

    __slots__ = (
        "_ctx_token", "_ledger", "_otel_token", "_project_getter", "_span", "_start", "_t", "agent_type",
        "attributes", "cost_cents", "input_tokens", "iterations", "model", "output_tokens",
        "project_id", "provider", "run_id", "status",
    )

    def __init__(
        self,
        project_id: Any = None,
        agent_type: Any = "agent",
        *,
        run_id: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.project_id = project_id
        self.agent_type = agent_type
        self.run_id = run_id
        self.attributes = attributes
        self.status: str | None = None
        self.iterations = 0
        self.input_tokens = 0.0
        self.output_tokens = 0.0
        self.cost_cents = 0.0
        self.provider: Any = None
        self.model: Any = None
        self._span: Any = None
        self._ledger: Ledger | None = None
        self._t: runtime.Telemetry | None = None
        self._project_getter: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None

    # -- recording ---------------------------------------------------------------------
    def iteration(self, n: int = 1) -> None:
        """Count one (or ``n``) agent loop iterations."""
        if type(n) is int and 0 <= n <= MAX_COUNT:
            self.iterations += n
            return
        t = self._t or runtime.current()
        value = t.guard.amount(AGENT_ITERATIONS.name, n)  # reports; raises only when strict
        if value is not None:
            self.iterations += int(value)

    def record_tokens(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_cents: float | None = None,
    ) -> None:
        """Record one LLM call's usage; cost is priced with genai-prices when not given.

        A call whose GenAI span is (or was) counted automatically is not counted again: see docs/genai.md.
        """
        t = self._t or runtime.current()
        try:
            if t.settings.genai_spans and not self.usage_ledger().hand(
                self.project_id, provider, model, input_tokens, output_tokens, current_llm_span_id()
            ):
                return
            tin, tout, cents = record_usage(
                t, self.project_id, provider, model, input_tokens, output_tokens, cost_cents
            )
            self.add_usage(provider, model, tin, tout, cents)
        except Exception as exc:
            t.guard.internal_error("record_tokens", exc)

    def add_usage(self, provider: Any, model: Any, tin: float, tout: float, cents: float | None) -> None:
        """Add one recorded call to the run's totals (reported on its span at the end)."""
        self.input_tokens += tin
        self.output_tokens += tout
        if cents:
            self.cost_cents += cents
        self.provider, self.model = provider, model

    def usage_ledger(self) -> Ledger:
        """This run's recent calls, which keep a call from being counted twice."""
        ledger = self._ledger
        if ledger is None:
            ledger = self._ledger = Ledger()
        return ledger

    def record_quality(self, score: float, *, prompt_slug: str) -> None:
        """Record a quality score in [0, 1] for this run's project and a prompt."""
        record_quality_score(score, project_id=self.project_id, prompt_slug=prompt_slug)

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> AgentRun:
        t = self._t = runtime.current()
        try:
            if self.run_id is None:
                self.run_id = os.urandom(8).hex()
            agent = span_text(self.agent_type)
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "paid.agent_run.id": span_text(self.run_id),
                "paid.project_id": span_text(self.project_id),
            }
            if self.attributes is not None:
                try:
                    attrs.update(self.attributes)
                except Exception as exc:  # not a mapping: the run is recorded without them
                    t.guard.internal_error("agent_run", exc)
            name = f"invoke_agent {agent}"
            span = self._span = t.tracer.start_span(name[:MAX_SPAN_NAME], attributes=attrs)
            self._otel_token = otel_context.attach(otel_trace.set_span_in_context(span))
            self._ctx_token: Token[AgentRun | None] | None = _CURRENT_RUN.set(self)
        except Exception as exc:
            t.guard.internal_error("agent_run", exc)
        self._start = time.perf_counter()
        _open_runs[id(self)] = self
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if _open_runs.pop(id(self), None) is not None:  # else already ended (SIGTERM) or forked
                self._record_end(exc)
        finally:
            self._detach()

    def _record_end(self, exc: BaseException | None) -> None:
        """Count the run, record its histograms, run the end hooks and end its span: each step
        on its own, so a failing one (an odd label, a broken hook) never skips the others."""
        duration = time.perf_counter() - self._start
        t = self._t or runtime.current()
        guard = t.guard
        pending: TelemetryInputError | None = None
        status = self.status if self.status is not None else exit_status(exc)
        try:
            labels = t.metrics.run_labels.get((self.project_id, self.agent_type, status))
            status = labels.get("status", "other")  # what was counted, e.g. "other" for an odd status
            t.metrics.agent_runs.add(1, labels)
        except Exception as err:
            pending = guard.fault("agent_run", err, pending)
        self.status = status
        try:
            labels = t.metrics.run_hist_labels.get((self.project_id, self.agent_type))
            t.metrics.agent_duration.record(duration, labels)
            iterations = guard.amount(AGENT_ITERATIONS.name, self.iterations)
            if iterations is not None:
                t.metrics.agent_iterations.record(iterations, labels)
        except Exception as err:
            pending = guard.fault("agent_run", err, pending)
        for hook in _run_end_hooks:
            try:
                hook(self, duration, status)
            except Exception as err:
                pending = guard.fault("agent_run end hook", err, pending)
        span = self._span  # kept: the run-end log line reads ids from it afterwards
        if span is not None:
            try:
                self._finish_span(span, status, exc)
            except Exception as err:
                pending = guard.fault("agent_run", err, pending)
            finally:
                span.end()
        if pending is not None:
            surface(pending, exc)

    def _finish_span(self, span: Any, status: str, exc: BaseException | None) -> None:
        if span.is_recording():
            attrs: dict[str, Any] = {
                "paid.agent_run.status": status,
                "paid.agent_run.iterations": self.iterations,
                "gen_ai.usage.input_tokens": int(self.input_tokens),
                "gen_ai.usage.output_tokens": int(self.output_tokens),
                "paid.cost_cents": self.cost_cents,
            }
            if self.provider is not None:
                attrs["gen_ai.provider.name"] = span_text(self.provider)
                attrs["gen_ai.request.model"] = span_text(self.model)
            span.set_attributes(attrs)
            if status == "failed":
                if exc is not None:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))
                else:
                    span.set_status(Status(StatusCode.ERROR, "failed"))

    def _detach(self) -> None:
        token = getattr(self, "_ctx_token", None)
        if token is not None:
            try:
                _CURRENT_RUN.reset(token)
                otel_context.detach(self._otel_token)
            except ValueError:  # exited in another context (e.g. generator finalised elsewhere)
                pass
            self._ctx_token = None

    async def __aenter__(self) -> AgentRun:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- decorator ---------------------------------------------------------------------
    def __call__(self, func: F) -> F:
        """Decorate a function: each call is a new run. ``project_id`` may come from its argument."""
        getter = argument_getter(func, "project_id") if self.project_id is None else None
        project, agent, attributes = self.project_id, self.agent_type, self.attributes

        def make_scope(args: tuple[Any, ...], kwargs: dict[str, Any]) -> AgentRun:
            pid = getter(args, kwargs) if getter is not None else project
            return AgentRun(pid, agent, attributes=attributes)

        return decorate(func, make_scope)


def agent_run(
    project_id: Any = None,
    agent_type: Any = "agent",
    *,
    run_id: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> AgentRun:
    """An agent run: ``with agent_run(project_id=.., agent_type=..) as run:`` or ``@agent_run(...)``."""
    return AgentRun(project_id, agent_type, run_id=run_id, attributes=attributes)


def record_token_usage(
    *,
    provider: str,
    model: str,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_cents: float | None = None,
    project_id: Any = None,
) -> None:
    """Record tokens (and cost) outside or inside an agent run (project taken from the run)."""
    run = _CURRENT_RUN.get()
    if run is not None and (project_id is None or _same(project_id, run.project_id)):
        run.record_tokens(
            provider=provider, model=model, input_tokens=input_tokens,
            output_tokens=output_tokens, cost_cents=cost_cents,
        )
        return
    t = runtime.current()
    try:
        if t.settings.genai_spans and not OUTSIDE_RUNS.hand(
            project_id, provider, model, input_tokens, output_tokens, current_llm_span_id()
        ):
            return
        record_usage(t, project_id, provider, model, input_tokens, output_tokens, cost_cents)
    except Exception as exc:
        t.guard.internal_error("record_token_usage", exc)


def _same(a: Any, b: Any) -> bool:
    """``a == b`` for the project ids a caller passes (str or int), never a foreign ``__eq__``."""
    return a is b or (type(a) is type(b) and type(a) in (str, int) and a == b)


def current_llm_span_id() -> int | None:
    """The current span's id when it is an LLM call's GenAI span still in progress, else None."""
    span = otel_trace.get_current_span()
    attrs = getattr(span, "attributes", None)
    if attrs and attrs.get("gen_ai.operation.name") in LLM_OPERATIONS and span.is_recording():
        return span.get_span_context().span_id
    return None


def record_quality_score(score: float, *, prompt_slug: str, project_id: Any = None) -> None:
    """Record a quality score in [0, 1]; outside [0, 1] it is dropped and counted."""
    t = runtime.current()
    try:
        if project_id is None:
            run = _CURRENT_RUN.get()
            project_id = run.project_id if run is not None else None
        value = t.guard.score(QUALITY_SCORE.name, score)
        if value is not None:
            t.metrics.quality.record(value, t.metrics.quality_labels.get((project_id, prompt_slug)))
    except Exception as exc:
        t.guard.internal_error("record_quality_score", exc)
