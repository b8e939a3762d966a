"""Recording outside agent runs: external API calls, pull requests, and workflows not on Temporal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from paid_telemetry import runtime
from paid_telemetry._wrap import decorate, exit_status
from paid_telemetry.guard import MAX_SPAN_NAME, span_text, surface

F = TypeVar("F", bound=Callable[..., Any])


def record_pull_request(event: str, *, project_id: Any) -> None:
    """Count a pull request an agent ``created`` or got ``merged`` (or ``closed``)."""
    t = runtime.current()
    try:
        t.metrics.pull_requests.add(1, t.metrics.pr_labels.get((project_id, event)))
    except Exception as exc:
        t.guard.internal_error("record_pull_request", exc)


class _Scope:
    """Shared context-manager/decorator plumbing; subclasses implement _begin/_end."""

    __slots__ = ("_span", "_start", "_t", "_token")
    _span: Any
    _token: Any

    def __enter__(self) -> Any:
        t = self._t = runtime.current()
        self._span = None
        self._token = None
        try:
            self._begin(t)
        except Exception as exc:
            t.guard.internal_error(type(self).__name__, exc)
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        elapsed = time.perf_counter() - self._start
        t = self._t
        pending = None
        try:
            self._end(t, elapsed, exc)
        except Exception as err:  # the span still ends; a strict-mode error never hides the caller's
            pending = t.guard.fault(type(self).__name__, err, None)
        finally:
            span, self._span = self._span, None
            try:
                if span is not None:
                    span.end()
            finally:
                if self._token is not None:
                    otel_context.detach(self._token)
                    self._token = None
        if pending is not None:
            surface(pending, exc)

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _open_span(self, t: runtime.Telemetry, name: str, kind: SpanKind, attrs: dict[str, Any]) -> None:
        self._span = t.tracer.start_span(name[:MAX_SPAN_NAME], kind=kind, attributes=attrs)
        self._token = otel_context.attach(otel_trace.set_span_in_context(self._span))

    def _fail_span(self, exc: BaseException | None) -> None:
        if self._span is not None and exc is not None:
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))

    def _begin(self, t: runtime.Telemetry) -> None:
        raise NotImplementedError

    def _end(self, t: runtime.Telemetry, elapsed: float, exc: BaseException | None) -> None:
        raise NotImplementedError


class ExternalCall(_Scope):
    """Latency and outcome of one call to an external API; an exception means ``error``.

    Set ``outcome = "error"`` on the object to count a call that returned an error
    without raising (an HTTP 5xx, say).
    """

    __slots__ = ("operation", "outcome", "service")

    def __init__(self, service: str, operation: str) -> None:
        self.service = service
        self.operation = operation
        self.outcome: str | None = None

    def _begin(self, t: runtime.Telemetry) -> None:
        service, operation = span_text(self.service), span_text(self.operation)
        self._open_span(
            t, f"{service} {operation}", SpanKind.CLIENT,
            {"paid.external.service": service, "paid.external.operation": operation},
        )

    def _end(self, t: runtime.Telemetry, elapsed: float, exc: BaseException | None) -> None:
        outcome = self.outcome if self.outcome is not None else ("success" if exc is None else "error")
        t.metrics.external_requests.add(1, t.metrics.external_labels.get((self.service, self.operation, outcome)))
        t.metrics.external_duration.record(elapsed, t.metrics.external_hist_labels.get((self.service, self.operation)))
        self._fail_span(exc)

    def __call__(self, func: F) -> F:
        service, operation = self.service, self.operation
        return decorate(func, lambda _a, _k: ExternalCall(service, operation))


class WorkflowScope(_Scope):
    """A workflow that does not run on Temporal (Temporal ones are covered by the interceptor)."""

    __slots__ = ("status", "workflow_type")

    def __init__(self, workflow_type: str) -> None:
        self.workflow_type = workflow_type
        self.status: str | None = None

    def _begin(self, t: runtime.Telemetry) -> None:
        t.metrics.workflow_started.add(1, t.metrics.workflow_labels.get((self.workflow_type,)))
        workflow_type = span_text(self.workflow_type)
        self._open_span(t, f"workflow {workflow_type}", SpanKind.INTERNAL, {"paid.workflow.type": workflow_type})

    def _end(self, t: runtime.Telemetry, elapsed: float, exc: BaseException | None) -> None:
        status = self.status if self.status is not None else exit_status(exc)
        t.metrics.workflow_completed.add(1, t.metrics.workflow_status_labels.get((self.workflow_type, status)))
        t.metrics.workflow_duration.record(elapsed, t.metrics.workflow_hist_labels.get((self.workflow_type,)))
        if status == "failed":
            self._fail_span(exc)

    def __call__(self, func: F) -> F:
        workflow_type = self.workflow_type
        return decorate(func, lambda _a, _k: WorkflowScope(workflow_type))


def external_call(service: str, operation: str) -> ExternalCall:
    """``with external_call("github", "create_pull_request"):`` or as a decorator."""
    return ExternalCall(service, operation)


def workflow(workflow_type: str) -> WorkflowScope:
    """``with workflow("nightly_report"):`` or as a decorator, for workflows outside Temporal."""
    return WorkflowScope(workflow_type)
