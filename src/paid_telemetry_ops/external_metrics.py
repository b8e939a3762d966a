"""Metric names that come from other exporters, not from Paid's catalogue.

Alert rules and dashboards may only use names from :mod:`paid_telemetry.catalogue` or from
this list; the tests check both. Each name here was seen on the real exporter's ``/metrics``
(versions in the comments), not copied from documentation.
"""

from __future__ import annotations

# Temporal server 1.32 (temporal CLI 1.9.1 dev server), matching service. A gauge per task
# queue *partition* (default 4 per queue): sum by (namespace, taskqueue, task_type) for the
# queue's backlog. Labels: namespace, taskqueue (hyphens become underscores), task_type
# (Workflow|Activity), partition, task_priority, worker_version, ... See docs/temporal-queue-depth.md.
TEMPORAL_BACKLOG = "approximate_backlog_count"
TEMPORAL_BACKLOG_AGE = "approximate_backlog_age_seconds"

# Our collector build (otelcol-paid 0.161), service.telemetry pull reader, as scraped by
# Prometheus 2.42: counters carry NO ``_total`` suffix in this release.
OTELCOL_RECEIVER_REFUSED = (
    "otelcol_receiver_refused_metric_points", "otelcol_receiver_refused_spans", "otelcol_receiver_refused_log_records",
)
OTELCOL_EXPORTER_FAILED = (
    "otelcol_exporter_send_failed_metric_points", "otelcol_exporter_send_failed_spans",
    "otelcol_exporter_send_failed_log_records",
)

# The OpenTelemetry Python SDK's own span-pipeline metrics (opentelemetry-sdk 1.45, enabled for
# the processors and exporters paid-telemetry builds via OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED;
# the per-span otel_sdk_span_started_total/live only when the user sets that variable), pushed with the service's
# metrics and seen in Prometheus through our collector with the service's job/instance
# (tests/test_faults.py). Labels: otel_component_type, otel_component_name; processed has
# error_type="queue_full" (or "already_shutdown") for spans dropped before export, none for spans
# handed to the exporter; exported has error_type=<exception class> (e.g. _InactiveRpcError) for
# failed exports, plus server_address, server_port.
OTEL_SDK_SPAN_PROCESSED = "otel_sdk_processor_span_processed_total"
OTEL_SDK_SPAN_EXPORTED = "otel_sdk_exporter_span_exported_total"

EXTERNAL_METRICS: dict[str, tuple[str, ...]] = {
    "prometheus (built-in)": ("ALERTS", "up"),
    # Prometheus' own /metrics (2.42 Debian and 3.x): rule_evaluation_failures_total{rule_group},
    # notifications_errors_total{alertmanager} (both exist once rules / an Alertmanager are configured).
    "prometheus (self)": (
        "prometheus_rule_evaluation_failures_total", "prometheus_notifications_errors_total",
        "prometheus_notifications_dropped_total", "prometheus_notifications_alertmanagers_discovered",
        "prometheus_config_last_reload_successful",
    ),
    # Alertmanager 0.25 / 0.3x: notifications_failed_total{integration} for every integration, 0 until one fails.
    "alertmanager (self)": ("alertmanager_notifications_failed_total", "alertmanager_config_last_reload_successful"),
    "prometheus-node-exporter": (
        "node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes",
        "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "node_filesystem_readonly",
        "node_disk_io_time_seconds_total", "node_load1", "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total", "node_uname_info",
        # vmstat collector, default fields (node-exporter 1.5): untyped, kills since boot
        "node_vmstat_oom_kill",
    ),
    # cAdvisor: container_oom_events_total{id, image, name}
    "cadvisor": ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
                 "container_oom_events_total"),
    # postgres_exporter 0.11: pg_stat_activity_count{datname, state, server},
    # pg_settings_max_connections{server}, pg_settings_superuser_reserved_connections{server}
    "postgres-exporter": (
        "pg_up", "pg_stat_activity_count", "pg_settings_max_connections",
        "pg_settings_superuser_reserved_connections", "pg_stat_database_xact_commit",
        "pg_stat_database_xact_rollback", "pg_stat_database_blks_hit", "pg_stat_database_blks_read",
        "pg_stat_database_deadlocks", "pg_stat_database_tup_fetched", "pg_stat_database_tup_returned",
    ),
    "otel-collector (own telemetry)": (
        "otelcol_receiver_accepted_metric_points", "otelcol_receiver_accepted_spans",
        "otelcol_receiver_accepted_log_records", *OTELCOL_RECEIVER_REFUSED,
        "otelcol_exporter_sent_metric_points", "otelcol_exporter_sent_spans", "otelcol_exporter_sent_log_records",
        *OTELCOL_EXPORTER_FAILED, "otelcol_exporter_queue_size", "otelcol_exporter_queue_capacity",
        "otelcol_process_memory_rss", "otelcol_process_uptime",
        # the receivers' own gRPC / HTTP server histograms (level: detailed), no unit suffix in this
        # release; a refused bearer token is rpc_response_status_code="UNAUTHENTICATED" / HTTP 401
        # (tests/test_secure_links.py)
        "rpc_server_call_duration_count", "http_server_request_duration_count",
    ),
    "opentelemetry sdk (span pipeline)": (
        OTEL_SDK_SPAN_PROCESSED, OTEL_SDK_SPAN_EXPORTED,
        "otel_sdk_processor_span_queue_size", "otel_sdk_processor_span_queue_capacity",
    ),
    # Temporal 1.32 history service, per execution end (no _total): workflow_timeout{namespace,
    # taskqueue, workflowType, service_name="history", operation="CompletionStats"} and
    # workflow_terminate{...}, seen on `temporal server start-dev`; build_information{service_name}
    # is always present (a gauge, 1 per service).
    "temporal server": (TEMPORAL_BACKLOG, TEMPORAL_BACKLOG_AGE, "workflow_timeout", "workflow_terminate",
                        "build_information"),
    "temporal sdk (worker)": (
        "temporal_worker_task_slots_available", "temporal_workflow_task_schedule_to_start_latency_seconds_bucket",
        "temporal_activity_schedule_to_start_latency_seconds_bucket", "temporal_workflow_completed_total",
        "temporal_workflow_failed_total", "temporal_sticky_cache_size",
    ),
}

ALL: frozenset[str] = frozenset(name for names in EXTERNAL_METRICS.values() for name in names)
