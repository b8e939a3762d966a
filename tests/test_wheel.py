"""A pip-only user: the wheel, installed in a fresh venv outside the checkout, runs every CLI verb.

The wheel is built from a copy of the working tree (so the checkout gets no build/ litter); the
venv installs it, first without extras (the commands that need one say which), then with
``[demo]`` from PyPI. Every command runs with the venv's ``paid-telemetry`` script, from a
directory outside the checkout, without PYTHONPATH. Nothing may be written into site-packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from paid_telemetry_ops import assets
from paid_telemetry_ops.services import http_ok
from tests.promapi import get_json

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
VERBS = {"demo", "stack", "dashboards", "init", "docs"}


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def build_wheel(tmp: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    src = tmp / "src-copy"
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    out = tmp / "dist"
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                str(src)], cwd=tmp, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("paid_telemetry-*.whl")
    return wheel


def site_files(venv: Path) -> set[str]:
    (site,) = venv.glob("lib/python3*/site-packages")
    return {str(p.relative_to(site)) for p in site.rglob("*")
            if p.relative_to(site).parts[0] in ("paid_telemetry", "paid_telemetry_ops")}


@pytest.mark.timeout(1800)  # two pip installs (600 s + 900 s budgets) on a cold cache, then the stack
def test_wheel_in_a_fresh_venv_runs_every_cli_verb(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("otel-collector/config.yaml", "otel-collector/builder-config.yaml", "prometheus/prometheus.yml",
                "prometheus/rules/agents.yml", "alertmanager/alertmanager.yml", "jaeger/config.yaml",
                "grafana/dashboards/overview.json", "docker-compose.yml", "scripts/build-collector.sh",
                "examples/__init__.py", "examples/api.py", "examples/worker.py"):
        assert f"paid_telemetry_ops/_assets/{rel}" in names, rel
    assert not any(n.startswith(("tests/", "examples/")) for n in names)  # nothing top-level but our packages

    venv, home = tmp_path / "venv", tmp_path / "user"
    home.mkdir()
    assert run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=dict(os.environ)).returncode == 0
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PAID_TELEMETRY_STACK_DIR",
                                                             "OTEL_EXPORTER_OTLP_ENDPOINT", "VIRTUAL_ENV")}
    env |= {"XDG_STATE_HOME": str(home / "state"), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    cli = str(venv / "bin" / "paid-telemetry")

    # 1. the bare wheel: the SDK's dependencies only
    proc = run([*pip, str(wheel)], cwd=home, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    helptext = run([cli, "--help"], cwd=home, env=env)
    assert helptext.returncode == 0 and set(re.findall(r"\b(\w+)\b", helptext.stdout)) >= VERBS, helptext.stdout
    for verb in VERBS:
        assert run([cli, verb, "--help"], cwd=home, env=env).returncode == 0, verb
    docs = run([cli, "docs", "metrics"], cwd=home, env=env)
    assert docs.returncode == 0 and docs.stdout == (REPO / "docs" / "metrics.md").read_text()
    init = run([cli, "init", str(home / "ops")], cwd=home, env=env)
    assert init.returncode == 0, init.stderr
    for rel in assets.SHIPPED:
        assert (home / "ops" / rel).exists(), rel
    assert (home / "ops" / "prometheus" / "rules" / "agents.yml").read_text() == \
        (REPO / "prometheus" / "rules" / "agents.yml").read_text()
    again = run([cli, "init", str(home / "ops")], cwd=home, env=env)
    assert again.returncode == 1 and "--force" in again.stderr
    demo = run([cli, "demo", "--runs", "2"], cwd=home, env=env)
    assert demo.returncode == 2 and "pip install 'paid-telemetry[demo]'" in demo.stderr, demo.stderr
    up = run([cli, "stack", "up"], cwd=home, env=env)
    assert up.returncode == 2 and "pip install 'paid-telemetry[ops]'" in up.stderr, up.stderr
    assert "Traceback" not in demo.stderr + up.stderr
    dash = run([cli, "dashboards", str(home / "dash")], cwd=home, env=env)  # needs the ops extra on main
    assert dash.returncode == 0 or "pip install 'paid-telemetry[ops]'" in dash.stderr, dash.stderr

    # 2. with the demo extra (it brings the ops one)
    proc = run([*pip, f"{wheel}[demo]"], cwd=home, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    before = site_files(venv)
    demo = run([cli, "demo", "--runs", "6", "--embedded"], cwd=home, env=env, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Metrics agree with the truth: yes" in demo.stdout, demo.stdout
    assert re.search(r"Truth from the workflows: completed=\d+ failed=\d+", demo.stdout), demo.stdout

    dash = run([cli, "dashboards", str(home / "dash")], cwd=home, env=env)
    assert dash.returncode == 0, dash.stderr
    for path in (REPO / "grafana" / "dashboards").glob("*.json"):
        assert (home / "dash" / path.name).read_text() == path.read_text(), path.name

    state = home / "state" / "paid-telemetry" / "stack"
    up = run([cli, "stack", "up"], cwd=home, env=env, timeout=600)
    try:
        assert up.returncode == 0, up.stderr
        urls = json.loads(up.stdout)
        assert (state / "state.json").is_file()  # the user's state dir, not site-packages
        status = json.loads(run([cli, "stack", "status"], cwd=home, env=env).stdout)
        assert status["alive"] and all(status["alive"].values()), status
        assert http_ok(urls["prometheus"] + "/-/ready") and http_ok(urls["jaeger"] + "/api/services")
        rules = get_json(urls["prometheus"] + "/api/v1/rules")
        assert len(rules["data"]["groups"]) >= 6  # the wheel's rules are loaded
    finally:
        down = run([cli, "stack", "down"], cwd=home, env=env)
    assert down.returncode == 0 and "prometheus" in down.stdout, down.stdout + down.stderr
    assert run([cli, "stack", "status"], cwd=home, env=env).stdout.strip() == "no stack running"
    assert site_files(venv) == before  # nothing written into site-packages
