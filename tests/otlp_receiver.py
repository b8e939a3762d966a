"""Tiny real OTLP receivers on 127.0.0.1 (HTTP/protobuf and gRPC) that record what arrives:
path or method, headers, and the decoded requests. Used where a test's claim is about the
endpoint, protocol or headers an exporter used."""

from __future__ import annotations

import gzip
import ssl
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

_REQUESTS: dict[str, Any] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
_RESPONSES: dict[str, Any] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
}


def _decode(path: str, body: bytes) -> tuple[str, Any]:
    """The signal a path names, else the one request type that decodes to something."""
    order = sorted(_REQUESTS, key=lambda s: s not in path)
    for signal in order:
        request = _REQUESTS[signal]()
        try:
            request.ParseFromString(body)
        except Exception:
            continue
        if any(len(getattr(request, f.name)) for f in request.DESCRIPTOR.fields):
            return signal, request
    raise ValueError(f"not an OTLP request at {path}")


@dataclass
class Received:
    signal: str
    where: str  # HTTP path, or "grpc"
    headers: dict[str, str]
    request: Any


@dataclass
class Receiver:
    """What one receiver got; ``wait`` polls with a deadline."""

    url: str
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: Callable[[], None] = lambda: None

    def add(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def of(self, signal: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.signal == signal]

    def wait(self, signal: str, condition: Callable[[list[Received]], bool], timeout_s: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.of(signal)
            if condition(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"no matching {signal} within {timeout_s}s; got {[(r.where) for r in self.received]}")

    def span_names(self) -> list[str]:
        return [s.name for r in self.of("traces") for rs in r.request.resource_spans
                for ss in rs.scope_spans for s in ss.spans]

    def metric_names(self) -> set[str]:
        return {m.name for r in self.of("metrics") for rm in r.request.resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics}


def http_receiver(*, delay_s: float = 0.0, tls: tuple[str, str] | None = None) -> Receiver:
    """OTLP/HTTP on any POST path (a custom signal path still decodes)."""
    rec = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            signal, request = _decode(self.path, body)
            rec.add(Received(signal, self.path, {k.lower(): v for k, v in self.headers.items()}, request))
            if delay_s:
                time.sleep(delay_s)
            payload = _RESPONSES[signal]().SerializeToString()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    rec.stop = stop
    return rec


def grpc_receiver() -> Receiver:
    """OTLP/gRPC on an insecure loopback port."""
    import grpc

    rec = Receiver(url="")

    def servicer(signal: str, base: Any) -> Any:
        def export(_self: Any, request: Any, context: Any) -> Any:
            rec.add(Received(signal, "grpc", dict(context.invocation_metadata()), request))
            return _RESPONSES[signal]()

        return type(f"{signal}Servicer", (base,), {"Export": export})()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        servicer("traces", trace_service_pb2_grpc.TraceServiceServicer), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        servicer("metrics", metrics_service_pb2_grpc.MetricsServiceServicer), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
        servicer("logs", logs_service_pb2_grpc.LogsServiceServicer), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    rec.url = f"http://127.0.0.1:{port}"
    rec.stop = lambda: server.stop(0)
    return rec
