"""Multi-process servers, for real: ``uvicorn --workers N`` and ``gunicorn -w N`` (with and
without ``--preload``), N = 2 and 4, scraped by a real Prometheus.

- production recipe: every worker pushes OTLP to the collector (each with its own
  ``service.instance.id``), Prometheus scrapes the collector;
- development recipe: every worker serves its own embedded /metrics on the next free port of
  ``PAID_TELEMETRY_PROMETHEUS_PORT .. +RANGE-1``, Prometheus scrapes the range.

Either way the sum over workers equals the requests served, exactly, and every worker's series
is there with exactly the requests that worker answered (docs/deploying.md).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from paid_telemetry_ops.services import Service, find_binary, free_port, http_ok
from paid_telemetry_ops.stack import Stack
from tests.promapi import query, wait_for
from tests.test_process import _free_run

pytestmark = pytest.mark.e2e

MIN_REQUESTS = 40


def _server(kind: str, workers: int, port: int, workdir: Path, env: dict[str, str]) -> Service:
    if kind == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", "tests.web_app:app", "--workers", str(workers),
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    else:
        argv = [sys.executable, "-m", "gunicorn", "tests.web_app:wsgi", "-w", str(workers),
                "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--log-level", "warning"]
        if kind == "gunicorn-preload":
            argv.append("--preload")
    repo = str(Path(__file__).resolve().parents[1])
    env = {**env, "PYTHONPATH": os.pathsep.join([f"{repo}/src", repo, os.environ.get("PYTHONPATH", "")])}
    return Service(kind, argv, workdir, ready=lambda: http_ok(f"http://127.0.0.1:{port}/ping"), env=env)


def _drive(port: int, workers: int) -> tuple[Counter[int], dict[int, str | None]]:
    """Send /run requests (new connection each, 8 at a time) until every worker answered and
    at least MIN_REQUESTS were served; returns requests per pid and each pid's /metrics URL."""
    per_pid: Counter[int] = Counter()
    urls: dict[int, str | None] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + 90

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                if len(per_pid) >= workers and sum(per_pid.values()) >= MIN_REQUESTS:
                    return
            req = urllib.request.Request(f"http://127.0.0.1:{port}/run", headers={"Connection": "close"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = json.loads(resp.read())
            with lock:
                per_pid[answer["pid"]] += 1
                urls[answer["pid"]] = answer["metrics"]

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(per_pid) == workers, f"only {len(per_pid)} of {workers} workers answered: {per_pid}"
    return per_pid, urls


def _prometheus(workdir: Path, targets: list[str]) -> Service:
    port = free_port()
    cfg = {"global": {"scrape_interval": "1s"},
           "scrape_configs": [{"job_name": "workers", "static_configs": [{"targets": targets}]}]}
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    argv = [find_binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"]
    svc = Service("prometheus", argv, workdir, ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"))
    svc.ports["http"] = port
    return svc


def _by_instance(prom: str, expr: str, expected_total: int) -> dict[str, float]:
    def read(selector: str = expr) -> dict[str, float]:
        return {r["metric"]["instance"]: float(r["value"][1]) for r in query(prom, selector)}

    def complete() -> dict[str, float] | None:
        got = read()
        return got if sum(got.values()) == expected_total else None

    got = wait_for(complete, timeout=40, what=f"{expected_total} runs in Prometheus ({expr})")
    time.sleep(2.5)  # two more scrapes: nothing may be counted twice later either
    # the highest value of the last 3 s: a double count shows, one slow scrape (a staleness marker) does not
    again = read(f"max_over_time({expr}[3s])")
    assert again == got, (got, again)
    return got


def _stop(server: Service) -> float:
    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    return time.monotonic() - started


def _check_log(server: Service) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "Address already in use" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


CASES = [
    ("uvicorn", 2), ("uvicorn", 4), ("gunicorn", 2), ("gunicorn", 4), ("gunicorn-preload", 2), ("gunicorn-preload", 4),
]


@pytest.mark.parametrize(("kind", "workers"), CASES)
def test_otlp_from_every_worker_sums_exactly(otlp_stack: Stack, tmp_path: Path, kind: str, workers: int) -> None:
    """Production recipe: OTLP from each worker; the collector keeps each worker's series apart
    (instance = service.instance.id) and Prometheus sums them."""
    service = f"paid-web-{kind}-{workers}"
    port = free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_stack.otlp_endpoint, "OTEL_SERVICE_NAME": service,
           "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    server = _server(kind, workers, port, tmp_path, env).start(timeout=60)
    try:
        per_pid, _ = _drive(port, workers)
        total = sum(per_pid.values())
        got = _by_instance(otlp_stack.prometheus_url, f'paid_agent_runs_total{{job="{service}"}}', total)
        # one series per worker, each with exactly the requests that worker served
        assert sorted(got.values()) == sorted(float(n) for n in per_pid.values()), (got, per_pid)
        print(f"\n{kind} -w {workers} (OTLP): {total} requests = {dict(per_pid)}; Prometheus {got}")
    finally:
        seconds = _stop(server)
    assert seconds < 20
    _check_log(server)


@pytest.mark.parametrize(("kind", "workers"), [("uvicorn", 2), ("uvicorn", 4), ("gunicorn", 4),
                                               ("gunicorn-preload", 2)])
def test_embedded_endpoint_per_worker_on_a_port_range(tmp_path: Path, kind: str, workers: int) -> None:
    """Development recipe: each worker's /metrics on the next free port; Prometheus scrapes the range."""
    slots = workers + (1 if kind == "gunicorn-preload" else 0)  # the preloading master binds the first port
    base = _free_run(slots)
    port = free_port()
    env = {"PAID_TELEMETRY_EXPORTER": "prometheus", "PAID_TELEMETRY_PROMETHEUS_PORT": str(base),
           "PAID_TELEMETRY_PROMETHEUS_PORT_RANGE": str(slots)}
    prom = _prometheus(tmp_path / "prometheus", [f"127.0.0.1:{p}" for p in range(base, base + slots)]).start()
    server = _server(kind, workers, port, tmp_path, env).start(timeout=60)
    try:
        per_pid, urls = _drive(port, workers)
        total = sum(per_pid.values())
        got = _by_instance(f"http://127.0.0.1:{prom.ports['http']}", 'paid_agent_runs_total{job="workers"}', total)
        expected = {_instance(urls[pid]): float(n) for pid, n in per_pid.items()}
        assert got == expected, (got, expected)  # each worker's series on its own port, exactly
        print(f"\n{kind} -w {workers} (embedded): {total} requests; Prometheus {got}")
    finally:
        seconds = _stop(server)
        prom.stop()
    assert seconds < 20
    _check_log(server)


def _instance(url: Any) -> str:
    assert isinstance(url, str), url
    return url.split("//", 1)[1].split("/", 1)[0]
