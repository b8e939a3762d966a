"""Two collector tiers on real binaries (docs/scaling.md): SDK processes -> 2 agent collectors
(persistent queue, load_balancing exporter) -> 2 gateway collectors (TLS + bearer token) ->
Prometheus and Jaeger, all on loopback.

One gateway is SIGKILLed mid-load and restarted after an outage: the agents hold what they could
not send in their file_storage queue, and afterwards Prometheus shows the exact counter totals and
Jaeger every span the SDKs finished (spans lost = 0). Bounded: 8 processes x 75 runs over 40 s,
one 30 s gateway outage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from paid_telemetry_ops.services import REPO, Service, built_binary, find_binary, free_port, http_ok
from paid_telemetry_ops.stack import agent_service, gateway_service, jaeger_service
from tests.promapi import get_json, series, wait_for
from tests.tlsutil import make_pki, secret_file

pytestmark = pytest.mark.e2e

N_WORKERS = 8
RUNS = 75  # per worker
LOAD_S = 40.0  # each worker spreads its runs over this long: the load outlasts the outage
KILL_AFTER_S = 6.0
OUTAGE_S = 30.0


# -- configs ----------------------------------------------------------------------------------
def _collector_config(name: str) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((REPO / "otel-collector" / name).read_text())
    return cfg


@pytest.mark.parametrize("name", ["agent.yaml", "gateway.yaml"])
def test_tier_config_validates(name: str, tmp_path: Path) -> None:
    binary = built_binary("otelcol-paid")
    check = subprocess.run([binary, "validate", "--config", str(REPO / "otel-collector" / name)], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "AGENT_QUEUE_DIR": str(tmp_path)})
    assert check.returncode == 0, check.stderr
    components = subprocess.run([binary, "components"], capture_output=True, text=True, timeout=60).stdout
    for component in ("load_balancing", "file_storage", "bearertokenauth"):
        assert f"name: {component}\n" in components, component


def test_tiers_scrub_exactly_like_the_single_collector() -> None:
    """Nothing sensitive may leave the host or be stored: one scrub list in all three configs."""
    reference = _collector_config("config.yaml")["processors"]["attributes/scrub"]
    for name in ("agent.yaml", "gateway.yaml"):
        cfg = _collector_config(name)
        assert cfg["processors"]["attributes/scrub"] == reference, name
        for pipeline in cfg["service"]["pipelines"].values():
            assert "attributes/scrub" in pipeline["processors"], name


def test_tier_configs_listen_on_loopback_and_authenticate_off_host_links() -> None:
    gw = _collector_config("gateway.yaml")
    for proto in gw["receivers"]["otlp"]["protocols"].values():
        assert proto["endpoint"].startswith("${env:") and ":-127.0.0.1:" in proto["endpoint"]
        assert proto["auth"] == {"authenticator": "bearertokenauth/server"}
        assert set(proto["tls"]) >= {"cert_file", "key_file"}
    for exp in ("otlp_grpc/jaeger",):
        assert gw["exporters"][exp]["sending_queue"] == {"enabled": False}  # ack only once stored
    assert "batch" not in str(gw["service"]["pipelines"])  # nothing acknowledged while still in memory
    agent = _collector_config("agent.yaml")
    for proto in agent["receivers"]["otlp"]["protocols"].values():
        assert ":-127.0.0.1:" in proto["endpoint"]
    for name in ("load_balancing/traces", "load_balancing/metrics", "load_balancing/logs"):
        lb = agent["exporters"][name]
        assert lb["sending_queue"]["storage"] == "file_storage/queue"
        otlp = lb["protocol"]["otlp"]
        assert otlp["auth"] == {"authenticator": "bearertokenauth/client"} and "ca_file" in otlp["tls"]
        assert otlp["sending_queue"] == {"enabled": False}
    assert agent["exporters"]["load_balancing/traces"]["routing_key"] == "traceID"
    assert agent["exporters"]["load_balancing/metrics"]["routing_key"] == "resource"


# -- the topology ------------------------------------------------------------------------------
@dataclass
class Tiers:
    workdir: Path
    gateways: list[Service]
    agents: list[Service]
    jaeger: Service
    prometheus: str


def self_metrics(svc: Service) -> dict[str, float]:
    """{name{labels}: value} of a collector's own /metrics (names as this release exposes them)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{svc.ports['self']}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def start(make: Callable[[], Service], started: list[Service], attempts: int = 3) -> Service:
    """Build and start a service on fresh free ports, again if another process on this shared
    machine took one of them between choosing and binding ("address already in use")."""
    for attempt in range(attempts):
        svc = make()
        started.append(svc)  # listed before start: a start that fails half-way is stopped too
        try:
            return svc.start()
        except RuntimeError as exc:
            svc.stop()
            started.remove(svc)
            if "address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{", 1)[0] == name and all(w in k for w in want))


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiers]:
    wd = tmp_path_factory.mktemp("tiers")
    pki = make_pki(wd / "pki")
    _, token_file = secret_file(wd / "otlp.token")
    started: list[Service] = []
    try:
        jaeger = start(lambda: jaeger_service(wd), started)
        jaeger_otlp = f"127.0.0.1:{jaeger.ports['jaeger_otlp']}"
        gateways = [start(lambda i=i: gateway_service(wd, token_file=token_file, cert_file=pki.cert,
                                                      key_file=pki.key, jaeger_otlp=jaeger_otlp, name=f"gateway-{i}"),
                          started) for i in range(2)]
        endpoints = [f"127.0.0.1:{gw.ports['otlp_grpc']}" for gw in gateways]
        agents = [start(lambda i=i: agent_service(wd, gateways=endpoints, token_file=token_file,
                                                  ca_file=pki.ca_cert, name=f"agent-{i}"), started)
                  for i in range(2)]
        prom_dir = wd / "prometheus"
        prom_dir.mkdir()
        (prom_dir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "otel-collector", "honor_labels": True, "static_configs": [
                {"targets": [f"127.0.0.1:{gw.ports['prometheus']}" for gw in gateways]}]}],
        }))

        def prometheus() -> Service:
            port = free_port()
            return Service("prometheus", [
                find_binary("prometheus"), f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            ], prom_dir, ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), ports={"http": port})

        prom = start(prometheus, started)
        prom_port = prom.ports["http"]
        yield Tiers(wd, gateways, agents, jaeger, f"http://127.0.0.1:{prom_port}")
    finally:
        for svc in reversed(started):
            svc.stop()


