"""One SDK process for the scale and secure-link tests: ``runs`` agent runs spread evenly over
``seconds``, exported over OTLP as the standard OTEL_EXPORTER_OTLP_* variables say. Writes what
it recorded (span ids, runs) as JSON to ``out`` after a flushing shutdown: the test's truth."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

import paid_telemetry as pt


class _SpanIds(SpanProcessor):
    """Remembers every finished span's id (hex), to count losses downstream exactly."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None:
            self.ids.append(format(span.context.span_id, "016x"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--project", required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    ids = _SpanIds()
    pt.configure(service_name="paid-scale", metric_export_interval_ms=1000, span_processors=[ids],
                 handle_sigterm=False)
    start = time.monotonic()
    for i in range(a.runs):
        with pt.agent_run(project_id=a.project, agent_type="scale") as run:
            run.iteration()
        pt.record_pull_request("merged", project_id=a.project)
        if a.seconds:
            time.sleep(max(0.0, start + a.seconds * (i + 1) / a.runs - time.monotonic()))
    pt.shutdown()
    result: dict[str, Any] = {"project": a.project, "runs": a.runs, "span_ids": ids.ids}
    a.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
