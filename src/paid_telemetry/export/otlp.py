"""OTLP (and console) exporters for metrics, spans and log records, chosen per signal.

Each exporter is imported lazily: a process that serves /metrics never loads gRPC.

What we pass and what the exporters read themselves: we pass the endpoint (the
signal-specific ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` as-is, else the base endpoint
with ``/v1/<signal>`` for OTLP/HTTP) and the timeout, because OpenTelemetry Python reads
``OTEL_EXPORTER_OTLP_*TIMEOUT`` in seconds while the specification says milliseconds (we
parse it as the specification says). Headers, compression, certificates, client keys and
``OTEL_EXPORTER_OTLP_*INSECURE`` are never passed, so the exporters honour those variables
as they document.
"""

from __future__ import annotations

from typing import Any

from paid_telemetry.settings import Settings


def http_path(endpoint: str, signal_name: str) -> str:
    """The OTLP/HTTP URL of one signal under a base endpoint."""
    return endpoint.rstrip("/") + f"/v1/{signal_name}"


def _common(s: Settings, signal: str) -> dict[str, Any]:
    return {"endpoint": s.signal_endpoint(signal), "timeout": s.signal_timeout_s(signal)}


def metric_exporter(s: Settings) -> Any:
    """Cumulative-temporality metric exporter, or None for exporters that are not push-based."""
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableGauge, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    cumulative: dict[type, AggregationTemporality] = {
        k: AggregationTemporality.CUMULATIVE for k in (Counter, Histogram, UpDownCounter, ObservableGauge)
    }
    if s.metrics_exporter == "otlp":
        if s.signal_protocol("metrics") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter(
                **_common(s, "metrics"), preferred_temporality=cumulative,
                max_export_batch_size=s.metric_export_batch_size,
            )
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter

        return HTTPMetricExporter(
            **_common(s, "metrics"), preferred_temporality=cumulative, max_export_batch_size=s.metric_export_batch_size,
        )
    if s.metrics_exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(preferred_temporality=cumulative)
    return None


def span_exporter(s: Settings, meter_provider: Any) -> Any:
    """The span exporter for ``s.traces_exporter``, or None."""
    if s.traces_exporter == "otlp":
        if s.signal_protocol("traces") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(**_common(s, "traces"), meter_provider=meter_provider)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

        return HTTPSpanExporter(**_common(s, "traces"), meter_provider=meter_provider)
    if s.traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def log_exporter(s: Settings, meter_provider: Any) -> Any:
    """The log-record exporter (OTLP only; console logs go to stdout through structlog)."""
    if s.logs_exporter != "otlp":
        return None
    if s.signal_protocol("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**_common(s, "logs"), meter_provider=meter_provider)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter

    return HTTPLogExporter(**_common(s, "logs"), meter_provider=meter_provider)
