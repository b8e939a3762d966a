"""Settings: keyword arguments win over environment variables, which win over defaults.

Standard OpenTelemetry variables are honoured (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL``, ``OTEL_METRIC_EXPORT_INTERVAL``); our own settings
use ``PAID_TELEMETRY_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Exporter = Literal["otlp", "prometheus", "console", "none"]
EXPORTERS: tuple[Exporter, ...] = ("otlp", "prometheus", "console", "none")
DEFAULT_BUDGET_CENTS = 10_000.0


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` decides, resolved once."""

    service_name: str = "paid"
    service_version: str = ""
    environment: str = "development"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    exporter: Exporter = "prometheus"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9464
    metric_export_interval_ms: int = 10_000
    export_timeout_s: float = 5.0
    shutdown_timeout_s: float = 5.0
    span_queue_size: int = 2048
    # Data points per OTLP metric request: one request for 50k series would pass gRPC's 4 MiB limit.
    metric_export_batch_size: int = 5000
    strict: bool = False
    max_label_length: int = 128
    cardinality_limit: int = 2000
    default_budget_cents: float = DEFAULT_BUDGET_CENTS
    budgets_cents: Mapping[str, float] = field(default_factory=dict)
    handle_sigterm: bool = True
    logs: bool = True  # export log records over OTLP when logging is configured
    log_format: Literal["json", "console", "off"] = "off"  # "off": leave the application's logging alone
    log_level: str = "info"


def _parse_kv(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in raw.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            if k.strip():
                out[k.strip()] = v.strip()
    return out


def _bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


def from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings found in the environment, as keyword arguments."""
    e = os.environ if env is None else env
    out: dict[str, Any] = {}
    res = _parse_kv(e.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    if res:
        out["resource_attributes"] = res
        if "service.name" in res:
            out["service_name"] = res["service.name"]
        if "service.version" in res:
            out["service_version"] = res["service.version"]
        env_name = res.get("deployment.environment.name") or res.get("deployment.environment")
        if env_name:
            out["environment"] = env_name
    if e.get("OTEL_SERVICE_NAME"):
        out["service_name"] = e["OTEL_SERVICE_NAME"]
    if e.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        out["otlp_endpoint"] = e["OTEL_EXPORTER_OTLP_ENDPOINT"]
        out["exporter"] = "otlp"
    if e.get("OTEL_EXPORTER_OTLP_PROTOCOL"):
        out["otlp_protocol"] = e["OTEL_EXPORTER_OTLP_PROTOCOL"]
    if e.get("OTEL_METRIC_EXPORT_INTERVAL"):
        out["metric_export_interval_ms"] = int(e["OTEL_METRIC_EXPORT_INTERVAL"])
    simple: dict[str, tuple[str, Any]] = {
        "PAID_TELEMETRY_EXPORTER": ("exporter", str),
        "PAID_TELEMETRY_ENVIRONMENT": ("environment", str),
        "PAID_TELEMETRY_SERVICE_VERSION": ("service_version", str),
        "PAID_TELEMETRY_PROMETHEUS_HOST": ("prometheus_host", str),
        "PAID_TELEMETRY_PROMETHEUS_PORT": ("prometheus_port", int),
        "PAID_TELEMETRY_EXPORT_TIMEOUT": ("export_timeout_s", float),
        "PAID_TELEMETRY_SHUTDOWN_TIMEOUT": ("shutdown_timeout_s", float),
        "PAID_TELEMETRY_STRICT": ("strict", _bool),
        "PAID_TELEMETRY_MAX_LABEL_LENGTH": ("max_label_length", int),
        "PAID_TELEMETRY_CARDINALITY_LIMIT": ("cardinality_limit", int),
        "PAID_TELEMETRY_DEFAULT_BUDGET_CENTS": ("default_budget_cents", float),
        "PAID_TELEMETRY_HANDLE_SIGTERM": ("handle_sigterm", _bool),
        "PAID_TELEMETRY_LOGS": ("logs", _bool),
        "PAID_TELEMETRY_LOG_FORMAT": ("log_format", str),
        "PAID_TELEMETRY_LOG_LEVEL": ("log_level", str),
    }
    for var, (key, conv) in simple.items():
        if e.get(var):
            out[key] = conv(e[var])
    if e.get("PAID_TELEMETRY_BUDGETS"):  # "proj-a=5000,proj-b=20000" (cents)
        out["budgets_cents"] = {k: float(v) for k, v in _parse_kv(e["PAID_TELEMETRY_BUDGETS"]).items()}
    return out


def resolve(env: Mapping[str, str] | None = None, **kwargs: Any) -> Settings:
    """Merge defaults < environment < arguments (``None`` arguments mean "not given")."""
    known = {f.name for f in fields(Settings)}
    unknown = set(kwargs) - known
    if unknown:
        raise TypeError(f"configure() got unknown settings: {sorted(unknown)}")
    merged = from_env(env)
    merged.update({k: v for k, v in kwargs.items() if v is not None})
    if merged.get("exporter", "prometheus") not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, not {merged['exporter']!r}")
    if merged.get("otlp_protocol", "grpc") not in ("grpc", "http/protobuf"):
        raise ValueError("otlp_protocol must be 'grpc' or 'http/protobuf'")
    if merged.get("log_format", "off") not in ("json", "console", "off"):
        raise ValueError("log_format must be 'json', 'console' or 'off'")
    return Settings(**merged)