def test_gateway_killed_mid_load_loses_nothing(tiers: Tiers) -> None:
    out_dir = tiers.workdir / "workers"
    out_dir.mkdir()
    workers = []
    for i in range(N_WORKERS):
        agent = tiers.agents[i % len(tiers.agents)]
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{agent.ports['otlp_grpc']}"}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "tests.scale_worker", "--project", f"scale-{i}", "--runs", str(RUNS),
             "--seconds", str(LOAD_S), "--out", str(out_dir / f"w{i}.json")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ))
    try:
        victim = tiers.gateways[1]
        # kill once both gateways carry traffic
        wait_for(lambda: all(metric_sum(self_metrics(gw), "otelcol_receiver_accepted_spans") > 0
                             for gw in tiers.gateways), timeout=30, what="spans on both gateways")
        time.sleep(max(0.0, KILL_AFTER_S - 2))
        victim.kill(signal.SIGKILL)
        assert victim.proc is not None
        victim.proc.wait(10)
        killed_at = time.monotonic()
        queued = 0.0
        while time.monotonic() - killed_at < OUTAGE_S:  # the agents hold the undeliverable data on disk
            queued = max(queued, sum(metric_sum(self_metrics(a), "otelcol_exporter_queue_size",
                                                exporter="load_balancing/traces") for a in tiers.agents))
            time.sleep(0.5)
        assert queued > 0, "the outage should have left requests in the agents' persistent queues"
        victim.start()
        for w in workers:
            w.wait(timeout=LOAD_S + 60)
            assert w.returncode == 0, (w.stdout.read() if w.stdout else b"").decode()[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    results = [json.loads((out_dir / f"w{i}.json").read_text()) for i in range(N_WORKERS)]

    # exact counter totals in Prometheus, per worker's project
    expected = {(("agent_type", "scale"), ("project_id", f"scale-{i}"), ("status", "completed")): float(RUNS)
                for i in range(N_WORKERS)}
    runs_q = 'paid_agent_runs_total{job="paid-scale"}'
    wait_for(lambda: series(tiers.prometheus, runs_q) == expected or None, timeout=60,
             what=f"exact run totals in Prometheus (last: {series(tiers.prometheus, runs_q)})")
    prs = series(tiers.prometheus, 'paid_pull_requests_total{job="paid-scale"}')
    assert prs == {(("event", "merged"), ("project_id", f"scale-{i}")): float(RUNS) for i in range(N_WORKERS)}

    # every finished span in Jaeger
    sent = {sid for r in results for sid in r["span_ids"]}
    assert len(sent) >= N_WORKERS * RUNS

    def stored() -> tuple[set[str], int]:
        url = f"http://127.0.0.1:{tiers.jaeger.ports['jaeger_ui']}/api/traces?service=paid-scale&limit=100000&lookback=1h"
        data = get_json(url, timeout=30)["data"]
        spans = [s["spanID"] for t in data for s in t["spans"]]
        return set(spans), len(spans)

    found, copies = wait_for(lambda: (lambda f: f if f[0] >= sent else None)(stored()), timeout=60,
                             what="every span in Jaeger")
    lost = len(sent - found)
    print(f"\nscale e2e: {len(sent)} spans sent, lost {lost}, stored copies {copies} "
          f"(duplicates {copies - len(found)}); peak agent queue {queued:.0f} requests; outage {OUTAGE_S:.0f}s")
    assert lost == 0
    assert found - sent == set()  # nothing foreign

    # the queues drained, and each agent sent on what it accepted
    def drained() -> bool:
        return all(metric_sum(self_metrics(a), "otelcol_exporter_queue_size") == 0 for a in tiers.agents)

    wait_for(lambda: drained() or None, timeout=30, what="the agents' queues to drain")
    by_agent: dict[str, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
    for a in tiers.agents:
        m = self_metrics(a)
        by_agent[a.name] = (metric_sum(m, "otelcol_receiver_accepted_spans"),
                            metric_sum(m, "otelcol_exporter_sent_spans", exporter="load_balancing/traces"))
        assert metric_sum(m, "otelcol_exporter_send_failed_spans") == 0, a.name
    assert all(acc == sent_ > 0 for acc, sent_ in by_agent.values()), by_agent
    assert sum(acc for acc, _ in by_agent.values()) == len(sent)


def test_queue_overflow_is_counted_exactly(tmp_path: Path) -> None:
    """Past the persistent queue's size data is dropped, and counted: what the store gets plus
    the agent's otelcol_exporter_enqueue_failed_spans equals what the SDK finished."""
    pki = make_pki(tmp_path / "pki")
    _, token_file = secret_file(tmp_path / "otlp.token")
    started: list[Service] = []
    try:
        jaeger = start(lambda: jaeger_service(tmp_path), started)
        gateways = [gateway_service(tmp_path, token_file=token_file, cert_file=pki.cert, key_file=pki.key,
                                    jaeger_otlp=f"127.0.0.1:{jaeger.ports['jaeger_otlp']}", name=f"gw-{i}")
                    for i in range(2)]  # not started yet: every gateway is down
        agent = start(lambda: agent_service(tmp_path, gateways=[f"127.0.0.1:{g.ports['otlp_grpc']}" for g in gateways],
                                            token_file=token_file, ca_file=pki.ca_cert, name="agent", queue_size=2),
                      started)
        out = tmp_path / "w.json"
        # spans leave the SDK every 200 ms, so the agent forms about one batch (= queue entry) per second
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{agent.ports['otlp_grpc']}",
               "OTEL_BSP_SCHEDULE_DELAY": "200"}
        subprocess.run([sys.executable, "-m", "tests.scale_worker", "--project", "overflow", "--runs", "60",
                        "--seconds", "12", "--out", str(out)], cwd=REPO, env=env, check=True, timeout=60,
                       capture_output=True)
        sent = set(json.loads(out.read_text())["span_ids"])
        def enqueue_failed() -> float:
            return metric_sum(self_metrics(agent), "otelcol_exporter_enqueue_failed_spans",
                              exporter="load_balancing/traces")

        wait_for(lambda: enqueue_failed() or None, timeout=10, what="spans refused by the full queue")
        for gw in gateways:
            started.append(gw)
            gw.start()

        def stored() -> tuple[set[str], float] | None:
            url = f"http://127.0.0.1:{jaeger.ports['jaeger_ui']}/api/traces?service=paid-scale&limit=1000&lookback=1h"
            failed = enqueue_failed()  # read first: both only grow
            found = {s["spanID"] for t in get_json(url)["data"] for s in t["spans"]}
            return (found, failed) if len(found) + failed >= len(sent) else None

        found, failed = wait_for(stored, timeout=60, what="the queued spans in Jaeger")
        assert 0 < failed < len(sent)
        assert found <= sent
        assert len(found) + failed == len(sent)
        print(f"\noverflow: {len(sent)} spans sent, {len(found)} stored, {failed:.0f} counted as enqueue_failed")
    finally:
        for svc in reversed(started):
            svc.stop()


def test_store_behind_prometheus_holds_the_exact_totals(tmp_path: Path) -> None:
    """The local stack with the store: Prometheus remote-writes to VictoriaMetrics (15 days'
    retention), whose Prometheus-compatible API answers with the same exact counters."""
    from urllib.parse import urlencode

    from paid_telemetry_ops.stack import Stack

    with Stack(tmp_path / "stack", temporal=False, jaeger=False, alertmanager=False, victoriametrics=True) as s:
        generated = yaml.safe_load((tmp_path / "stack" / "prometheus" / "prometheus.yml").read_text())
        assert generated["remote_write"] == [{"url": f"{s.store_url}/api/v1/write"}]
        with urllib.request.urlopen(f"{s.store_url}/flags", timeout=5) as resp:
            assert '-retentionPeriod="15d"' in resp.read().decode()
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": s.otlp_endpoint}
        subprocess.run([sys.executable, "-m", "tests.scale_worker", "--project", "store", "--runs", "25",
                        "--out", str(tmp_path / "w.json")], cwd=REPO, env=env, check=True, timeout=60,
                       capture_output=True)
        want = {(("agent_type", "scale"), ("project_id", "store"), ("status", "completed")): 25.0}
        expr = 'paid_agent_runs_total{job="paid-scale"}'
        wait_for(lambda: series(s.prometheus_url, expr) == want or None, timeout=30, what="the runs in Prometheus")

        def in_store() -> dict[Any, float] | None:
            # latency_offset: by default the store hides the newest 30 s from queries (0 is refused)
            q = urlencode({"query": expr, "latency_offset": "1ms", "nocache": "1"})
            result = get_json(f"{s.store_url}/api/v1/query?{q}")["data"]["result"]
            # Prometheus' external label comes along: monitor="paid" (the dashboards ignore it)
            assert all(r["metric"]["monitor"] == "paid" for r in result)
            drop = ("__name__", "job", "instance", "monitor")
            out = {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in drop)): float(r["value"][1])
                   for r in result}
            return out if out == want else None

        assert wait_for(in_store, timeout=30, what="the runs in VictoriaMetrics") == want


