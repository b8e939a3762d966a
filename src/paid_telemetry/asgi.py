"""Short import path for :mod:`paid_telemetry.integrations.asgi` (same objects)."""

from paid_telemetry.integrations.asgi import *  # noqa: F403
from paid_telemetry.integrations.asgi import __all__ as __all__
