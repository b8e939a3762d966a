"""Integrations at the SDK's edge; each imports its optional dependency only when imported itself.

- ``paid_telemetry.integrations.temporal`` (``pip install 'paid-telemetry[temporal]'``)
- ``paid_telemetry.integrations.asgi`` (``pip install 'paid-telemetry[asgi]'``)

``paid_telemetry.temporal`` and ``paid_telemetry.asgi`` are the same modules under their short names.
"""
