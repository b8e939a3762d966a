"""The embedded Prometheus endpoint: a direct text/OpenMetrics renderer, an on-demand pull
reader and a small, bounded HTTP server.

- Rendering goes straight from OTel ``MetricsData`` to the text format (0.0.4) or, when the
  scraper asks for it, OpenMetrics 1.0 with exemplars (no intermediate ``prometheus_client``
  objects; label strings are cached per attribute set). It is ~2x faster than the stock OTel
  exporter and gets the hard cases right (docs/performance.md has the figures and the
  decision): label keys sanitised per the OTel-Prometheus compatibility spec, values made
  UTF-8-encodable, same-name families of several scopes merged, and one series that cannot
  be rendered is skipped and counted instead of failing the whole body.
- Rendering happens only when somebody scrapes: no background thread. The last body is
  reused for at most ``min(max_age_s, render time / max_cpu_share)``, which bounds both the
  staleness and the CPU a scrape storm can take.
- The HTTP server waits for a request's first bytes without a thread (half-open clients
  cost a socket, not a thread), runs at most ``max_threads`` handlers, closes clients that
  stay silent past ``read_timeout_s``, answers HEAD, and logs client disconnects at debug.
- Optional basic auth (password from a file, compared in constant time) and TLS (the handshake
  runs in the same selector loop, so a client that stalls it costs no thread); refusals are
  counted as ``unauthorized`` / ``tls_handshake`` in paid_telemetry_dropped_records_total.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import errno
import hmac
import io
import json
import logging
import math
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from paid_telemetry.catalogue import BY_NAME

log = logging.getLogger("paid_telemetry")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OUR_SCOPE = "paid_telemetry"
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "%": "percent"}
_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)

# A problem reporter: (reason, detail) -> None. runtime.Telemetry points it at the guard, so
# problems land in paid_telemetry_dropped_records_total{instrument="prometheus_endpoint"}.
Reporter = Callable[[str, str], None]


# -- names and values -----------------------------------------------------------------------
def metric_name(name: str, unit: str, *, monotonic_sum: bool, gauge: bool) -> str:
    """OTel name -> Prometheus name, as the OTel compatibility spec (and the collector) do it."""
    inst = BY_NAME.get(name)
    if inst is not None:
        return inst.prometheus_name
    out = _BAD.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    unit = re.sub(r"\{[^}]*\}", "", unit or "")
    if unit == "1" and gauge:
        suffix = "ratio"
    else:
        suffix = _UNITS.get(unit, _BAD.sub("_", unit).strip("_") if unit and unit != "1" else "")
    if suffix and not out.endswith("_" + suffix):
        out = f"{out}_{suffix}"
    if monotonic_sum and not out.endswith("_total"):
        out += "_total"
    return out


def label_name(key: str) -> str:
    """OTel attribute key -> Prometheus label name (OTel-Prometheus compatibility spec, as the
    collector does it): invalid characters become ``_``, a leading digit gets ``key_``, and a
    leading ``_`` gets ``key`` (labels starting with ``__`` are reserved by Prometheus, and
    ``__name__`` would clash with the metric name)."""
    out = _BAD_LABEL.sub("_", key)
    if not out:
        return "key_"
    if out[0].isdigit():
        return "key_" + out
    if out[0] == "_":
        return "key" + out
    return out


def encodable(text: str) -> str:
    """``text`` with the code points UTF-8 cannot encode (lone surrogates) replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def attribute_text(value: Any) -> str:
    """An attribute value as label text, as the OTel exporter renders it: strings as they are,
    everything else as JSON (``true``, ``3``, ``["a", "b"]``)."""
    if type(value) is str:
        return value
    return json.dumps(value, default=str)


def _escape(text: str) -> str:
    return encodable(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str, openmetrics: bool) -> str:
    out = encodable(text).replace("\\", "\\\\").replace("\n", "\\n")
    return out.replace('"', '\\"') if openmetrics else out


