"""The Grafana dashboards and provisioning: generated JSON up to date, structure, names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from paid_telemetry.catalogue import CATALOGUE
from paid_telemetry_ops import dashboards as dash
from paid_telemetry_ops import external_metrics

REPO = Path(__file__).resolve().parents[1]
DASH_DIR = REPO / "grafana" / "dashboards"
PROVISIONING = REPO / "grafana" / "provisioning"
DS = {"type": "prometheus", "uid": "${datasource}"}
CATALOGUE_SERIES = {s for inst in CATALOGUE for s in inst.prometheus_series}
EXTERNAL = {name for names in dash.EXTERNAL_METRICS.values() for name in names}
EXPECTED_UIDS = {"paid-overview", "paid-agents", "paid-cost", "paid-workflows", "paid-infrastructure"}


def committed() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DASH_DIR.glob("*.json"))}


def queried_panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d["panels"] if p["type"] != "row"]


def variable_metric(query: str) -> str:
    m = re.fullmatch(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?\s*,\s*\w+\s*\)", query)
    assert m, f"variable query is not label_values(metric{{...}}, label): {query}"
    return m.group(1)


def test_committed_json_equals_generator_output() -> None:
    rendered = dash.render_all()
    files = {p.stem: p.read_text() for p in DASH_DIR.glob("*.json")}
    assert set(files) == set(rendered), "grafana/dashboards/ has stale or missing files"
    for name, d in rendered.items():
        assert files[name] == dash.to_json(d), (
            f"grafana/dashboards/{name}.json is out of date: run python -m paid_telemetry_ops.dashboards"
        )


def test_write_all_writes_every_dashboard(tmp_path: Path) -> None:
    paths = dash.write_all(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{n}.json" for n in dash.DASHBOARDS)
    for p in paths:
        assert json.loads(p.read_text()) == dash.render_all()[p.stem]


def test_uids_and_titles_are_unique_and_expected() -> None:
    ds = committed()
    uids = [d["uid"] for d in ds.values()]
    titles = [d["title"] for d in ds.values()]
    assert len(set(uids)) == len(uids) == 5
    assert len(set(titles)) == len(titles) == 5
    assert set(uids) == EXPECTED_UIDS
    for d in ds.values():
        panel_titles = [p["title"] for p in d["panels"]]
        assert len(panel_titles) == len(set(panel_titles)), f"{d['uid']}: duplicate panel titles"
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    for d in committed().values():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert d["templating"]["list"][0]["name"] == "datasource"
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for v in variables.values():
            if v["type"] == "query":
                assert v["datasource"] == DS, f"{d['uid']}: variable {v['name']}"
        panels = queried_panels(d)
        assert panels
        for p in panels:
            assert p["datasource"] == DS, f"{d['uid']}: panel {p['title']!r}"
            assert p["targets"], f"{d['uid']}: panel {p['title']!r} has no query"
            for t in p["targets"]:
                assert t["datasource"] == DS, f"{d['uid']}: {p['title']!r} target {t['refId']}"


def test_no_hard_coded_datasource_uid() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "datasource" in node and isinstance(node["datasource"], dict):
                uid = node["datasource"].get("uid")
                assert uid in ("${datasource}", "-- Grafana --"), f"hard-coded datasource uid {uid!r} at {path}"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str):
            if path.endswith((".query", ".type")):
                return
            assert node not in ("prometheus", "jaeger", "alertmanager"), f"datasource uid {node!r} at {path}"

    for name, d in committed().items():
        walk(d, name)


def test_every_panel_has_a_unit() -> None:
    for d in committed().values():
        for p in queried_panels(d):
            unit = p["fieldConfig"]["defaults"].get("unit")
            assert isinstance(unit, str) and unit, f"{d['uid']}: panel {p['title']!r} has no unit"


def test_panel_without_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="unit"):
        dash.timeseries("x", [dash.target("up")], "")


def test_rates_use_rate_interval_or_a_named_window() -> None:
    """Time series follow the scrape interval ($__rate_interval); 1h/24h only where the panel says so."""
    for d in committed().values():
        for p in queried_panels(d):
            for t in p["targets"]:
                for window in re.findall(r"\[([^\]]+)\]", t["expr"]):
                    assert window in ("$__rate_interval", "1h", "24h"), f"{p['title']!r}: [{window}]"
                    if window != "$__rate_interval":
                        assert re.search(r"1h|24h|day|budget|Burn|success", p["title"] + p["description"]), (
                            f"{p['title']!r} uses [{window}] without saying so"
                        )
        exprs = " ".join(t["expr"] for p in queried_panels(d) for t in p["targets"])
        if "rate(" in exprs:
            assert "$__rate_interval" in exprs, d["uid"]


def test_filters_apply_where_the_label_exists() -> None:
    """Every query on a catalogue metric with project_id/agent_type/workflow_type uses the variable."""
    by_series = {s: inst for inst in CATALOGUE for s in inst.prometheus_series}
    for d in committed().values():
        variables = {v["name"] for v in d["templating"]["list"]}
        assert "datasource" in variables
        for p in queried_panels(d):
            for t in p["targets"]:
                for name in dash.metric_names(t["expr"]):
                    inst = by_series.get(name)
                    if inst is None:
                        continue
                    for label in ("project_id", "agent_type", "workflow_type"):
                        if label in variables and label in inst.labels:
                            selectors = re.findall(rf"{name}\{{([^}}]*)\}}", t["expr"])
                            assert selectors and all(f'{label}=~"${label}"' in s for s in selectors), (
                                f"{d['uid']} {p['title']!r}: {name} not filtered by ${label}"
                            )


def test_filter_variables_per_dashboard() -> None:
    ds = {d["uid"]: {v["name"]: v for v in d["templating"]["list"]} for d in committed().values()}
    assert {"project_id"} <= set(ds["paid-overview"])
    assert {"project_id", "agent_type"} <= set(ds["paid-agents"])
    assert {"project_id"} <= set(ds["paid-cost"])
    assert {"workflow_type"} <= set(ds["paid-workflows"])
    for variables in ds.values():
        for v in variables.values():
            if v["type"] == "query":
                assert v["includeAll"] and v["allValue"] == ".*" and v["multi"]
                assert v["query"]["query"].startswith("label_values(")


def test_metric_names_are_in_the_catalogue_or_a_documented_exporter() -> None:
    seen: set[str] = set()
    for d in committed().values():
        for p in queried_panels(d):
            for t in p["targets"]:
                names = dash.metric_names(t["expr"])
                assert names, f"no metric found in {t['expr']}"
                unknown = names - CATALOGUE_SERIES - EXTERNAL
                assert not unknown, f"{d['uid']} {p['title']!r}: unknown metrics {sorted(unknown)}"
                seen |= names
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                name = variable_metric(v["query"]["query"])
                assert name in CATALOGUE_SERIES | EXTERNAL, f"{d['uid']} variable {v['name']}: {name}"
    # Every business metric of the catalogue is on some dashboard (but the dropped-records health one too).
    for inst in CATALOGUE:
        assert set(inst.prometheus_series) & seen, f"{inst.prometheus_name} is on no dashboard"


def test_metric_names_parser() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, agent_type) (rate(paid_agent_run_duration_seconds_bucket'
            '{project_id=~"$project_id", status="x y"}[$__rate_interval]))) / on (project_id) group_left '
            'max by (project_id) (paid_project_daily_budget_cents) or vector(0) * 1e3')
    assert dash.metric_names(expr) == {"paid_agent_run_duration_seconds_bucket", "paid_project_daily_budget_cents"}
    assert dash.metric_names('count (ALERTS{alertstate="firing"}) or vector(0)') == {"ALERTS"}
    assert dash.metric_names("1 - avg by (instance) (rate(node_cpu_seconds_total[5m]))") == {"node_cpu_seconds_total"}


def test_temporal_names_live_in_one_constant_each() -> None:
    text = (REPO / "src" / "paid_telemetry_ops" / "dashboards.py").read_text()
    assert "approximate_backlog_count" not in text  # named once, in external_metrics
    assert dash.TEMPORAL_BACKLOG == external_metrics.TEMPORAL_BACKLOG == "approximate_backlog_count"
    wf = committed()["workflows"]
    exprs = " ".join(t["expr"] for p in queried_panels(wf) for t in p["targets"])
    for name in (dash.TEMPORAL_BACKLOG, dash.TEMPORAL_SLOTS_AVAILABLE, dash.TEMPORAL_WF_TASK_SCHEDULE_TO_START,
                 dash.TEMPORAL_ACTIVITY_SCHEDULE_TO_START, dash.TEMPORAL_WF_COMPLETED):
        assert name in exprs


def test_dashboards_link_to_each_other() -> None:
    ds = committed()
    uids = {d["uid"] for d in ds.values()}
    for d in ds.values():
        assert dash.TAG in d["tags"]
        links = d["links"]
        assert any(lk["type"] == "dashboards" and lk["tags"] == [dash.TAG] and lk["includeVars"] and lk["keepTime"]
                   for lk in links), d["uid"]
    overview_links = [lk for p in ds["overview"]["panels"] for lk in p.get("links", [])]
    targets = {re.match(r"/d/([\w-]+)", lk["url"]).group(1) for lk in overview_links}  # type: ignore[union-attr]
    assert targets <= uids
    assert {"paid-agents", "paid-cost", "paid-workflows"} <= targets


def test_layout_has_no_overlaps() -> None:
    for d in committed().values():
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{d['uid']}: {p['title']!r} overlaps"
                    cells.add((x, y))


def test_histogram_panels_show_exemplars() -> None:
    agents = committed()["agents"]
    p = next(p for p in agents["panels"] if p["title"] == "Run duration p50 / p95 / p99")
    assert [t["exemplar"] for t in p["targets"]] == [True, True, True]
    assert [t["legendFormat"] for t in p["targets"]] == ["p50", "p95", "p99"]
    assert all("paid_agent_run_duration_seconds_bucket" in t["expr"] for t in p["targets"])


def test_datasource_provisioning() -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    assert set(by_uid) == {"prometheus", "jaeger", "alertmanager"}
    prom = by_uid["prometheus"]
    assert prom["type"] == "prometheus" and prom["isDefault"] is True and prom["url"] == "http://prometheus:9090"
    assert prom["jsonData"]["exemplarTraceIdDestinations"] == [{"name": "trace_id", "datasourceUid": "jaeger"}]
    assert [d["uid"] for d in doc["datasources"] if d.get("isDefault")] == ["prometheus"]
    assert by_uid["jaeger"]["type"] == "jaeger" and by_uid["jaeger"]["url"] == "http://jaeger:16686"
    am = by_uid["alertmanager"]
    assert am["type"] == "alertmanager" and am["url"] == "http://alertmanager:9093"
    assert am["jsonData"]["implementation"] == "prometheus"


def test_dashboard_provisioning() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "/var/lib/grafana/dashboards" in (REPO / "grafana" / "README.md").read_text()
