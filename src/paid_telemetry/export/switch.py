"""Global meter and tracer providers whose target can change.

OpenTelemetry lets a process set its global providers once. If paid-telemetry installed its
own SDK providers there, a second ``configure()`` would leave every other library's
instruments and tracers on the first, shut-down providers. Instead it installs these
delegating providers once; ``configure()`` points them at the providers it just built, and
``shutdown()`` at no-op ones. Instruments and tracers handed out earlier follow each switch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.metrics._internal import _ProxyMeter
from opentelemetry.metrics._internal.instrument import (
    CallbackT,
    _ProxyCounter,
    _ProxyGauge,
    _ProxyHistogram,
    _ProxyInstrument,
    _ProxyObservableCounter,
    _ProxyObservableGauge,
    _ProxyObservableUpDownCounter,
    _ProxyUpDownCounter,
)
from opentelemetry.util._decorator import _agnosticcontextmanager


class _SwitchMeter(_ProxyMeter):
    """A meter whose instruments are always proxies, re-pointed at every switch."""

    def _add(self, proxy: Any) -> Any:
        with self._lock:
            self._instruments.append(proxy)
            if self._real_meter is not None:
                proxy.on_meter_set(self._real_meter)
        return proxy

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._add(_ProxyCounter(name, unit, description))

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._add(_ProxyUpDownCounter(name, unit, description))

    def create_observable_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = "",
    ) -> Any:
        return self._add(_ProxyObservableCounter(name, callbacks, unit, description))

    def create_histogram(
        self, name: str, unit: str = "", description: str = "", *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> Any:
        return self._add(_ProxyHistogram(name, unit, description, explicit_bucket_boundaries_advisory))

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> Any:
        return self._add(_ProxyGauge(name, unit, description))

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = "",
    ) -> Any:
        return self._add(_ProxyObservableGauge(name, callbacks, unit, description))

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = "",
    ) -> Any:
        return self._add(_ProxyObservableUpDownCounter(name, callbacks, unit, description))

    @property
    def instruments(self) -> list[_ProxyInstrument[Any]]:
        return list(self._instruments)


class SwitchableMeterProvider(otel_metrics.MeterProvider):
    """The global meter provider paid-telemetry installs once; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meters: dict[tuple[str, str | None, str | None], _SwitchMeter] = {}
        self._target: otel_metrics.MeterProvider = otel_metrics.NoOpMeterProvider()

    @property
    def target(self) -> otel_metrics.MeterProvider:
        return self._target

    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Any = None,
    ) -> otel_metrics.Meter:
        key = (name, version, schema_url)
        with self._lock:
            meter = self._meters.get(key)
            if meter is None:
                meter = self._meters[key] = _SwitchMeter(name, version=version, schema_url=schema_url)
                meter.on_set_meter_provider(self._target)
            return meter

    def switch(self, target: otel_metrics.MeterProvider | None) -> None:
        """Send every meter's measurements to ``target`` (None: nowhere) from now on."""
        with self._lock:
            self._target = target if target is not None else otel_metrics.NoOpMeterProvider()
            for meter in self._meters.values():
                meter.on_set_meter_provider(self._target)


class _SwitchTracer(otel_trace.Tracer):
    def __init__(self, owner: SwitchableTracerProvider, args: tuple[Any, ...]) -> None:
        self._owner = owner
        self._args = args
        self._generation = -1
        self._tracer: otel_trace.Tracer = otel_trace.NoOpTracer()

    def _current(self) -> otel_trace.Tracer:
        target, generation = self._owner.state  # one read: never a new target with an old generation
        if self._generation != generation:
            self._tracer = target.get_tracer(*self._args)
            self._generation = generation
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> otel_trace.Span:
        return self._current().start_span(*args, **kwargs)

    @_agnosticcontextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[otel_trace.Span]:
        with self._current().start_as_current_span(*args, **kwargs) as span:
            yield span


class SwitchableTracerProvider(otel_trace.TracerProvider):
    """The global tracer provider paid-telemetry installs once; see the module docstring."""

    def __init__(self) -> None:
        self.state: tuple[otel_trace.TracerProvider, int] = (otel_trace.NoOpTracerProvider(), 0)

    @property
    def target(self) -> otel_trace.TracerProvider:
        return self.state[0]

    def get_tracer(
        self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
        schema_url: str | None = None, attributes: Any = None,
    ) -> otel_trace.Tracer:
        return _SwitchTracer(self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes))

    def switch(self, target: otel_trace.TracerProvider | None) -> None:
        """Start spans on ``target`` (None: no-op spans) from now on."""
        self.state = (target if target is not None else otel_trace.NoOpTracerProvider(), self.state[1] + 1)
