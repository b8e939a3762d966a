"""Oracles for /metrics bodies: prometheus_client's text and OpenMetrics parsers, promtool."""

from __future__ import annotations

import math
import subprocess
import urllib.request
from collections import Counter
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from paid_telemetry_ops.services import find_binary

OPENMETRICS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")  # what Prometheus 2.42 sends


def scrape(url: str, *, openmetrics: bool = False) -> tuple[str, str]:
    """(Content-Type, body) of one GET."""
    headers = {"Accept": OPENMETRICS_ACCEPT} if openmetrics else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
        return resp.headers["Content-Type"], resp.read().decode()


def promtool(body: str) -> str:
    """``promtool check metrics`` on a text-format body: fails on any parse error; lint findings
    (exit 3, e.g. a foreign metric without help text) are returned for the caller to judge."""
    proc = subprocess.run([find_binary("promtool"), "check", "metrics"], input=body.encode(),
                          capture_output=True, timeout=60)
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    assert proc.returncode in (0, 3) and "error" not in out, f"promtool rejected the body: {out}\n{body[:3000]}"
    return out


def samples(body: str, *, openmetrics: bool = False) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """{(sample name, sorted labels): sample} parsed by prometheus_client; no series may repeat."""
    parse = om_families if openmetrics else text_families
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
    repeated: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for family in parse(body):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            repeated[key] += 1
            out[key] = s
    dup = [k for k, n in repeated.items() if n > 1]
    assert not dup, f"duplicate series: {dup[:5]}"
    return out


def check_body(text_body: str, om_body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """Both bodies parse (prometheus_client's text and OpenMetrics parsers, no repeated series) and
    the text one passes promtool; returns the text body's samples."""
    text = samples(text_body)
    samples(om_body, openmetrics=True)
    assert om_body.endswith("# EOF\n") and "# EOF" not in text_body
    promtool(text_body)
    return text


def same_samples(text_body: str, om_body: str) -> None:
    """Two renderings of the same data carry the same samples (OpenMetrics leaves out only the
    _sum/_count of histograms with negative observations)."""
    text = samples(text_body)
    om = samples(om_body, openmetrics=True)
    for key, s in om.items():
        t = text.get(key)
        assert t is not None and (t.value == s.value or (math.isnan(t.value) and math.isnan(s.value))), key
    assert all(k in om or k[0].endswith(("_sum", "_count")) for k in text)
