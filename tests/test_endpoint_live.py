"""A real Prometheus 2.42 scrapes the embedded endpoint fed with the inputs that used to take
the target down (issue 16), and stores the exemplars of the default set-up (issue 13)."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.metrics import Observation

import paid_telemetry as pt
from paid_telemetry_ops.services import Service, find_binary, free_port, http_ok
from tests.promapi import get_json, series, wait_for


def prometheus(workdir: Path, target: str) -> Service:
    """Prometheus 2.42 scraping ``target`` every second, exemplar storage on (as the stack runs it)."""
    port = free_port()
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "scrape_configs": [{"job_name": "paid-sdk", "static_configs": [{"targets": [target]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Service("prometheus", [
        find_binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
    ], workdir, ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), ports={"web": port})


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[pt.Telemetry, str]]:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, resource_attributes={
        "1st": "x", "team-name": "y", "__reserved": "z", "команда": "w", "__name__": "q", "a.b": "1", "a_b": "2",
    })
    prom = prometheus(tmp_path, urllib.parse.urlparse(handle.prometheus_url or "").netloc)
    try:
        prom.start()
        yield handle, f"http://127.0.0.1:{prom.ports['web']}"
    finally:
        prom.stop()
        pt.shutdown()


def test_prometheus_keeps_the_target_up_and_stores_exemplars(scraped: tuple[pt.Telemetry, str]) -> None:
    handle, prom = scraped
    bad = b"proj-\xff".decode("utf-8", "surrogateescape")
    with pt.agent_run(project_id=bad, agent_type="coder"):
        pass
    with pt.agent_run(project_id="exemplar", agent_type="coder") as run:
        run.iteration()
        ctx = trace.get_current_span().get_span_context()
    mp = handle.meter_provider
    mp.get_meter("lib.one").create_counter("shared.requests", description="one").add(1, {"flag": True})
    mp.get_meter("lib.two").create_counter("shared.requests", description="two").add(2, {"tags": ("a", "b")})
    mp.get_meter("lib.one").create_counter("other.calls").add(1, {"path\udc80": "v\udcff"})
    mp.get_meter("lib.one").create_observable_counter(
        "odd", callbacks=[lambda _o: [Observation(-1.0, {"k": "neg"}), Observation(5, {"k": "ok"})]])

    def runs() -> dict[Any, float] | None:
        return series(prom, "paid_agent_runs_total") or None

    wait_for(runs, timeout=60, what="agent runs in Prometheus")
    time.sleep(2.5)  # a few more scrapes, each must be up
    assert series(prom, 'up{job="paid-sdk"}', drop=()) == {(("instance", _instance(handle)), ("job", "paid-sdk")): 1}
    assert series(prom, 'min_over_time(up{job="paid-sdk"}[1m])') == {(): 1.0}  # never down
    assert series(prom, "paid_agent_runs_total") == {
        (("agent_type", "coder"), ("project_id", "proj-\ufffd"), ("status", "completed")): 1,
        (("agent_type", "coder"), ("project_id", "exemplar"), ("status", "completed")): 1,
    }
    (target,) = [dict(k) for k in series(prom, "target_info")]
    assert {k: target[k] for k in ("key_1st", "team_name", "key__reserved", "key_______", "key__name__", "a_b")} == {
        "key_1st": "x", "team_name": "y", "key__reserved": "z", "key_______": "w", "key__name__": "q", "a_b": "1;2"}
    assert series(prom, "shared_requests_total") == {
        (("flag", "true"), ("otel_scope_name", "lib.one")): 1,
        (("otel_scope_name", "lib.two"), ("tags", '["a", "b"]')): 2,
    }
    assert series(prom, "other_calls_total") == {(("path_", "v\ufffd"),): 1}
    assert series(prom, "odd_total") == {(("k", "ok"),): 5}
    dropped = series(prom, 'paid_telemetry_dropped_records_total{instrument="prometheus_endpoint"}')
    assert dropped and all(v >= 1 for v in dropped.values())

    def exemplars() -> list[dict[str, Any]] | None:
        q = urllib.parse.urlencode({
            "query": 'paid_agent_run_duration_seconds_bucket{project_id="exemplar"}',
            "start": str(time.time() - 600), "end": str(time.time() + 60),
        })
        data = get_json(f"{prom}/api/v1/query_exemplars?{q}")["data"]
        return [e for group in data for e in group["exemplars"]] or None

    found = wait_for(exemplars, timeout=30, what="exemplars in Prometheus")
    assert {e["labels"]["trace_id"] for e in found} == {f"{ctx.trace_id:032x}"}
    assert {e["labels"]["span_id"] for e in found} == {f"{ctx.span_id:016x}"}


def _instance(handle: pt.Telemetry) -> str:
    return urllib.parse.urlparse(handle.prometheus_url or "").netloc
