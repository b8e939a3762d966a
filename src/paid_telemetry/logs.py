"""Structured logs: one JSON object per line, stamped with trace, agent-run and Temporal context.

``configure_logging()`` wires structlog (and the standard library's ``logging`` for third-party
code) so an operator can go from an alert to a trace to its log lines: every line has
``timestamp``, ``level``, ``message`` and, when a span is active, ``trace_id``/``span_id``.
The processors are public so they can be used in anyone's own structlog chain.

Nothing here raises into the caller or blocks on the network: the optional OTLP copy of each
line goes through the OpenTelemetry log pipeline (a batch processor's queue in ``otlp`` mode).
"""

from __future__ import annotations

import contextlib
import json as _json
import logging
import math
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry._logs import SeverityNumber
from structlog.types import EventDict, Processor, WrappedLogger

from paid_telemetry import runtime
from paid_telemetry.agents import add_run_end_hook, current_run

__all__ = [
    "OTelLogExport",
    "add_agent_run_context",
    "add_temporal_context",
    "add_timestamp",
    "add_trace_context",
    "configure_logging",
    "log_run_end",
    "render_json",
    "shared_processors",
]

RUN_END_MESSAGE = "Agent run completed"
_HEAD_KEYS = ("timestamp", "level", "message")
_RUN_END_LEVELS = {"completed": "info", "failed": "error", "cancelled": "warning"}
_INT64 = (-(2**63), 2**63 - 1)


# -- processors -------------------------------------------------------------------------
# Attribute an integration sets on an exception raised inside a span: (trace_id hex, span_id hex).
# Lines a library logs about that exception *after* the span ended (temporalio's "Completing
# activity as failed") still get the span's ids.
EXC_SPAN_CONTEXT_ATTR = "__paid_span_context__"


def add_trace_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add ``trace_id`` (32 hex) and ``span_id`` (16 hex) of the active OpenTelemetry span.

    A plain structlog processor: put it in any chain. Values the caller set explicitly win.
    Reads only a context variable, so it is safe inside the Temporal workflow sandbox.
    Without an active span, the ids stamped on the line's exception (:data:`EXC_SPAN_CONTEXT_ATTR`) are used.
    """
    try:
        ctx = otel_trace.get_current_span().get_span_context()
        if ctx.is_valid:
            ids = (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
        else:
            stamped = getattr(_line_exception(event_dict), EXC_SPAN_CONTEXT_ATTR, None)
            if not (isinstance(stamped, tuple) and len(stamped) == 2):
                return event_dict
            ids = stamped
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    except Exception:  # a broken context must not lose the line
        pass
    return event_dict


def _line_exception(event_dict: EventDict) -> BaseException | None:
    """The exception a line is about: structlog's ``exc_info`` or the standard-library record's."""
    info = event_dict.get("exc_info")
    record = event_dict.get("_record")
    if not info and record is not None:
        info = getattr(record, "exc_info", None)
    if info is True:
        info = sys.exc_info()
    if isinstance(info, BaseException):
        return info
    if isinstance(info, tuple) and len(info) == 3 and isinstance(info[1], BaseException):
        return info[1]
    return None


def add_agent_run_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Inside ``paid_telemetry.agent_run``, add ``agent_run_id`` and ``project_id``."""
    try:
        run = current_run()
        if run is not None:
            if "agent_run_id" not in event_dict:
                event_dict["agent_run_id"] = run.run_id
            if "project_id" not in event_dict:
                event_dict["project_id"] = run.project_id
    except Exception:
        pass
    return event_dict


def _replaying(wf: Any) -> bool:
    """Whether workflow code runs again from history (queries/updates are live, not replay)."""
    unsafe = wf.unsafe
    check = getattr(unsafe, "is_replaying_history_events", None) or unsafe.is_replaying
    return bool(check())


