"""How data leaves the process: OTLP exporters (``otlp``), the embedded /metrics endpoint
(``prometheus``) and the provider assembly that wires them to the settings (``providers``)."""
