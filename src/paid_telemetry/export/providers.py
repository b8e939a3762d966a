"""Provider assembly: the meter, tracer and logger providers and where their data goes.

:func:`build` turns settings into :class:`Providers` (ours, or a complete set another tool
already installed globally); :meth:`Providers.flush` and :meth:`Providers.shutdown` are
bounded so a dead collector never holds the application.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace

from paid_telemetry import catalogue as cat
from paid_telemetry._version import __version__ as VERSION
from paid_telemetry.export import otlp
from paid_telemetry.settings import Settings

log = logging.getLogger("paid_telemetry")
SCOPE = "paid_telemetry"

_globals_installed = False


@dataclass
class Providers:
    """What ``configure()`` built: a meter and tracer for paid-telemetry, and their providers."""

    meter: otel_metrics.Meter
    tracer: otel_trace.Tracer
    meter_provider: Any = None
    tracer_provider: Any = None
    logger_provider: Any = None
    owned: bool = False  # False when a foreign set-up is reused: never flush or shut it down
    endpoint: Any = None  # the embedded /metrics server, in prometheus mode

    @property
    def prometheus_url(self) -> str | None:
        return None if self.endpoint is None else self.endpoint.url

    def flush(self, timeout_s: float) -> bool:
        """Push what is buffered now (metrics, spans, logs) within ``timeout_s``."""
        if not self.owned:
            return True
        deadline = time.monotonic() + timeout_s
        ok = True
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            if provider is None:
                continue
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                ok = bool(provider.force_flush(left_ms)) and ok
            except Exception as exc:  # exporters may raise on a dead collector
                log.debug("paid-telemetry: flush failed: %r", exc)
                ok = False
        return ok

    def shutdown(self, timeout_s: float) -> None:
        """Flush and stop exporters, never holding the caller past ``timeout_s``."""
        deadline = time.monotonic() + timeout_s

        def _stop() -> None:
            self.flush(timeout_s * 0.8)
            if not self.owned:
                return
            for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
                if provider is None:
                    continue
                try:
                    if provider is self.meter_provider:
                        provider.shutdown(timeout_millis=max(1, (deadline - time.monotonic()) * 1000))
                    else:
                        provider.shutdown()
                except Exception as exc:
                    log.debug("paid-telemetry: shutdown failed: %r", exc)

        # Exporters can block on a dead or slow collector: never hold the caller past the bound.
        worker = threading.Thread(target=_stop, name="paid-telemetry-shutdown", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            log.warning("paid-telemetry: shutdown exceeded %.1fs; unexported data is dropped", timeout_s)
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None


def noop() -> Providers:
    """Providers that record nothing (before ``configure()``, or ``exporter="none"`` tests)."""
    return Providers(
        meter=otel_metrics.NoOpMeterProvider().get_meter(SCOPE),
        tracer=otel_trace.NoOpTracerProvider().get_tracer(SCOPE),
    )


def build(
    s: Settings,
    *,
    metric_readers: Sequence[Any] = (),
    span_processors: Sequence[Any] = (),
    log_processors: Sequence[Any] = (),
) -> Providers:
    """Our providers for ``s``, or the complete set another tool installed (reused, not owned)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    foreign_tp = _foreign_tracer_provider()
    foreign_mp = _foreign_meter_provider()
    if foreign_tp is not None and foreign_mp is not None:
        log.debug("paid-telemetry: reusing the global tracer and meter providers another tool installed")
        return Providers(meter=foreign_mp.get_meter(SCOPE, VERSION), tracer=foreign_tp.get_tracer(SCOPE, VERSION))

    attrs: dict[str, Any] = {
        "service.name": s.service_name,
        "deployment.environment.name": s.environment,
        **dict(s.resource_attributes),
    }
    if s.service_version:
        attrs["service.version"] = s.service_version
    resource = Resource.create(attrs)
    readers = list(metric_readers)
    endpoint = None
    if s.exporter == "prometheus":
        from paid_telemetry.export.prometheus import start_endpoint

        endpoint = start_endpoint(s.prometheus_host, s.prometheus_port)
        readers.append(endpoint.reader)
    else:
        exporter = otlp.metric_exporter(s)
        if exporter is not None:
            readers.append(PeriodicExportingMetricReader(
                exporter, export_interval_millis=s.metric_export_interval_ms,
                export_timeout_millis=s.export_timeout_s * 1000,
            ))
    mp = MeterProvider(metric_readers=readers, resource=resource, views=views(s.cardinality_limit),
                       shutdown_on_exit=False)
    with _sdk_self_metrics():
        # The SDK's own span metrics go to this provider, not to whatever is global (after a
        # reconfigure the global one is an older, shut-down provider).
        tp = TracerProvider(resource=resource, shutdown_on_exit=False, meter_provider=mp)
        for proc in span_processors:
            tp.add_span_processor(proc)
        span_exporter = otlp.span_exporter(s, mp)
        if span_exporter is not None:
            tp.add_span_processor(BatchSpanProcessor(
                span_exporter, max_queue_size=s.span_queue_size, max_export_batch_size=min(512, s.span_queue_size),
                export_timeout_millis=s.export_timeout_s * 1000, meter_provider=mp,
            ))
        lp = None
        if s.logs and (s.exporter in ("otlp", "console") or log_processors):
            lp = _logger_provider(s, resource, mp, log_processors)
    # Only a complete foreign set-up is reused (above); otherwise ours serve paid-telemetry
    # and fill whichever global slot is still free, for other libraries' benefit.
    if foreign_tp is None:
        _install_global_tracer(tp)
    if foreign_mp is None:
        _install_global_meter(mp)
    return Providers(
        meter=mp.get_meter(SCOPE, VERSION), tracer=tp.get_tracer(SCOPE, VERSION), meter_provider=mp,
        tracer_provider=tp, logger_provider=lp, owned=True, endpoint=endpoint,
    )