def add_temporal_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add Temporal workflow/activity identity; drop workflow lines while the workflow replays.

    Temporal is looked up in ``sys.modules`` only: an app that never imported temporalio pays
    one dict lookup and nothing is imported. Raises ``structlog.DropEvent`` during replay, so
    a replayed ``log.info`` writes nothing (structlog swallows DropEvent).
    """
    wf = sys.modules.get("temporalio.workflow")
    if wf is not None:
        try:
            in_wf = wf.in_workflow()
        except Exception:
            in_wf = False
        if in_wf:
            try:
                replaying = _replaying(wf)
            except Exception:
                replaying = False
            if replaying:
                raise structlog.DropEvent
            try:
                info = wf.info()
                event_dict.setdefault("workflow_id", info.workflow_id)
                event_dict.setdefault("run_id", info.run_id)
                event_dict.setdefault("workflow_type", info.workflow_type)
            except Exception:
                pass
            return event_dict
    act = sys.modules.get("temporalio.activity")
    if act is not None:
        try:
            if act.in_activity():
                info = act.info()
                event_dict.setdefault("workflow_id", info.workflow_id)
                event_dict.setdefault("run_id", info.workflow_run_id)
                event_dict.setdefault("workflow_type", info.workflow_type)
                event_dict.setdefault("activity_type", info.activity_type)
                event_dict.setdefault("activity_id", info.activity_id)
                event_dict.setdefault("attempt", info.attempt)
        except Exception:
            pass
    return event_dict


_ts_cache: tuple[int, str] = (-1, "")


def add_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """``timestamp`` as ISO-8601 UTC with milliseconds, e.g. ``2025-01-23T10:30:00.123Z``.

    Standard-library records keep their own creation time. The second-resolution prefix is
    cached, so the common case is one f-string.
    """
    global _ts_cache
    record = event_dict.get("_record")
    t = record.created if record is not None else time.time()
    sec = int(t)
    cached = _ts_cache
    if cached[0] == sec:
        prefix = cached[1]
    else:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache = (sec, prefix)
    event_dict["timestamp"] = f"{prefix}.{min(999, int((t - sec) * 1000)):03d}Z"
    return event_dict


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _plain(value: Any) -> Any:
    """A JSON-safe stand-in for one value, for the fallback path."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return _safe_repr(value)


def render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """Render one JSON object; ``timestamp``, ``level``, ``message`` first. Never raises.

    Values JSON cannot encode are rendered with ``repr``; anything else that makes encoding
    fail (non-string keys, cycles, NaN) falls back to a flat, stringified object.
    """
    out: dict[Any, Any] = {}
    for key in _HEAD_KEYS:
        if key in event_dict:
            out[key] = event_dict.pop(key)
    out.update(event_dict)
    try:
        return _json.dumps(out, default=_safe_repr, allow_nan=False)
    except Exception:
        flat = {str(k): _plain(v) for k, v in out.items()}
        return _json.dumps(flat, default=_safe_repr, allow_nan=False)


# -- OTLP -------------------------------------------------------------------------------
_SEVERITY: dict[str, tuple[SeverityNumber, str]] = {
    "debug": (SeverityNumber.DEBUG, "DEBUG"),
    "info": (SeverityNumber.INFO, "INFO"),
    "warning": (SeverityNumber.WARN, "WARN"),
    "warn": (SeverityNumber.WARN, "WARN"),
    "error": (SeverityNumber.ERROR, "ERROR"),
    "exception": (SeverityNumber.ERROR, "ERROR"),
    "critical": (SeverityNumber.FATAL, "FATAL"),
    "fatal": (SeverityNumber.FATAL, "FATAL"),
}
_INFO = _SEVERITY["info"]
_NOT_ATTRIBUTES = frozenset(("timestamp", "level", "message", "trace_id", "span_id", "_record", "_from_structlog"))


