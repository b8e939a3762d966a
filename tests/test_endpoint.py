"""The embedded /metrics endpoint, scraped over real HTTP: every catalogue name, label set
and bucket boundary exactly as RDR-011 lists them."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import paid_telemetry as pt
from paid_telemetry import catalogue as cat
from tests.workload import Labels, check_samples, normalise_le, record_known_workload


def parse(text: str) -> tuple[dict[str, dict[Labels, float]], dict[str, dict[Labels, dict[str, float]]]]:
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    buckets: dict[str, dict[Labels, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if s.name.endswith("_bucket"):
                le = normalise_le(labels.pop("le"))
                buckets[s.name][tuple(sorted(labels.items()))][le] = s.value
            else:
                samples[s.name][tuple(sorted(labels.items()))] = s.value
    return samples, buckets


@pytest.fixture
def endpoint() -> Iterator[pt.Telemetry]:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    yield handle
    pt.shutdown()


def test_endpoint_serves_every_catalogue_metric_exactly(endpoint: pt.Telemetry) -> None:
    assert endpoint.prometheus_url is not None
    assert endpoint.prometheus_url.startswith("http://127.0.0.1:")  # never a public interface by default
    expected = record_known_workload()
    text = urllib.request.urlopen(endpoint.prometheus_url, timeout=5).read().decode()
    samples, buckets = parse(text)
    check_samples(samples, expected, buckets)
    exposed = set(samples) | set(buckets)
    for inst in cat.CATALOGUE:
        for name in inst.prometheus_series:
            assert name in exposed, f"{name} missing from /metrics"
    # IDs never become labels
    assert "run_id" not in text and "agent_run_id" not in text and "trace_id" not in text
    # resource attributes are on target_info
    (target,) = samples["target_info"]
    assert dict(target)["service_name"] == "paid"


def test_endpoint_with_10k_series_answers_under_50ms() -> None:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, cardinality_limit=20_000)
    try:
        t = pt.runtime.current()
        for i in range(10_000):
            t.agent_runs.add(1, t.run_labels.get((f"p{i}", "coder", "completed")))
        url: Any = handle.prometheus_url
        urllib.request.urlopen(url, timeout=10).read()  # warm-up
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=10).read()
            timings.append(time.perf_counter() - start)
        assert body.count(b"paid_agent_runs_total{") == 10_000
        # The record's target is 50 ms; the benchmark script reports the exact figure. This bound
        # leaves room for a loaded CI machine while still catching a regression by an order of magnitude.
        assert min(timings) < 0.25, timings
    finally:
        pt.shutdown()
