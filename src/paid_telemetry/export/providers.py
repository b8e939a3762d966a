"""Provider assembly: the meter, tracer and logger providers and where their data goes.

:func:`build` turns settings into :class:`Providers` (ours, or a complete set another tool
already installed globally); :meth:`Providers.flush` and :meth:`Providers.shutdown` are
bounded so a dead collector never holds the application.
"""

from __future__ import annotations

import contextlib
import errno
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
from paid_telemetry.export.switch import SwitchableMeterProvider, SwitchableTracerProvider
from paid_telemetry.guard import MAX_ATTRIBUTE_LENGTH
from paid_telemetry.settings import ConfigurationError, Settings, otel_bool
from paid_telemetry.settings import error as settings_error

_ATTRIBUTE_LENGTH_VARS = {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"}

log = logging.getLogger("paid_telemetry")
SCOPE = "paid_telemetry"

_switch_tp: SwitchableTracerProvider | None = None  # the global providers, once installed
_switch_mp: SwitchableMeterProvider | None = None


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
    endpoint_at: tuple[str, int] | None = None  # the (host, port) asked for
    adopt_reader: Any = None  # a reader for the previous set-up's server, until commit()
    endpoint_security: tuple[Any, Any] = (None, None)  # (basic-auth Access, TLS context) asked for
    fork_sensitive: tuple[Any, ...] = ()  # exporting readers and batch processors (see abandon)

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
        release_globals(self)

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


    def abandon(self) -> None:
        """In a forked child, let go of the parent's set-up without exporting its data twice.

        The child inherits the parent's aggregates, queues, sockets and locks (some possibly
        held by parent threads that do not exist here). Nothing of it is flushed or locked:
        the inherited listening socket is closed, and the SDK's own after-fork hooks (which
        run after ours) find the exporting threads told to stop at once: the periodic
        reader's ticker is replaced by a no-op, the batch processors are marked shut down.
        """
        if self.endpoint is not None:
            with contextlib.suppress(OSError):
                self.endpoint.abandon()
            self.endpoint = None
        for obj in self.fork_sensitive:
            with contextlib.suppress(Exception):
                if hasattr(obj, "_ticker"):
                    obj._ticker = lambda: None  # PeriodicExportingMetricReader
                inner = getattr(obj, "_batch_processor", None)  # BatchSpan/LogRecordProcessor
                if inner is not None:
                    inner._shutdown = True
        self.fork_sensitive = ()
        self.owned = False


def noop() -> Providers:
    """Providers that record nothing (before ``configure()``, or ``OTEL_SDK_DISABLED``)."""
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
    previous: Providers | None = None,
) -> Providers:
    """Our providers for ``s``, or the complete set another tool installed (reused, not owned).

    Builds everything, changing nothing global: :func:`commit` makes the result live. A
    failure raises :class:`ConfigurationError` after releasing what was built, so the
    previous set-up keeps working. ``previous``'s /metrics server is taken over (at commit)
    when it listens where ``s`` asks, since a second server could not bind there.
    """
    foreign_tp = _foreign_tracer_provider()
    foreign_mp = _foreign_meter_provider()
    if foreign_tp is not None and foreign_mp is not None:
        log.info("paid-telemetry: reusing the global tracer and meter providers another tool installed (%s, %s);"
                 " its exporters decide where data goes", type(foreign_tp).__name__, type(foreign_mp).__name__)
        return Providers(meter=foreign_mp.get_meter(SCOPE, VERSION), tracer=foreign_tp.get_tracer(SCOPE, VERSION))
    built: list[Any] = []  # what to release if a later step fails
    try:
        # Every component built here reads OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED when it is made
        # (exporters, processors, and the tracer itself).
        span_metrics = otel_bool(os.environ, _SELF_METRICS_VAR) is True  # the user's choice, read first
        with _sdk_enabled(), _sdk_self_metrics():
            return _build_own(s, metric_readers, span_processors, log_processors, previous, built,
                              span_metrics=span_metrics)
    except BaseException:
        for thing in reversed(built):
            with contextlib.suppress(Exception):
                thing()
        raise


