"""configure() and shutdown(): providers, exporters and the instruments of the catalogue.

Recording code reads one module global (``current()``), so reconfiguring swaps every
instrument at once and the hot path never takes a lock.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.metrics import CallbackOptions, Observation

from paid_telemetry import catalogue as cat
from paid_telemetry.config import Settings, resolve
from paid_telemetry.costs import PriceBook
from paid_telemetry.guard import Guard, LabelSets

log = logging.getLogger("paid_telemetry")
SCOPE = "paid_telemetry"


def _version() -> str:
    from paid_telemetry import __version__

    return __version__


class Telemetry:
    """The handle ``configure()`` returns: providers, instruments and input guard."""

    def __init__(
        self,
        settings: Settings,
        *,
        metric_readers: Sequence[Any] = (),
        span_processors: Sequence[Any] = (),
        log_processors: Sequence[Any] = (),
        noop: bool = False,
    ) -> None:
        self.settings = settings
        self.noop = noop
        self.owns_providers = False
        self.prometheus_url: str | None = None
        self.prometheus_reader: Any = None
        self._http_server: Any = None
        self._shutdown_done = False
        self.meter_provider: Any = None
        self.tracer_provider: Any = None
        self.logger_provider: Any = None
        self.guard = Guard(
            strict=settings.strict,
            max_label_length=settings.max_label_length,
            cardinality_limit=settings.cardinality_limit,
        )
        self.prices = PriceBook()
        self.known_projects: set[str] = set()
        if noop:
            meter = otel_metrics.NoOpMeterProvider().get_meter(SCOPE)
            self.tracer: otel_trace.Tracer = otel_trace.NoOpTracerProvider().get_tracer(SCOPE)
        else:
            meter, self.tracer = self._build_providers(metric_readers, span_processors, log_processors)
        self.meter = meter
        self._create_instruments(meter)
        if not noop:
            # genai-prices loads its price table on first use (~150 ms): do it off the hot path.
            # Not a daemon: a daemon thread killed inside its Rust extension at interpreter exit
            # aborts the process ("FATAL: exception not rethrown"); exit waits for it instead.
            threading.Thread(target=self.prices.warm_up, name="paid-telemetry-prices", daemon=False).start()

    # -- providers ---------------------------------------------------------------------
    def _build_providers(
        self, metric_readers: Sequence[Any], span_processors: Sequence[Any], log_processors: Sequence[Any]
    ) -> tuple[Any, otel_trace.Tracer]:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        s = self.settings
        # The SDK reports spans started, dropped (queue full) and failed to export only when
        # asked to; paid-telemetry asks, so a collector outage is never silent (otel_sdk_*).
        os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
        foreign_tp = _foreign_tracer_provider()
        foreign_mp = _foreign_meter_provider()
        if foreign_tp is not None and foreign_mp is not None:
            log.debug("paid-telemetry: reusing the global tracer and meter providers another tool installed")
            return foreign_mp.get_meter(SCOPE, _version()), foreign_tp.get_tracer(SCOPE, _version())

        attrs: dict[str, Any] = {
            "service.name": s.service_name,
            "deployment.environment.name": s.environment,
            **dict(s.resource_attributes),
        }
        if s.service_version:
            attrs["service.version"] = s.service_version
        resource = Resource.create(attrs)
        readers = list(metric_readers) + self._metric_readers()
        mp = MeterProvider(
            metric_readers=readers, resource=resource, views=_views(s.cardinality_limit), shutdown_on_exit=False
        )
        # The SDK's own span metrics go to this provider, not to whatever is global (after a
        # reconfigure the global one is an older, shut-down provider).
        tp = TracerProvider(resource=resource, shutdown_on_exit=False, meter_provider=mp)
        for proc in list(span_processors) + self._span_processors(mp):
            tp.add_span_processor(proc)
        self.meter_provider, self.tracer_provider = mp, tp
        self.owns_providers = True
        if s.logs and (s.exporter in ("otlp", "console") or log_processors):
            self.logger_provider = self._logger_provider(resource, log_processors)
        # Only a complete foreign set-up is reused (above); otherwise ours serve paid-telemetry
        # and fill whichever global slot is still free, for other libraries' benefit.
        if foreign_tp is None:
            _install_global_tracer(tp)
        if foreign_mp is None:
            _install_global_meter(mp)
        return mp.get_meter(SCOPE, _version()), tp.get_tracer(SCOPE, _version())

    def _metric_readers(self) -> list[Any]:
        from opentelemetry.sdk.metrics import Counter, Histogram, ObservableGauge, UpDownCounter
        from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader

        s = self.settings
        cumulative: dict[type, AggregationTemporality] = {
            k: AggregationTemporality.CUMULATIVE for k in (Counter, Histogram, UpDownCounter, ObservableGauge)
        }
        if s.exporter == "prometheus":
            return [self._start_prometheus()]
        if s.exporter == "otlp":
            if s.otlp_protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

                exporter: Any = OTLPMetricExporter(
                    endpoint=s.otlp_endpoint, insecure=s.otlp_endpoint.startswith("http://"),
                    timeout=s.export_timeout_s, preferred_temporality=cumulative,
                    max_export_batch_size=s.metric_export_batch_size,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as HTTPMetricExporter,
                )

                exporter = HTTPMetricExporter(
                    endpoint=_http_path(s.otlp_endpoint, "metrics"), timeout=s.export_timeout_s,
                    preferred_temporality=cumulative, max_export_batch_size=s.metric_export_batch_size,
                )
        elif s.exporter == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            exporter = ConsoleMetricExporter(preferred_temporality=cumulative)
        else:
            return []
        return [
            PeriodicExportingMetricReader(
                exporter,
                export_interval_millis=s.metric_export_interval_ms,
                export_timeout_millis=s.export_timeout_s * 1000,
            )
        ]

    def _span_processors(self, mp: Any) -> list[Any]:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        s = self.settings
        if s.exporter == "otlp":
            if s.otlp_protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                exporter: Any = OTLPSpanExporter(
                    endpoint=s.otlp_endpoint, insecure=s.otlp_endpoint.startswith("http://"),
                    timeout=s.export_timeout_s, meter_provider=mp,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HTTPSpanExporter,
                )

                exporter = HTTPSpanExporter(
                    endpoint=_http_path(s.otlp_endpoint, "traces"), timeout=s.export_timeout_s, meter_provider=mp
                )
        elif s.exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:
            return []
        return [
            BatchSpanProcessor(
                exporter, max_queue_size=s.span_queue_size, max_export_batch_size=min(512, s.span_queue_size),
                export_timeout_millis=s.export_timeout_s * 1000, meter_provider=mp,
            )
        ]

    def _logger_provider(self, resource: Any, log_processors: Sequence[Any]) -> Any:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        s = self.settings
        lp = LoggerProvider(resource=resource, shutdown_on_exit=False, meter_provider=self.meter_provider)
        for proc in log_processors:
            lp.add_log_record_processor(proc)
        exporter: Any = None
        if s.exporter == "otlp":
            if s.otlp_protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

                exporter = OTLPLogExporter(
                    endpoint=s.otlp_endpoint, insecure=s.otlp_endpoint.startswith("http://"),
                    timeout=s.export_timeout_s, meter_provider=self.meter_provider,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter

                exporter = HTTPLogExporter(
                    endpoint=_http_path(s.otlp_endpoint, "logs"), timeout=s.export_timeout_s,
                    meter_provider=self.meter_provider,
                )
        if exporter is not None:
            lp.add_log_record_processor(
                BatchLogRecordProcessor(
                    exporter, export_timeout_millis=s.export_timeout_s * 1000, meter_provider=self.meter_provider
                )
            )
        return lp

    def _start_prometheus(self) -> Any:
        from paid_telemetry.exposition import EmbeddedPrometheusReader, serve

        s = self.settings
        reader = self.prometheus_reader = EmbeddedPrometheusReader()
        server = serve(reader, s.prometheus_host, s.prometheus_port)
        self._http_server = server
        host, port = server.server_address[:2]
        self.prometheus_url = f"http://{host!s}:{port}/metrics"
        log.debug("paid-telemetry: metrics at %s", self.prometheus_url)
        return reader

    # -- instruments -------------------------------------------------------------------
    def _create_instruments(self, meter: Any) -> None:
        def counter(inst: cat.Instrument) -> Any:
            return meter.create_counter(inst.name, unit=inst.unit, description=inst.description)

        def histogram(inst: cat.Instrument) -> Any:
            return meter.create_histogram(
                inst.name, unit=inst.unit, description=inst.description,
                explicit_bucket_boundaries_advisory=inst.buckets,
            )

        g = self.guard
        self.dropped = counter(cat.DROPPED_RECORDS)
        g.bind(self.dropped.add)
        track = self._track_project
        self.agent_runs = counter(cat.AGENT_RUNS)
        self.agent_duration = histogram(cat.AGENT_RUN_DURATION)
        self.agent_iterations = histogram(cat.AGENT_ITERATIONS)
        self.tokens = counter(cat.TOKENS)
        self.cost = counter(cat.COST_CENTS)
        self.workflow_started = counter(cat.WORKFLOW_STARTED)
        self.workflow_completed = counter(cat.WORKFLOW_COMPLETED)
        self.workflow_duration = histogram(cat.WORKFLOW_DURATION)
        self.activity_executions = counter(cat.ACTIVITY_EXECUTIONS)
        self.activity_duration = histogram(cat.ACTIVITY_DURATION)
        self.activity_retries = counter(cat.ACTIVITY_RETRIES)
        self.quality = histogram(cat.QUALITY_SCORE)
        self.external_requests = counter(cat.EXTERNAL_REQUESTS)
        self.external_duration = histogram(cat.EXTERNAL_DURATION)
        self.pull_requests = counter(cat.PULL_REQUESTS)
        meter.create_observable_gauge(
            cat.PROJECT_BUDGET.name, callbacks=[self._observe_budgets],
            unit=cat.PROJECT_BUDGET.unit, description=cat.PROJECT_BUDGET.description,
        )
        self.run_labels = LabelSets(cat.AGENT_RUNS, g, {"status": cat.AGENT_STATUSES}, track)
        self.run_hist_labels = LabelSets(cat.AGENT_RUN_DURATION, g, None, track)
        self.token_labels = LabelSets(cat.TOKENS, g, {"type": cat.TOKEN_TYPES}, track)
        self.cost_labels = LabelSets(cat.COST_CENTS, g, None, track)
        self.workflow_labels = LabelSets(cat.WORKFLOW_STARTED, g)
        self.workflow_hist_labels = LabelSets(cat.WORKFLOW_DURATION, g)
        self.workflow_status_labels = LabelSets(cat.WORKFLOW_COMPLETED, g, {"status": cat.WORKFLOW_STATUSES})
        self.activity_labels = LabelSets(cat.ACTIVITY_DURATION, g)
        self.activity_outcome_labels = LabelSets(cat.ACTIVITY_EXECUTIONS, g, {"outcome": cat.ACTIVITY_OUTCOMES})
        self.quality_labels = LabelSets(cat.QUALITY_SCORE, g, None, track)
        self.external_labels = LabelSets(cat.EXTERNAL_REQUESTS, g, {"outcome": cat.EXTERNAL_OUTCOMES})
        self.external_hist_labels = LabelSets(cat.EXTERNAL_DURATION, g)
        self.pr_labels = LabelSets(cat.PULL_REQUESTS, g, {"event": cat.PULL_REQUEST_EVENTS}, track)

    def _track_project(self, attrs: dict[str, str]) -> None:
        project = attrs.get("project_id")
        if project and project != "_overflow" and len(self.known_projects) < self.settings.cardinality_limit:
            self.known_projects.add(project)

    def _observe_budgets(self, _options: CallbackOptions) -> Iterable[Observation]:
        s = self.settings
        projects = set(self.known_projects) | set(s.budgets_cents)
        for project in sorted(projects):
            yield Observation(float(s.budgets_cents.get(project, s.default_budget_cents)), {"project_id": project})

    # -- lifecycle ---------------------------------------------------------------------
    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Push what is buffered now (metrics, spans, logs) within ``timeout_s``."""
        if not self.owns_providers:
            return True
        budget = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
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

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Flush and stop exporters; bounded by ``timeout_s`` (default settings.shutdown_timeout_s)."""
        if self._shutdown_done:
            return
        self._shutdown_done = True
        budget = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget

        def _stop() -> None:
            self.force_flush(budget * 0.8)
            for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
                if provider is None or not self.owns_providers:
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
            log.warning("paid-telemetry: shutdown exceeded %.1fs; unexported data is dropped", budget)
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None


# -- module state -------------------------------------------------------------------------
_current: Telemetry | None = None
_noop: Telemetry | None = None
_lock = threading.Lock()
_warned_unconfigured = False
_globals_installed = False
_sigterm_installed = False


def current() -> Telemetry:
    """The active handle; a no-op one (and one warning) before ``configure()``."""
    t = _current
    if t is not None:
        return t
    return _unconfigured()


def _unconfigured() -> Telemetry:
    global _noop, _warned_unconfigured
    if not _warned_unconfigured:
        _warned_unconfigured = True
        log.warning("paid-telemetry: configure() was not called; metrics and spans are not recorded")
    if _noop is None:
        _noop = Telemetry(Settings(exporter="none"), noop=True)
    return _noop


def configure(
    *,
    metric_readers: Sequence[Any] = (),
    span_processors: Sequence[Any] = (),
    log_processors: Sequence[Any] = (),
    **settings: Any,
) -> Telemetry:
    """Set up Paid's telemetry; returns the handle. Safe to call again (replaces the previous set-up).

    Keyword arguments are the fields of :class:`paid_telemetry.config.Settings`; arguments
    win over environment variables. ``metric_readers``/``span_processors``/``log_processors``
    add readers or processors (for example OTel's in-memory ones in tests).
    """
    global _current
    resolved = resolve(**settings)
    with _lock:
        previous = _current
        if previous is not None:
            previous.shutdown()
        telemetry = Telemetry(
            resolved, metric_readers=metric_readers, span_processors=span_processors,
            log_processors=log_processors,
        )
        _current = telemetry
    if resolved.handle_sigterm:
        _install_sigterm()
    if resolved.log_format != "off":
        from paid_telemetry.logs import configure_logging  # lazy: logs imports runtime

        configure_logging(json=resolved.log_format == "json", level=resolved.log_level)
    return telemetry


def shutdown(timeout_s: float | None = None) -> None:
    """Flush and stop; the SDK then records nothing until ``configure()`` is called again."""
    global _current
    with _lock:
        t, _current = _current, None
    if t is not None:
        t.shutdown(timeout_s)


def force_flush(timeout_s: float | None = None) -> bool:
    t = _current
    return True if t is None else t.force_flush(timeout_s)


atexit.register(shutdown)


def _install_sigterm() -> None:
    """Flush on SIGTERM, then die as SIGTERM would, unless the app has a handler of its own."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the application handles SIGTERM; it should call shutdown() itself

    def _on_sigterm(signum: int, _frame: Any) -> None:
        shutdown()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def _views(cardinality_limit: int) -> list[Any]:
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
        for i in cat.CATALOGUE
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


def _http_path(endpoint: str, signal_name: str) -> str:
    return endpoint.rstrip("/") + f"/v1/{signal_name}"


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