def _attribute(value: Any) -> Any:
    """OTel attribute values are primitives (int64 for ints); everything else becomes a string."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, float):
        return value
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)


class OTelLogExport:
    """Processor that also emits each line as an OpenTelemetry log record (then passes it on).

    The record's trace and span ids come natively from the current context, so a collector
    can join logs and traces. The provider is the active ``Telemetry`` handle's
    ``logger_provider`` (set in ``otlp`` mode or when ``log_processors`` are given); with
    ``use_global=True`` the global OTel logger provider is the fallback. Records from the
    ``opentelemetry`` loggers themselves are not exported (an exporter complaining about a
    dead collector would otherwise feed its own queue).
    """

    def __init__(self, *, use_global: bool = False) -> None:
        self.use_global = use_global
        self._provider: Any = None
        self._loggers: dict[str, Any] = {}

    def _provider_now(self) -> Any:
        t = runtime.active()
        provider = t.logger_provider if t is not None else None
        if provider is None and self.use_global:
            from opentelemetry import _logs

            provider = _logs.get_logger_provider()
        return provider

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        try:
            provider = self._provider_now()
            if provider is not None:
                self._emit(provider, method_name, event_dict)
        except Exception:  # the stdout line matters more than its OTLP copy
            pass
        return event_dict

    def _emit(self, provider: Any, method_name: str, event_dict: EventDict) -> None:
        record = event_dict.get("_record")
        scope = record.name if record is not None else "paid_telemetry"
        if scope.startswith("opentelemetry"):
            return
        if provider is not self._provider:
            self._provider, self._loggers = provider, {}
        otel_logger = self._loggers.get(scope)
        if otel_logger is None:
            otel_logger = self._loggers[scope] = provider.get_logger(scope)
        level = event_dict.get("level", method_name)
        number, text = _SEVERITY.get(level if isinstance(level, str) else str(level), _INFO)
        attributes: dict[str, Any] = {}
        for key, value in event_dict.items():
            if key in _NOT_ATTRIBUTES or value is None:
                continue
            attributes["exception.stacktrace" if key == "exception" else str(key)] = _attribute(value)
        ts = int(record.created * 1e9) if record is not None else time.time_ns()
        otel_logger.emit(
            timestamp=ts,
            context=_context_for(event_dict),
            severity_number=number,
            severity_text=text,
            body=str(event_dict.get("message", event_dict.get("event", ""))),
            attributes=attributes,
        )


def _context_for(event_dict: EventDict) -> Any:
    """The current context, unless the line names another span explicitly (e.g. log_run_end)."""
    ctx = otel_context.get_current()
    trace_hex, span_hex = event_dict.get("trace_id"), event_dict.get("span_id")
    if not isinstance(trace_hex, str) or not isinstance(span_hex, str):
        return ctx
    current = otel_trace.get_current_span(ctx).get_span_context()
    try:
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    except ValueError:
        return ctx
    if current.is_valid and current.trace_id == trace_id and current.span_id == span_id:
        return ctx
    if not (0 < trace_id < 2**128 and 0 < span_id < 2**64):
        return ctx
    named = otel_trace.SpanContext(
        trace_id, span_id, is_remote=False, trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)
    )
    return otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(named), ctx)


# -- configuration ----------------------------------------------------------------------
def shared_processors() -> list[Processor]:
    """The context processors used for both structlog and standard-library lines, in order."""
    return [
        structlog.contextvars.merge_contextvars,
        add_temporal_context,  # first: drops replayed workflow lines before any other work
        structlog.processors.add_log_level,
        add_timestamp,
        add_trace_context,
        add_agent_run_context,
    ]


class _Out:
    """The output stream; a closed or broken stream loses the line instead of raising.

    ``None`` means ``sys.stdout`` looked up at write time (so redirections made later apply).
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return (self.stream or sys.stdout).write(text)
        except Exception:
            return 0

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            (self.stream or sys.stdout).flush()

    def isatty(self) -> bool:
        try:
            return bool((self.stream or sys.stdout).isatty())
        except Exception:
            return False


