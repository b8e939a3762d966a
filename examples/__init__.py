"""A small Paid-like platform instrumented with paid-telemetry; read it in this order:

- ``fake_llm.py``: a deterministic LLM client (no network): tokens, latency, failures, quality;
- ``activities.py``: the agent (``paid_telemetry.agent_run``: iterations, tokens, cost, quality)
  and the GitHub pull request (``external_call`` + ``record_pull_request``);
- ``workflows.py``: ``AgentSessionWorkflow``, run the agent then open its pull request;
- ``worker.py``: the Temporal worker (``TelemetryInterceptor`` on the client, sandbox helper);
- ``api.py``: the HTTP API (Starlette, ``instrument_app``) that starts and reports sessions.

Configuration comes from the environment (docker-compose.yml sets it): ``TEMPORAL_ADDRESS``,
``TEMPORAL_NAMESPACE``, ``TEMPORAL_TASK_QUEUE`` and the OpenTelemetry variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` switches from an embedded /metrics endpoint to OTLP).
This module is imported by the workflow sandbox too: keep it free of heavy imports.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import temporalio.client
    import temporalio.runtime

    import paid_telemetry

TASK_QUEUE = "paid-agents"
_runtime: temporalio.runtime.Runtime | None = None


def temporal_address() -> str:
    return os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233")


def task_queue() -> str:
    return os.environ.get("TEMPORAL_TASK_QUEUE", TASK_QUEUE)


def configure_telemetry(service_name: str, metrics_port: int) -> paid_telemetry.Telemetry:
    """OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (compose, the local stack), else an
    embedded /metrics on ``metrics_port`` (``PAID_TELEMETRY_PROMETHEUS_PORT`` overrides it).
    JSON logs on stdout unless ``PAID_TELEMETRY_LOG_FORMAT`` says otherwise."""
    import paid_telemetry as pt

    settings: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        settings["service_name"] = service_name
    if not os.environ.get("PAID_TELEMETRY_PROMETHEUS_PORT"):
        settings["prometheus_port"] = metrics_port
    if not os.environ.get("PAID_TELEMETRY_LOG_FORMAT"):
        settings["log_format"] = "json"
    return pt.configure(**settings)


def _temporal_runtime() -> temporalio.runtime.Runtime | None:
    """Temporal's own SDK metrics join the pipeline when it is OTLP (one Runtime per process).

    ``PAID_TEMPORAL_SDK_METRICS=0`` turns them off (a Runtime cannot be stopped: a process that
    outlives its collector would log export errors every second)."""
    global _runtime
    from paid_telemetry import runtime
    from paid_telemetry.temporal import temporal_runtime

    if runtime.current().settings.exporter != "otlp" or os.environ.get("PAID_TEMPORAL_SDK_METRICS") == "0":
        return None
    if _runtime is None:
        _runtime = temporal_runtime("otlp")
    return _runtime


async def connect(address: str | None = None, *, namespace: str | None = None,
                  wait_s: float = 60.0) -> temporalio.client.Client:
    """A Temporal client with ``TelemetryInterceptor`` (which also covers workers built from it).

    Retries while the server is still starting (compose starts us next to it)."""
    import structlog
    from temporalio.client import Client

    from paid_telemetry.temporal import TelemetryInterceptor

    address = address or temporal_address()
    namespace = namespace or os.environ.get("TEMPORAL_NAMESPACE", "default")
    log = structlog.get_logger()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            kwargs: dict[str, Any] = {"namespace": namespace, "interceptors": [TelemetryInterceptor()]}
            rt = _temporal_runtime()
            if rt is not None:
                kwargs["runtime"] = rt
            return await Client.connect(address, **kwargs)
        except RuntimeError as exc:  # temporalio raises RuntimeError when it cannot connect
            if loop.time() >= deadline:
                raise
            log.warning("temporal not reachable yet; retrying", temporal_address=address, error=str(exc))
            await asyncio.sleep(1.0)
