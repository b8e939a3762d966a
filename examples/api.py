"""The HTTP API: ``python -m examples.api`` (listens on API_HOST:API_PORT, default 127.0.0.1:8000).

- ``POST /projects/{project_id}/runs`` ``{"agent_type": "coder", "task": "fix the flaky test"}``
  starts an ``AgentSessionWorkflow`` and answers 202 with its ``workflow_id``;
- ``GET /runs/{workflow_id}`` reports its status (and the agent's numbers once it ended);
- ``GET /healthz`` for probes (excluded from telemetry, like ``/metrics``).

``instrument_app`` gives each request a server span and an ``http.server.request.duration``
point labelled with the route *template* (``/projects/{project_id}/runs``), never the raw path.
The span continues into the workflow and its activities (trace context travels in Temporal headers).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

import paid_telemetry as pt
from examples import configure_telemetry, connect, task_queue
from examples.fake_llm import AGENT_TYPES
from examples.workflows import AgentSessionWorkflow, SessionRequest
from paid_telemetry.asgi import instrument_app

log = structlog.get_logger()
PROJECT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def create_app(*, temporal_address: str | None = None, client: Client | None = None,
               queue: str | None = None) -> Any:
    """The instrumented ASGI app; it connects to Temporal at startup unless given a ``client``."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.temporal = client or await connect(temporal_address)
        yield

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def start_run(request: Request) -> Response:
        project_id = request.path_params["project_id"]
        if not PROJECT_ID.match(project_id):
            return JSONResponse({"error": "invalid project_id"}, status_code=422)
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        agent_type = body.get("agent_type", "coder")
        if agent_type not in AGENT_TYPES:
            return JSONResponse({"error": f"agent_type must be one of {list(AGENT_TYPES)}"}, status_code=422)
        task = str(body.get("task") or f"task-{uuid.uuid4().hex[:8]}")[:200]
        workflow_id = f"agent-session-{project_id}-{uuid.uuid4().hex[:12]}"
        temporal: Client = request.app.state.temporal
        await temporal.start_workflow(
            AgentSessionWorkflow.run, SessionRequest(project_id, agent_type, task),
            id=workflow_id, task_queue=queue or task_queue(),
        )
        log.info("agent session requested", workflow_id=workflow_id, project_id=project_id, agent_type=agent_type)
        return JSONResponse({"workflow_id": workflow_id, "status_url": f"/runs/{workflow_id}"}, status_code=202)

    async def get_run(request: Request) -> Response:
        workflow_id = request.path_params["workflow_id"]
        temporal: Client = request.app.state.temporal
        handle = temporal.get_workflow_handle_for(AgentSessionWorkflow.run, workflow_id)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return JSONResponse({"error": "no such run"}, status_code=404)
            raise
        status = description.status.name.lower() if description.status else "unknown"
        body: dict[str, Any] = {"workflow_id": workflow_id, "status": status}
        if status == "completed":
            result = await handle.result()
            body.update(outcome=asdict(result.outcome), pull_request=asdict(result.pull_request))
        elif status == "failed":
            try:
                await handle.result()
            except WorkflowFailureError as exc:
                details = getattr(exc.cause, "details", ())
                body["error"] = str(exc.cause)
                if details and isinstance(details[0], dict):
                    body["outcome"] = details[0]
        return JSONResponse(body)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/projects/{project_id}/runs", start_run, methods=["POST"]),
            Route("/runs/{workflow_id}", get_run),
        ],
        lifespan=lifespan,
    )
    return instrument_app(app)


class ApiServer:
    """The API served by uvicorn in a background thread (the demo and the tests use it).

    ``port=0`` binds a free port; ``url`` tells which once ``start()`` returned."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="examples-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout_s: float = 30.0) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server exited during startup (see its log lines)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not start within {timeout_s}s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def main() -> None:
    configure_telemetry("paid-api", metrics_port=9464)
    host = os.environ.get("API_HOST", "127.0.0.1")
    port = int(os.environ.get("API_PORT", "8000"))
    log.info("api starting", host=host, port=port)
    # log_config=None: uvicorn's own lines go through the root logger, i.e. our JSON lines
    uvicorn.run(create_app(), host=host, port=port, log_config=None)
    pt.shutdown()


if __name__ == "__main__":
    main()
