"""`paid-telemetry stack up|status|down` starts every service of the local stack on loopback,
healthy, with the repository's own configs, and stops them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paid_telemetry_ops.services import http_ok
from tests.promapi import get_json, query, wait_for

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paid_telemetry_ops.cli", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def test_stack_up_status_down(tmp_path: Path) -> None:
    env = {**os.environ, "PAID_TELEMETRY_STACK_DIR": str(tmp_path)}
    up = cli("stack", "up", env=env)
    assert up.returncode == 0, up.stderr
    urls = json.loads(up.stdout)
    try:
        for name in ("prometheus", "jaeger", "alertmanager", "otlp", "temporal", "collector_metrics"):
            assert urls[name].startswith(("http://127.0.0.1:", "127.0.0.1:")), (name, urls[name])
        assert http_ok(urls["prometheus"] + "/-/ready")
        assert http_ok(urls["alertmanager"] + "/-/ready")
        assert http_ok(urls["jaeger"] + "/api/services")
        status = json.loads(cli("stack", "status", env=env).stdout)
        assert set(status["alive"]) == {"jaeger", "collector", "temporal", "alertmanager", "node_exporter",
                                        "prometheus"}
        assert all(status["alive"].values())
        # Prometheus runs the generated variant of prometheus/prometheus.yml, with the repo's rules
        generated = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
        assert {j["job_name"] for j in generated["scrape_configs"]} == {
            "otel-collector", "otel-collector-self", "temporal", "prometheus", "alertmanager", "jaeger", "node"}
        rules = get_json(urls["prometheus"] + "/api/v1/rules")
        assert len(rules["data"]["groups"]) >= 6  # one or more per file in prometheus/rules/
        up_targets = wait_for(lambda: {r["metric"]["job"] for r in query(urls["prometheus"], "up == 1")} >= {
            "otel-collector", "otel-collector-self", "temporal", "prometheus", "alertmanager", "jaeger", "node"},
            timeout=40, what="every local target up")
        assert up_targets
    finally:
        down = cli("stack", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert "prometheus" in down.stdout and "collector" in down.stdout
    assert not http_ok(urls["prometheus"] + "/-/ready")
    assert cli("stack", "status", env=env).stdout.strip() == "no stack running"
