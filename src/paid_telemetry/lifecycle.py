"""configure(), shutdown() and force_flush(): the three calls that start and stop telemetry,
and what a forked child does with the set-up it inherited."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from paid_telemetry import agents, process, runtime
from paid_telemetry.export import providers
from paid_telemetry.runtime import Telemetry
from paid_telemetry.settings import Settings, resolve

log = logging.getLogger("paid_telemetry")
_lock = threading.Lock()
_fork_lock = threading.Lock()
_pending: Settings | None = None  # in a forked child: the parent's settings, until first use


def configure(
    *,
    metric_readers: Sequence[Any] = (),
    span_processors: Sequence[Any] = (),
    log_processors: Sequence[Any] = (),
    **settings: Any,
) -> Telemetry:
    """Set up Paid's telemetry; returns the handle. Safe to call again (replaces the previous set-up).

    Keyword arguments are the fields of :class:`paid_telemetry.Settings`; arguments
    win over environment variables. A bad value raises :class:`paid_telemetry.ConfigurationError`
    and leaves the previous set-up (or none) active and working.
    ``metric_readers``/``span_processors``/``log_processors`` add readers or processors
    (for example OTel's in-memory ones in tests). A forked child gets a set-up of its own from
    the same settings (without these extra readers and processors); see docs/deploying.md.
    Unless ``genai_spans=False``, LLM usage on GenAI client spans is counted (``paid_telemetry.genai_spans``).
    """
    resolved = resolve(**settings)  # ConfigurationError here: nothing has changed
    telemetry = _start(resolved, metric_readers, span_processors, log_processors)
    if resolved.log_format != "off":
        from paid_telemetry.logs import configure_logging

        configure_logging(json=resolved.log_format == "json", level=resolved.log_level)
    return telemetry


def _start(
    resolved: Settings,
    metric_readers: Sequence[Any] = (),
    span_processors: Sequence[Any] = (),
    log_processors: Sequence[Any] = (),
) -> Telemetry:
    global _pending
    with _lock:
        _pending, runtime.after_fork = None, None
        previous = runtime.active()
        if resolved.disabled:
            log.info("paid-telemetry: disabled (%s); nothing is recorded or exported", resolved.source("disabled"))
            built = providers.noop()
        else:
            if resolved.genai_spans:  # LLM usage on GenAI client spans becomes tokens and cost
                from paid_telemetry.genai_spans import GenAISpanProcessor

                span_processors = (GenAISpanProcessor(), *span_processors)
            # Build the new set-up completely before touching the old one: if anything fails,
            # the previous set-up stays active and working.
            built = providers.build(
                resolved, metric_readers=metric_readers, span_processors=span_processors,
                log_processors=log_processors, previous=previous.providers if previous is not None else None,
            )
        try:
            telemetry = Telemetry(resolved, built, noop=resolved.disabled)
        except BaseException:
            built.shutdown(1.0)
            raise
        if built.endpoint is not None and built.endpoint.fallback_from is not None:
            # the warning was logged by start_endpoint; the count lives on the endpoint it describes
            telemetry.metrics.dropped.add(1, {"instrument": "prometheus_endpoint", "reason": "port_in_use"})
        providers.commit(built, previous.providers if previous is not None else None)
        if resolved.disabled:
            providers.release_all_globals()
        runtime.activate(telemetry)
        if previous is not None:
            previous.shutdown()
    process.on_exit(shutdown, _shutdown_bound)
    if resolved.handle_sigterm:
        process.on_sigterm(_on_sigterm)
    return telemetry


def shutdown(timeout_s: float | None = None) -> None:
    """Flush and stop; the SDK then records nothing until ``configure()`` is called again."""
    global _pending
    with _lock:
        _pending, runtime.after_fork = None, None
        t = runtime.activate(None)
    if t is not None:
        t.shutdown(timeout_s)


def force_flush(timeout_s: float | None = None) -> bool:
    """Push what is buffered now; True when every provider confirmed within the bound."""
    t = runtime.active()
    return True if t is None else t.force_flush(timeout_s)


def _shutdown_bound() -> float:
    t = runtime.active()
    return (t.settings.shutdown_timeout_s if t is not None else 5.0) + 1.0


def _on_sigterm() -> None:
    """SIGTERM (from process's flush thread): runs still open end as ``cancelled``, then flush."""
    agents.end_open_runs("cancelled")
    runtime.silence_unconfigured()  # the main thread may record on until the process ends: no warning
    shutdown()


# -- fork ---------------------------------------------------------------------------------


def _before_fork() -> None:
    t = runtime.active()
    if t is not None:
        t.wait_warm_up(2.0)


def _after_fork_in_child() -> None:
    """The child records into a set-up of its own: the parent's aggregates are the parent's
    to export (re-exporting them would double count), its threads are gone and its locks
    may be held forever. Runs inside ``os.fork()``, where other modules' after-fork hooks
    may not have run yet, so nothing is built here: the child's set-up is built from the
    same settings on its first record (``runtime.after_fork``). Never raises."""
    global _lock, _fork_lock, _pending
    _lock, _fork_lock = threading.Lock(), threading.Lock()
    agents.forget_open_runs()  # runs opened before the fork are recorded by the parent
    old = runtime.activate(None)
    if old is None or old.noop:
        return
    try:
        old.abandon()
    except Exception as exc:  # instrumentation never breaks the caller, not even in os.fork()
        log.debug("paid-telemetry: abandoning the parent's set-up failed: %r", exc)
    _pending = old.settings
    runtime.after_fork = _build_in_child


def _build_in_child() -> Telemetry | None:
    global _pending
    with _fork_lock:  # a second thread waits for the first one's set-up instead of losing records
        t = runtime.active()
        if t is not None or _pending is None:
            return t
        settings, _pending = _pending, None
        runtime.after_fork = None
        try:
            t = _start(settings)
        except Exception as exc:
            log.warning("paid-telemetry: could not set up telemetry in the forked child: %r", exc)
            return None
    process.run_at_multiprocessing_exit(shutdown)
    return t


process.on_fork(_before_fork, _after_fork_in_child)