def _fmt(value: float) -> str:
    if type(value) is int:
        return str(value)
    value = float(value)
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _le(bound: float) -> str:
    """A bucket bound as Prometheus clients write it (canonical for OpenMetrics: ``1.0``)."""
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def render_labels(attributes: Mapping[str, Any], *, histogram: bool = False) -> str:
    """``k="v",...`` for one attribute set: keys sanitised, keys that collide after sanitising
    merged (values joined with ``;`` in the order of the original keys, as the spec says)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, value in attributes.items():
        key_text = key if type(key) is str else str(key)
        name = label_name(key_text)
        if histogram and name == "le":
            name = "key_le"  # ``le`` is the bucket label
        groups.setdefault(name, []).append((key_text, attribute_text(value)))
    parts = []
    for name in sorted(groups):
        values = groups[name]
        text = values[0][1] if len(values) == 1 else ";".join(v for _, v in sorted(values))
        parts.append(f'{name}="{_escape(text)}"')
    return ",".join(parts)


class _LabelCache:
    """attributes -> rendered label string; bounded."""

    def __init__(self, limit: int = 200_000) -> None:
        self._cache: dict[tuple[bool, frozenset[tuple[str, Any]]], str] = {}
        self._limit = limit

    def render(self, attributes: Mapping[str, Any], histogram: bool = False) -> str:
        try:
            key = (histogram, frozenset(attributes.items()))
            hit = self._cache.get(key)
        except TypeError:  # an unhashable value: render without caching
            return render_labels(attributes, histogram=histogram)
        if hit is None:
            hit = render_labels(attributes, histogram=histogram)
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[key] = hit
        return hit


# -- rendering ------------------------------------------------------------------------------
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": (), "histogram": ("_bucket", "_count", "_sum", "_created")}


class _Family:
    """One Prometheus metric family: possibly several OTel metrics (same name, several scopes)."""

    __slots__ = ("base", "help", "kind", "name", "parts", "scopes")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name  # the name in the text format (counters keep ``_total``)
        self.kind = kind
        self.base = name[:-6] if kind == "counter" and name.endswith("_total") else name
        self.help = help_text
        self.parts: list[tuple[Any, Any]] = []  # (scope, metric)
        self.scopes: set[tuple[str, str]] = set()

    def reserved(self) -> list[str]:
        return [self.base, *(self.base + s for s in _SUFFIXES[self.kind])]


def _kind(metric: Any) -> tuple[str, str] | None:
    data = metric.data
    if isinstance(data, Sum):
        monotonic = bool(data.is_monotonic)
        name = metric_name(metric.name, metric.unit, monotonic_sum=monotonic, gauge=not monotonic)
        return name, "counter" if monotonic else "gauge"
    if isinstance(data, Gauge):
        return metric_name(metric.name, metric.unit, monotonic_sum=False, gauge=True), "gauge"
    if isinstance(data, HistogramData):
        return metric_name(metric.name, metric.unit, monotonic_sum=False, gauge=False), "histogram"
    return None


def render(
    data: MetricsData | None,
    labels: _LabelCache | None = None,
    *,
    openmetrics: bool = False,
    problems: list[tuple[str, str]] | None = None,
    resource: Mapping[str, Any] | None = None,
) -> bytes:
    """The text exposition (0.0.4), or OpenMetrics 1.0 with exemplars, of cumulative OTel data.

    Never raises for bad data: a metric whose name clashes with another family, or a series
    that cannot be rendered, is left out and appended to ``problems`` as (reason, detail).
    ``resource`` gives ``target_info`` before anything was recorded (the SDK then has no data).
    """
    labels = labels or _LabelCache()
    problems = problems if problems is not None else []
    families: dict[str, _Family] = {}
    owner: dict[str, str] = {}  # every sample name -> the family that owns it
    out: list[str] = []
    target: Mapping[str, Any] = {}
    if data is not None:
        for rm in data.resource_metrics:
            if not target and rm.resource.attributes:
                target = rm.resource.attributes
    target = target or resource or {}
    if target:
        fam = _Family("target_info", "gauge", "Target metadata")
        families[fam.name] = fam
        for n in fam.reserved():
            owner[n] = fam.name
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                try:
                    found = _kind(metric)
                    if found is None:
                        continue
                    name, kind = found
                    existing = families.get(name)
                    if existing is not None and existing.kind == kind:
                        fam = existing
                    else:
                        candidate = _Family(name, kind, metric.description or "")
                        clash = next((owner[n] for n in candidate.reserved() if n in owner), None)
                        if clash is not None:
                            problems.append(("unrenderable", f"{metric.name}: {name} ({kind}) clashes with {clash}"))
                            continue
                        fam = families[name] = candidate
                        for n in candidate.reserved():
                            owner[n] = name
                    fam.parts.append((sm.scope, metric))
                    fam.scopes.add((sm.scope.name or "", sm.scope.version or ""))
                except Exception as exc:  # a foreign metric we cannot even name
                    problems.append(("unrenderable", f"{getattr(metric, 'name', '?')}: {exc!r}"[:200]))
    for fam in families.values():
        is_target = fam.name == "target_info" and bool(target)
        if not fam.parts and not is_target:
            continue
        _header(out, fam, openmetrics)
        seen: set[str] = set()
        if is_target:
            try:
                text = labels.render(target)
                out.append(f"target_info{{{text}}} 1\n" if text else "target_info 1\n")
                seen.add(text)
            except Exception as exc:
                problems.append(("unrenderable", f"target_info: {exc!r}"[:200]))
        _render_family(fam, labels, out, openmetrics, problems, seen)
    if openmetrics:
        out.append("# EOF\n")
    text = "".join(out)
    try:
        return text.encode()
    except UnicodeEncodeError:  # every value is made encodable above; this is the last resort
        problems.append(("unrenderable", "body not UTF-8 encodable"))
        return text.encode("utf-8", "replace")


def _header(out: list[str], fam: _Family, openmetrics: bool) -> None:
    name = fam.base if openmetrics else fam.name
    out.append(f"# HELP {name} {_help(fam.help, openmetrics)}\n# TYPE {name} {fam.kind}\n")


def _render_family(fam: _Family, labels: _LabelCache, out: list[str], openmetrics: bool,
                   problems: list[tuple[str, str]], seen: set[str]) -> None:
    """Each series rendered on its own, so one bad series costs only itself."""
    scoped = len(fam.scopes) > 1  # tell same-name metrics of several scopes apart, as OTel does
    name = fam.base + "_total" if fam.kind == "counter" else fam.name
    for scope, metric in fam.parts:
        extra: dict[str, str] = {}
        if scoped:
            extra["otel_scope_name"] = scope.name or ""
            if scope.version:
                extra["otel_scope_version"] = scope.version
        histogram = fam.kind == "histogram"
        bounds: Any = None
        les: list[str] = []
        for point in metric.data.data_points:
            try:
                attrs = point.attributes or {}
                lab = labels.render({**attrs, **extra} if extra else attrs, histogram)
                if lab in seen:
                    problems.append(("unrenderable", f"{fam.name}: duplicate series {{{lab[:100]}}}"))
                    continue
                seen.add(lab)
                if histogram:
                    if point.explicit_bounds is not bounds:
                        bounds = point.explicit_bounds
                        les = [_le(b) for b in bounds] + ["+Inf"]
                    out.append(_histogram_lines(name, lab, point, les, openmetrics))
                    continue
                value = point.value
                if fam.kind == "counter" and not value >= 0:  # NaN or negative: not a counter value
                    problems.append(("unrenderable", f"{fam.name}: counter value {value!r}"))
                    continue
                body = f"{name}{{{lab}}} {_fmt(value)}" if lab else f"{name} {_fmt(value)}"
                if openmetrics and fam.kind == "counter" and point.exemplars:
                    body += _exemplar(max(point.exemplars, key=lambda e: e.time_unix_nano))
                out.append(body + "\n")
            except Exception as exc:
                problems.append(("unrenderable", f"{fam.name}: {exc!r}"[:200]))


def _histogram_lines(name: str, lab: str, point: Any, les: list[str], openmetrics: bool) -> str:
    sep = "," if lab else ""
    total = 0
    counts = point.bucket_counts
    if len(counts) != len(les):
        raise ValueError(f"{len(counts)} bucket counts for {len(les)} bounds")
    if point.sum != point.sum:
        raise ValueError("histogram sum is NaN")
    marks: dict[int, str] = {}
    if openmetrics and point.exemplars:
        bounds = point.explicit_bounds
        latest: dict[int, Any] = {}
        for e in point.exemplars:
            i = bisect.bisect_left(bounds, e.value)
            if i not in latest or e.time_unix_nano > latest[i].time_unix_nano:
                latest[i] = e
        marks = {i: _exemplar(e) for i, e in latest.items()}
    lines = []
    for i, (le, count) in enumerate(zip(les, counts, strict=True)):
        total += count
        lines.append(f'{name}_bucket{{{lab}{sep}le="{le}"}} {total}{marks.get(i, "")}\n')
    braces = f"{{{lab}}}" if lab else ""
    # OpenMetrics forbids a negative _sum next to non-negative buckets, and _sum with negative ones.
    if not openmetrics or (point.sum >= 0 and not (point.explicit_bounds and point.explicit_bounds[0] < 0)):
        lines.append(f"{name}_sum{braces} {_fmt(point.sum)}\n{name}_count{braces} {total}\n")
    return "".join(lines)


def _exemplar(e: Any) -> str:
    """An OpenMetrics exemplar: the trace and span of one measurement (Grafana links to it)."""
    if not e.trace_id or e.value != e.value:
        return ""
    ids = f'trace_id="{e.trace_id:032x}",span_id="{e.span_id:016x}"'
    return f" # {{{ids}}} {_fmt(e.value)} {e.time_unix_nano / 1e9:.3f}"


def wants_openmetrics(accept: str | None) -> bool:
    """Content negotiation: OpenMetrics when the client prefers it to the text format."""
    if not accept:
        return False
    best_om, best_text = 0.0, 0.0
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                with contextlib.suppress(ValueError):
                    q = float(p[2:])
        media = media.lower()
        if media == "application/openmetrics-text":
            best_om = max(best_om, q)
        elif media in ("text/plain", "text/*", "*/*"):
            best_text = max(best_text, q)
    return best_om > 0 and best_om >= best_text


# -- the reader -----------------------------------------------------------------------------
class EmbeddedPrometheusReader(MetricReader):
    """A pull reader that renders when scraped, reusing a body for a bounded time.

    A body is reused for at most ``min(max_age_s, last render time / max_cpu_share)``: fresh
    data for every scrape at the usual scrape intervals, and a storm of scrapes (several
    scrapers, a tight loop) never takes more than ``max_cpu_share`` of a core. Nothing runs
    when nobody scrapes.
    """

    def __init__(self, *, max_age_s: float = 1.0, max_cpu_share: float = 0.5) -> None:
        super().__init__(
            preferred_temporality={
                k: AggregationTemporality.CUMULATIVE
                for k in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter,
                          ObservableGauge)
            }
        )
        self.max_age_s = max_age_s
        self.max_cpu_share = max_cpu_share
        self.last_render_s = 0.0  # collect + render of the last fresh body
        self.renders = 0
        self.on_problem: Reporter | None = None
        self.resource: Mapping[str, Any] = {}  # the provider's resource attributes, for target_info
        self._labels = _LabelCache()
        self._lock = threading.Lock()
        # (collected at, data, {openmetrics: body}); replaced whole, so readers see one snapshot.
        self._snapshot: tuple[float, MetricsData | None, dict[bool, bytes]] = (-math.inf, None, {})
        self._warned: set[str] = set()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._snapshot = (time.monotonic(), metrics_data, {})

    def body(self, openmetrics: bool = False) -> bytes:
        """The exposition: fresh unless the last one is younger than the reuse window."""
        problems: list[tuple[str, str]] = []
        with self._lock:
            collected_at, _data, bodies = self._snapshot
            window = min(self.max_age_s, self.last_render_s / self.max_cpu_share)
            fresh = time.monotonic() - collected_at > window
            if not fresh and openmetrics in bodies:
                return bodies[openmetrics]
            start = time.perf_counter()
            if fresh:
                # Never serve an old body for new data: forget it before collecting.
                self._snapshot = (-math.inf, None, {})
                self.collect()  # -> _receive_metrics; raises when shut down
            collected_at, data, bodies = self._snapshot
            body = render(data, self._labels, openmetrics=openmetrics, problems=problems,
                          resource=self.resource)
            bodies[openmetrics] = body
            if fresh:
                self.last_render_s = time.perf_counter() - start
                self.renders += 1
        for reason, detail in problems:
            self.report(reason, detail)
        return body

    def report(self, reason: str, detail: str) -> None:
        """Count a problem (through ``on_problem``); warn once per reason when nobody counts."""
        if self.on_problem is not None:
            try:
                self.on_problem(reason, detail)
                return
            except Exception:  # pragma: no cover - the counter itself failed
                pass
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("paid-telemetry: /metrics %s: %s; further cases are not logged", reason, detail)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._snapshot = (-math.inf, None, {})


# -- the HTTP server ------------------------------------------------------------------------
@dataclass(frozen=True)
class Access:
    """Basic-auth credentials the endpoint accepts (docs/endpoint.md, "Auth and TLS")."""

    username: str
    password: bytes

    @classmethod
    def from_file(cls, username: str, password_file: str) -> Access:
        """The password is the file's content without its trailing newline (as Prometheus'
        ``password_file`` reads it)."""
        with open(password_file, "rb") as f:
            password = f.read().rstrip(b"\r\n")
        if not password:
            raise ValueError(f"{password_file} is empty")
        return cls(username, password)

    def allows(self, header: str | None) -> bool:
        expected = b"Basic " + base64.b64encode(self.username.encode() + b":" + self.password)
        given = (header or "").strip().encode("utf-8", "replace")
        return hmac.compare_digest(given, expected)


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the certificate chain and key from files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class _Handler(BaseHTTPRequestHandler):
    reader: EmbeddedPrometheusReader
    server: MetricsHTTPServer
    access: Access | None = None
    timeout = 10.0  # socket timeout for writing the answer (the server already read the request)

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BytesIO(self.server.request_head(self.connection))

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        if self.access is not None and not self.access.allows(self.headers.get("Authorization")):
            self.reader.report("unauthorized", f"a request from {self.client_address[0]} without valid "
                                               "basic-auth credentials was refused (401)")
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="paid-telemetry", charset="UTF-8"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        openmetrics = wants_openmetrics(self.headers.get("Accept"))
        try:
            body = self.reader.body(openmetrics)
        except Exception as exc:  # not registered yet, shutting down, or a bug of ours
            self.reader.report("unrenderable", f"scrape failed: {exc!r}"[:200])
            self.send_error(503, "metrics unavailable")
            return
        self.send_response(200)
        self.send_header("Content-Type", OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("paid-telemetry /metrics: " + format, *args)


class MetricsHTTPServer(HTTPServer):
    """An HTTP server whose cost is bounded whatever the clients do.

    Connections are read in one selector loop until their request head is complete (no thread
    each: half-open or trickling clients cost a socket and a buffer); only complete requests go
    to a pool of ``max_threads``. A client whose request head is not complete within
    ``read_timeout_s`` is closed, and at most ``max_waiting`` connections wait (the oldest is
    closed first).
    """

    max_head = 64 * 1024
    request_queue_size = 128  # listen backlog (socketserver's default of 5 drops bursts of connects)

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_threads: int = 4, read_timeout_s: float = 10.0, max_waiting: int = 1024,
                 tls: ssl.SSLContext | None = None, on_refused: Reporter | None = None) -> None:
        self.tls = tls
        self.on_refused = on_refused
        self._shaken: set[socket.socket] = set()  # TLS connections whose handshake is done
        super().__init__(address, handler)
        self.socket.setblocking(False)  # the selector loop accepts until nothing is pending
        self.max_threads = max_threads
        self.read_timeout_s = read_timeout_s
        self.max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="paid-telemetry-http")
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._heads: dict[socket.socket, bytes] = {}
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._wake_r, self._wake_w = socket.socketpair()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        sel = selectors.DefaultSelector()
        sel.register(self.socket, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        waiting: dict[socket.socket, tuple[float, Any, bytearray]] = {}  # insertion order = age
        try:
            while not self._stop.is_set():
                timeout = poll_interval
                if waiting:
                    oldest = next(iter(waiting.values()))[0]
                    timeout = max(0.0, min(poll_interval, oldest - time.monotonic()))
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        self._accept(sel, waiting)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        conn = key.fileobj
                        assert isinstance(conn, socket.socket)
                        self._read_head(sel, waiting, conn)
                now = time.monotonic()
                while waiting:
                    conn, (deadline, _addr, _buf) = next(iter(waiting.items()))
                    if deadline > now:
                        break
                    self._drop(sel, waiting, conn)
        finally:
            for conn in list(waiting):
                self._drop(sel, waiting, conn)
            sel.close()
            self._stopped.set()

    def _accept(self, sel: selectors.BaseSelector, waiting: dict[socket.socket, Any]) -> None:
        for _ in range(256):
            try:
                conn, addr = self.socket.accept()
            except OSError:  # BlockingIOError: nothing more pending
                return
            if len(waiting) >= self.max_waiting:
                self._drop(sel, waiting, next(iter(waiting)))
            conn.setblocking(False)
            if self.tls is not None:  # the handshake happens in _read_head, as bytes arrive
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    with contextlib.suppress(OSError):
                        conn.close()
                    continue
            waiting[conn] = (time.monotonic() + self.read_timeout_s, addr, bytearray())
            sel.register(conn, selectors.EVENT_READ, "conn")

    def _read_head(self, sel: selectors.BaseSelector, waiting: dict[socket.socket, Any],
                   conn: socket.socket) -> None:
        _deadline, addr, buf = waiting[conn]
        if isinstance(conn, ssl.SSLSocket) and conn not in self._shaken:
            try:
                conn.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return  # more of the handshake to come
            except (ssl.SSLError, OSError) as exc:  # plaintext, a client that distrusts us, a reset
                self._refused("tls_handshake", f"TLS handshake with {addr[0]} failed: {exc!r}"[:200])
                self._drop(sel, waiting, conn)
                return
            self._shaken.add(conn)
        data = bytearray()
        while True:  # TLS may hold decrypted bytes the selector cannot see: read them all
            try:
                chunk = conn.recv(8192)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._drop(sel, waiting, conn)
                return
            data += chunk
            if not isinstance(conn, ssl.SSLSocket) or not conn.pending() or len(data) > self.max_head:
                break
        if not data:
            return
        if len(buf) + len(data) > self.max_head:
            self._drop(sel, waiting, conn)
            return
        buf += data
        if b"\r\n\r\n" in buf or b"\n\n" in buf:
            waiting.pop(conn)
            self._shaken.discard(conn)
            sel.unregister(conn)
            conn.setblocking(True)
            self._heads[conn] = bytes(buf)
            self._dispatch(conn, addr)

    def request_head(self, conn: socket.socket) -> bytes:
        """The request head the selector loop read for ``conn`` (the handler parses it)."""
        return self._heads.pop(conn, b"")

    def _refused(self, reason: str, detail: str) -> None:
        if self.on_refused is not None:
            with contextlib.suppress(Exception):
                self.on_refused(reason, detail)

    def _drop(self, sel: selectors.BaseSelector, waiting: dict[socket.socket, Any], conn: socket.socket) -> None:
        waiting.pop(conn, None)
        self._shaken.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        with contextlib.suppress(OSError):
            conn.close()

    def _dispatch(self, conn: socket.socket, addr: Any) -> None:
        with self._busy_lock:
            if self._busy >= 4 * self.max_threads:  # the pool is far behind: shed load
                self._heads.pop(conn, None)
                conn.close()
                return
            self._busy += 1
        try:
            self._pool.submit(self._work, conn, addr)
        except RuntimeError:  # pool shut down
            self._heads.pop(conn, None)
            conn.close()
            with self._busy_lock:
                self._busy -= 1

    def _work(self, conn: socket.socket, addr: Any) -> None:
        try:
            self.finish_request(conn, addr)
        except Exception:
            self.handle_error(conn, addr)
        finally:
            self.shutdown_request(conn)
            with self._busy_lock:
                self._busy -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that went away is routine (debug); anything else is logged once per type."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, _DISCONNECTS):
            log.debug("paid-telemetry /metrics: client %s went away: %r", client_address, exc)
        else:
            log.warning("paid-telemetry /metrics: request from %s failed: %r", client_address, exc)

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait(5)

    def server_close(self) -> None:
        super().server_close()
        # Also called by HTTPServer.__init__ when bind fails, before our own attributes exist.
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for s in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()


def serve(reader: EmbeddedPrometheusReader, host: str, port: int, *, max_threads: int = 4,
          read_timeout_s: float = 10.0, access: Access | None = None,
          tls: ssl.SSLContext | None = None) -> MetricsHTTPServer:
    """Serve ``reader`` at http(s)://host:port/metrics from a daemon thread."""
    handler: Any = type("PaidMetricsHandler", (_Handler,), {"reader": reader, "timeout": read_timeout_s,
                                                            "access": access})
    server = MetricsHTTPServer((host, port), handler, max_threads=max_threads, read_timeout_s=read_timeout_s,
                               tls=tls, on_refused=lambda reason, detail: handler.reader.report(reason, detail))
    threading.Thread(target=server.serve_forever, name="paid-telemetry-http", daemon=True).start()
    return server


