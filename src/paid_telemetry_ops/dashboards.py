"""Grafana dashboards for Paid, generated from code with grafana-foundation-sdk (Grafana's typed builders).

Why generated: five dashboards share one datasource variable, the same filters, units and
links; writing them in code keeps those rules in one place, and lets the tests read every
PromQL expression back (to check metric names against the catalogue and send every query to
a real Prometheus). ``grafana/dashboards/*.json`` is the output of :func:`write_all`; a test
fails when the committed JSON differs from :func:`render_all`.

Conventions every panel follows: datasource ``${datasource}`` (a variable, never a uid),
``$__rate_interval`` in every ``rate()`` of a time series, a unit on every panel, and a link
bar to the other Paid dashboards (by tag ``paid``) that keeps time range and variables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge as bargauge_panel
from grafana_foundation_sdk.builders import common, dashboard, prometheus
from grafana_foundation_sdk.builders import stat as stat_panel
from grafana_foundation_sdk.builders import table as table_panel
from grafana_foundation_sdk.builders import timeseries as timeseries_panel
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

from paid_telemetry_ops import external_metrics

TAG = "paid"
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

# -- external metric names (not from our catalogue) --------------------------------------
# Temporal server: the task-queue backlog gauge (matching service; labels taskqueue, task_type).
# Named in ONE place, paid_telemetry_ops.external_metrics (shared with the alert rules).
TEMPORAL_BACKLOG = external_metrics.TEMPORAL_BACKLOG
# Temporal SDK worker metrics (sdk-core Prometheus exporter, durations in seconds).
TEMPORAL_SLOTS_AVAILABLE = "temporal_worker_task_slots_available"
TEMPORAL_WF_TASK_SCHEDULE_TO_START = "temporal_workflow_task_schedule_to_start_latency_seconds_bucket"
TEMPORAL_ACTIVITY_SCHEDULE_TO_START = "temporal_activity_schedule_to_start_latency_seconds_bucket"
TEMPORAL_WF_COMPLETED = "temporal_workflow_completed_total"
TEMPORAL_WF_FAILED = "temporal_workflow_failed_total"
TEMPORAL_STICKY_CACHE = "temporal_sticky_cache_size"
# The collector's own metrics, as otelcol 0.161 (our build) exposes them with its pull
# Prometheus reader: no ``_total`` on counters and no unit suffix (verified by scraping it).
OTELCOL_ACCEPTED_POINTS = "otelcol_receiver_accepted_metric_points"
OTELCOL_REFUSED_POINTS = "otelcol_receiver_refused_metric_points"
OTELCOL_ACCEPTED_SPANS = "otelcol_receiver_accepted_spans"
OTELCOL_SENT_POINTS = "otelcol_exporter_sent_metric_points"
OTELCOL_FAILED_POINTS = "otelcol_exporter_send_failed_metric_points"
OTELCOL_FAILED_SPANS = "otelcol_exporter_send_failed_spans"
OTELCOL_QUEUE_SIZE = "otelcol_exporter_queue_size"
OTELCOL_QUEUE_CAPACITY = "otelcol_exporter_queue_capacity"
OTELCOL_RSS = "otelcol_process_memory_rss"

# Which exporter feeds which external name: the documented list (shared with the alert
# rules) that the tests check every dashboard expression against.
EXTERNAL_METRICS = external_metrics.EXTERNAL_METRICS

# Workflow statuses that count as failing (catalogue.WORKFLOW_STATUSES minus the good ones).
FAILING_WORKFLOW = "failed|timed_out"  # as WorkflowFailureRateHigh counts them; terminated is an operator's act


# -- builder -----------------------------------------------------------------------------
# Panels are grafana-foundation-sdk builders (Grafana's own typed builders); these helpers
# only fix Paid's conventions (datasource variable, unit required, legend and tooltip style).

Panel = cogbuilder.Builder[Any]


@dataclass
class _Sized:
    """A panel builder with the size it asks for; :func:`dashboard` places it on the grid."""

    builder: Any  # a panel or row builder of grafana-foundation-sdk
    width: int
    height: int
    is_row: bool = False


def _ds() -> dashboard_model.DataSourceRef:
    return dashboard_model.DataSourceRef(type_val=DS["type"], uid=DS["uid"])


def target(expr: str, legend: str = "__auto", *, instant: bool = False, exemplar: bool = False) -> prometheus.Dataquery:
    """One Prometheus query of a panel (refId is set by the panel)."""
    q = (
        prometheus.Dataquery().datasource(_ds()).editor_mode(prometheus_model.QueryEditorMode.CODE)
        .expr(expr).exemplar(exemplar).legend_format(legend)
    )
    return q.instant() if instant else q.range()


def _common(
    builder: Any,
    title: str,
    targets: Iterable[prometheus.Dataquery],
    unit: str,
    *,
    description: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    decimals: int | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    links: list[tuple[str, str]] | None = None,
    palette: bool = False,
) -> Any:
    """Paid's rules for every panel: the datasource variable, a unit, thresholds, refIds A, B, ..."""
    if not unit:
        raise ValueError(f"panel {title!r}: a unit is required")
    steps = thresholds or [(None, "green")]
    builder = (
        builder.title(title).description(description).datasource(_ds()).unit(unit)
        .color_scheme(dashboard.FieldColor().mode(
            dashboard_model.FieldColorModeId.PALETTE_CLASSIC if palette else dashboard_model.FieldColorModeId.THRESHOLDS
        ))
        .thresholds(dashboard.ThresholdsConfig().mode(dashboard_model.ThresholdsMode.ABSOLUTE).steps(
            [dashboard_model.Threshold(value=v, color=c) for v, c in steps]
        ))
    )
    for key, value in (("min", minimum), ("max", maximum), ("decimals", decimals)):
        if value is not None:
            getattr(builder, key)(value)
    for i, t in enumerate(targets):
        builder.with_target(t.ref_id(chr(ord("A") + i)))
    if links:
        builder.links([dashboard.DashboardLink(t).url(u) for t, u in links])
    return builder


