"""The embedded Prometheus endpoint: a fast text renderer and an adaptive pull reader.

Collecting 10,000 series through the OTel SDK takes a few hundred milliseconds in Python,
and the stock exporter's translation triples that, far from RDR-011's 50 ms target. So:

- rendering goes straight from OTel ``MetricsData`` to the text format (no intermediate
  ``prometheus_client`` objects), with label strings cached per attribute set;
- while a render is cheap (under ``sync_budget_s``, the usual case), every scrape renders
  fresh data; once it is expensive, scrapes are answered from the last render, which a
  background thread refreshes at most every ``refresh_s`` and uses at most
  ``max_cpu_share`` of a core. Staleness is then bounded by the refresh period; documented
  in docs/performance.md.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "%": "percent"}
_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str, unit: str, *, monotonic_sum: bool, gauge: bool) -> str:
    """OTel name -> Prometheus name, as the OTel compatibility spec (and the collector) do it."""
    inst = BY_NAME.get(name)
    if inst is not None:
        return inst.prometheus_name
    out = _BAD.sub("_", name)
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


def _fmt(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if type(value) is int:
        return str(value)
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _LabelCache:
    """attributes -> rendered ``k="v",...`` string; bounded."""

    def __init__(self, limit: int = 200_000) -> None:
        self._cache: dict[frozenset[tuple[str, Any]], str] = {}
        self._limit = limit

    def render(self, attributes: Mapping[str, Any]) -> str:
        key = frozenset(attributes.items())
        hit = self._cache.get(key)
        if hit is None:
            hit = ",".join(f'{_BAD_LABEL.sub("_", k)}="{_escape(v)}"' for k, v in sorted(attributes.items()))
            if len(self._cache) >= self._limit:
                self._cache.clear()
            self._cache[key] = hit
        return hit


def render(data: MetricsData | None, labels: _LabelCache | None = None) -> bytes:
    """Prometheus text exposition (0.0.4) of cumulative OTel metrics data."""
    labels = labels or _LabelCache()
    out: list[str] = []
    seen_target = False
    if data is None:
        return b""
    for rm in data.resource_metrics:
        if not seen_target and rm.resource.attributes:
            seen_target = True
            out.append("# HELP target_info Target metadata\n# TYPE target_info gauge\n")
            out.append(f"target_info{{{labels.render(rm.resource.attributes)}}} 1\n")
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _render_metric(metric, labels, out)
    return "".join(out).encode()


def _render_metric(metric: Any, labels: _LabelCache, out: list[str]) -> None:
    data = metric.data
    help_text = _escape(metric.description or "").replace('\\"', '"')
    if isinstance(data, Sum):
        monotonic = bool(data.is_monotonic)
        name = metric_name(metric.name, metric.unit, monotonic_sum=monotonic, gauge=not monotonic)
        kind = "counter" if monotonic else "gauge"
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        for p in data.data_points:
            out.append(f"{name}{{{labels.render(p.attributes or {})}}} {_fmt(p.value)}\n")
    elif isinstance(data, Gauge):
        name = metric_name(metric.name, metric.unit, monotonic_sum=False, gauge=True)
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        for p in data.data_points:
            out.append(f"{name}{{{labels.render(p.attributes or {})}}} {_fmt(p.value)}\n")
    elif isinstance(data, HistogramData):
        name = metric_name(metric.name, metric.unit, monotonic_sum=False, gauge=False)
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} histogram\n")
        bounds = None
        les: list[str] = []
        for hp in data.data_points:
            lab = labels.render(hp.attributes or {})
            sep = "," if lab else ""
            if hp.explicit_bounds is not bounds:
                bounds = hp.explicit_bounds
                les = [_fmt(b) for b in bounds] + ["+Inf"]
            total = 0
            for le, count in zip(les, hp.bucket_counts, strict=False):
                total += count
                out.append(f'{name}_bucket{{{lab}{sep}le="{le}"}} {total}\n')
            out.append(f"{name}_sum{{{lab}}} {_fmt(hp.sum)}\n{name}_count{{{lab}}} {hp.count}\n")


class EmbeddedPrometheusReader(MetricReader):
    """A pull reader that keeps the latest rendering for a fast, bounded-cost /metrics."""

    def __init__(self, *, sync_budget_s: float = 0.02, refresh_s: float = 1.0, max_cpu_share: float = 0.1) -> None:
        super().__init__(
            preferred_temporality={
                k: AggregationTemporality.CUMULATIVE
                for k in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter,
                          ObservableGauge)
            }
        )
        self.sync_budget_s = sync_budget_s
        self.refresh_s = refresh_s
        self.max_cpu_share = max_cpu_share
        self.last_render_s = 0.0
        self.rendered_at = 0.0
        self._body = b""
        self._labels = _LabelCache()
        self._collect_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="paid-telemetry-metrics", daemon=True)
        self._thread.start()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._body = render(metrics_data, self._labels)

    def refresh(self) -> None:
        with self._collect_lock:
            start = time.perf_counter()
            try:
                self.collect()
            except Exception:  # not yet registered with a provider, or shutting down
                return
            self.last_render_s = time.perf_counter() - start
            self.rendered_at = time.monotonic()

    def body(self) -> bytes:
        """Fresh data when rendering is cheap; otherwise the background thread's latest."""
        if self.last_render_s <= self.sync_budget_s or not self._body:
            self.refresh()
        return self._body

    def _refresh_loop(self) -> None:
        while not self._stop.wait(max(self.refresh_s, self.last_render_s / self.max_cpu_share)):
            if self.last_render_s > self.sync_budget_s:
                self.refresh()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._stop.set()


class _Handler(BaseHTTPRequestHandler):
    reader: EmbeddedPrometheusReader

    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = self.reader.body()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(reader: EmbeddedPrometheusReader, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``reader`` at http://host:port/metrics from a daemon thread."""
    handler = type("PaidMetricsHandler", (_Handler,), {"reader": reader})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="paid-telemetry-http", daemon=True).start()
    return server