class Endpoint:
    """The embedded /metrics endpoint: a pull reader and the HTTP server that serves it."""

    def __init__(self, reader: EmbeddedPrometheusReader, server: MetricsHTTPServer, requested_port: int | None = None
                 ) -> None:
        self.reader = reader
        self.server = server
        self.port = int(server.server_address[1])
        # The port asked for, when it was busy and this endpoint serves on another one.
        self.fallback_from = requested_port if requested_port not in (None, 0, self.port) else None

    @property
    def url(self) -> str:
        host = self.server.server_address[0]
        return f"{'https' if self.server.tls is not None else 'http'}://{host!s}:{self.port}/metrics"

    def serve(self, reader: EmbeddedPrometheusReader, access: Access | None, tls: ssl.SSLContext | None) -> None:
        """Serve ``reader`` from now on, with this access and TLS (a reconfigure that keeps the
        port): connections accepted from here on use them."""
        self.reader = reader
        handler: Any = self.server.RequestHandlerClass
        handler.reader = reader
        handler.access = access
        self.server.tls = tls

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def abandon(self) -> None:
        """In a forked child: close the inherited copy of the parent's socket. The serving
        thread did not survive the fork, so ``close()`` (which waits for it) would hang."""
        self.server.socket.close()


_warned_fallback = False