def timeseries(title: str, targets: Iterable[prometheus.Dataquery], unit: str, *, stack: bool = False, width: int = 12,
               height: int = 8, **kw: Any) -> _Sized:
    """A time series panel (lines; stacked areas when ``stack``)."""
    b = _common(timeseries_panel.Panel(), title, targets, unit, palette=True, **kw)
    b.draw_style(common_model.GraphDrawStyle.LINE).line_width(1).fill_opacity(20 if stack else 0)
    b.show_points(common_model.VisibilityMode.NEVER).span_nulls(False)
    b.stacking(common.StackingConfig().mode(
        common_model.StackingMode.NORMAL if stack else common_model.StackingMode.NONE).group("A"))
    b.legend(common.VizLegendOptions().display_mode(common_model.LegendDisplayMode.TABLE)
             .placement(common_model.LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"]))
    b.tooltip(common.VizTooltipOptions().mode(common_model.TooltipDisplayMode.MULTI)
              .sort(common_model.SortOrder.DESCENDING))
    return _Sized(b, width, height)


def _last_value() -> Any:
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def stat(title: str, targets: Iterable[prometheus.Dataquery], unit: str, *, width: int = 6, height: int = 5,
         **kw: Any) -> _Sized:
    """A single number (the last value), coloured by thresholds."""
    b = _common(stat_panel.Panel(), title, targets, unit, **kw)
    b.reduce_options(_last_value()).color_mode(common_model.BigValueColorMode.VALUE)
    b.graph_mode(common_model.BigValueGraphMode.AREA).justify_mode(common_model.BigValueJustifyMode.AUTO)
    b.orientation(common_model.VizOrientation.AUTO).text_mode(common_model.BigValueTextMode.AUTO)
    return _Sized(b, width, height)


def bargauge(title: str, targets: Iterable[prometheus.Dataquery], unit: str, *, width: int = 12, height: int = 8,
             **kw: Any) -> _Sized:
    """Horizontal bars, one per series (e.g. one per project against its budget)."""
    b = _common(bargauge_panel.Panel(), title, targets, unit, **kw)
    b.reduce_options(_last_value()).display_mode(common_model.BarGaugeDisplayMode.GRADIENT)
    b.orientation(common_model.VizOrientation.HORIZONTAL).show_unfilled(True)
    b.value_mode(common_model.BarGaugeValueMode.COLOR).name_placement(common_model.BarGaugeNamePlacement.AUTO)
    b.sizing(common_model.BarGaugeSizing.AUTO)
    return _Sized(b, width, height)


def table(title: str, targets: Iterable[prometheus.Dataquery], unit: str, *, width: int = 12, height: int = 8,
          **kw: Any) -> _Sized:
    """Instant query results as rows (one per series)."""
    b = _common(table_panel.Panel(), title, targets, unit, **kw)
    b.show_header(True).cell_height(common_model.TableCellHeight.SM)
    b.footer(common.TableFooterOptions().show(False).reducer(["sum"]).fields([]))
    return _Sized(b, width, height)


def row(title: str) -> _Sized:
    """A row header; it has no query, so neither datasource nor unit."""
    return _Sized(dashboard.Row(title).collapsed(False), GRID_WIDTH, 1, is_row=True)


def datasource_variable() -> Panel:
    return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_variable(name: str, query: str, label: str) -> Panel:
    """A multi-value filter from ``label_values(...)``; All means ``.*`` (use it with ``=~``)."""
    return (
        dashboard.QueryVariable(name).label(label).datasource(_ds())
        .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .include_all(True).all_value(".*").multi(True)
        .current(dashboard_model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dashboard_model.VariableSort.ALPHABETICAL_ASC)
    )


def dashboard_json(uid: str, title: str, description: str, panels: Iterable[_Sized],
                   variables: Iterable[Panel] = (), *, tags: Iterable[str] = (),
                   time_from: str = "now-6h") -> dict[str, Any]:
    """A whole dashboard: datasource variable first, the Paid link bar, panels placed left to right
    (wrapping at 24 columns; a row starts a new line), ids in order."""
    d = (
        dashboard.Dashboard(title).uid(uid).description(description).tags([TAG, *tags]).editable()
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR).refresh("30s").time(time_from, "now")
        .timezone("browser").version(1)
        .link(dashboard.DashboardLink("Paid dashboards").type(dashboard_model.DashboardLinkType.DASHBOARDS)
              .tags([TAG]).as_dropdown(False).include_vars(True).keep_time(True).target_blank(False))
        .annotation(dashboard.AnnotationQuery().built_in(1).name("Annotations & Alerts").enable(True).hide(True)
                    .icon_color("rgba(0, 211, 255, 1)").type("dashboard")
                    .datasource(dashboard_model.DataSourceRef(type_val="grafana", uid="-- Grafana --")))
        .with_variable(datasource_variable())
    )
    for variable in variables:
        d.with_variable(variable)
    x = y = line_h = 0
    for pid, p in enumerate(panels, start=1):
        if p.is_row or x + p.width > GRID_WIDTH:
            x, y, line_h = 0, y + line_h, 0
        p.builder.grid_pos(dashboard_model.GridPos(h=p.height, w=p.width, x=x, y=y)).id(pid)
        if p.is_row:
            d.with_row(p.builder)
            y += p.height
            continue
        d.with_panel(p.builder)
        x += p.width
        line_h = max(line_h, p.height)
    out: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(d.build()))
    return out


