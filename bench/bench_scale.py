"""Sizing figures for docs/scaling.md: what one collector core sustains in each tier, and the
metrics store's ingest rate and query time at N x today's series.

    python bench/bench_scale.py collectors [--seconds 15] [--series 5000] [--inflight 2]
    python bench/bench_scale.py store [--copies 10] [--interval 30]

- gateway: otel-collector/gateway.yaml (TLS + bearer token, Prometheus exporter) pinned to ONE
  core with taskset; the load generator (pinned to the other core) replays one pre-serialised
  OTLP metrics request of ``--series`` cumulative points as fast as the gateway answers.
  Figure: accepted metric points per second (the gateway's own otelcol_receiver_accepted_metric_points).
- agent: otel-collector/agent.yaml (persistent queue, load_balancing to two gateways) pinned
  to one core, the gateways on the other; same load. Figure: points per second the agent
  *sent* on (otelcol_exporter_sent_metric_points), i.e. through its on-disk queue.

- store: the dashboards' demo-like week of history (bench_dashboards.py's, ~750 series)
  imported ``--copies`` times into VictoriaMetrics, each copy with its own ``copy`` label
  (N x the series); figures: samples/s imported, and every Grafana panel query over 24h and
  7d timed as Grafana sends it (median, slowest).

Loopback only; certificates and token are generated into a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paid_telemetry_ops import dashbench
from paid_telemetry_ops.services import Service
from paid_telemetry_ops.stack import agent_service, gateway_service, victoriametrics_service
from tests.tlsutil import make_pki, secret_file

METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def _attr(k: str, v: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))


def metrics_request(series: int, instance: str) -> bytes:
    now = time.time_ns()
    points = [metrics_pb2.NumberDataPoint(
        attributes=[_attr("project_id", f"p{i % 50}"), _attr("agent_type", f"a{i // 50}"),
                    _attr("status", "completed")],
        start_time_unix_nano=now - 10**9, time_unix_nano=now, as_double=float(i)) for i in range(series)]
    metric = metrics_pb2.Metric(name="paid_bench_runs", sum=metrics_pb2.Sum(
        data_points=points, is_monotonic=True,
        aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE))
    rm = metrics_pb2.ResourceMetrics(
        resource=resource_pb2.Resource(attributes=[_attr("service.name", "paid-bench"),
                                                   _attr("service.instance.id", instance)]),
        scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[rm]).SerializeToString()


def self_metric(svc: Service, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.ports['self']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.split("{", 1)[0].split(" ", 1)[0] == name)


def load(channel: grpc.Channel, method: str, body: bytes, seconds: float, inflight: int,
         metadata: list[tuple[str, str]] | None) -> tuple[int, int]:
    """Replay ``body`` with ``inflight`` concurrent calls for ``seconds``; (ok, failed) calls."""
    call = channel.unary_unary(method)
    stop = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                call(body, metadata=metadata, timeout=10)
                ok = 0
            except grpc.RpcError:
                ok = 1
            with lock:
                counts[ok] += 1

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts[0], counts[1]


def pin(svc: Service, core: int) -> Service:
    svc.argv = ["taskset", "-c", str(core), *svc.argv]
    svc.env["COLLECTOR_LOG_LEVEL"] = "warn"
    return svc


def rate(svc: Service, counter: str, run: Callable[[], object]) -> tuple[float, float]:
    """(per-second increase of ``svc``'s own ``counter`` while ``run`` runs, CPU cores it used):
    points per CPU-second is the figure that survives a noisy shared machine."""
    cpu = "otelcol_process_cpu_seconds"
    before, cpu0, start = self_metric(svc, counter), self_metric(svc, cpu), time.monotonic()
    run()
    time.sleep(1.5)  # let the last batch leave
    elapsed = time.monotonic() - start - 1.5
    return (self_metric(svc, counter) - before) / elapsed, (self_metric(svc, cpu) - cpu0) / elapsed


def parallel(ch: grpc.Channel, bodies: list[bytes], seconds: float, inflight: int,
             metadata: list[tuple[str, str]] | None) -> None:
    threads = [threading.Thread(target=load, args=(ch, METRICS, b, seconds, inflight, metadata)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def store(copies: int, interval_s: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        t0 = time.perf_counter()
        hist = dashbench.write_openmetrics(wd / "om", days=7, interval_s=interval_s)
        print(f"history: {hist.series} series x {hist.samples // hist.series} samples "
              f"({hist.bytes / 1e6:.0f} MB OpenMetrics) written in {time.perf_counter() - t0:.0f} s", flush=True)
        vm = victoriametrics_service(wd, fresh=True)
        vm.start(60)
        try:
            url = f"http://127.0.0.1:{vm.ports['http']}"
            took = sum(dashbench.import_victoriametrics(url, hist.files, f"copy={i}") for i in range(copies))
            count = dashbench.instant(url, 'count({__name__=~".+"})', at=hist.end)[0]["value"][1]
            du = sum(p.stat().st_size for p in (wd / "victoriametrics").rglob("*") if p.is_file())
            print(f"store: {copies} x {hist.samples:,} samples ({count} series) imported in {took:.0f} s = "
                  f"{copies * hist.samples / took:,.0f} samples/s; {du / 1e6:.0f} MB on disk", flush=True)
            queries = dashbench.panel_queries()
            for repeat in range(2):  # the second round shows the warm figure
                timings = dashbench.time_range_queries(url, queries, {"24h": 86400, "7d": 7 * 86400}, end=hist.end)
                secs = sorted(t.seconds for t in timings)
                worst = max(timings, key=lambda t: t.seconds)
                print(f"queries ({'cold' if repeat == 0 else 'warm'}): {len(timings)}, median "
                      f"{secs[len(secs) // 2] * 1000:.0f} ms, p95 {secs[int(len(secs) * 0.95)] * 1000:.0f} ms, "
                      f"slowest {worst.seconds * 1000:.0f} ms ({worst.query.key} [{worst.range_name}])", flush=True)
        finally:
            vm.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["collectors", "store"])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--series", type=int, default=5000)
    ap.add_argument("--inflight", type=int, default=2, help="concurrent calls per resource (4 resources)")
    ap.add_argument("--copies", type=int, default=10, help="store: N x today's series")
    ap.add_argument("--interval", type=int, default=30, help="store: seconds between samples of the history")
    a = ap.parse_args()
    if a.what == "store":
        store(a.copies, a.interval)
        return
    os.sched_setaffinity(0, {1})  # the load generator stays off the measured core 0
    bodies = [metrics_request(a.series, f"bench-{i}") for i in range(4)]  # 4 resources: both gateways get some
    big = [("grpc.max_send_message_length", 64 << 20)]
    with tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        pki = make_pki(wd / "pki")
        token, token_file = secret_file(wd / "token")
        auth = [("authorization", f"Bearer {token}")]
        creds = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
        started: list[Service] = []

        def gateway(name: str, core: int) -> Service:
            # metrics only: a closed port stands in for Jaeger
            svc = pin(gateway_service(wd, token_file=token_file, cert_file=pki.cert, key_file=pki.key,
                                      jaeger_otlp="127.0.0.1:9", name=name), core)
            started.append(svc)
            return svc.start()

        try:
            solo = gateway("gw-solo", 0)
            with grpc.secure_channel(f"127.0.0.1:{solo.ports['otlp_grpc']}", creds, options=big) as ch:
                gw_rate, gw_cpu = rate(solo, "otelcol_receiver_accepted_metric_points",
                               lambda: parallel(ch, bodies, a.seconds, a.inflight, auth))
            print(f"gateway, 1 core, TLS + token -> Prometheus exporter: {gw_rate:,.0f} metric points/s "
                  f"at {gw_cpu:.2f} cores = {gw_rate / gw_cpu:,.0f} points per CPU-second "
                  f"({a.series} points per request, {4 * a.inflight} calls in flight)", flush=True)
            solo.stop()
            started.remove(solo)

            gws = [gateway(f"gw{i}", 1) for i in range(2)]
            agent = pin(agent_service(wd, gateways=[f"127.0.0.1:{g.ports['otlp_grpc']}" for g in gws],
                                      token_file=token_file, ca_file=pki.ca_cert, name="agent"), 0)
            started.append(agent)
            agent.start()
            with grpc.insecure_channel(f"127.0.0.1:{agent.ports['otlp_grpc']}", options=big) as ch:
                ag_rate, ag_cpu = rate(agent, "otelcol_exporter_sent_metric_points",
                               lambda: parallel(ch, bodies, a.seconds, a.inflight, None))
            print(f"agent, 1 core, persistent queue -> 2 gateways over TLS: {ag_rate:,.0f} metric points/s sent on "
                  f"at {ag_cpu:.2f} cores = {ag_rate / ag_cpu:,.0f} points per CPU-second", flush=True)
        finally:
            for s in reversed(started):
                s.stop()


if __name__ == "__main__":
    main()
