"""configure(), shutdown() and force_flush(): the three calls that start and stop telemetry."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from paid_telemetry import process, runtime
from paid_telemetry.export import providers
from paid_telemetry.runtime import Telemetry
from paid_telemetry.settings import resolve

log = logging.getLogger("paid_telemetry")
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
    win over environment variables. A bad value raises :class:`paid_telemetry.ConfigurationError`
    and leaves the previous set-up (or none) active and working.
    ``metric_readers``/``span_processors``/``log_processors`` add readers or processors
    (for example OTel's in-memory ones in tests).
    """
    resolved = resolve(**settings)  # ConfigurationError here: nothing has changed
    with _lock:
        previous = runtime.active()
        if resolved.disabled:
            log.info("paid-telemetry: disabled (%s); nothing is recorded or exported", resolved.source("disabled"))
            built = providers.noop()
        else:
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
        providers.commit(built, previous.providers if previous is not None else None)
        if resolved.disabled:
            providers.release_all_globals()
        runtime.activate(telemetry)
        if previous is not None:
            previous.shutdown()
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