def link(title: str, uid: str) -> tuple[str, str]:
    """A panel link to another Paid dashboard, keeping time range and project filter."""
    return title, f"/d/{uid}?${{__url_time_range}}&${{project_id:queryparam}}"


# -- helpers for PromQL -------------------------------------------------------------------

RI = "$__rate_interval"
PROJECT = 'project_id=~"$project_id"'


def per_min(selector: str, by: str = "") -> str:
    """Events per minute of a counter over the rate interval, optionally split ``by``."""
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (rate({selector}[{RI}])) * 60"


def quantile(q: float, bucket_selector: str, by: str = "") -> str:
    """histogram_quantile over the rate interval, keeping ``le`` and the ``by`` labels."""
    keep = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keep}) (rate({bucket_selector}[{RI}])))"


def ratio(num: str, den: str, by: str = "", window: str = RI) -> str:
    """sum(rate(num)) / sum(rate(den)) over ``window``, optionally split ``by``."""
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (rate({num}[{window}])) / {agg} (rate({den}[{window}]))"


PCT_THRESHOLDS: list[tuple[float | None, str]] = [(None, "red"), (0.5, "orange"), (0.8, "green")]
BUDGET_THRESHOLDS: list[tuple[float | None, str]] = [(None, "green"), (0.8, "orange"), (1.0, "red")]


# -- the dashboards -----------------------------------------------------------------------


def project_var() -> Panel:
    return query_variable("project_id", "label_values(paid_agent_runs_total, project_id)", "Project")


