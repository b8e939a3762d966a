"""``python -m paid_telemetry_ops``: the ``paid-telemetry`` command."""

from paid_telemetry_ops.cli import main

raise SystemExit(main())
