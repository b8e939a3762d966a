"""The horizontally scalable store on real binaries (docs/scaling.md): Prometheus remote-writes to
a hashring of two Thanos receivers, which shard the series between them, and `thanos query` serves
Prometheus' API over both. Exact totals; each receiver holds a share; one receiver SIGKILLed for
15 s while the counters move: after its restart the totals are exact again and every sample
Prometheus scraped is in the store (the hashring answers 503 for the dead receiver's share and
Prometheus re-sends). Replicated: three receivers with replication factor 2 stay complete while
one of them is down (exact totals and every scraped sample during the outage).

The dashboards' and rules' queries run on the same store in tests/test_dashboards_live.py."""

from __future__ import annotations

import contextlib
import signal
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import paid_telemetry as pt
from paid_telemetry_ops import dashbench
from paid_telemetry_ops.services import Service
from paid_telemetry_ops.stack import ThanosStore, thanos_store
from tests.promapi import get_json, wait_for

pytestmark = pytest.mark.e2e

PROJECTS = 200
JOB = "sharded"


def instant(base: str, expr: str, *, dedup: bool = True, at: float | None = None) -> list[dict[str, Any]]:
    args: dict[str, str] = {"query": expr, "dedup": str(dedup).lower()}
    if at is not None:
        args["time"] = f"{at:.3f}"
    params = urllib.parse.urlencode(args)
    result: list[dict[str, Any]] = get_json(f"{base}/api/v1/query?{params}")["data"]["result"]
    return result


def totals(base: str) -> dict[str, float]:
    """project -> paid_pull_requests_total through thanos query."""
    rows = instant(base, f'sum by (project_id) (paid_pull_requests_total{{job="{JOB}"}})')
    return {r["metric"]["project_id"]: float(r["value"][1]) for r in rows}


@contextlib.contextmanager
def fed_store(tmp_path: Path, receivers: int, replication: int) -> Iterator[tuple[ThanosStore, Service, pt.Telemetry]]:
    """A Thanos store fed by a real Prometheus that scrapes this process's SDK every second."""
    store = thanos_store(tmp_path, receivers=receivers, replication=replication)
    started: list[Service] = []
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, service_name=JOB,
                          cardinality_limit=PROJECTS + 10)
    try:
        for svc in store.services:
            started.append(svc.start(60))
        target = (handle.prometheus_url or "").removeprefix("http://").split("/")[0]
        config = f"""
global: {{scrape_interval: 1s}}
remote_write:
  - url: {store.write_url}
    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}
scrape_configs:
  - job_name: {JOB}
    static_configs: [{{targets: ['{target}']}}]
"""
        prom = dashbench.prometheus(tmp_path / "prometheus", config)
        started.append(prom.start(60))
        yield store, prom, handle
    finally:
        for svc in reversed(started):
            svc.stop()
        pt.shutdown()


@pytest.fixture
def sharded(tmp_path: Path) -> Iterator[tuple[ThanosStore, Service, pt.Telemetry]]:
    with fed_store(tmp_path, receivers=2, replication=1) as fed:
        yield fed


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[ThanosStore, Service, pt.Telemetry]]:
    with fed_store(tmp_path, receivers=3, replication=2) as fed:
        yield fed


def record(truth: dict[str, float], rounds: int = 1) -> None:
    for _ in range(rounds):
        for i in range(PROJECTS):
            pt.record_pull_request(project_id=f"p{i:03d}", event="merged")
            truth[f"p{i:03d}"] = truth.get(f"p{i:03d}", 0) + 1


def scraped_samples(window_s: float) -> str:
    return f'sum(count_over_time(paid_pull_requests_total{{job="{JOB}"}}[{int(window_s * 1000)}ms]))'


def same_samples(prom_url: str, query_url: str, expr: str, at: float) -> tuple[float, float] | None:
    """(samples in Prometheus, samples in the store) for ``expr`` at ``at``, when they are equal."""
    local, stored = instant(prom_url, expr, at=at), instant(query_url, expr, at=at)
    pair = (float(local[0]["value"][1]), float(stored[0]["value"][1])) if local and stored else None
    return pair if pair is not None and pair[0] == pair[1] else None


def stored_per_receiver(q: str, truth: dict[str, float]) -> dict[str, int]:
    """Record one round, wait for its exact totals through the querier; the number of series each
    receiver holds (``receive_replica`` -> count, without deduplication)."""
    record(truth)
    assert wait_for(lambda: totals(q) == truth or None, timeout=60, what="every project's total in Thanos") \
        is True
    per_receiver = instant(q, f'count by (receive_replica) (paid_pull_requests_total{{job="{JOB}"}})', dedup=False)
    return {r["metric"]["receive_replica"]: int(r["value"][1]) for r in per_receiver}