def overview() -> dict[str, Any]:
    """Is Paid healthy right now: success, throughput, workflows, spend, alerts."""
    runs = f"paid_agent_runs_total{{{PROJECT}}}"
    ok_runs = f'paid_agent_runs_total{{{PROJECT}, status="completed"}}'
    cost = f"paid_cost_cents_total{{{PROJECT}}}"
    budget = f"paid_project_daily_budget_cents{{{PROJECT}}}"
    panels = [
        row("Now"),
        stat("Agent success rate (1h)", [target(ratio(ok_runs, runs, window="1h"), "success rate", instant=True)],
             "percentunit",
             description="Completed runs / all runs that ended in the last hour (alert below 50%).",
             thresholds=PCT_THRESHOLDS, minimum=0, maximum=1, links=[link("Agents", "paid-agents")]),
        stat("Agent runs per minute", [target(per_min(runs), "runs/min")], "opm",
             description="Agent runs ending per minute, all statuses."),
        stat("Spend last 24h", [target(f"sum (increase({cost}[24h])) / 100", "spend", instant=True)], "currencyUSD",
             description="LLM spend over the last 24 hours (the budget's day), in US dollars.",
             links=[link("Cost", "paid-cost")]),
        stat("Firing alerts", [target('count (ALERTS{alertstate="firing"}) or vector(0)', "firing")], "short",
             description="Alerts firing in Prometheus now (details in Alertmanager).",
             thresholds=[(None, "green"), (1, "red")]),
        row("Throughput"),
        timeseries("Agent runs per minute by status", [target(per_min(runs, "status"), "{{status}}")], "opm",
                   stack=True, description="Ended runs by final status (completed, failed, cancelled)."),
        timeseries("Workflows completing vs failing", [
            target(per_min('paid_workflow_completed_total{status=~"completed|continued_as_new"}'), "completing"),
            target(per_min(f'paid_workflow_completed_total{{status=~"{FAILING_WORKFLOW}"}}'), "failing"),
        ], "opm", description="Workflow executions ending per minute; failing = failed or timed out "
                              "(as the WorkflowFailureRateHigh alert counts).",
            links=[link("Workflows", "paid-workflows")]),
        row("Spend and health"),
        bargauge("Spend last 24h vs daily budget", [target(
            f"sum by (project_id) (increase({cost}[24h])) / on (project_id) "
            f"min by (project_id) ({budget})", "{{project_id}}", instant=True)], "percentunit",
            description="Share of each project's daily budget spent in 24h; the budget is the smallest "
                        "paid_project_daily_budget_cents any process exports, as DailyBudgetExceeded uses.",
            minimum=0, maximum=1.2, thresholds=BUDGET_THRESHOLDS),
        table("Firing alerts by name", [target('sum by (alertname, severity) (ALERTS{alertstate="firing"})',
                                       "{{alertname}}", instant=True)], "short",
              description="One row per firing alert and severity (value: how many series fire)."),
        timeseries("External API error ratio", [target(ratio(
            'paid_external_api_requests_total{outcome="error"}', "paid_external_api_requests_total", "service"),
            "{{service}}")], "percentunit", minimum=0, maximum=1,
            description="Share of calls to GitHub, LLM providers... that failed."),
        timeseries("Telemetry records dropped", [target(per_min("paid_telemetry_dropped_records_total", "reason"),
                                                        "{{reason}}")], "opm",
                   description="Inputs paid-telemetry dropped or rewrote (bad values, cardinality overflow)."),
    ]
    return dashboard_json("paid-overview", "Paid / Overview", "Is Paid healthy right now.", panels, [project_var()],
                     tags=["overview"])