def _build_own(
    s: Settings,
    metric_readers: Sequence[Any],
    span_processors: Sequence[Any],
    log_processors: Sequence[Any],
    previous: Providers | None,
    built: list[Any],
    *,
    span_metrics: bool = False,
) -> Providers:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs: dict[str, Any] = {
        "service.name": s.service_name,
        "deployment.environment.name": s.environment,
        **dict(s.resource_attributes),
    }
    if s.service_version:
        attrs["service.version"] = s.service_version
    resource = Resource.create(attrs)
    readers = list(metric_readers)
    periodic: list[Any] = []  # our exporting readers and batch processors, for abandon() after a fork
    batches: list[Any] = []
    endpoint = None
    adopt = None
    if s.metrics_exporter == "prometheus":
        from paid_telemetry.export.prometheus import EmbeddedPrometheusReader

        where = (s.prometheus_host, s.prometheus_port)
        security = _endpoint_security(s)
        if previous is not None and previous.endpoint is not None and previous.endpoint_at == where and where[1]:
            adopt = EmbeddedPrometheusReader()  # served by the previous server once committed
            readers.append(adopt)
        else:
            endpoint = _start_endpoint(s, *security)
            built.append(endpoint.close)
            readers.append(endpoint.reader)
        for reader in readers[-1:]:
            reader.resource = resource.attributes  # target_info even before the first recording
    else:
        exporter = _exporter(s, "metrics", otlp.metric_exporter)
        if exporter is not None:
            periodic.append(PeriodicExportingMetricReader(
                exporter, export_interval_millis=s.metric_export_interval_ms,
                export_timeout_millis=s.signal_timeout_s("metrics") * 1000,
            ))
            readers.append(periodic[-1])
    mp = MeterProvider(metric_readers=readers, resource=resource, views=views(s.cardinality_limit),
                       shutdown_on_exit=False)
    built.append(lambda: mp.shutdown(timeout_millis=1000))
    with _sdk_self_metrics():
        # The SDK's own span metrics go to this provider, not to whatever is global (after a
        # reconfigure the global one is an older, shut-down provider).
        # Attribute values are cut at MAX_ATTRIBUTE_LENGTH characters unless the standard variables
        # say otherwise: a 1 MiB value in every queued span would hold gigabytes (span names we
        # build are cut by the recording code).
        length = None if _ATTRIBUTE_LENGTH_VARS & os.environ.keys() else MAX_ATTRIBUTE_LENGTH
        limits = SpanLimits(max_attribute_length=length, max_span_attribute_length=length)
        tp = TracerProvider(resource=resource, shutdown_on_exit=False, meter_provider=mp, span_limits=limits)
        built.append(tp.shutdown)
        for proc in span_processors:
            tp.add_span_processor(proc)
        span_exporter = _exporter(s, "traces", lambda s_: otlp.span_exporter(s_, mp))
        if span_exporter is not None:
            batches.append(BatchSpanProcessor(
                span_exporter, max_queue_size=s.span_queue_size, max_export_batch_size=min(512, s.span_queue_size),
                export_timeout_millis=s.signal_timeout_s("traces") * 1000, meter_provider=mp,
            ))
            tp.add_span_processor(batches[-1])
        lp = None
        if s.logs and (s.logs_exporter in ("otlp", "console") or log_processors):
            lp = _logger_provider(s, resource, mp, log_processors, batches)
            built.append(lp.shutdown)
    providers = Providers(
        meter=mp.get_meter(SCOPE, VERSION), tracer=_tracer(tp, span_metrics), meter_provider=mp,
        tracer_provider=tp, logger_provider=lp, owned=True, endpoint=endpoint, fork_sensitive=(*periodic, *batches),
    )
    if endpoint is not None:  # the port actually bound, so configure(prometheus_port=<it>) reuses it
        providers.endpoint_at = (s.prometheus_host, int(endpoint.server.server_address[1]))
    elif adopt is not None and previous is not None:
        providers.endpoint_at = previous.endpoint_at
    providers.adopt_reader = adopt
    if s.metrics_exporter == "prometheus":
        providers.endpoint_security = security
    return providers


