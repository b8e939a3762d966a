"""The active telemetry handle: providers, instruments, input guard and prices, one per ``configure()``.

Recording code calls :func:`current` once per record and reads everything from the handle
it gets, so reconfiguring swaps every instrument at once and the hot path never takes a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from paid_telemetry.export import providers as _providers
from paid_telemetry.export.providers import Providers
from paid_telemetry.guard import Guard
from paid_telemetry.instruments import Instruments
from paid_telemetry.pricing import PriceBook
from paid_telemetry.settings import Settings

log = logging.getLogger("paid_telemetry")


class Telemetry:
    """The handle ``configure()`` returns."""

    def __init__(self, settings: Settings, providers: Providers, *, noop: bool = False) -> None:
        self.settings = settings
        self.noop = noop
        self.providers = providers
        self.meter = providers.meter
        self.tracer = providers.tracer
        self.guard = Guard(
            strict=settings.strict,
            max_label_length=settings.max_label_length,
            cardinality_limit=settings.cardinality_limit,
        )
        self.prices = PriceBook()
        self.metrics = Instruments(self.meter, self.guard, settings)
        reader = providers.endpoint.reader if providers.endpoint is not None else providers.adopt_reader
        if reader is not None:
            # Series the endpoint had to leave out are counted like any other dropped record.
            guard = self.guard
            reader.on_problem = lambda reason, detail: guard.report(
                "prometheus_endpoint", reason, detail, may_raise=False)
        self._shutdown_done = False
        self._warm_up: threading.Thread | None = None
        if not noop:
            # genai-prices loads its price table on first use (~150 ms): do it off the hot path.
            # Not a daemon: a daemon thread killed inside its Rust extension at interpreter exit
            # aborts the process ("FATAL: exception not rethrown"); exit waits for it instead.
            self._warm_up = threading.Thread(target=self.prices.warm_up, name="paid-telemetry-prices", daemon=False)
            self._warm_up.start()

    def wait_warm_up(self, timeout_s: float) -> None:
        """Let the prices warm-up finish (before a fork: a child must not inherit a half-done
        import of genai-prices, whose module lock would belong to a thread it does not have)."""
        thread = self._warm_up
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)

    def abandon(self) -> None:
        """In a forked child: this handle belongs to the parent; stop it without flushing (see
        Providers.abandon). The child gets a handle of its own."""
        self._shutdown_done = True
        self.providers.abandon()

    @property
    def meter_provider(self) -> Any:
        return self.providers.meter_provider

    @property
    def tracer_provider(self) -> Any:
        return self.providers.tracer_provider

    @property
    def logger_provider(self) -> Any:
        return self.providers.logger_provider

    @property
    def owns_providers(self) -> bool:
        return self.providers.owned

    @property
    def prometheus_url(self) -> str | None:
        """The embedded /metrics URL (prometheus mode), else None."""
        return self.providers.prometheus_url

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Push what is buffered now (metrics, spans, logs) within ``timeout_s``."""
        return self.providers.flush(self.settings.shutdown_timeout_s if timeout_s is None else timeout_s)

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Flush and stop exporters; bounded by ``timeout_s`` (default settings.shutdown_timeout_s)."""
        if self._shutdown_done:
            return
        self._shutdown_done = True
        self.providers.shutdown(self.settings.shutdown_timeout_s if timeout_s is None else timeout_s)


# -- the active handle --------------------------------------------------------------------
_current: Telemetry | None = None
_noop: Telemetry | None = None
_warned_unconfigured = False
# Set in a forked child whose parent was configured: builds the child's own set-up on first
# use, outside os.fork() (other modules' after-fork hooks may still hold their locks there).
after_fork: Callable[[], Telemetry | None] | None = None


def current() -> Telemetry:
    """The active handle; a no-op one (and one warning) before ``configure()``."""
    t = _current
    if t is not None:
        return t
    return _unconfigured()


def active() -> Telemetry | None:
    """The configured handle, or None (no warning)."""
    return _current


def activate(t: Telemetry | None) -> Telemetry | None:
    """Make ``t`` the active handle; returns the previous one (the caller shuts it down)."""
    global _current
    previous, _current = _current, t
    return previous


def silence_unconfigured() -> None:
    """No "configure() was not called" warning from now on (after shutdown on SIGTERM)."""
    global _warned_unconfigured
    _warned_unconfigured = True


def _unconfigured() -> Telemetry:
    global _noop, _warned_unconfigured
    rebuild = after_fork
    if rebuild is not None:
        t = rebuild()
        if t is not None:
            return t
    if not _warned_unconfigured:
        _warned_unconfigured = True
        log.warning("paid-telemetry: configure() was not called; metrics and spans are not recorded")
    if _noop is None:
        _noop = Telemetry(Settings(exporter="none"), _providers.noop(), noop=True)
    return _noop