def agents() -> dict[str, Any]:
    """Agent runs: status, success, duration, iterations, quality, PRs and external calls."""
    f = f'{PROJECT}, agent_type=~"$agent_type"'
    runs = f"paid_agent_runs_total{{{f}}}"
    dur = f"paid_agent_run_duration_seconds_bucket{{{f}}}"
    it = f"paid_agent_iterations_bucket{{{f}}}"
    qf = f'{PROJECT}, prompt_slug=~"$prompt_slug"'
    panels = [
        row("Runs"),
        timeseries("Runs per minute by status", [target(per_min(runs, "status"), "{{status}}")], "opm", stack=True),
        timeseries("Success rate by agent type", [target(
            ratio(f'paid_agent_runs_total{{{f}, status="completed"}}', runs, "agent_type"), "{{agent_type}}")],
            "percentunit", minimum=0, maximum=1, thresholds=PCT_THRESHOLDS),
        row("Duration and iterations"),
        timeseries("Run duration p50 / p95 / p99", [
            target(quantile(q, dur), f"p{int(q * 100)}", exemplar=True) for q in (0.5, 0.95, 0.99)
        ], "s", description="From paid_agent_run_duration_seconds; exemplars open the trace in Jaeger."),
        timeseries("Run duration p95 by agent type", [target(quantile(0.95, dur, "agent_type"), "{{agent_type}}")],
                   "s"),
        timeseries("Iterations per run", [
            target(quantile(0.5, it), "p50"), target(quantile(0.95, it), "p95"),
            target(ratio(f"paid_agent_iterations_sum{{{f}}}", f"paid_agent_iterations_count{{{f}}}"), "mean"),
        ], "short", decimals=1),
        timeseries("Runs per minute by agent type", [target(per_min(runs, "agent_type"), "{{agent_type}}")], "opm"),
        row("Quality"),
        timeseries("Mean quality score by prompt", [target(
            ratio(f"paid_quality_score_sum{{{qf}}}", f"paid_quality_score_count{{{qf}}}", "prompt_slug"),
            "{{prompt_slug}}")], "percentunit", minimum=0, maximum=1, thresholds=PCT_THRESHOLDS),
        timeseries("Quality score p10 by prompt (the low tail)", [target(
            quantile(0.1, f"paid_quality_score_bucket{{{qf}}}", "prompt_slug"), "{{prompt_slug}}")],
            "percentunit", minimum=0, maximum=1),
        row("Pull requests and external APIs"),
        timeseries("Pull requests per minute by event", [target(
            per_min(f"paid_pull_requests_total{{{PROJECT}}}", "event"), "{{event}}")], "opm", width=8),
        timeseries("External API calls per minute", [target(
            per_min("paid_external_api_requests_total", "service, outcome"), "{{service}} {{outcome}}")],
            "opm", width=8),
        timeseries("External API latency p95", [target(
            quantile(0.95, "paid_external_api_request_duration_seconds_bucket", "service, operation"),
            "{{service}} {{operation}}", exemplar=True)], "s", width=8),
    ]
    variables = [
        project_var(),
        query_variable("agent_type", 'label_values(paid_agent_runs_total{project_id=~"$project_id"}, agent_type)',
                       "Agent type"),
        query_variable("prompt_slug", 'label_values(paid_quality_score_count{project_id=~"$project_id"}, prompt_slug)',
                       "Prompt"),
    ]
    return dashboard_json("paid-agents", "Paid / Agents", "Agent runs, durations, iterations and quality.",
                     panels, variables, tags=["agents"])


def cost() -> dict[str, Any]:
    """Tokens and spend, burn rate and the day's projection against each budget."""
    f = f'{PROJECT}, provider=~"$provider"'
    tokens = f"paid_tokens_total{{{f}}}"
    cost_ = f"paid_cost_cents_total{{{f}}}"
    cost_all = f"paid_cost_cents_total{{{PROJECT}}}"
    # One budget per project, the smallest any process exports (as the DailyBudgetExceeded rule).
    budget = f"min by (project_id) (paid_project_daily_budget_cents{{{PROJECT}}})"
    panels = [
        row("Tokens"),
        timeseries("Tokens per minute by provider, model and type", [target(
            per_min(tokens, "provider, model, type"), "{{provider}} {{model}} {{type}}")], "short", stack=True,
            width=16),
        stat("Tokens last 24h", [target(f"sum (increase({tokens}[24h]))", "tokens", instant=True)], "short",
             width=8, height=8),
        row("Spend"),
        timeseries("Spend rate by project ($/h)", [target(
            f"sum by (project_id) (rate({cost_}[{RI}])) * 3600 / 100", "{{project_id}}")], "currencyUSD", stack=True),
        timeseries("Spend rate by provider ($/h)", [target(
            f"sum by (provider) (rate({cost_}[{RI}])) * 3600 / 100", "{{provider}}")], "currencyUSD", stack=True),
        bargauge("Spend last 24h by project and provider", [target(
            f"sum by (project_id, provider) (increase({cost_}[24h])) / 100", "{{project_id}} {{provider}}",
            instant=True)], "currencyUSD", minimum=0),
        table("Daily budget by project", [target(f"{budget} / 100", "{{project_id}}", instant=True)],
              "currencyUSD", description="paid_project_daily_budget_cents, in dollars."),
        row("Burn rate and projection"),
        timeseries("Burn rate: day's spend at the last hour's pace vs budget", [target(
            f"sum by (project_id) (rate({cost_all}[1h])) * 86400 / on (project_id) {budget}", "{{project_id}}")],
            "percentunit", minimum=0, thresholds=BUDGET_THRESHOLDS,
            description="1 = this pace spends exactly the daily budget in 24h; above 1 the budget runs out early."),
        bargauge("Projected day-end spend vs budget (UTC)", [target(
            f"(sum by (project_id) (increase({cost_all}[24h])) * (time() % 86400) / 86400"
            f" + sum by (project_id) (rate({cost_all}[1h])) * (86400 - time() % 86400))"
            f" / on (project_id) {budget}", "{{project_id}}", instant=True)], "percentunit",
            minimum=0, maximum=1.5, thresholds=BUDGET_THRESHOLDS,
            description="Spent so far today (the last 24h's average pace times the hours elapsed since 00:00 UTC)"
                        " plus the last hour's pace until midnight, as a share of the daily budget."),
    ]
    variables = [project_var(),
                 query_variable("provider", 'label_values(paid_tokens_total{project_id=~"$project_id"}, provider)',
                                "Provider")]
    return dashboard_json("paid-cost", "Paid / Cost", "LLM tokens and spend against each project's daily budget.",
                     panels, variables, tags=["cost"], time_from="now-24h")