def _endpoint_security(s: Settings) -> tuple[Any, Any]:
    """The endpoint's basic-auth credentials and TLS context, read from their files now, so a
    missing or unreadable file is a ConfigurationError naming the setting, not a failing scrape."""
    from paid_telemetry.export.prometheus import Access, tls_context

    access = tls = None
    if s.prometheus_username:
        try:
            access = Access.from_file(s.prometheus_username, s.prometheus_password_file)
        except (OSError, ValueError) as exc:
            raise settings_error(s, "prometheus_password_file", "a readable file holding the password",
                                 f"{type(exc).__name__}: {exc}") from None
    if s.prometheus_tls_cert_file:
        try:
            tls = tls_context(s.prometheus_tls_cert_file, s.prometheus_tls_key_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise settings_error(s, "prometheus_tls_cert_file",
                                 "a readable PEM certificate chain matching prometheus_tls_key_file",
                                 f"{type(exc).__name__}: {exc}") from None
    return access, tls


def _start_endpoint(s: Settings, access: Any = None, tls: Any = None) -> Any:
    """Start the /metrics server, turning bind and name-resolution errors into a clear error."""
    import socket

    from paid_telemetry.export.prometheus import start_endpoint

    try:
        return start_endpoint(s.prometheus_host, s.prometheus_port, port_range=s.prometheus_port_range,
                              strict=s.strict, access=access, tls=tls)
    except socket.gaierror as exc:
        raise settings_error(s, "prometheus_host", "a host name that resolves, or an IP address, on this machine",
                             f"cannot resolve it: {exc.strerror or exc}") from None
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        detail = f"cannot listen on {s.prometheus_host}:{s.prometheus_port}: {reason}"
        if getattr(exc, "errno", None) == errno.EADDRNOTAVAIL:
            raise settings_error(s, "prometheus_host", "an address of this machine, such as 127.0.0.1",
                                 detail) from None
        raise settings_error(s, "prometheus_port", "a free port on that host (or 0 for any free port)",
                             detail) from None


def _exporter(s: Settings, signal: str, make: Any) -> Any:
    """One signal's exporter; an exporter that rejects what it reads itself from the
    environment (compression, certificates) becomes a ConfigurationError."""
    try:
        return make(s)
    except Exception as exc:
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_* ({signal})", s.signal_endpoint(signal),
            "settings the OpenTelemetry OTLP exporter accepts", detail=f"{type(exc).__name__}: {exc}",
        ) from exc


def commit(new: Providers, previous: Providers | None) -> None:
    """Make ``new`` live: take over the previous /metrics server if asked, and point the
    global providers paid-telemetry installed at ``new`` (installing them the first time)."""
    if new.adopt_reader is not None and previous is not None and previous.endpoint is not None:
        new.endpoint, previous.endpoint = previous.endpoint, None
        new.endpoint.serve(new.adopt_reader, *new.endpoint_security)
        new.adopt_reader = None
    if not new.owned:
        return
    _install_global_tracer(new.tracer_provider)
    _install_global_meter(new.meter_provider)


def release_globals(providers: Providers) -> None:
    """Point the global providers away from ``providers`` (being shut down) to no-op ones."""
    if _switch_mp is not None and _switch_mp.target is providers.meter_provider:
        _switch_mp.switch(None)
    if _switch_tp is not None and _switch_tp.target is providers.tracer_provider:
        _switch_tp.switch(None)


def release_all_globals() -> None:
    """Point the global providers paid-telemetry installed at no-op ones (SDK disabled)."""
    if _switch_mp is not None:
        _switch_mp.switch(None)
    if _switch_tp is not None:
        _switch_tp.switch(None)


