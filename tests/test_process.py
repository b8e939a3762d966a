"""Process models: a busy /metrics port, forks (os.fork, multiprocessing fork/spawn/pool) and
SIGTERM, with real processes. Fork totals go SDK -> OTLP -> our collector -> Prometheus."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import paid_telemetry as pt
from paid_telemetry_ops.services import free_port_run
from paid_telemetry_ops.stack import Stack
from tests.promapi import query, wait_for

APP = [sys.executable, "-m", "tests.process_app"]


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _hold(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def _free_run(length: int) -> int:
    """A port p with p .. p+length-1 all free right now (outside the ephemeral range)."""
    return free_port_run(length)


@pytest.fixture
def clean() -> Iterator[None]:
    yield
    pt.shutdown()


# -- a busy port ----------------------------------------------------------------------------


def test_busy_port_falls_back_to_the_next_port_warns_once_and_counts(
    clean: None, caplog: pytest.LogCaptureFixture
) -> None:
    from paid_telemetry.export import prometheus

    prometheus._warned_fallback = False
    base = _free_run(4)
    with _hold(base), caplog.at_level(logging.WARNING, logger="paid_telemetry"):
        handle = pt.configure(exporter="prometheus", prometheus_port=base, prometheus_port_range=4,
                              handle_sigterm=False)
        assert handle.prometheus_url == f"http://127.0.0.1:{base + 1}/metrics"
        body = _scrape(handle.prometheus_url)
        assert 'paid_telemetry_dropped_records_total{instrument="prometheus_endpoint",reason="port_in_use"} 1\n' \
            in body
        warnings = [r.getMessage() for r in caplog.records if "is in use" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert f"127.0.0.1:{base} is in use" in warnings[0]
        assert f"{handle.prometheus_url}" in warnings[0] and "docs/deploying.md" in warnings[0]
        # a second set-up in the same process falls back again, silently (one warning per process);
        # it is built before the first one is stopped, so base + 1 is still taken by the first
        handle = pt.configure(exporter="prometheus", prometheus_port=base, prometheus_port_range=4,
                              handle_sigterm=False)
        assert handle.prometheus_url == f"http://127.0.0.1:{base + 2}/metrics"
        assert len([r for r in caplog.records if "is in use" in r.getMessage()]) == 1


def test_a_free_port_is_no_fallback(clean: None) -> None:
    base = _free_run(2)
    handle = pt.configure(exporter="prometheus", prometheus_port=base, handle_sigterm=False)
    assert handle.prometheus_url == f"http://127.0.0.1:{base}/metrics"
    assert "port_in_use" not in _scrape(handle.prometheus_url)


def test_past_the_range_an_ephemeral_port_still_serves(clean: None) -> None:
    base = _free_run(2)
    with _hold(base), _hold(base + 1):
        handle = pt.configure(exporter="prometheus", prometheus_port=base, prometheus_port_range=2,
                              handle_sigterm=False)
        url = handle.prometheus_url
        assert url is not None
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert port not in (base, base + 1)
        assert "port_in_use" in _scrape(url)


def test_strict_mode_raises_on_a_busy_port(clean: None) -> None:
    base = _free_run(2)
    with _hold(base), pytest.raises(pt.ConfigurationError, match="Address already in use"):
        pt.configure(exporter="prometheus", prometheus_port=base, strict=True, handle_sigterm=False)


def test_an_address_not_on_this_machine_is_a_clear_error_not_a_fallback(clean: None) -> None:
    """A busy port is another worker (fallback); a host that is not this machine's is a
    deployment mistake, the same on every port: a ConfigurationError naming the setting."""
    with pytest.raises(pt.ConfigurationError) as info:
        pt.configure(exporter="prometheus", prometheus_host="192.0.2.1", prometheus_port=9464,
                     prometheus_port_range=2, handle_sigterm=False)
    assert info.value.setting == "prometheus_host"
    with pt.agent_run(project_id="p"):  # recording never raises, configured or not
        pass


def test_a_second_process_with_the_same_settings_never_raises() -> None:
    """Two processes, same environment, the port of the first taken: both serve."""
    base = _free_run(3)
    env = {"PAID_TELEMETRY_PROMETHEUS_PORT": str(base), "PAID_TELEMETRY_PROMETHEUS_PORT_RANGE": "3"}
    script = ("import sys, paid_telemetry as pt\nh = pt.configure()\nprint(h.prometheus_url, flush=True)\n"
              "sys.stdin.readline()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**_env(), **env}) for _ in range(2)]
    try:
        urls = sorted(p.stdout.readline().strip() for p in procs if p.stdout)  # type: ignore[misc]
        assert urls == [f"http://127.0.0.1:{base}/metrics", f"http://127.0.0.1:{base + 1}/metrics"]
        first, second = (_scrape(u) for u in urls)  # both answer
        assert "port_in_use" not in first
        assert 'reason="port_in_use"} 1' in second
    finally:
        for p in procs:
            _, err = p.communicate("\n", timeout=30)
            assert p.returncode == 0, err
    assert "Address already in use" not in err


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


# -- fork -------------------------------------------------------------------------------------


def test_forks_while_another_thread_records_never_deadlock() -> None:
    """20 forks while a parent thread records in a tight loop (holding the SDK's locks at
    random moments): each child records into its own set-up, sees only its own run on its own
    endpoint, and exits within the bound."""
    out = subprocess.run([*APP, "fork_busy", "20"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["code"] for r in results] == [0] * 20, results
    assert max(r["seconds"] for r in results) < 10, results


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["os_fork", "mp_fork", "mp_pool_fork", "mp_spawn"])
def test_children_record_and_nothing_is_double_counted(otlp_stack: Stack, method: str) -> None:
    """The parent records 3 runs, then 2 children record 5 each: Prometheus shows exactly 13,
    the parent's 3 once (a forked child inherits the parent's aggregates but never exports them)."""
    service = f"paid-fork-{method.replace('_', '-')}"
    started = time.monotonic()
    out = subprocess.run([*APP, "fork", method, otlp_stack.otlp_endpoint, service, "3", "2", "5"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert time.monotonic() - started < 60
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["exit_codes"]) == {0}, result

    def totals(over: str = "") -> dict[str, float] | None:
        got: dict[str, float] = {}
        selector = f'paid_agent_runs_total{{job="{service}"}}'
        for r in query(otlp_stack.prometheus_url, f"max_over_time({selector}[{over}])" if over else selector):
            key = r["metric"]["agent_type"] + "@" + r["metric"]["instance"]
            got[key] = float(r["value"][1])
        return got if sum(got.values()) >= 13 else None

    got = wait_for(totals, timeout=40, what=f"{method}: 13 runs in Prometheus")
    time.sleep(2.5)  # two more scrapes: a late double export would show now
    # the highest of the last 3 s: a double count shows, one slow scrape (a staleness marker) does not
    got = totals("3s") or {}
    assert sum(got.values()) == 13, got
    parent = {k: v for k, v in got.items() if k.startswith("parent@")}
    children = {k: v for k, v in got.items() if k.startswith("child@")}
    assert list(parent.values()) == [3.0], got  # the parent's runs, once, from the parent only
    assert sum(children.values()) == 10, got
    if method != "mp_pool_fork":  # a pool may hand both tasks to one worker
        assert sorted(children.values()) == [5.0, 5.0], got
    instances = {k.split("@", 1)[1] for k in got}
    assert len(instances) == 1 + len(children), got  # every process its own service.instance.id


# -- SIGTERM ----------------------------------------------------------------------------------


def _json_docs(text: str) -> list[Any]:
    """The JSON documents the console exporters print, one after another."""
    decoder = json.JSONDecoder()
    docs, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return docs
        try:
            doc, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        docs.append(doc)
        i = end


def _points(docs: list[Any], name: str) -> list[dict[str, Any]]:
    return [
        p for d in docs for rm in d.get("resource_metrics", []) for sm in rm["scope_metrics"]
        for m in sm["metrics"] if m["name"] == name for p in m["data"]["data_points"]
    ]


def _sigterm_trial(scenario: str, *args: str, settle_s: float = 0.3) -> tuple[int, float, str]:
    proc = subprocess.Popen([*APP, scenario, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.strip() == "ready", line + proc.stderr.read()[-2000:]
        time.sleep(settle_s)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, time.monotonic() - sent, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_during_busy_recording_never_deadlocks_30_trials() -> None:
    """The main thread records in a tight loop (exemplar and aggregation locks taken all the
    time); SIGTERM must flush within the bound and deliver, every time."""
    timeout_s = 5.0

    def one(i: int) -> tuple[int, float, int]:
        code, seconds, out = _sigterm_trial("sigterm_busy", str(timeout_s), settle_s=0.2 + (i % 5) * 0.07)
        last = [d for d in _json_docs(out) if "resource_metrics" in d][-1:]
        runs = sum(p["value"] for p in _points(last, "paid_agent_runs"))
        return code, seconds, runs

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, range(30)))
    assert [code for code, _, _ in results] == [-signal.SIGTERM] * 30, results
    assert all(runs > 0 for _, _, runs in results), results  # every trial delivered its runs
    slowest = max(seconds for _, seconds, _ in results)
    assert slowest < timeout_s - 1, results  # a deadlocked flush would take the whole timeout
    print(f"\nSIGTERM while busy: 30/30 delivered, slowest exit {slowest:.2f}s")


def test_sigterm_records_an_open_run_as_cancelled() -> None:
    code, seconds, out = _sigterm_trial("sigterm_open")
    assert code == -signal.SIGTERM
    assert seconds < 5
    docs = _json_docs(out)
    last = [d for d in docs if "resource_metrics" in d][-1:]  # cumulative: the last export has it all
    runs = {(p["attributes"]["status"], p["attributes"]["project_id"]): p["value"]
            for p in _points(last, "paid_agent_runs")}
    assert runs == {("cancelled", "open"): 1}
    (iterations,) = _points(last, "paid_agent_iterations")
    assert (iterations["count"], iterations["sum"]) == (1, 2)
    spans = [d for d in docs if d.get("name") == "invoke_agent sleeper"]
    assert len(spans) == 1
    assert spans[0]["attributes"]["paid.agent_run.status"] == "cancelled"
    assert spans[0]["end_time"] is not None