def workflows() -> dict[str, Any]:
    """Paid's workflow and activity metrics next to Temporal's own (server backlog, SDK worker)."""
    wf = 'workflow_type=~"$workflow_type"'
    tq = 'task_queue=~"$task_queue"'
    panels = [
        row("Workflows"),
        timeseries("Started per minute by type", [target(
            per_min(f"paid_workflow_started_total{{{wf}}}", "workflow_type"), "{{workflow_type}}")], "opm", width=8),
        timeseries("Completed per minute by type", [target(
            per_min(f'paid_workflow_completed_total{{{wf}, status=~"completed|continued_as_new"}}', "workflow_type"),
            "{{workflow_type}}")], "opm", width=8),
        timeseries("Failed per minute by type and status", [target(
            per_min(f'paid_workflow_completed_total{{{wf}, status=~"{FAILING_WORKFLOW}"}}', "workflow_type, status"),
            "{{workflow_type}} {{status}}")], "opm", width=8),
        timeseries("Workflow duration p50 / p95 by type", [
            target(quantile(q, f"paid_workflow_duration_seconds_bucket{{{wf}}}", "workflow_type"),
                   f"{{{{workflow_type}}}} p{int(q * 100)}", exemplar=True) for q in (0.5, 0.95)
        ], "s", width=24),
        row("Activities"),
        timeseries("Activity attempts per minute by type and outcome", [target(
            per_min("paid_activity_executions_total", "activity_type, outcome"), "{{activity_type}} {{outcome}}")],
            "opm", width=8),
        timeseries("Activity latency p95 by type", [target(
            quantile(0.95, "paid_activity_duration_seconds_bucket", "activity_type"), "{{activity_type}}",
            exemplar=True)], "s", width=8),
        timeseries("Activity retries per minute by type", [target(
            per_min("paid_activity_retries_total", "activity_type"), "{{activity_type}}")], "opm", width=8),
        row("Temporal"),
        timeseries("Task-queue backlog", [target(
            f"sum by (taskqueue, task_type) ({TEMPORAL_BACKLOG})", "{{taskqueue}} {{task_type}}")],
            "short", description=f"Temporal server gauge {TEMPORAL_BACKLOG}: tasks waiting for a worker. The server"
            " labels it taskqueue (with - written _), so the task-queue filter does not apply."),
        timeseries("Worker task slots available", [target(
            f"sum by (task_queue, worker_type) ({TEMPORAL_SLOTS_AVAILABLE}{{{tq}}})",
            "{{task_queue}} {{worker_type}}")], "short",
            description="0 means the workers are saturated: tasks wait in the backlog."),
        timeseries("Workflow task schedule-to-start p95", [target(
            quantile(0.95, f"{TEMPORAL_WF_TASK_SCHEDULE_TO_START}{{{tq}}}", "task_queue"), "{{task_queue}}")], "s"),
        timeseries("Activity schedule-to-start p95", [target(
            quantile(0.95, f"{TEMPORAL_ACTIVITY_SCHEDULE_TO_START}{{{tq}}}", "task_queue"), "{{task_queue}}")], "s"),
        timeseries("SDK: workflows completed vs failed per minute", [
            target(per_min(f"{TEMPORAL_WF_COMPLETED}{{{tq}}}", "workflow_type"), "{{workflow_type}} completed"),
            target(per_min(f"{TEMPORAL_WF_FAILED}{{{tq}}}", "workflow_type"), "{{workflow_type}} failed"),
        ], "opm"),
        timeseries("SDK: sticky cache size", [target(f"sum ({TEMPORAL_STICKY_CACHE})", "cached workflows")], "short"),
    ]
    variables = [
        query_variable("workflow_type", "label_values(paid_workflow_started_total, workflow_type)", "Workflow type"),
        query_variable("task_queue", f"label_values({TEMPORAL_SLOTS_AVAILABLE}, task_queue)", "Task queue"),
    ]
    return dashboard_json("paid-workflows", "Paid / Workflows", "Workflows, activities and the Temporal workers.",
                     panels, variables, tags=["workflows", "temporal"])