@contextlib.contextmanager
def _sdk_enabled() -> Iterator[None]:
    """The SDK providers read OTEL_SDK_DISABLED when built; settings already decided (an
    argument ``disabled=False`` wins over the variable), so hide it while building."""
    before = os.environ.pop("OTEL_SDK_DISABLED", None)
    try:
        yield
    finally:
        if before is not None:
            os.environ["OTEL_SDK_DISABLED"] = before


_SELF_METRICS_VAR = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"


def _tracer(tp: Any, span_metrics: bool) -> Any:
    """Our tracer, without the SDK's per-span otel_sdk_span_started/live counters unless the
    user asked for them (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true).

    Those are three metric updates on every span: ~40 µs of a ~90 µs agent-run record
    (bench/bench.py record: 1.46x raw OTel with them, see docs/performance.md). What a lost span
    costs an operator is already counted once per batch by the processor and exporter
    (otel_sdk_processor_span_processed_total{error_type}, otel_sdk_exporter_span_exported_total),
    which stay on; the SDK reads the variable when a tracer is made, so it is set for this call
    only as the user set it.
    """
    before = os.environ.get(_SELF_METRICS_VAR)
    if span_metrics:
        os.environ[_SELF_METRICS_VAR] = "true"
    else:
        os.environ.pop(_SELF_METRICS_VAR, None)
    try:
        return tp.get_tracer(SCOPE, VERSION)
    finally:
        if before is None:
            os.environ.pop(_SELF_METRICS_VAR, None)
        else:
            os.environ[_SELF_METRICS_VAR] = before


@contextlib.contextmanager
def _sdk_self_metrics() -> Iterator[None]:
    """Have the SDK report spans and logs processed, dropped and failed (otel_sdk_*) for the
    processors and exporters built inside this block, without changing the process environment
    for good."""
    var = _SELF_METRICS_VAR
    before = os.environ.get(var)
    if before is None:
        os.environ[var] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(var, None)


def _logger_provider(s: Settings, resource: Any, mp: Any, log_processors: Sequence[Any], batches: list[Any]) -> Any:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    lp = LoggerProvider(resource=resource, shutdown_on_exit=False, meter_provider=mp)
    for proc in log_processors:
        lp.add_log_record_processor(proc)
    exporter = _exporter(s, "logs", lambda s_: otlp.log_exporter(s_, mp))
    if exporter is not None:
        batches.append(BatchLogRecordProcessor(
            exporter, export_timeout_millis=s.signal_timeout_s("logs") * 1000, meter_provider=mp,
        ))
        lp.add_log_record_processor(batches[-1])
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
    if isinstance(tp, otel_trace.ProxyTracerProvider | SwitchableTracerProvider):
        return None
    return tp


def _foreign_meter_provider() -> Any:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    mp = otel_metrics.get_meter_provider()
    if isinstance(mp, _ProxyMeterProvider | SwitchableMeterProvider):
        return None
    return mp


def _install_global_tracer(tp: Any) -> None:
    """Point the switchable global tracer provider at ``tp``; install it if the slot is free."""
    global _switch_tp
    if _switch_tp is None:
        if not isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider):
            return  # another tool's; ours serve paid-telemetry only
        _switch_tp = SwitchableTracerProvider()
        otel_trace.set_tracer_provider(_switch_tp)
        log.debug("paid-telemetry: installed its tracer provider globally")
    _switch_tp.switch(tp)


def _install_global_meter(mp: Any) -> None:
    """Point the switchable global meter provider at ``mp``; install it if the slot is free."""
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    global _switch_mp
    if _switch_mp is None:
        if not isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider):
            return
        _switch_mp = SwitchableMeterProvider()
        otel_metrics.set_meter_provider(_switch_mp)
        log.debug("paid-telemetry: installed its meter provider globally")
    _switch_mp.switch(mp)
