"""Temporal integration: one interceptor for spans and Paid's workflow/activity metrics.

``Client.connect(addr, interceptors=[TelemetryInterceptor()])`` covers the client and every
worker built from that client. Spans and trace propagation are temporalio's own
``TracingInterceptor`` (composed inside, fed our tracer); this module adds only what it
lacks: the catalogue's ``paid_workflow_*`` and ``paid_activity_*`` metrics, recorded
replay-safely, plus helpers for the workflow sandbox and Temporal's SDK metrics.

This module imports temporalio (it is the optional integration); ``import paid_telemetry``
does not import it.

Why not ``workflow.metric_meter()``: it is replay-safe, but it emits through the Temporal
Runtime's own telemetry (Core's Prometheus/OTLP exporter), not through the OpenTelemetry
pipeline ``configure()`` set up, so the catalogue instruments, their buckets, views and
the in-memory test readers would never see the values. Instead the workflow interceptor
applies the same guard the SDK uses (skip while ``workflow.unsafe.is_replaying()``) and
hands the value to an extern function (the mechanism ``TracingInterceptor`` uses for its
spans) that records with our instruments outside the sandbox's restrictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Literal

import opentelemetry.trace

try:
    import temporalio.activity
    import temporalio.client
    import temporalio.exceptions
    import temporalio.plugin
    import temporalio.runtime
    import temporalio.service
    import temporalio.worker
    import temporalio.workflow
    from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
    from temporalio.worker import WorkflowRunner
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("paid_telemetry.temporal needs temporalio: pip install 'paid-telemetry[temporal]'") from exc

from paid_telemetry import runtime
from paid_telemetry.logs import EXC_SPAN_CONTEXT_ATTR

__all__ = [
    "SANDBOX_PASSTHROUGH",
    "Plugin",
    "TelemetryInterceptor",
    "sandbox_restrictions",
    "sandbox_runner",
    "temporal_runtime",
]

# Raised by activity.raise_complete_async(): the attempt ends here, its outcome comes later.
_COMPLETE_ASYNC: type[BaseException] | tuple[()] = getattr(temporalio.activity, "_CompleteAsyncError", ())

# Name of the extern function the workflow interceptor calls to record outside the sandbox.
_EXTERN = "__paid_telemetry_record_workflow"

SANDBOX_PASSTHROUGH: tuple[str, ...] = (
    "paid_telemetry", "opentelemetry", "structlog", "prometheus_client", "genai_prices",
)
"""Modules the workflow sandbox must not re-import (their state must be the process's)."""


# -- tracer ---------------------------------------------------------------------------------
class _CurrentTracer(opentelemetry.trace.Tracer):
    """Delegates to ``runtime.current().tracer`` at each call.

    The interceptor is usually built before (or across) ``configure()`` calls; resolving the
    tracer per span keeps spans in whatever pipeline is configured when they are made.
    """

    def start_span(self, *args: Any, **kwargs: Any) -> opentelemetry.trace.Span:
        return runtime.current().tracer.start_span(*args, **kwargs)

    def start_as_current_span(  # type: ignore[override]
        self, *args: Any, **kwargs: Any
    ) -> AbstractContextManager[opentelemetry.trace.Span]:
        return runtime.current().tracer.start_as_current_span(*args, **kwargs)


# -- the interceptor ------------------------------------------------------------------------
class TelemetryInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Spans (via temporalio's ``TracingInterceptor``) and Paid's workflow/activity metrics.

    Register it on the client; temporalio passes client interceptors that are also worker
    interceptors to every worker of that client. Registering it on the worker as well (or
    twice) is harmless: each interception point checks whether one of ours is already in
    the chain and then adds nothing, so nothing is counted or traced twice.

    ``tracing=False`` keeps only the metrics (for apps that already register their own
    ``TracingInterceptor``; registering both with tracing on would duplicate spans).
    """

    def __init__(self, *, tracing: bool = True, always_create_workflow_spans: bool = False) -> None:
        self._tracing: TracingInterceptor | None = (
            TracingInterceptor(_CurrentTracer(), always_create_workflow_spans=always_create_workflow_spans)
            if tracing else None
        )

    # client side: tracing only (workflow counts come from the worker, once per execution)
    def intercept_client(self, next: temporalio.client.OutboundInterceptor) -> temporalio.client.OutboundInterceptor:
        if _in_chain(next, _PaidClientOutbound):
            return next
        inner = self._tracing.intercept_client(next) if self._tracing is not None else next
        return _PaidClientOutbound(inner)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        if _in_chain(next, _PaidActivityInbound):
            return next
        if self._tracing is None:
            return _PaidActivityInbound(next)
        return _PaidActivityInbound(self._tracing.intercept_activity(_StampSpanOnError(next)))

    def workflow_interceptor_class(
        self, input: temporalio.worker.WorkflowInterceptorClassInput
    ) -> type[temporalio.worker.WorkflowInboundInterceptor] | None:
        # Called once per worker with one shared input: the extern key marks "already added".
        if _EXTERN in input.unsafe_extern_functions:
            return None
        input.unsafe_extern_functions[_EXTERN] = _record_workflow
        if self._tracing is None:
            return _MetricsWorkflowInbound
        self._tracing.workflow_interceptor_class(input)  # registers its span extern function
        return _TracedMetricsWorkflowInbound

    def intercept_nexus_operation(
        self, next: temporalio.worker.NexusOperationInboundInterceptor
    ) -> temporalio.worker.NexusOperationInboundInterceptor:
        if self._tracing is None or _in_chain(next, _PaidNexusInbound):
            return next
        return _PaidNexusInbound(self._tracing.intercept_nexus_operation(next))


def _in_chain(interceptor: Any, kind: type) -> bool:
    """Whether an interceptor of ``kind`` is already in the ``next`` chain."""
    seen = 0
    while interceptor is not None and seen < 64:
        if isinstance(interceptor, kind):
            return True
        interceptor = getattr(interceptor, "next", None)
        seen += 1
    return False


class _PaidClientOutbound(temporalio.client.OutboundInterceptor):
    """Marker in the client chain (tracing does the work) so a second registration is a no-op."""


class _PaidNexusInbound(temporalio.worker.NexusOperationInboundInterceptor):
    """Marker in the Nexus chain (tracing does the work) so a second registration is a no-op."""


# -- activities -----------------------------------------------------------------------------
class _StampSpanOnError(temporalio.worker.ActivityInboundInterceptor):
    """Innermost, inside the activity's span: stamps the span's ids on an exception it raises.

    temporalio logs "Completing activity as failed" after the interceptors returned (the span has
    ended); paid_telemetry.logs.add_trace_context reads the stamp, so that line carries the trace.
    """

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        try:
            return await self.next.execute_activity(input)
        except BaseException as err:
            ctx = opentelemetry.trace.get_current_span().get_span_context()
            if ctx.is_valid and not hasattr(err, EXC_SPAN_CONTEXT_ATTR):
                with contextlib.suppress(Exception):  # e.g. exceptions with __slots__
                    setattr(err, EXC_SPAN_CONTEXT_ATTR, (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
            raise


class _PaidActivityInbound(temporalio.worker.ActivityInboundInterceptor):
    """Counts each activity attempt by outcome, its duration, and retries (attempt > 1)."""

    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        t = runtime.current()
        activity_type = "unknown"
        try:
            info = temporalio.activity.info()
            activity_type = info.activity_type
            if info.attempt > 1:
                t.metrics.activity_retries.add(1, t.metrics.activity_labels.get((activity_type,)))
        except Exception as exc:
            t.guard.internal_error("temporal_activity", exc)
        start = time.perf_counter()
        outcome: str | None = "failed"
        try:
            result = await self.next.execute_activity(input)
            outcome = "completed"
            return result
        except _COMPLETE_ASYNC:
            outcome = None  # completes later, elsewhere: not an outcome of this attempt
            raise
        except (asyncio.CancelledError, temporalio.exceptions.CancelledError):
            outcome = "cancelled"
            raise
        finally:
            if outcome is not None:
                _record_activity(t, activity_type, outcome, time.perf_counter() - start)


def _record_activity(t: runtime.Telemetry, activity_type: str, outcome: str, seconds: float) -> None:
    try:
        t.metrics.activity_executions.add(1, t.metrics.activity_outcome_labels.get((activity_type, outcome)))
        t.metrics.activity_duration.record(seconds, t.metrics.activity_labels.get((activity_type,)))
    except Exception as exc:
        t.guard.internal_error("temporal_activity", exc)


# -- workflows ------------------------------------------------------------------------------
def _record_workflow(workflow_type: str, status: str | None, seconds: float | None) -> None:
    """Extern function: runs our (non-sandboxed) code; ``status=None`` means "started"."""
    t = runtime.current()
    try:
        if status is None:
            t.metrics.workflow_started.add(1, t.metrics.workflow_labels.get((workflow_type,)))
            return
        t.metrics.workflow_completed.add(1, t.metrics.workflow_status_labels.get((workflow_type, status)))
        if seconds is not None:
            t.metrics.workflow_duration.record(seconds, t.metrics.workflow_labels.get((workflow_type,)))
    except Exception as exc:
        t.guard.internal_error("temporal_workflow", exc)


def _emit(workflow_type: str, status: str | None, seconds: float | None) -> None:
    """Record from inside a workflow, never while replaying (the replay-safety guard)."""
    if temporalio.workflow.unsafe.is_replaying():
        return
    record: Callable[[str, str | None, float | None], None] | None = (
        temporalio.workflow.extern_functions().get(_EXTERN)
    )
    if record is None:
        return
    # The sandbox restricts builtins and imports per thread, and this thread is the
    # sandbox's: lift that for our own (deterministic-irrelevant, side-effect-only) code.
    with temporalio.workflow.unsafe.sandbox_unrestricted(), temporalio.workflow.unsafe.imports_passed_through():
        record(workflow_type, status, seconds)


def _status_of(err: BaseException) -> str | None:
    """How an exception leaving the workflow ends the execution (None: only the task fails)."""
    if isinstance(err, asyncio.CancelledError) or temporalio.exceptions.is_cancelled_exception(err):
        return "cancelled"
    try:
        fails_workflow = temporalio.workflow._Runtime.current().workflow_is_failure_exception(err)
    except Exception:  # private API moved: fall back to the documented rule
        fails_workflow = isinstance(err, temporalio.exceptions.FailureError | asyncio.TimeoutError)
    return "failed" if fails_workflow else None


def _run_start(info: temporalio.workflow.Info) -> float:
    start = getattr(info, "workflow_start_time", None) or info.start_time
    return float(start.timestamp())


class _MetricsWorkflowInbound(temporalio.worker.WorkflowInboundInterceptor):
    """Started/completed/duration of each workflow run, in workflow time, never on replay.

    A run that continues as new ends with ``continued_as_new`` and the new run counts as
    a new execution (started again), so ``started == sum(completed)`` once all have ended.
    """

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        info = temporalio.workflow.info()
        workflow_type = info.workflow_type
        _emit(workflow_type, None, None)
        try:
            result = await super().execute_workflow(input)
        except temporalio.workflow.ContinueAsNewError:
            self._end(workflow_type, "continued_as_new", info)
            raise
        except (Exception, asyncio.CancelledError) as err:
            status = _status_of(err)
            if status is not None:
                self._end(workflow_type, status, info)
            raise
        self._end(workflow_type, "completed", info)
        return result

    @staticmethod
    def _end(workflow_type: str, status: str, info: temporalio.workflow.Info) -> None:
        seconds = max(0.0, temporalio.workflow.time() - _run_start(info))
        _emit(workflow_type, status, seconds)


class _TracedMetricsWorkflowInbound(_MetricsWorkflowInbound, TracingWorkflowInboundInterceptor):
    """Metrics around temporalio's tracing workflow interceptor (one class per worker slot)."""


# -- sandbox --------------------------------------------------------------------------------
def sandbox_restrictions(
    *extra_passthrough: str, base: SandboxRestrictions | None = None
) -> SandboxRestrictions:
    """Default restrictions plus passthrough of paid-telemetry and the modules it uses."""
    return (base or SandboxRestrictions.default).with_passthrough_modules(*SANDBOX_PASSTHROUGH, *extra_passthrough)


def sandbox_runner(*extra_passthrough: str, base: SandboxRestrictions | None = None) -> SandboxedWorkflowRunner:
    """A ``SandboxedWorkflowRunner`` for ``Worker(workflow_runner=...)`` where workflow
    modules may import paid_telemetry (and the modules in ``extra_passthrough``)."""
    return SandboxedWorkflowRunner(restrictions=sandbox_restrictions(*extra_passthrough, base=base))


# -- Temporal SDK metrics -------------------------------------------------------------------
TEMPORAL_METRICS_PORT = 9465
TEMPORAL_METRICS_PORT_RANGE = 16
_ENV_PORT = "PAID_TELEMETRY_TEMPORAL_METRICS_PORT"
_ENV_RANGE = "PAID_TELEMETRY_TEMPORAL_METRICS_PORT_RANGE"
log = logging.getLogger("paid_telemetry")


def temporal_runtime(
    mode: Literal["otlp", "prometheus"] | None = None,
    *,
    otlp_endpoint: str | None = None,
    otlp_http: bool | None = None,
    prometheus_bind: str | None = None,
    metric_periodicity: timedelta | None = None,
    global_tags: Mapping[str, str] | None = None,
    histogram_bucket_overrides: Mapping[str, Sequence[float]] | None = None,
) -> temporalio.runtime.Runtime:
    """A Temporal ``Runtime`` whose SDK (Core) metrics join Paid's pipeline, durations in seconds.

    ``otlp``: pushed to the collector (default endpoint and protocol: those of
    ``configure()``). ``prometheus``: served at ``http://127.0.0.1:PORT/metrics`` for the embedded
    set-up, PORT the first free one of ``PAID_TELEMETRY_TEMPORAL_METRICS_PORT`` (default 9465) ..
    ``+ PAID_TELEMETRY_TEMPORAL_METRICS_PORT_RANGE - 1`` (default 16), else an ephemeral port, with
    a warning saying which (two workers on one host do not collide); an explicit
    ``prometheus_bind="host:port"`` is used as given. ``mode=None`` follows the configured exporter
    (otlp -> otlp, anything else -> prometheus). Pass the result as ``Client.connect(..., runtime=...)``.

    A Runtime has no flush or shutdown in temporalio's Python API: in ``otlp`` mode the points
    since the last push (``metric_periodicity``, default the configured export interval) are lost
    when the process ends; docs/temporal.md.
    """
    settings = runtime.current().settings
    if mode is None:
        mode = "otlp" if settings.metrics_exporter == "otlp" else "prometheus"
    tags = dict(global_tags or {})
    if mode == "otlp":
        http = (settings.signal_protocol("metrics") != "grpc") if otlp_http is None else otlp_http
        url = otlp_endpoint or settings.signal_endpoint("metrics")
        if http and not url.rstrip("/").endswith("/v1/metrics"):
            url = url.rstrip("/") + "/v1/metrics"
        metrics = temporalio.runtime.OpenTelemetryConfig(
            url=url, http=http, durations_as_seconds=True,
            metric_periodicity=metric_periodicity or timedelta(milliseconds=settings.metric_export_interval_ms),
            histogram_bucket_overrides=histogram_bucket_overrides,
        )
        return temporalio.runtime.Runtime(telemetry=temporalio.runtime.TelemetryConfig(metrics=metrics,
                                                                                       global_tags=tags))
    if mode != "prometheus":
        raise ValueError(f"mode must be 'otlp' or 'prometheus', not {mode!r}")
    if prometheus_bind is not None:
        host, _, port_text = prometheus_bind.rpartition(":")
        return _prometheus_runtime(host, [int(port_text)], tags, histogram_bucket_overrides)
    port = int(os.environ.get(_ENV_PORT) or TEMPORAL_METRICS_PORT)
    width = max(1, int(os.environ.get(_ENV_RANGE) or TEMPORAL_METRICS_PORT_RANGE))
    candidates = [p for p in range(port, port + width) if 0 < p < 65536] if port else []
    return _prometheus_runtime("127.0.0.1", [*candidates, 0], tags, histogram_bucket_overrides, wanted=port,
                               last=port + width - 1)


def _prometheus_runtime(host: str, ports: list[int], tags: dict[str, str],
                        buckets: Mapping[str, Sequence[float]] | None, *, wanted: int | None = None,
                        last: int | None = None) -> temporalio.runtime.Runtime:
    """The first of ``ports`` that binds (0: an ephemeral port, picked here so it can be reported)."""
    for i, port in enumerate(ports):
        if port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        config = temporalio.runtime.PrometheusConfig(bind_address=f"{host}:{port}", durations_as_seconds=True,
                                                     histogram_bucket_overrides=buckets)
        try:
            rt = temporalio.runtime.Runtime(telemetry=temporalio.runtime.TelemetryConfig(metrics=config,
                                                                                         global_tags=tags))
        except ValueError as exc:
            if "in use" in str(exc) and i + 1 < len(ports):
                continue
            raise
        if wanted and port != wanted:
            log.warning("paid-telemetry: Temporal SDK metrics port %s is busy; serving them at http://%s:%s/metrics "
                        "(%s). Scrape ports %s-%s (%s .. +%s-1)", wanted, host, port,
                        "outside the range, on an ephemeral port" if last is not None and port > last
                        else "the next free port", wanted, last, _ENV_PORT, _ENV_RANGE)
        else:
            log.info("paid-telemetry: Temporal SDK metrics at http://%s:%s/metrics", host, port)
        return rt
    raise AssertionError("unreachable: the last candidate binds or raises")

# -- plugin ---------------------------------------------------------------------------------
class Plugin(temporalio.plugin.SimplePlugin):
    """Everything above in one line: ``Client.connect(addr, plugins=[Plugin()])``.

    Registers :class:`TelemetryInterceptor` on the client and on every worker built from it,
    adds paid-telemetry's modules (plus ``extra_passthrough``) to the passthrough list of the
    worker's sandboxed workflow runner (whatever restrictions it already has), and, unless
    ``runtime_metrics=False`` or ``Client.connect(runtime=...)`` was given, connects with a
    :func:`temporal_runtime` so Temporal's SDK metrics join the pipeline (``mode`` and
    ``prometheus_bind`` as there: by default the port range of ``PAID_TELEMETRY_TEMPORAL_METRICS_PORT``).
    The runtime is made once per plugin and reused.
    """

    def __init__(
        self,
        *,
        runtime_metrics: bool = True,
        mode: Literal["otlp", "prometheus"] | None = None,
        prometheus_bind: str | None = None,
        extra_passthrough: Sequence[str] = (),
        interceptor: TelemetryInterceptor | None = None,
    ) -> None:
        self.interceptor = interceptor or TelemetryInterceptor()
        passthrough = (*SANDBOX_PASSTHROUGH, *extra_passthrough)

        def workflow_runner(runner: WorkflowRunner | None) -> WorkflowRunner:
            if runner is None:
                return SandboxedWorkflowRunner(restrictions=sandbox_restrictions(*extra_passthrough))
            if isinstance(runner, SandboxedWorkflowRunner):
                return dataclasses.replace(
                    runner, restrictions=runner.restrictions.with_passthrough_modules(*passthrough)
                )
            return runner  # e.g. UnsandboxedWorkflowRunner: nothing to pass through

        super().__init__("paid_telemetry.Plugin", interceptors=[self.interceptor], workflow_runner=workflow_runner)
        self._runtime_metrics = runtime_metrics
        self._mode = mode
        self._prometheus_bind = prometheus_bind
        self.runtime: temporalio.runtime.Runtime | None = None

    async def connect_service_client(
        self,
        config: temporalio.service.ConnectConfig,
        next: Callable[[temporalio.service.ConnectConfig], Any],
    ) -> temporalio.service.ServiceClient:
        if self._runtime_metrics and config.runtime is None:
            if self.runtime is None:
                self.runtime = temporal_runtime(self._mode, prometheus_bind=self._prometheus_bind)
            config = dataclasses.replace(config, runtime=self.runtime)
        result: temporalio.service.ServiceClient = await next(config)
        return result
