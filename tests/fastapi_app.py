"""A FastAPI app served by a real uvicorn for tests/test_fastapi.py, in a process of its own
(FastAPI's telemetry reads the *global* providers, which a process sets once).

    python -m tests.fastapi_app READY_FILE           # paid_telemetry.configure(exporter="prometheus")
    opentelemetry-instrument python -m tests.fastapi_app READY_FILE --foreign

Writes {"url": ..., "metrics": ...} to READY_FILE once serving; ``GET /_spans`` returns the
finished spans (an in-memory exporter on the tracer provider in use). Stops on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import paid_telemetry as pt
from paid_telemetry.asgi import DEFAULT_EXCLUDED_PATHS, instrument_app


def main() -> None:
    ready, foreign = Path(sys.argv[1]), "--foreign" in sys.argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")  # the app's own logging
    spans = InMemorySpanExporter()
    if foreign:  # opentelemetry-instrument installed the SDK providers; paid-telemetry reuses them
        handle = pt.configure(service_name="fastapi-test", handle_sigterm=False)
        trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[attr-defined]
        metrics_url = f"http://127.0.0.1:{os.environ['OTEL_EXPORTER_PROMETHEUS_PORT']}/metrics"
    else:
        handle = pt.configure(service_name="fastapi-test", exporter="prometheus", prometheus_port=0,
                              span_processors=[SimpleSpanProcessor(spans)], handle_sigterm=False)
        assert handle.prometheus_url
        metrics_url = handle.prometheus_url

    api = FastAPI()

    @api.get("/projects/{project_id}/runs")
    async def runs(project_id: str) -> dict[str, Any]:
        return {"project": project_id, "runs": []}

    @api.get("/healthz")
    async def healthz() -> str:
        return "ok"

    @api.get("/_spans")
    async def finished() -> list[dict[str, Any]]:
        return [{"name": s.name, "kind": s.kind.name, "scope": s.instrumentation_scope.name if
                 s.instrumentation_scope else "", "trace_id": f"{s.context.trace_id:032x}",
                 "route": (s.attributes or {}).get("http.route")} for s in spans.get_finished_spans()]

    app = instrument_app(api, excluded_paths=[*DEFAULT_EXCLUDED_PATHS, "/_spans"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def announce() -> None:
        while not server.started:
            time.sleep(0.02)
        ready.write_text(json.dumps({"url": url, "metrics": metrics_url, "wrapped": app is not api}))

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
