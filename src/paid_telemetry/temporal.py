"""Short import path for :mod:`paid_telemetry.integrations.temporal` (same objects)."""

from paid_telemetry.integrations.temporal import *  # noqa: F403
from paid_telemetry.integrations.temporal import __all__ as __all__