def start_endpoint(host: str, port: int, *, port_range: int = 1, strict: bool = False,
                   access: Access | None = None, tls: ssl.SSLContext | None = None) -> Endpoint:
    """Start serving a new reader's metrics at http(s)://host:port/metrics.

    A busy ``port`` (the second worker of a pre-fork server) is not an error unless
    ``strict``: the next free port of ``port .. port + port_range - 1`` serves this
    process's metrics, or past the range an ephemeral one, with a one-time warning.
    """
    reader = EmbeddedPrometheusReader()
    candidates = [port] if port == 0 else [*list(range(port, min(port + max(1, port_range), 65536))), 0]
    for candidate in candidates:
        try:
            server = serve(reader, host, candidate, access=access, tls=tls)
        except OSError as exc:
            # Only a busy port moves on to the next one; a host that does not resolve or is not
            # this machine's fails the same on every port (the caller turns it into a clear error).
            if strict or candidate == candidates[-1] or exc.errno != errno.EADDRINUSE:
                reader.shutdown()
                raise
            continue
        endpoint = Endpoint(reader, server, requested_port=port)
        if endpoint.fallback_from is not None:
            _warn_fallback(endpoint, host, port, port_range)
        return endpoint
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _warn_fallback(endpoint: Endpoint, host: str, port: int, port_range: int) -> None:
    global _warned_fallback
    if _warned_fallback:
        return
    _warned_fallback = True
    last = port + max(1, port_range) - 1
    where = "outside the range, on an ephemeral port" if endpoint.port > last else "on the next free port"
    log.warning(
        "paid-telemetry: port %s:%s is in use (another worker of this server?); this process serves its metrics "
        "%s: %s. Scrape ports %s-%s (PAID_TELEMETRY_PROMETHEUS_PORT .. +PAID_TELEMETRY_PROMETHEUS_PORT_RANGE-1), "
        "or export over OTLP (PAID_TELEMETRY_EXPORTER=otlp) from multi-process servers: see docs/deploying.md. "
        "Counted in paid_telemetry_dropped_records_total{reason=\"port_in_use\"}.",
        host, port, where, endpoint.url, port, last,
    )