# -- the scale topology as users start it: `stack up --scale` and the compose profile's secrets ------
PUSH = """
import sys
import paid_telemetry as pt
endpoint, project, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pt.configure(service_name="paid-scale-e2e", exporter="otlp", otlp_endpoint=endpoint, handle_sigterm=False)
for _ in range(n):
    pt.record_pull_request("merged", project_id=project)
pt.shutdown()
"""


def exposed(metrics_url: str, project: str) -> float | None:
    """The merged-PR count of ``project`` a collector's Prometheus exporter shows, None if absent."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    values = [float(line.rsplit(" ", 1)[1]) for line in lines
              if line.startswith("paid_pull_requests_total{") and f'project_id="{project}"' in line]
    assert len(values) <= 1, values
    return values[0] if values else None


def push_counter(endpoint: str, project: str, n: int) -> None:
    """One SDK process (exporter="otlp" to ``endpoint``) counts ``n`` merged PRs for ``project`` and exits."""
    subprocess.run([sys.executable, "-c", PUSH, endpoint, project, str(n)], cwd=REPO, check=True, timeout=60,
                   capture_output=True)


def test_stack_scale_carries_an_exact_counter_through_agent_and_gateways(tmp_path: Path) -> None:
    """`Stack(scale=True)` (what `paid-telemetry stack up --scale` runs): SDK -> agent -> TLS + token ->
    gateways -> Prometheus (scraping both, config generated from prometheus-scale.yml) -> VictoriaMetrics."""
    from urllib.parse import urlencode

    from paid_telemetry_ops.stack import Stack

    t0 = time.monotonic()
    with Stack(tmp_path / "stack", scale=True, temporal=False, jaeger=False, alertmanager=False,
               victoriametrics=True) as s:
        assert {"gateway-1", "gateway-2", "agent"} <= set(s.services) and "collector" not in s.services
        assert s.otlp_endpoint == f"http://127.0.0.1:{s.services['agent'].ports['otlp_grpc']}"
        agent_env = s.services["agent"].env
        for i in (1, 2):  # the agent sends to both gateways, over TLS with the token they check
            gw = s.services[f"gateway-{i}"]
            assert f"127.0.0.1:{gw.ports['otlp_grpc']}" in agent_env["GATEWAY_ENDPOINTS"]
            assert gw.env["OTLP_TOKEN_FILE"] == agent_env["GATEWAY_TOKEN_FILE"]
        generated = yaml.safe_load((tmp_path / "stack" / "prometheus" / "prometheus.yml").read_text())
        jobs = {j["job_name"]: sorted(t for sc in j["static_configs"] for t in sc["targets"])
                for j in generated["scrape_configs"]}
        assert jobs["otel-collector"] == sorted(u.split("/")[2] for u in s.gateway_metrics_urls)
        assert jobs["otel-collector-self"] == [f"127.0.0.1:{s.ports['agent_self']}"]
        assert len(jobs["otel-gateway-self"]) == 2
        assert generated["remote_write"] == [{"url": f"{s.store_url}/api/v1/write"}]
        every = {(job, t) for job, ts in jobs.items() for t in ts}
        assert len(every) == 7  # 2 gateways' exporters and self metrics, the agent's, Prometheus, the store
        wait_for(lambda: every == {(x["metric"]["job"], x["metric"]["instance"]) for x in get_json(
            f"{s.prometheus_url}/api/v1/query?query=up%3D%3D1")["data"]["result"]} or None,
            timeout=20, what="every target up")
        started = time.monotonic() - t0

        push_counter(s.otlp_endpoint, "scale-e2e", 7)
        expr = 'paid_pull_requests_total{job="paid-scale-e2e"}'
        want = {(("event", "merged"), ("project_id", "scale-e2e")): 7.0}
        wait_for(lambda: series(s.prometheus_url, expr) == want or None, timeout=30,
                 what=f"7 merged PRs in Prometheus (last: {series(s.prometheus_url, expr)})")
        seen = time.monotonic() - t0
        # no single collector runs: the value came through the gateways, all of it through exactly one
        # (the agent routes metrics by resource)
        assert sorted(exposed(url, "scale-e2e") or 0.0 for url in s.gateway_metrics_urls) == [0.0, 7.0]

        def in_store() -> dict[Any, float] | None:
            q = urlencode({"query": expr, "latency_offset": "1ms", "nocache": "1"})
            result = get_json(f"{s.store_url}/api/v1/query?{q}")["data"]["result"]
            out = {tuple(sorted((k, v) for k, v in r["metric"].items()
                                if k not in ("__name__", "job", "instance", "monitor"))): float(r["value"][1])
                   for r in result}
            return out if out == want else None

        assert wait_for(in_store, timeout=30, what="the 7 PRs in VictoriaMetrics") == want
    print(f"\nstack --scale: up in {started:.1f}s ({len(every)} targets up), counter in Prometheus at {seen:.1f}s, "
          f"in the store at {time.monotonic() - t0:.1f}s")


def test_documented_secret_files_link_a_real_agent_and_gateway(tmp_path: Path) -> None:
    """The openssl commands of docs/docker-compose.md (the compose scale profile's secrets) make a CA,
    certificate, key and token that the real collectors accept: the agent checks the name
    `otel-gateway` (as in compose) and a counter crosses the link exactly."""
    from tests.test_compose import scale_secrets_script

    script = "\n".join(line for line in scale_secrets_script().splitlines() if not line.startswith("sudo "))
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True, timeout=60,
                   capture_output=True)
    sec = tmp_path / "secrets"
    assert sorted(p.name for p in sec.iterdir()) == sorted(
        ["gateway_ca.key", "gateway_ca_crt", "gateway_tls_crt", "gateway_tls_key", "otlp_token"])
    started: list[Service] = []
    try:
        gw = start(lambda: gateway_service(tmp_path, token_file=sec / "otlp_token", cert_file=sec / "gateway_tls_crt",
                                           key_file=sec / "gateway_tls_key", jaeger_otlp=f"127.0.0.1:{free_port()}"),
                   started)

        def agent(server_name: str) -> Service:
            svc = agent_service(tmp_path, gateways=[f"127.0.0.1:{gw.ports['otlp_grpc']}"],
                                token_file=sec / "otlp_token", ca_file=sec / "gateway_ca_crt", name=server_name)
            svc.env["GATEWAY_TLS_SERVER_NAME"] = server_name
            return svc

        ag = start(lambda: agent("otel-gateway"), started)  # docker-compose.yml's value
        push_counter(f"http://127.0.0.1:{ag.ports['otlp_grpc']}", "docs-pki", 5)
        url = f"http://127.0.0.1:{gw.ports['prometheus']}/metrics"
        assert wait_for(lambda: exposed(url, "docs-pki"), timeout=30, what="the counter on the gateway") == 5.0
        assert metric_sum(self_metrics(ag), "otelcol_exporter_send_failed_metric_points") == 0
        # control: the name is checked for real; an agent expecting another one is refused the handshake
        other = start(lambda: agent("not-the-gateway"), started)
        push_counter(f"http://127.0.0.1:{other.ports['otlp_grpc']}", "wrong-name", 3)
        wait_for(lambda: "x509: certificate is valid for otel-gateway, otel-gateway-1, otel-gateway-2, "
                         "not not-the-gateway" in other.tail(200) or None, timeout=20, what="the refused handshake")
        assert exposed(url, "wrong-name") is None
    finally:
        for svc in reversed(started):
            svc.stop()