def kill_while_recording(victim: Service, truth: dict[str, float]) -> tuple[float, float]:
    """SIGKILL ``victim``, then move every counter twice, 5 s apart; (monotonic, wall) time of the kill."""
    victim.kill(signal.SIGKILL)
    assert victim.proc is not None
    victim.proc.wait(10)
    down_at, down_wall = time.monotonic(), time.time()
    record(truth)
    time.sleep(5)
    record(truth)
    return down_at, down_wall


def test_two_receivers_shard_the_series_and_a_killed_one_loses_nothing(
    sharded: tuple[ThanosStore, Service, pt.Telemetry],
) -> None:
    store, prom, _handle = sharded
    q = store.query_url
    truth: dict[str, float] = {}
    # Sharded: each receiver holds a share of the projects' series, together all of them, none twice.
    shares = stored_per_receiver(q, truth)
    assert set(shares) == {"0", "1"} and all(n > 0 for n in shares.values()), shares
    assert sum(shares.values()) == PROJECTS, shares

    # One receiver down for 15 s while every counter moves twice: its share cannot be written, and
    # Prometheus keeps retrying; after the restart (same data directory) the totals are exact.
    victim = store.receivers[1]
    down_at, down_wall = kill_while_recording(victim, truth)
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
    during = totals(q)  # the querier answers with the live receiver's share only (partial response)
    assert 0 < len(during) < PROJECTS and during != truth, len(during)
    back_wall = time.time()
    victim.start(60)
    assert wait_for(lambda: totals(q) == truth or None, timeout=90,
                    what="exact totals after the receiver came back") is True
    assert set(truth.values()) == {3.0}
    # Not only the last values: every sample Prometheus scraped in the test reached the store
    # (the hashring answered 503 for the dead receiver's share and Prometheus re-sent the batches).
    prom_url = f"http://127.0.0.1:{prom.ports['http']}"
    # the outage itself (scraped every second for >= 15 s: at least 10 scrapes of every series)...
    outage, _ = wait_for(lambda: same_samples(prom_url, q, scraped_samples(back_wall - down_wall), back_wall),
                         timeout=60, what="the outage's samples in Thanos")
    assert outage >= PROJECTS * 10, outage
    # ...and the whole test
    local, _ = wait_for(lambda: same_samples(prom_url, q, scraped_samples(600), time.time() - 5), timeout=60,
                        what="every scraped sample in Thanos")
    print(f"\nshares {shares}; projects visible during the outage {len(during)}; samples scraped = stored: "
          f"{outage:.0f} during the outage, {local:.0f} in all")


def test_replicated_receivers_stay_exact_while_one_is_down(
    replicated: tuple[ThanosStore, Service, pt.Telemetry],
) -> None:
    """Three receivers, replication factor 2 (Thanos' write quorum for 2 is 1): every series on two
    receivers; one SIGKILLed for 15 s while the counters move and the store stays complete *during*
    the outage — exact totals and every scraped sample — where replication 1 shows only a share."""
    store, prom, _handle = replicated
    q = store.query_url
    prom_url = f"http://127.0.0.1:{prom.ports['http']}"
    truth: dict[str, float] = {}
    # Each series on exactly two receivers, spread over all three.
    copies = stored_per_receiver(q, truth)
    assert set(copies) == {"0", "1", "2"} and all(n > 0 for n in copies.values()), copies
    assert sum(copies.values()) == 2 * PROJECTS, copies

    victim = store.receivers[2]  # not the one Prometheus writes to (in production: a load balancer)
    down_at, down_wall = kill_while_recording(victim, truth)
    assert wait_for(lambda: totals(q) == truth or None, timeout=30,
                    what="exact totals while a receiver is down") is True
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
    during_wall = time.time()
    assert totals(q) == truth
    outage, _ = wait_for(lambda: same_samples(prom_url, q, scraped_samples(during_wall - down_wall), during_wall),
                         timeout=30, what="the outage's samples in Thanos while the receiver is still down")
    assert outage >= PROJECTS * 10, outage
    victim.start(60)
    record(truth)
    assert wait_for(lambda: totals(q) == truth or None, timeout=60,
                    what="exact totals after the receiver came back") is True
    assert set(truth.values()) == {4.0}
    local, _ = wait_for(lambda: same_samples(prom_url, q, scraped_samples(600), time.time() - 5), timeout=60,
                        what="every scraped sample in Thanos")
    print(f"\ncopies {copies}; samples scraped = stored: {outage:.0f} during the outage (receiver down), "
          f"{local:.0f} in all")
