"""OTLP (and console) exporters for metrics, spans and log records, chosen from the settings.

Each exporter is imported lazily: a process that serves /metrics never loads gRPC.
"""

from __future__ import annotations

from typing import Any

from paid_telemetry.settings import Settings


def http_path(endpoint: str, signal_name: str) -> str:
    """The OTLP/HTTP URL of one signal under a base endpoint."""
    return endpoint.rstrip("/") + f"/v1/{signal_name}"


def _insecure(s: Settings) -> bool:
    return s.otlp_endpoint.startswith("http://")


def metric_exporter(s: Settings) -> Any:
    """Cumulative-temporality metric exporter, or None for exporters that are not push-based."""
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableGauge, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    cumulative: dict[type, AggregationTemporality] = {
        k: AggregationTemporality.CUMULATIVE for k in (Counter, Histogram, UpDownCounter, ObservableGauge)
    }
    if s.exporter == "otlp":
        if s.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter(
                endpoint=s.otlp_endpoint, insecure=_insecure(s), timeout=s.export_timeout_s,
                preferred_temporality=cumulative, max_export_batch_size=s.metric_export_batch_size,
            )
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter

        return HTTPMetricExporter(
            endpoint=http_path(s.otlp_endpoint, "metrics"), timeout=s.export_timeout_s,
            preferred_temporality=cumulative, max_export_batch_size=s.metric_export_batch_size,
        )
    if s.exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter(preferred_temporality=cumulative)
    return None


def span_exporter(s: Settings, meter_provider: Any) -> Any:
    """The span exporter for ``s.exporter``, or None."""
    if s.exporter == "otlp":
        if s.otlp_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter(
                endpoint=s.otlp_endpoint, insecure=_insecure(s), timeout=s.export_timeout_s,
                meter_provider=meter_provider,
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

        return HTTPSpanExporter(
            endpoint=http_path(s.otlp_endpoint, "traces"), timeout=s.export_timeout_s, meter_provider=meter_provider
        )
    if s.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def log_exporter(s: Settings, meter_provider: Any) -> Any:
    """The log-record exporter (OTLP only; console logs go to stdout through structlog)."""
    if s.exporter != "otlp":
        return None
    if s.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(
            endpoint=s.otlp_endpoint, insecure=_insecure(s), timeout=s.export_timeout_s,
            meter_provider=meter_provider,
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter

    return HTTPLogExporter(
        endpoint=http_path(s.otlp_endpoint, "logs"), timeout=s.export_timeout_s, meter_provider=meter_provider
    )
