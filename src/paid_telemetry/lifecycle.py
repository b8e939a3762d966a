"""configure(), shutdown() and force_flush(): the three calls that start and stop telemetry."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from paid_telemetry import process, runtime
from paid_telemetry.export import providers
from paid_telemetry.runtime import Telemetry
from paid_telemetry.settings import resolve

_lock = threading.Lock()


def configure(
    *,
    metric_readers: Sequence[Any] = (),
    span_processors: Sequence[Any] = (),
    log_processors: Sequence[Any] = (),
    **settings: Any,
) -> Telemetry:
    """Set up Paid's telemetry; returns the handle. Safe to call again (replaces the previous set-up).

    Keyword arguments are the fields of :class:`paid_telemetry.Settings`; arguments
    win over environment variables. ``metric_readers``/``span_processors``/``log_processors``
    add readers or processors (for example OTel's in-memory ones in tests). Unless
    ``genai_spans=False``, LLM usage on GenAI client spans is counted (``paid_telemetry.genai_spans``).
    """
    resolved = resolve(**settings)
    with _lock:
        previous = runtime.active()
        if previous is not None:
            previous.shutdown()
        if resolved.genai_spans:
            from paid_telemetry.genai_spans import GenAISpanProcessor

            span_processors = (GenAISpanProcessor(), *span_processors)
        built = providers.build(
            resolved, metric_readers=metric_readers, span_processors=span_processors, log_processors=log_processors,
        )
        telemetry = Telemetry(resolved, built)
        runtime.activate(telemetry)
    process.on_exit(shutdown)
    if resolved.handle_sigterm:
        process.on_sigterm(shutdown)
    if resolved.log_format != "off":
        from paid_telemetry.logs import configure_logging

        configure_logging(json=resolved.log_format == "json", level=resolved.log_level)
    return telemetry


def shutdown(timeout_s: float | None = None) -> None:
    """Flush and stop; the SDK then records nothing until ``configure()`` is called again."""
    with _lock:
        t = runtime.activate(None)
    if t is not None:
        t.shutdown(timeout_s)


def force_flush(timeout_s: float | None = None) -> bool:
    """Push what is buffered now; True when every provider confirmed within the bound."""
    t = runtime.active()
    return True if t is None else t.force_flush(timeout_s)
