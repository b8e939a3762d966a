"""The app of tests/test_multiprocess.py, served by uvicorn (ASGI ``app``) and gunicorn
(WSGI ``wsgi``) with several workers. Configured at import from the environment only, as a
deployment would: every worker (or, with ``--preload``, the master before it forks) runs it.

``/run`` records one agent run and answers the worker's pid and /metrics URL; ``/ping`` records nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import paid_telemetry as pt
from paid_telemetry import runtime

pt.configure()


def _answer(path: str) -> bytes:
    if path == "/run":
        with pt.agent_run(project_id="web", agent_type="handler") as run:
            run.iteration()
    return json.dumps({"pid": os.getpid(), "metrics": runtime.current().prometheus_url}).encode()


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = _answer(scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = _answer(environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
