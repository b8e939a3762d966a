"""paid-telemetry: OpenTelemetry instrumentation for Paid's agents, workflows and LLM costs.

Start with :func:`configure`, then record with :func:`agent_run` (context manager or
decorator). Logs: ``paid_telemetry.logs``; integrations (each imports its optional dependency
only when imported): ``paid_telemetry.temporal`` and ``paid_telemetry.asgi``, also reachable as
``paid_telemetry.integrations.*``. Operations tooling (local stack, dashboards, demo) is the
separate ``paid_telemetry_ops`` package, which an agent worker never imports.
"""

from paid_telemetry._version import __version__
from paid_telemetry.agents import AgentRun, agent_run, current_run, record_quality_score, record_token_usage
from paid_telemetry.catalogue import CATALOGUE, Instrument
from paid_telemetry.events import external_call, record_pull_request, workflow
from paid_telemetry.guard import TelemetryInputError
from paid_telemetry.lifecycle import configure, force_flush, shutdown
from paid_telemetry.runtime import Telemetry
from paid_telemetry.settings import ConfigurationError, Settings

__all__ = [
    "CATALOGUE",
    "AgentRun",
    "ConfigurationError",
    "Instrument",
    "Settings",
    "Telemetry",
    "TelemetryInputError",
    "__version__",
    "agent_run",
    "configure",
    "current_run",
    "external_call",
    "force_flush",
    "record_pull_request",
    "record_quality_score",
    "record_token_usage",
    "shutdown",
    "workflow",
]