class _SafeConsole:
    """structlog's ConsoleRenderer, falling back to JSON if a value cannot be rendered."""

    def __init__(self, colors: bool) -> None:
        self._console = structlog.dev.ConsoleRenderer(colors=colors, event_key="message")

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        try:
            return self._console(logger, method_name, dict(event_dict))
        except Exception:
            return render_json(logger, method_name, event_dict)


class _ReplayFilter(logging.Filter):
    """Drop standard-library records written by workflow code while it replays."""

    def filter(self, record: logging.LogRecord) -> bool:
        wf = sys.modules.get("temporalio.workflow")
        if wf is None:
            return True
        try:
            return not (wf.in_workflow() and _replaying(wf))
        except Exception:
            return True


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our root handler; marked so a second configure_logging() replaces it."""

    paid_telemetry = True


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    *,
    json: bool = True,
    level: str | int = "info",
    stream: TextIO | None = None,
    otel: bool | None = None,
    stdlib: bool = True,
) -> None:
    """Set up structlog (and the root ``logging`` handler) to write Paid's structured lines.

    ``json=False`` renders for humans (structlog's ConsoleRenderer). ``otel``: ``None`` exports
    each line over OTLP when the active ``configure()`` handle has a logger provider, ``True``
    also falls back to the global OTel logger provider, ``False`` never exports. ``stdlib``
    routes standard-library ``logging`` records (third-party libraries) through the same
    processors. Safe to call again: the previous set-up is replaced. ``stream`` defaults to
    ``sys.stdout`` as it is at write time; a closed stream drops lines, it never raises.
    """
    out = _Out(stream)
    min_level = _level_number(level)
    pre = shared_processors()
    tail: list[Processor] = []
    if json:
        tail.append(structlog.processors.format_exc_info)
    tail.append(structlog.processors.EventRenamer("message"))
    if otel is not False:
        tail.append(OTelLogExport(use_global=otel is True))
    renderer: Processor
    renderer = render_json if json else _SafeConsole(colors=out.isatty())
    structlog.configure(
        processors=[*pre, structlog.processors.StackInfoRenderer(), *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=structlog.WriteLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    if stdlib:
        _configure_stdlib(out, min_level, pre, tail, renderer)
    _register_run_end_hook()


def _configure_stdlib(
    out: _Out, min_level: int, pre: list[Processor], tail: list[Processor], renderer: Processor
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*pre, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[*tail, structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _Handler(out)
    handler.setFormatter(formatter)
    handler.addFilter(_ReplayFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "paid_telemetry", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(min_level)


def _register_run_end_hook() -> None:
    """Have every agent run end with the record's "Agent run completed" line."""
    add_run_end_hook(log_run_end)


# -- agent runs -------------------------------------------------------------------------
def log_run_end(run: Any, duration_s: float, status: str) -> None:
    """Write the record's "Agent run completed" line for ``run``; cheap, never raises.

    Level is ``info`` for completed runs, ``error`` for failed and ``warning`` for cancelled
    ones; ``trace_id``/``span_id`` are the run's own span even if called after it was detached.
    """
    try:
        fields: MutableMapping[str, Any] = {
            "agent_run_id": run.run_id,
            "project_id": run.project_id,
            "agent_type": run.agent_type,
            "duration_seconds": round(float(duration_s), 6),
            "status": status,
            "iterations": run.iterations,
        }
        span = getattr(run, "_span", None)
        if span is not None:
            ctx = span.get_span_context()
            if ctx.is_valid:
                fields["trace_id"] = format(ctx.trace_id, "032x")
                fields["span_id"] = format(ctx.span_id, "016x")
        logger = structlog.get_logger("paid_telemetry")
        getattr(logger, _RUN_END_LEVELS.get(status, "info"))(RUN_END_MESSAGE, **fields)
    except Exception:
        pass