def infrastructure() -> dict[str, Any]:
    """What Paid runs on: node, containers, PostgreSQL and the collector's own health."""
    inst = 'instance=~"$instance"'
    fs = f'{inst}, fstype!~"tmpfs|overlay|squashfs|ramfs|nsfs"'
    db = 'datname=~"$datname"'
    panels = [
        row("Node"),
        timeseries("CPU busy", [target(
            f'1 - avg by (instance) (rate(node_cpu_seconds_total{{{inst}, mode="idle"}}[{RI}]))', "{{instance}}")],
            "percentunit", minimum=0, maximum=1, width=8),
        timeseries("Memory used", [target(
            f"1 - sum by (instance) (node_memory_MemAvailable_bytes{{{inst}}})"
            f" / sum by (instance) (node_memory_MemTotal_bytes{{{inst}}})", "{{instance}}")],
            "percentunit", minimum=0, maximum=1, width=8),
        timeseries("Disk used by mount", [target(
            f"1 - max by (instance, mountpoint) (node_filesystem_avail_bytes{{{fs}}})"
            f" / max by (instance, mountpoint) (node_filesystem_size_bytes{{{fs}}})", "{{instance}} {{mountpoint}}")],
            "percentunit", minimum=0, maximum=1, width=8, thresholds=BUDGET_THRESHOLDS),
        timeseries("Disk busy", [target(
            f"max by (instance, device) (rate(node_disk_io_time_seconds_total{{{inst}}}[{RI}]))",
            "{{instance}} {{device}}")], "percentunit", minimum=0, width=8),
        timeseries("Load (1m)", [target(f"max by (instance) (node_load1{{{inst}}})", "{{instance}}")], "short",
                   width=8),
        timeseries("Network", [
            target(f'sum by (instance) (rate(node_network_receive_bytes_total{{{inst}, device!="lo"}}[{RI}]))',
                   "{{instance}} in"),
            target(f'sum by (instance) (rate(node_network_transmit_bytes_total{{{inst}, device!="lo"}}[{RI}]))',
                   "{{instance}} out"),
        ], "Bps", width=8),
        row("Containers (cAdvisor)"),
        timeseries("Container CPU (cores)", [target(
            f'sum by (name) (rate(container_cpu_usage_seconds_total{{name!=""}}[{RI}]))', "{{name}}")], "short",
            width=8),
        timeseries("Container memory working set", [target(
            'sum by (name) (container_memory_working_set_bytes{name!=""})', "{{name}}")], "bytes", width=8),
        timeseries("Container OOM kills", [target(
            f'sum by (name) (increase(container_oom_events_total{{name!=""}}[{RI}]))', "{{name}}")], "short", width=8),
        row("PostgreSQL"),
        timeseries("Connections used vs max", [
            target("sum (pg_stat_activity_count) / max (pg_settings_max_connections)", "used / max"),
        ], "percentunit", minimum=0, maximum=1, thresholds=BUDGET_THRESHOLDS, width=8),
        timeseries("Connections by database and state", [target(
            f"sum by (datname, state) (pg_stat_activity_count{{{db}}})", "{{datname}} {{state}}")], "short", width=8),
        timeseries("Transactions per second", [
            target(f"sum by (datname) (rate(pg_stat_database_xact_commit{{{db}}}[{RI}]))", "{{datname}} commit"),
            target(f"sum by (datname) (rate(pg_stat_database_xact_rollback{{{db}}}[{RI}]))", "{{datname}} rollback"),
        ], "ops", width=8),
        timeseries("Cache hit ratio", [target(
            f"sum by (datname) (rate(pg_stat_database_blks_hit{{{db}}}[{RI}])) / (sum by (datname)"
            f" (rate(pg_stat_database_blks_hit{{{db}}}[{RI}])) + sum by (datname)"
            f" (rate(pg_stat_database_blks_read{{{db}}}[{RI}])))", "{{datname}}")],
            "percentunit", minimum=0, maximum=1, width=8),
        timeseries("Rows fetched vs returned", [
            target(f"sum by (datname) (rate(pg_stat_database_tup_fetched{{{db}}}[{RI}]))", "{{datname}} fetched"),
            target(f"sum by (datname) (rate(pg_stat_database_tup_returned{{{db}}}[{RI}]))", "{{datname}} returned"),
        ], "rowsps", width=8),
        timeseries("Deadlocks", [target(
            f"sum by (datname) (increase(pg_stat_database_deadlocks{{{db}}}[{RI}]))", "{{datname}}")], "short",
            width=8),
        row("OpenTelemetry Collector"),
        timeseries("Metric points accepted vs refused", [
            target(f"sum by (receiver) (rate({OTELCOL_ACCEPTED_POINTS}[{RI}]))", "{{receiver}} accepted"),
            target(f"sum by (receiver) (rate({OTELCOL_REFUSED_POINTS}[{RI}]))", "{{receiver}} refused"),
        ], "ops", width=8),
        timeseries("Export failures", [
            target(f"sum by (exporter) (rate({OTELCOL_FAILED_POINTS}[{RI}]))", "{{exporter}} metric points"),
            target(f"sum by (exporter) (rate({OTELCOL_FAILED_SPANS}[{RI}]))", "{{exporter}} spans"),
        ], "ops", width=8, description="Anything above 0 is data lost or retried (Jaeger or Prometheus down)."),
        timeseries("Points sent and spans accepted", [
            target(f"sum by (exporter) (rate({OTELCOL_SENT_POINTS}[{RI}]))", "{{exporter}} points sent"),
            target(f"sum by (receiver) (rate({OTELCOL_ACCEPTED_SPANS}[{RI}]))", "{{receiver}} spans accepted"),
        ], "ops", width=8),
        timeseries("Exporter queue fill", [target(
            f"max by (exporter) ({OTELCOL_QUEUE_SIZE} / {OTELCOL_QUEUE_CAPACITY})", "{{exporter}}")],
            "percentunit", minimum=0, maximum=1, thresholds=BUDGET_THRESHOLDS, width=12),
        timeseries("Collector memory (RSS)", [target(f"max by (instance) ({OTELCOL_RSS})", "{{instance}}")],
                   "bytes", width=12),
        row("Scrape targets"),
        table("Targets down", [target("up == 0", "{{job}} {{instance}}", instant=True)], "short", width=12,
              description="Every scrape target Prometheus cannot reach (empty when all are up)."),
        stat("Targets up", [target("sum (up)", "up")], "short", width=12),
    ]
    variables = [
        query_variable("instance", "label_values(node_uname_info, instance)", "Node"),
        query_variable("datname", "label_values(pg_stat_database_xact_commit, datname)", "Database"),
    ]
    return dashboard_json("paid-infrastructure", "Paid / Infrastructure",
                     "Node, containers, PostgreSQL and the OpenTelemetry Collector.",
                     panels, variables, tags=["infrastructure"], time_from="now-3h")


DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "overview": overview,
    "agents": agents,
    "cost": cost,
    "workflows": workflows,
    "infrastructure": infrastructure,
}


def render_all() -> dict[str, dict[str, Any]]:
    """Every dashboard by file stem (``grafana/dashboards/<stem>.json``)."""
    return {name: build() for name, build in DASHBOARDS.items()}


def to_json(dash: dict[str, Any]) -> str:
    """The exact text committed: stable key order, 2-space indent, trailing newline."""
    return json.dumps(dash, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: str | Path) -> list[Path]:
    """Write every dashboard as ``<directory>/<stem>.json``; returns the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dash in render_all().items():
        path = out / f"{name}.json"
        path.write_text(to_json(dash), encoding="utf-8")
        paths.append(path)
    return paths


def panel_queries(dash: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(panel title, expr, instant) for every target of a dashboard, rows included."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"], bool(t.get("instant"))))
        for inner in p.get("panels", []):
            for t in inner.get("targets", []):
                out.append((inner["title"], t["expr"], bool(t.get("instant"))))
    return out


_PROMQL_WORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "inf", "nan",
})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (label matchers, grouping, strings and functions removed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)             # string literals
    s = re.sub(r"\{[^}]*\}", "", s)                             # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)                            # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", s)  # label lists
    s = re.sub(r"\$\{?\w+(:\w+)?\}?", "", s)                    # template variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


if __name__ == "__main__":  # python -m paid_telemetry_ops.dashboards [dir]
    import sys

    for written in write_all(sys.argv[1] if len(sys.argv) > 1 else "grafana/dashboards"):
        print(written)
