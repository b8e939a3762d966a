"""Shared fixtures: an in-memory paid-telemetry set-up for unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import paid_telemetry as pt


@dataclass
class Recorded:
    """What the SDK recorded, read through OTel's in-memory reader and exporter."""

    handle: pt.Telemetry
    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Data points of one instrument keyed by sorted attributes: value (sum) or the histogram point."""
        data = self.reader.get_metrics_data()
        out: dict[tuple[tuple[str, Any], ...], Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for p in metric.data.data_points:
                        key = tuple(sorted(p.attributes.items()))
                        out[key] = p if isinstance(p, HistogramDataPoint) else p.value
        return out

    def value(self, name: str, **labels: Any) -> Any:
        return self.points(name).get(tuple(sorted(labels.items())))

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


def clear_telemetry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* / PAID_TELEMETRY_* variable from the environment, and settings warnings re-armed."""
    import os

    from paid_telemetry import settings

    for var in list(os.environ):
        if var.startswith(("OTEL_", "PAID_TELEMETRY_")):
            monkeypatch.delenv(var)
    monkeypatch.setattr(settings, "_warned", set())


def make_recorded(**settings: Any) -> Recorded:
    reader = InMemoryMetricReader()
    exporter = InMemorySpanExporter()
    settings.setdefault("exporter", "none")
    settings.setdefault("handle_sigterm", False)
    handle = pt.configure(metric_readers=[reader], span_processors=[SimpleSpanProcessor(exporter)], **settings)
    return Recorded(handle, reader, exporter)


@pytest.fixture(autouse=True)
def _isolate_logging() -> Iterator[None]:
    """configure_logging() changes process-wide state (structlog, the root handler, the
    end-of-run hook); undo it after each test so one test's logging never slows another."""
    import logging

    import structlog

    from paid_telemetry import agents

    hooks = agents._run_end_hooks
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    agents._run_end_hooks = hooks
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    rec = make_recorded()
    yield rec
    pt.shutdown()


@pytest.fixture
def strict_recorded() -> Iterator[Recorded]:
    rec = make_recorded(strict=True)
    yield rec
    pt.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Temporal dev server of its own for each test module that asks for one."""
    from paid_telemetry_ops.services import temporal_server

    srv = temporal_server(tmp_path_factory.mktemp("temporal"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real local stack (collector, Jaeger, Prometheus, Temporal) for the whole session."""
    from paid_telemetry_ops.stack import Stack

    s = Stack(tmp_path_factory.mktemp("stack"), alertmanager=False)
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="session")
def otlp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Collector and Prometheus only (scraping every second): OTLP from many processes."""
    from paid_telemetry_ops.stack import Stack

    s = Stack(tmp_path_factory.mktemp("otlp-stack"), temporal=False, jaeger=False, alertmanager=False,
              scrape_interval="1s")
    s.up()
    yield s
    s.down()
