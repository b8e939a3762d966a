"""``python -m paid_telemetry_ops.cli demo`` as a user runs it: a subprocess, its output checked.

The table is read back from the metrics; the truth line comes from what the workflows
reported; the test checks that both are printed and agree, row by row.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paid_telemetry_ops.demo import bucket_bound, p95
from paid_telemetry_ops.services import http_ok

ROW = re.compile(r"^  (acme|globex \(costly\)|initech|total)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d,]+)\s+([\d.]+)$")


def run_demo(tmp_path: Path, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], str]:
    env = {**os.environ, "PAID_TELEMETRY_STACK_DIR": str(tmp_path / "no-stack")}  # ignore any recorded stack
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    # from another directory: the demo finds the repository's examples/ itself
    proc = subprocess.run([sys.executable, "-m", "paid_telemetry_ops.cli", "demo", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs = re.search(r"^Logs:\s+(\S+) \(JSON lines\)$", proc.stdout, re.M)
    assert logs, proc.stdout
    return proc, logs.group(1)


def table(stdout: str) -> dict[str, tuple[int, int, int, float, int, float]]:
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m:
            name = m.group(1).split()[0]
            rows[name] = (int(m.group(2)), int(m.group(3)), int(m.group(4)), float(m.group(5)),
                          int(m.group(6).replace(",", "")), float(m.group(7)))
    return rows


def check_table(stdout: str, runs: int) -> None:
    rows = table(stdout)
    assert set(rows) == {"acme", "globex", "initech", "total"}, stdout
    per_project = runs // 3
    for project in ("acme", "globex", "initech"):
        n, done, failed, p95_s, tokens, dollars = rows[project]
        assert n == per_project and done + failed == n
        assert p95_s > 0 and tokens > 0 and dollars > 0
    assert rows["globex"][4] > 10 * rows["acme"][4]  # the costly project burns far more tokens
    total = rows["total"]
    assert total[:3] == (runs, sum(rows[p][1] for p in ("acme", "globex", "initech")),
                         sum(rows[p][2] for p in ("acme", "globex", "initech")))
    truth = re.search(r"^Truth from the workflows: (.*)$", stdout, re.M)
    assert truth, stdout
    counts = dict(part.split("=") for part in truth.group(1).split())
    assert {k: int(v) for k, v in counts.items()} == {"completed": total[1], "failed": total[2]}
    assert total[2] >= 1  # the fake LLM's failure rate shows in the demo
    assert "Metrics agree with the truth: yes" in stdout


@pytest.mark.e2e
def test_embedded_demo_prints_endpoint_table_and_truth(tmp_path: Path) -> None:
    proc, log_path = run_demo(tmp_path, "--runs", "12", "--embedded")
    try:
        out = proc.stdout
        endpoint = re.search(r"^Metrics endpoint: (http://127\.0\.0\.1:\d+/metrics)$", out, re.M)
        assert endpoint, out
        assert "(from " + endpoint.group(1) + "):" in out  # the table was read from that endpoint
        assert re.search(r"^Temporal:\s+127\.0\.0\.1:\d+$", out, re.M)
        assert "Prometheus:" not in out  # embedded: no stack URLs
        check_table(out, 12)
        assert "sessions 12/12  completed" in proc.stderr  # progress (plain lines when stderr is not a terminal)
        lines = [json.loads(x) for x in Path(log_path).read_text().splitlines() if x.startswith("{")]
        opened = [x for x in lines if x.get("message") == "pull request opened"]
        assert opened and all(len(x["trace_id"]) == 32 for x in opened)
        assert not http_ok(endpoint.group(1))  # the demo stopped its endpoint on exit
    finally:
        shutil.rmtree(Path(log_path).parent, ignore_errors=True)


@pytest.mark.e2e
def test_stack_demo_reads_the_table_back_from_prometheus(tmp_path: Path) -> None:
    proc, log_path = run_demo(tmp_path, "--runs", "6", "--stack")
    try:
        out = proc.stdout
        urls = {name: re.search(rf"^{name}:\s+(http://127\.0\.0\.1:\d+)", out, re.M) for name in
                ("Prometheus", "Jaeger", "Alertmanager")}
        assert all(urls.values()), out
        prom = urls["Prometheus"].group(1)  # type: ignore[union-attr]
        assert f"(from {prom} (Prometheus)):" in out
        assert re.search(r"^Metrics endpoint: http://127\.0\.0\.1:\d+/metrics \(the collector's", out, re.M)
        check_table(out, 6)
        assert not http_ok(f"{prom}/-/ready")  # the stack it started is down again
    finally:
        shutil.rmtree(Path(log_path).parent, ignore_errors=True)


def test_p95_nearest_rank_and_bucket_bound() -> None:
    assert p95([]) == 0.0
    assert p95([3.0, 1.0, 2.0]) == 3.0
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    buckets = {60.0: 90.0, 120.0: 96.0, 300.0: 100.0, math.inf: 100.0}
    assert bucket_bound(buckets) == 120.0
    assert bucket_bound({60.0: 12.0, math.inf: 12.0}) == 60.0
