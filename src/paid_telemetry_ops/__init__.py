"""Operations tooling for paid-telemetry: the local stack, real services for tests, dashboards
and their live checks, the demo, and the ``paid-telemetry`` command.

It imports the SDK (``paid_telemetry``); the SDK never imports it, and an agent worker
never needs it.
"""
