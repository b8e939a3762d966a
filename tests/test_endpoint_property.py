"""Property test: whatever the OTel API accepts, every /metrics body parses.

Hypothesis generates resource attributes, label keys and values (lone surrogates, control
characters, quotes, 10 kB strings, bools, sequences), several scopes and same-name or
clashing instruments; each body is checked by prometheus_client's text and OpenMetrics
parsers (no repeated series) and by ``promtool check metrics``.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from paid_telemetry.export.prometheus import render
from tests.exposition import check_body, same_samples

ODD = ['"', "\\", "\n", "\r", "\t", "\x00", "{", "}", ",", "=", "#", " ", "\u2028", "\ufeff", "\udcff", "\ud800"]
odd_text = st.text(st.one_of(st.characters(exclude_categories=()), st.sampled_from(ODD)), max_size=24)
long_text = st.builds(lambda c, n: c * n, st.sampled_from(["x", "\udcff", "\n", '"\\', "é", "\x00"]),
                      st.integers(2_000, 10_000))
SPECIAL_KEYS = ["1st", "team-name", "__reserved", "__name__", "le", "a.b", "a_b", "a-b", "_x", "команда",
                "otel_scope_name", "quantile", "key_1st", "", "service.name"]
keys = st.one_of(st.sampled_from(SPECIAL_KEYS), odd_text)
values = st.one_of(
    odd_text, long_text, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
    st.lists(st.text(max_size=4), max_size=3).map(tuple), st.lists(st.booleans(), max_size=3).map(tuple),
    st.lists(st.integers(-5, 5), max_size=3).map(tuple),
)
attributes = st.dictionaries(keys, values, max_size=4)
NAMES = ["shared.requests", "shared_requests", "x", "x.total", "x_total", "x.count", "x_created", "target.info",
         "target_info", "lat", "lat.bucket", "lat_sum", "a-b", "a.b", "paid.agent.runs"]
names = st.one_of(st.sampled_from(NAMES), st.from_regex(r"[a-zA-Z][a-zA-Z0-9_.\-/]{0,20}", fullmatch=True))
KINDS = ["counter", "up_down_counter", "histogram", "gauge", "observable_counter", "observable_gauge"]
units = st.sampled_from(["", "s", "1", "{req}", "By", "ms", "m/s", "%", "{a b}", "x-y"])  # the API takes ASCII only
numbers = st.one_of(st.integers(-1000, 10**6), st.floats(-1e9, 1e9))
metric = st.tuples(
    st.integers(0, 2),  # scope
    names, st.sampled_from(KINDS), units, st.one_of(odd_text, st.just("")),
    st.lists(st.tuples(attributes, numbers, st.booleans()), min_size=1, max_size=4),  # (attrs, value, in span)
)
scopes = st.lists(st.tuples(st.sampled_from(["lib.one", "lib.two", "paid_telemetry", "x\udcff"]),
                            st.sampled_from([None, "1.0", "2.0"])), min_size=3, max_size=3)
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _record(mp: MeterProvider, tracer: Any, scope_defs: list[tuple[str, str | None]],
            metrics: list[tuple[Any, ...]]) -> None:
    for scope_i, name, kind, unit, description, points in metrics:
        meter = mp.get_meter(*scope_defs[scope_i])
        if kind.startswith("observable"):
            obs = [Observation(value, attrs) for attrs, value, _ in points]
            create = meter.create_observable_counter if kind == "observable_counter" else meter.create_observable_gauge
            create(name, callbacks=[lambda _o, obs=obs: obs], unit=unit, description=description)
            continue
        inst = {"counter": meter.create_counter, "up_down_counter": meter.create_up_down_counter,
                "histogram": meter.create_histogram, "gauge": meter.create_gauge}[kind](
            name, unit=unit, description=description)
        for attrs, value, in_span in points:
            if kind == "counter":
                value = abs(value)
            method = inst.record if kind == "histogram" else inst.set if kind == "gauge" else inst.add
            if in_span:
                with trace.use_span(tracer.start_span("s"), end_on_exit=True):
                    method(value, attrs)
            else:
                method(value, attrs)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(resource=attributes, scope_defs=scopes, metrics=st.lists(metric, min_size=1, max_size=6))
def test_every_body_parses_and_passes_promtool(resource: dict[str, Any], scope_defs: list[tuple[str, str | None]],
                                               metrics: list[tuple[Any, ...]]) -> None:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], resource=Resource(resource), shutdown_on_exit=False)
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    try:
        _record(mp, tracer, scope_defs, metrics)
        data = reader.get_metrics_data()
        problems: list[tuple[str, str]] = []
        text = render(data, problems=problems, resource=resource).decode()
        om = render(data, openmetrics=True, resource=resource).decode()
        got = check_body(text, om)
        same_samples(text, om)
        for _name, labels in got:
            for key, _value in labels:
                assert LABEL.fullmatch(key) and not key.startswith("__"), key
        assert all(reason == "unrenderable" for reason, _ in problems)
    finally:
        mp.shutdown()
