"""The local stack: collector, Jaeger, Prometheus, Alertmanager and the Temporal dev server
on loopback, started from the shipped configs (the checkout's, or the wheel's copy:
paid_telemetry_ops.assets).

Prometheus gets a config *generated* from ``prometheus/prometheus.yml`` (targets rewritten
to loopback ports, jobs without a local process dropped), so there is one truth for
docker-compose and for this stack (``prometheus/prometheus-scale.yml`` for the ``scale``
topology: an agent collector in front of two gateways, docs/scaling.md).
``paid-telemetry stack up`` keeps it running in the background (state in ``state.json`` under
:func:`paid_telemetry_ops.assets.state_dir`); tests use :class:`Stack` as a context manager.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paid_telemetry_ops import assets
from paid_telemetry_ops.services import (
    Service,
    built_binary,
    find_binary,
    free_port,
    free_ports_n,
    http_ok,
    temporal_server,
)

YAML_HINT = "pip install 'paid-telemetry[ops]'  (or: pip install pyyaml)"
CRYPTOGRAPHY_HINT = "pip install 'paid-telemetry[ops]'  (or: pip install cryptography)"


class MissingDependency(RuntimeError):
    """An optional Python package a command needs is not installed; the message says how to install it."""


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise MissingDependency(f"the local stack needs PyYAML: {YAML_HINT}") from exc
    return yaml


# compose hostname:port in prometheus/prometheus.yml -> name of the local port that replaces it
_TARGETS = {
    "otel-collector:8889": "collector_prometheus",
    "otel-collector:8888": "collector_self",
    "temporal:9090": "temporal_metrics",
    "localhost:9090": "prometheus",
    "alertmanager:9093": "alertmanager",
    "jaeger:8888": "jaeger_metrics",
    "host.docker.internal:9100": "node_exporter",  # compose: node-exporter on the host network
    # prometheus/prometheus-scale.yml (the compose ``scale`` profile; Stack(scale=True))
    "otel-gateway-1:8889": "gateway_1_prometheus",
    "otel-gateway-1:8888": "gateway_1_self",
    "otel-gateway-2:8889": "gateway_2_prometheus",
    "otel-gateway-2:8888": "gateway_2_self",
    "otel-agent:8888": "agent_self",
    "victoriametrics:8428": "victoriametrics",
}
PROMETHEUS_CONFIG = "prometheus/prometheus.yml"
PROMETHEUS_SCALE_CONFIG = "prometheus/prometheus-scale.yml"


def prometheus_config(ports: dict[str, int], rules_dir: Path, *, scrape_interval: str | None = None,
                      evaluation_interval: str | None = None, source: str = PROMETHEUS_CONFIG) -> dict[str, Any]:
    """``source`` (a compose Prometheus config) with targets on loopback; jobs without a local
    target are dropped, and so is its ``remote_write`` (the caller adds the local store's)."""
    cfg: dict[str, Any] = _yaml().safe_load(assets.path(source).read_text())
    cfg.pop("remote_write", None)
    if scrape_interval:
        cfg["global"]["scrape_interval"] = scrape_interval
    if evaluation_interval:
        cfg["global"]["evaluation_interval"] = evaluation_interval
    cfg["rule_files"] = [str(rules_dir / "*.yml")]

    def local(target: str) -> str | None:
        key = _TARGETS.get(target)
        return f"127.0.0.1:{ports[key]}" if key and key in ports else None

    for am in cfg.get("alerting", {}).get("alertmanagers", []):
        for sc in am.get("static_configs", []):
            sc["targets"] = [t for t in (local(x) for x in sc["targets"]) if t]
    jobs = []
    for job in cfg["scrape_configs"]:
        targets = [t for sc in job.get("static_configs", []) for t in (local(x) for x in sc["targets"]) if t]
        if targets:
            job["static_configs"] = [{"targets": targets}]
            jobs.append(job)
    cfg["scrape_configs"] = jobs
    return cfg


@dataclass
class Stack:
    """The whole local pipeline. ``with Stack(workdir) as s:`` starts and stops it."""

    workdir: Path
    temporal: bool = True
    jaeger: bool = True
    alertmanager: bool = True
    node_exporter: bool = False
    # VictoriaMetrics as the long-term store, fed by Prometheus' remote_write (docs/scaling.md)
    victoriametrics: bool = False
    retention: str = "15d"
    # An agent collector in front of two gateways over TLS + bearer token instead of the single
    # collector: the compose ``scale`` profile's topology (docs/scaling.md)
    scale: bool = False
    scrape_interval: str = "2s"
    evaluation_interval: str = "2s"
    ports: dict[str, int] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    # -- addresses ---------------------------------------------------------------------
    @property
    def otlp_endpoint(self) -> str:
        """Where SDKs send OTLP gRPC: the collector, or with ``scale`` the agent."""
        return f"http://127.0.0.1:{self.ports['otlp_grpc']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def jaeger_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['jaeger_ui']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['alertmanager']}"

    @property
    def store_url(self) -> str:
        """VictoriaMetrics' Prometheus-compatible API (``victoriametrics=True``)."""
        return f"http://127.0.0.1:{self.ports['victoriametrics']}"

    @property
    def collector_metrics_url(self) -> str:
        """The collector's Prometheus exporter; with ``scale`` the first gateway's (each has its share)."""
        port = self.ports.get("collector_prometheus") or self.ports["gateway_1_prometheus"]
        return f"http://127.0.0.1:{port}/metrics"

    @property
    def gateway_metrics_urls(self) -> list[str]:
        """``scale``: every gateway's Prometheus exporter (what Prometheus scrapes in job otel-collector)."""
        return [f"http://127.0.0.1:{self.ports[f'gateway_{i}_prometheus']}/metrics" for i in (1, 2)]

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports['temporal_grpc']}"

    @property
    def collector_logs_file(self) -> Path:
        return self.workdir / "collector" / "logs.jsonl"

    # -- lifecycle ---------------------------------------------------------------------
    def up(self) -> Stack:
        _yaml()  # fail before starting anything, with the install command
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            if self.jaeger:
                self._start_jaeger()
            if self.scale:
                self._start_tiers()
            else:
                self._start_collector()
            if self.temporal:
                self._start_temporal()
            if self.alertmanager:
                self._start_alertmanager()
            if self.node_exporter:
                self._start_node_exporter()
            if self.victoriametrics:
                self._start_victoriametrics()
            self._start_prometheus()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()

    def __enter__(self) -> Stack:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- services ----------------------------------------------------------------------
    def _port(self, name: str) -> int:
        if name not in self.ports:
            self.ports[name] = free_port()
        return self.ports[name]

    def collector_service(self) -> Service:
        """The collector as a Service (not started): tests kill and restart it."""
        wd = self.workdir / "collector"
        env = {
            "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self._port('otlp_grpc')}",
            "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self._port('otlp_http')}",
            "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{self._port('collector_prometheus')}",
            "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{self._port('collector_health')}",
            "COLLECTOR_METRICS_HOST": "127.0.0.1",
            "COLLECTOR_METRICS_PORT": str(self._port("collector_self")),
            "JAEGER_OTLP_ENDPOINT": f"127.0.0.1:{self._port('jaeger_otlp')}",
            "COLLECTOR_LOGS_FILE": str(self.collector_logs_file),
        }
        argv = [built_binary("otelcol-paid"), "--config", str(assets.path("otel-collector/config.yaml"))]
        health = f"http://127.0.0.1:{self.ports['collector_health']}/"
        return Service("collector", argv, wd, ready=lambda: http_ok(health), env=env)

    def _start_collector(self) -> None:
        self.services["collector"] = self.collector_service().start()

    def _start_tiers(self) -> None:
        """Two gateways and an agent in front of them (otel-collector/gateway.yaml, agent.yaml), with a
        throw-away CA, certificate and token in the work dir; SDKs send to the agent (``otlp_endpoint``)."""
        try:
            from paid_telemetry_ops.pki import make_pki, secret_file
        except ImportError as exc:
            raise MissingDependency(f"the scale topology needs cryptography: {CRYPTOGRAPHY_HINT}") from exc
        pki = make_pki(self.workdir / "pki", "paid-stack", valid_days=365)  # outlives a background stack
        _, token = secret_file(self.workdir / "pki" / "otlp.token")
        jaeger_otlp = f"127.0.0.1:{self._port('jaeger_otlp')}"
        endpoints = []
        for i in (1, 2):
            gw = gateway_service(self.workdir, token_file=token, cert_file=pki.cert, key_file=pki.key,
                                 jaeger_otlp=jaeger_otlp, name=f"gateway-{i}")
            self.services[gw.name] = gw.start()
            self.ports.update({f"gateway_{i}_{k}": v for k, v in gw.ports.items()})
            endpoints.append(f"127.0.0.1:{gw.ports['otlp_grpc']}")
        agent = agent_service(self.workdir, gateways=endpoints, token_file=token, ca_file=pki.ca_cert)
        self.services[agent.name] = agent.start()
        self.ports.update({f"agent_{k}": v for k, v in agent.ports.items()})
        self.ports.update(otlp_grpc=agent.ports["otlp_grpc"], otlp_http=agent.ports["otlp_http"])

    def _start_jaeger(self) -> None:
        svc = jaeger_service(self.workdir, ports={k: self._port(k) for k in _JAEGER_PORTS})
        self.services["jaeger"] = svc.start()

    def _start_temporal(self) -> None:
        svc = temporal_server(self.workdir / "temporal", backlog_interval="5s")
        self.ports["temporal_grpc"] = svc.ports["grpc"]
        self.ports["temporal_metrics"] = svc.ports["metrics"]
        self.services["temporal"] = svc.start()

    def _start_alertmanager(self) -> None:
        wd = self.workdir / "alertmanager"
        port = self._port("alertmanager")
        argv = [
            find_binary("prometheus-alertmanager"),
            f"--config.file={assets.path('alertmanager/alertmanager.yml')}",
            f"--storage.path={wd / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ]
        ready = f"http://127.0.0.1:{port}/-/ready"
        self.services["alertmanager"] = Service("alertmanager", argv, wd, ready=lambda: http_ok(ready)).start()

    def _start_node_exporter(self) -> None:
        port = self._port("node_exporter")
        argv = [find_binary("prometheus-node-exporter"), f"--web.listen-address=127.0.0.1:{port}"]
        url = f"http://127.0.0.1:{port}/metrics"
        self.services["node_exporter"] = Service(
            "node_exporter", argv, self.workdir / "node_exporter", ready=lambda: http_ok(url)
        ).start()

    def _start_victoriametrics(self) -> None:
        svc = victoriametrics_service(self.workdir, retention=self.retention)
        self.ports["victoriametrics"] = svc.ports["http"]
        self.services["victoriametrics"] = svc.start()

    def prometheus_service(self) -> Service:
        wd = self.workdir / "prometheus"
        wd.mkdir(parents=True, exist_ok=True)
        port = self._port("prometheus")
        cfg = prometheus_config(self.ports, assets.path("prometheus/rules"),
                                scrape_interval=self.scrape_interval, evaluation_interval=self.evaluation_interval,
                                source=PROMETHEUS_SCALE_CONFIG if self.scale else PROMETHEUS_CONFIG)
        if "victoriametrics" in self.ports:
            cfg["remote_write"] = [{"url": f"{self.store_url}/api/v1/write"}]
        (wd / "prometheus.yml").write_text(_yaml().safe_dump(cfg, sort_keys=False))
        argv = [
            find_binary("prometheus"),
            f"--config.file={wd / 'prometheus.yml'}",
            f"--storage.tsdb.path={wd / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle",
            f"--storage.tsdb.retention.time={self.retention}",
        ]
        ready = f"http://127.0.0.1:{port}/-/ready"
        return Service("prometheus", argv, wd, ready=lambda: http_ok(ready))

    def _start_prometheus(self) -> None:
        self.services["prometheus"] = self.prometheus_service().start()

    # -- persistence for the CLI -------------------------------------------------------
    def save(self) -> None:
        state = {
            "workdir": str(self.workdir),
            "scale": self.scale,
            "ports": self.ports,
            "pids": {n: s.proc.pid for n, s in self.services.items() if s.proc is not None},
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """Distinct free loopback ports, one per name (see services.free_ports_n)."""
    return dict(zip(names, free_ports_n(len(names)), strict=True))


_JAEGER_PORTS = ("jaeger_otlp", "jaeger_otlp_http", "jaeger_ui", "jaeger_query_grpc", "jaeger_health",
                 "jaeger_metrics")


def jaeger_service(workdir: Path, ports: dict[str, int] | None = None) -> Service:
    """Jaeger (jaeger/config.yaml) on loopback; ``ports`` (names in _JAEGER_PORTS) default to free ones."""
    p = dict(ports or free_ports(_JAEGER_PORTS))
    env = {
        "JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{p['jaeger_otlp']}",
        "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{p['jaeger_otlp_http']}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{p['jaeger_ui']}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{p['jaeger_query_grpc']}",
        "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{p['jaeger_health']}",
        "JAEGER_METRICS_PORT": str(p["jaeger_metrics"]),
    }
    argv = [built_binary("jaeger"), "--config", str(assets.path("jaeger/config.yaml"))]
    ui = f"http://127.0.0.1:{p['jaeger_ui']}/api/services"
    return Service("jaeger", argv, workdir / "jaeger", ready=lambda: http_ok(ui), env=env, ports=p)


# -- the two collector tiers (docs/scaling.md) ---------------------------------------------


def gateway_service(workdir: Path, *, token_file: Path, cert_file: Path, key_file: Path,
                    jaeger_otlp: str, name: str = "gateway") -> Service:
    """A gateway-tier collector (otel-collector/gateway.yaml): OTLP over TLS with a bearer token,
    out to a Prometheus exporter endpoint and Jaeger. Not started; free loopback ports in ``.ports``."""
    ports = free_ports(("otlp_grpc", "otlp_http", "prometheus", "health", "self"))
    env = {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp_grpc']}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['otlp_http']}",
        "PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{ports['prometheus']}",
        "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(ports["self"]),
        "JAEGER_OTLP_ENDPOINT": jaeger_otlp,
        "COLLECTOR_LOGS_FILE": str(workdir / name / "logs.jsonl"),
        "OTLP_TOKEN_FILE": str(token_file),
        "TLS_CERT_FILE": str(cert_file),
        "TLS_KEY_FILE": str(key_file),
    }
    argv = [built_binary("otelcol-paid"), "--config", str(assets.path("otel-collector/gateway.yaml"))]
    health = f"http://127.0.0.1:{ports['health']}/"
    return Service(name, argv, workdir / name, ready=lambda: http_ok(health), env=env, ports=ports)


def agent_service(workdir: Path, *, gateways: list[str], token_file: Path, ca_file: Path,
                  name: str = "agent", queue_size: int = 5000) -> Service:
    """An agent-tier collector (otel-collector/agent.yaml): OTLP in on loopback, persistent queue
    under its own directory, out to ``gateways`` (host:port) over TLS. Not started."""
    ports = free_ports(("otlp_grpc", "otlp_http", "health", "self"))
    env = {
        "OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp_grpc']}",
        "OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['otlp_http']}",
        "HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(ports["self"]),
        "AGENT_QUEUE_DIR": str(workdir / name / "queue"),
        "AGENT_QUEUE_SIZE": str(queue_size),
        "GATEWAY_ENDPOINTS": "[" + ", ".join(gateways) + "]",
        "GATEWAY_TOKEN_FILE": str(token_file),
        "GATEWAY_CA_FILE": str(ca_file),
    }
    argv = [built_binary("otelcol-paid"), "--config", str(assets.path("otel-collector/agent.yaml"))]
    health = f"http://127.0.0.1:{ports['health']}/"
    return Service(name, argv, workdir / name, ready=lambda: http_ok(health), env=env, ports=ports)


def victoriametrics_service(workdir: Path, *, retention: str = "15d", fresh: bool = False,
                            name: str = "victoriametrics") -> Service:
    """VictoriaMetrics (single node) on a free loopback port: the long-term metrics store behind
    Prometheus' query API, fed by Prometheus' ``remote_write`` to ``<url>/api/v1/write``
    (docs/scaling.md). Retention is RDR-011's 15 days unless told. ``fresh`` makes the newest
    samples queryable at once (no 30 s latency offset, no result cache): for tests."""
    port = free_port()
    argv = [
        built_binary("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={workdir / name / 'data'}", f"-retentionPeriod={retention}", "-loggerLevel=WARN",
    ]
    if fresh:
        argv += ["-search.latencyOffset=0s", "-search.disableCache"]
    url = f"http://127.0.0.1:{port}"
    return Service(name, argv, workdir / name, ready=lambda: http_ok(f"{url}/health"), ports={"http": port})


@dataclass
class ThanosStore:
    """A horizontally scalable store: ``receivers`` Thanos receivers in one hashring (each series
    lives on ``replication`` of them) behind a ``thanos query`` that serves Prometheus' query API."""

    receivers: list[Service]
    query: Service
    write_url: str  # Prometheus' remote_write URL (any receiver routes to the right ones)
    query_url: str  # Prometheus' query API, for Grafana and the tests

    @property
    def services(self) -> list[Service]:
        return [*self.receivers, self.query]


def thanos_store(workdir: Path, *, receivers: int = 2, replication: int = 1, retention: str = "15d") -> ThanosStore:
    """Thanos receive x ``receivers`` (router and ingester at once, a static hashring file) and
    ``thanos query`` over them, on free loopback ports (docs/scaling.md). Series are sharded by
    their labels across the receivers; ``replication`` > 1 writes each to that many (the querier
    then deduplicates on ``receive_replica``). Start the receivers before the querier."""
    binary = built_binary("thanos")
    grpc = free_ports_n(receivers)
    hashring = workdir / "thanos" / "hashring.json"
    hashring.parent.mkdir(parents=True, exist_ok=True)
    hashring.write_text(json.dumps([{"hashring": "default", "endpoints": [f"127.0.0.1:{p}" for p in grpc]}]))
    recv: list[Service] = []
    for i, grpc_port in enumerate(grpc):
        http_port, write_port, capnp_port = free_ports_n(3)
        name = f"thanos-receive-{i + 1}"
        recv.append(Service(name, [  # every listener on loopback (Thanos' defaults are 0.0.0.0)
            binary, "receive", f"--grpc-address=127.0.0.1:{grpc_port}", f"--http-address=127.0.0.1:{http_port}",
            f"--remote-write.address=127.0.0.1:{write_port}", f"--receive.capnproto-address=127.0.0.1:{capnp_port}",
            f"--tsdb.path={workdir / 'thanos' / name}",
            f"--tsdb.retention={retention}", f'--label=receive_replica="{i}"',
            f"--receive.local-endpoint=127.0.0.1:{grpc_port}", f"--receive.hashrings-file={hashring}",
            f"--receive.replication-factor={replication}", "--log.level=warn",
        ], workdir / "thanos" / name, ready=_ready(f"http://127.0.0.1:{http_port}/-/ready"),
            ports={"grpc": grpc_port, "http": http_port, "remote_write": write_port}))
    qhttp, qgrpc = free_ports_n(2)
    query = Service("thanos-query", [
        binary, "query", f"--http-address=127.0.0.1:{qhttp}", f"--grpc-address=127.0.0.1:{qgrpc}",
        *(f"--endpoint=127.0.0.1:{p}" for p in grpc), "--query.replica-label=receive_replica",
        "--log.level=warn",
    ], workdir / "thanos" / "query", ready=lambda: http_ok(f"http://127.0.0.1:{qhttp}/-/ready"),
        ports={"http": qhttp, "grpc": qgrpc})
    return ThanosStore(recv, query, f"http://127.0.0.1:{recv[0].ports['remote_write']}/api/v1/receive",
                       f"http://127.0.0.1:{qhttp}")


def _ready(url: str) -> Callable[[], bool]:
    return lambda: http_ok(url)


def state_file(workdir: Path) -> Path:
    return workdir / "state.json"


def stop_saved(workdir: Path) -> list[str]:
    """Stop a stack started by ``paid-telemetry stack up``."""
    path = state_file(workdir)
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    stopped = []
    for name, pid in reversed(list(state["pids"].items())):
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink()
    return stopped


def saved_status(workdir: Path) -> dict[str, Any]:
    path = state_file(workdir)
    if not path.exists():
        return {}
    state: dict[str, Any] = json.loads(path.read_text())
    alive = {}
    for name, pid in state["pids"].items():
        try:
            os.killpg(pid, 0)
            alive[name] = True
        except ProcessLookupError:
            alive[name] = False
    state["alive"] = alive
    return state
