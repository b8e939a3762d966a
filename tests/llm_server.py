"""A small OpenAI- and Anthropic-compatible HTTP server on 127.0.0.1, for the real client libraries.

The usage a response reports is chosen by the caller through request headers, so a test knows
the exact numbers the instrumentation will put on its span:
``x-usage: <input>,<output>[,<cache_read>[,<cache_write>]]`` and ``x-response-model``.
A model named ``error-*`` gets a 400 error response.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)


def _usage(headers: Any) -> tuple[int, int, int, int]:
    parts = [int(p) for p in (headers.get("x-usage") or "10,5").split(",")]
    parts += [0] * (4 - len(parts))
    return parts[0], parts[1], parts[2], parts[3]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, dict[str, Any] | str]]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for name, payload in events:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            raw = frame.encode()
            self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        delay = float(self.headers.get("x-delay") or 0)
        if delay:
            time.sleep(delay)
        model = body.get("model", "")
        if model.startswith("error"):
            self._send(400, {"error": {"message": "bad request", "type": "invalid_request_error", "code": "bad"},
                             "type": "error"})
            return
        if self.path.endswith("/chat/completions"):
            self._openai(body)
        elif self.path.endswith("/messages"):
            self._anthropic(body)
        else:
            self._send(404, {"error": {"message": "not found"}})

    def _openai(self, body: dict[str, Any]) -> None:
        tin, tout, cached, _ = _usage(self.headers)
        model = self.headers.get("x-response-model") or body["model"]
        usage = {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout,
                 "prompt_tokens_details": {"cached_tokens": cached}}
        base = {"id": f"chatcmpl-{next(_ids)}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            self._send(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}]})
            return
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[tuple[str | None, dict[str, Any] | str]] = [
            (None, {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}]}),
            (None, {**chunk, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append((None, {**chunk, "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        self._sse(events)

    def _anthropic(self, body: dict[str, Any]) -> None:
        tin, tout, cache_read, cache_write = _usage(self.headers)
        model = self.headers.get("x-response-model") or body["model"]
        # Anthropic reports input tokens without the cached ones.
        usage = {"input_tokens": tin - cache_read - cache_write, "output_tokens": tout,
                 "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write}
        self._send(200, {"id": f"msg_{next(_ids)}", "type": "message", "role": "assistant", "model": model,
                         "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
                         "stop_sequence": None, "usage": usage})


class LLMServer:
    """The server on a free loopback port, in a thread; ``url`` is its base URL."""

    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="llm-server", daemon=True)

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