@contextlib.contextmanager
def _sdk_self_metrics() -> Iterator[None]:
    """Have the SDK report spans and logs started, dropped and failed (otel_sdk_*) for the
    processors built inside this block, without changing the process environment for good."""
    var = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"
    before = os.environ.get(var)
    if before is None:
        os.environ[var] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(var, None)


def _logger_provider(s: Settings, resource: Any, mp: Any, log_processors: Sequence[Any]) -> Any:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    lp = LoggerProvider(resource=resource, shutdown_on_exit=False, meter_provider=mp)
    for proc in log_processors:
        lp.add_log_record_processor(proc)
    exporter = otlp.log_exporter(s, mp)
    if exporter is not None:
        lp.add_log_record_processor(
            BatchLogRecordProcessor(exporter, export_timeout_millis=s.export_timeout_s * 1000, meter_provider=mp)
        )
    return lp


def views(cardinality_limit: int) -> list[Any]:
    """Bucket boundaries from the catalogue; the SDK's own series cap set just above ours,
    so our guard (which folds and counts) acts first and the SDK's never silently does."""
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    limit = cardinality_limit + 64  # + the overflow sets, one per closed-label combination
    return [
        View(
            instrument_name=i.name,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=i.buckets) if i.buckets else None,
            aggregation_cardinality_limit=limit,
            exemplar_reservoir_factory=_sticky_reservoir_factory if i.buckets else None,
        )
        for i in (*cat.CATALOGUE, *cat.GENAI_SEMCONV)
    ]


def _sticky_reservoir_factory(aggregation_type: type) -> Any:
    """Histogram exemplars that survive collection, as Prometheus clients keep them.

    The SDK's reservoir forgets exemplars at every collection, so with cumulative
    temporality the collector (which keeps only the latest point) drops them one export
    later and Prometheus rarely scrapes them. Keeping the last exemplar per bucket until a
    newer one replaces it makes every histogram exemplar reach Prometheus.
    """
    from opentelemetry.sdk.metrics._internal.exemplar import AlignedHistogramBucketExemplarReservoir

    class StickyBucketReservoir(AlignedHistogramBucketExemplarReservoir):
        def __init__(self, boundaries: Any, **kwargs: Any) -> None:
            super().__init__(boundaries, **kwargs)
            self._last: dict[int, Any] = {}

        def collect(self, point_attributes: Any) -> list[Any]:
            with self._lock:
                for index, bucket in list(self._reservoir_storage.items()):
                    exemplar = bucket.collect(point_attributes)
                    if exemplar is not None:
                        self._last[index] = exemplar
                self._reset()
                return [self._last[i] for i in sorted(self._last)]

    return StickyBucketReservoir


def _foreign_tracer_provider() -> Any:
    tp = otel_trace.get_tracer_provider()
    if isinstance(tp, otel_trace.ProxyTracerProvider) or _globals_installed:
        return None
    return tp


def _foreign_meter_provider() -> Any:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    mp = otel_metrics.get_meter_provider()
    if isinstance(mp, _ProxyMeterProvider) or _globals_installed:
        return None
    return mp


def _install_global_tracer(tp: Any) -> None:
    global _globals_installed
    if isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider):
        otel_trace.set_tracer_provider(tp)
        _globals_installed = True
        log.debug("paid-telemetry: installed its tracer provider globally")


def _install_global_meter(mp: Any) -> None:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    if isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider):
        otel_metrics.set_meter_provider(mp)
