"""Tiny client for Prometheus' and Jaeger's HTTP APIs, used by the end-to-end tests."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    """Instant query; returns the result vector (raises on an API error)."""
    body = get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def series(
    prom: str, expr: str, drop: tuple[str, ...] = ("job", "instance")
) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels without __name__ and ``drop``: value} for an instant query."""
    out = {}
    for r in query(prom, expr):
        labels = {k: v for k, v in r["metric"].items() if k != "__name__" and k not in drop}
        out[tuple(sorted(labels.items()))] = float(r["value"][1])
    return out


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.5, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, AssertionError, KeyError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: last={last!r}")
