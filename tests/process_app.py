"""Processes for tests/test_process.py: forks, multiprocessing children and SIGTERM victims.

Usage (from the repo root): ``python -m tests.process_app SCENARIO [ARGS...]``

    fork METHOD OTLP_ENDPOINT SERVICE PRE CHILDREN PER_CHILD
        configure() (OTLP), record PRE runs, then start CHILDREN children with METHOD
        (os_fork, mp_fork, mp_spawn, mp_pool_fork) that record PER_CHILD runs each and exit
        normally; the parent records nothing more, waits for them (bounded) and exits.
        Prints one JSON line: {"children_exit_s": [...], "exit_codes": [...]}.
    fork_busy FORKS
        prometheus mode on an ephemeral port; a thread records in a tight loop while the
        main thread forks FORKS times. Each child records 1 run, checks its own endpoint shows
        exactly that run, and exits with a code saying so. Prints the JSON result.
    sigterm_busy SHUTDOWN_TIMEOUT
        console exporter, no periodic export; the main thread records agent runs in a tight
        loop (histograms with exemplars) until SIGTERMed. Prints "ready" on stderr.
    sigterm_open
        console exporter; opens an agent run and sleeps inside it until SIGTERMed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
import urllib.request

import paid_telemetry as pt
from paid_telemetry import runtime

PROJECT = "fork"


def _record(n: int, agent_type: str) -> None:
    for _ in range(n):
        with pt.agent_run(project_id=PROJECT, agent_type=agent_type) as run:
            run.iteration()


def _child(per_child: int) -> None:
    _record(per_child, "child")


def _spawn_child(endpoint: str, service: str, per_child: int) -> None:
    # spawn starts a fresh interpreter: configure() in the child (e.g. a Pool initializer)
    pt.configure(exporter="otlp", otlp_endpoint=endpoint, service_name=service, metric_export_interval_ms=1000)
    _record(per_child, "child")


def fork(method: str, endpoint: str, service: str, pre: int, children: int, per_child: int) -> None:
    pt.configure(exporter="otlp", otlp_endpoint=endpoint, service_name=service, metric_export_interval_ms=1000)
    _record(pre, "parent")
    started = time.monotonic()
    exits: list[float] = []
    codes: list[int] = []
    if method == "os_fork":
        pids = []
        for _ in range(children):
            pid = os.fork()
            if pid == 0:
                _child(per_child)
                sys.exit(0)  # a normal exit: atexit flushes the child's own set-up
            pids.append(pid)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            exits.append(time.monotonic() - started)
            codes.append(os.waitstatus_to_exitcode(status))
    elif method == "mp_pool_fork":
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(children) as pool:
            pool.map(_child, [per_child] * children, chunksize=1)
            pool.close()
            pool.join()
        exits.append(time.monotonic() - started)
        codes.append(0)
    else:
        ctx = multiprocessing.get_context("fork" if method == "mp_fork" else "spawn")
        procs = []
        for _ in range(children):
            if method == "mp_fork":
                proc = ctx.Process(target=_child, args=(per_child,))
            else:
                proc = ctx.Process(target=_spawn_child, args=(endpoint, service, per_child))
            proc.start()
            procs.append(proc)
        for proc in procs:
            proc.join(60)
            exits.append(time.monotonic() - started)
            codes.append(proc.exitcode if proc.exitcode is not None else -999)
    print(json.dumps({"children_exit_s": exits, "exit_codes": codes}), flush=True)


def _runs_in(body: str, agent_type: str) -> float:
    total = 0.0
    for line in body.splitlines():
        if line.startswith("paid_agent_runs_total{") and f'agent_type="{agent_type}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def fork_busy(forks: int) -> None:
    pt.configure(exporter="prometheus", prometheus_port=0)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            _record(1, "busy")

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    results = []
    for _ in range(forks):
        time.sleep(0.01)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                _record(1, "child")
                url = runtime.current().prometheus_url
                assert url is not None
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = resp.read().decode()
                # the child's own run only: nothing of the parent's busy thread inherited
                code = 0 if _runs_in(body, "child") == 1 and _runs_in(body, "busy") == 0 else 4
            finally:
                pt.shutdown()
                os._exit(code)
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status) if status is not None and done else -999
        results.append({"code": code, "seconds": round(time.monotonic() - started, 3)})
    stop.set()
    thread.join(5)
    print(json.dumps(results), flush=True)


def sigterm_busy(shutdown_timeout_s: float) -> None:
    pt.configure(exporter="console", metric_export_interval_ms=600_000, shutdown_timeout_s=shutdown_timeout_s)
    print("ready", file=sys.stderr, flush=True)
    while True:
        with pt.agent_run(project_id="busy", agent_type="loop") as run:
            run.iteration()
            pt.record_quality_score(0.5, prompt_slug="p")


def sigterm_open() -> None:
    pt.configure(exporter="console", metric_export_interval_ms=600_000)
    with pt.agent_run(project_id="open", agent_type="sleeper") as run:
        run.iteration(2)
        print("ready", file=sys.stderr, flush=True)
        time.sleep(120)


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    if scenario == "fork":
        fork(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]))
    elif scenario == "fork_busy":
        fork_busy(int(args[0]))
    elif scenario == "sigterm_busy":
        sigterm_busy(float(args[0]))
    elif scenario == "sigterm_open":
        sigterm_open()
    else:
        raise SystemExit(f"unknown scenario {scenario}")
