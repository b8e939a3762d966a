"""paid-telemetry: OpenTelemetry instrumentation for Paid's agents, workflows and LLM costs.

Start with :func:`configure`, then record with :func:`agent_run` (context manager or
decorator). Temporal, logging and ASGI integrations live in ``paid_telemetry.temporal``,
``paid_telemetry.logs`` and ``paid_telemetry.asgi``.
"""

from paid_telemetry.agents import AgentRun, agent_run, current_run, record_quality_score, record_token_usage
from paid_telemetry.catalogue import CATALOGUE, Instrument
from paid_telemetry.config import Settings
from paid_telemetry.events import external_call, record_pull_request, workflow
from paid_telemetry.guard import TelemetryInputError
from paid_telemetry.runtime import Telemetry, configure, force_flush, shutdown

__version__ = "0.1.0"

__all__ = [
    "CATALOGUE",
    "AgentRun",
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
