"""Alert rules, runbooks and Alertmanager routing, checked with the real promtool and amtool
(no services started: these are static checks and promtool's own rule-unit-test engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from paid_telemetry.catalogue import CATALOGUE
from paid_telemetry.settings import Settings
from paid_telemetry_ops import external_metrics
from paid_telemetry_ops.services import find_binary
from tests.alerting_support import (
    AM_CONFIG,
    AM_DIR,
    PROM_TESTS_DIR,
    REPO,
    RULES_DIR,
    RUNBOOK_BASE,
    RUNBOOKS,
    alert_rules,
    alertmanager_variant,
    all_rules,
    metric_names,
    prometheus3,
    recorded_names,
    rule_files,
    rules_variant,
    seconds,
)

SEVERITY = {
    # RDR-011's critical alerts...
    "AgentSuccessRateLow": "critical",
    "WorkflowFailureRateHigh": "critical",
    "PostgresConnectionsExhausted": "critical",
    "ContainerOOMKilled": "critical",
    "HostOOMKill": "critical",
    # ...except token spend: the record's rule and test scenario 3 make it a warning.
    "DailyBudgetExceeded": "warning",
    "UnattributedSpend": "warning",
    "AgentRunDurationHigh": "warning",
    "WorkflowQueueDepthHigh": "warning",
    "ExternalApiErrorRateHigh": "warning",
    "DiskUsageHigh": "warning",
    # watching the watchers
    "TargetDown": "warning",
    "CollectorRefusingData": "warning",
    "CollectorExportFailing": "warning",
    "TelemetryRecordsDropped": "warning",
    "TelemetrySpansDropped": "warning",
    "TelemetryCredentialsRefused": "warning",
    # silence is not health: absence and meta-monitoring
    "AgentRunsStopped": "critical",
    "TelemetryNotReceived": "warning",
    "PrometheusRuleEvaluationFailing": "warning",
    "PrometheusNotificationsFailing": "critical",
    "AlertmanagerNotificationsFailing": "critical",
    "MonitoringConfigReloadFailed": "warning",
    # always firing: the heartbeat to the external dead man's switch, never to people
    "Watchdog": "none",
}
HEARTBEAT = "Watchdog"
# for: of at least 5 minutes against flapping, except where a window re-derived from RDR-011's
# "fires within 5 minutes" needs less (the 5-minute window and the 5-run minimum smooth it).
FOR_AT_LEAST = {"AgentSuccessRateLow": 120}
# Events, not states: an OOM kill is never a flap, it pages at once. The Watchdog is always true.
NO_FOR = {"ContainerOOMKilled", "HostOOMKill", HEARTBEAT}
CATALOGUE_SERIES = {s for inst in CATALOGUE for s in inst.prometheus_series}
RECEIVER = {("critical", "product"): "oncall", ("critical", "platform"): "oncall",
            ("warning", "product"): "chat", ("warning", "platform"): "platform-chat"}
RUNBOOK_SECTIONS = ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation", "## No traffic")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_binary(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120, cwd=REPO)


# -- rules ----------------------------------------------------------------------------------


def test_rule_files_one_per_domain() -> None:
    assert [p.name for p in rule_files()] == [
        "agents.yml", "costs.yml", "external_apis.yml", "infrastructure.yml", "meta.yml", "watchers.yml",
        "workflows.yml",
    ]


def test_promtool_check_rules() -> None:
    proc = run("promtool", "check", "rules", *map(str, rule_files()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout))
    assert found == len(all_rules())


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(PROM_TESTS_DIR.glob("*_test.yml"))
    assert {t.name.removesuffix("_test.yml") for t in tests} == {p.stem for p in rule_files()}
    proc = run("promtool", "test", "rules", *map(str, tests))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(tests)


def test_exactly_the_expected_alerts() -> None:
    assert set(alert_rules()) == set(SEVERITY)


@pytest.mark.parametrize("name", sorted(SEVERITY))
def test_alert_metadata_and_runbook(name: str) -> None:
    rule = alert_rules()[name]
    assert rule["labels"]["severity"] == SEVERITY[name]
    assert rule["labels"]["team"] in {"product", "platform"}
    ann = rule["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}
    assert ann["summary"].strip() and ann["description"].strip()
    assert "$value" in ann["summary"] + ann["description"] or "$labels" in ann["description"]
    assert ann["runbook_url"] == f"{RUNBOOK_BASE}{name}.md"
    if name in NO_FOR:
        assert "for" not in rule
    else:
        assert seconds(rule["for"]) >= FOR_AT_LEAST.get(name, 300), "a for: against flapping"
    runbook = (RUNBOOKS / f"{name}.md").read_text()
    assert runbook.startswith(f"# {name}\n")
    positions = [runbook.find(section) for section in RUNBOOK_SECTIONS]
    assert -1 not in positions and positions == sorted(positions), f"{name}: sections {RUNBOOK_SECTIONS}"
    assert "```promql" in runbook, "diagnosis gives PromQL to run"
    assert f"`{SEVERITY[name]}`" in runbook


def test_budget_runbook_explains_the_severity_choice() -> None:
    text = (RUNBOOKS / "DailyBudgetExceeded.md").read_text()
    assert "critical" in text and "warning" in text and "RDR-011" in text


def test_no_runbook_without_an_alert() -> None:
    assert {p.stem for p in RUNBOOKS.glob("*.md")} == set(SEVERITY)


def test_metric_name_extraction() -> None:
    expr = ('sum by (project_id, le) (rate(paid_x_bucket{status=~"a|b",le="1e9"}[5m] offset 10m))'
            ' / on (project_id) group_left(team) rec:name:ratio > 1e9 and bool up unless absent(other_metric)')
    assert metric_names(expr) == {"paid_x_bucket", "rec:name:ratio", "up", "other_metric"}


def test_every_metric_in_rules_is_catalogued_or_documented() -> None:
    records = recorded_names()
    known = CATALOGUE_SERIES | external_metrics.ALL | records
    for rule in all_rules():
        names = metric_names(rule["expr"])
        for text in rule.get("annotations", {}).values():  # template queries
            for fmt in re.findall(r'printf "((?:[^"\\]|\\.)*)"', text):
                names |= metric_names(fmt.replace("%q", '""'))
        unknown = {n for n in names if n not in known and not re.fullmatch(r"%\.\d+f|%s", n)}
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: {unknown}"


def test_every_recording_rule_is_used() -> None:
    used = set()
    for rule in all_rules():
        used |= metric_names(rule["expr"])
        used |= set(re.findall(r"[a-z_]+:[a-z0-9_:]+", " ".join(rule.get("annotations", {}).values())))
    assert recorded_names() <= used


def _unit_cases() -> dict[str, dict[str, list[tuple[int, Any, bool]]]]:
    """alertname -> test-group id -> [(eval seconds, expected alerts, group has input)]."""
    cases: dict[str, dict[str, list[tuple[int, Any, bool]]]] = {}
    for path in sorted(PROM_TESTS_DIR.glob("*_test.yml")):
        for i, group in enumerate(yaml.safe_load(path.read_text())["tests"]):
            for check in group.get("alert_rule_test", []):
                entry = (int(seconds(check["eval_time"])), check.get("exp_alerts") or [], bool(group["input_series"]))
                cases.setdefault(check["alertname"], {}).setdefault(f"{path.name}#{i}", []).append(entry)
    return cases


def test_watchdog_fires_always_even_without_traffic() -> None:
    groups = _unit_cases()[HEARTBEAT]
    checks = [c for group in groups.values() for c in group]
    assert checks and all(exp for _, exp, _ in checks)
    assert any(t == 0 for t, _, _ in checks), "fires from the first evaluation"
    assert any(not has_input for _, _, has_input in checks), "fires with no series at all"
    assert alert_rules()[HEARTBEAT]["expr"].strip() == "vector(1)"


@pytest.mark.parametrize("name", sorted(set(SEVERITY) - {HEARTBEAT}))
def test_every_alert_has_fire_no_fire_and_no_traffic_cases(name: str) -> None:
    groups = _unit_cases().get(name, {})
    firing = [(g, t, exp) for g, checks in groups.items() for t, exp, _ in checks if exp]
    assert firing, f"{name}: no case where it fires"
    for _, _, exp in firing:
        for alert in exp:
            assert alert["exp_labels"]["severity"] == SEVERITY[name]
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
    # Just before it fires (pending through for:, or before the event): an earlier empty check.
    assert any(t < ft and not exp for g, ft, _ in firing for t, exp, _ in groups[g]), f"{name}: no 'not yet' case"
    # No traffic: a group where it never fires.
    assert any(all(not exp for _, exp, _ in checks) for checks in groups.values()), f"{name}: no no-traffic case"


DROPPED_INCREASE = 'increase(paid_telemetry_dropped_records_total{reason!~"no_usage|unauthorized|tls_handshake"}[10m])'
MUTATIONS = [
    # (file, original, mutated): each must make promtool's unit tests fail, or the tests do not bite.
    ("agents.yml", "paid_agent_success:ratio15m < 0.5", "paid_agent_success:ratio15m < 0.2"),
    ("agents.yml", "paid_agent_success:ratio5m < 0.5", "paid_agent_success:ratio5m < 0.2"),
    ("agents.yml", "increase5m >= 5", "increase5m >= 500"),
    ("agents.yml", "or project_agent:paid_agent_runs:increase15m * 0", "or vector(0) * 0 > 1"),
    # First sample of a new series (deploy mid-window): counted whole, or bursts are lost.
    ("agents.yml", "(paid_agent_runs_total unless paid_agent_runs_total offset 15m)",
     "(paid_agent_runs_total unless paid_agent_runs_total)"),
    ("costs.yml", "(paid_cost_cents_total unless paid_cost_cents_total offset 24h)",
     "(paid_cost_cents_total unless paid_cost_cents_total)"),
    ("workflows.yml", "(paid_workflow_completed_total unless paid_workflow_completed_total offset 15m)",
     "(paid_workflow_completed_total unless paid_workflow_completed_total)"),
    ("external_apis.yml", "(paid_external_api_requests_total unless paid_external_api_requests_total offset 10m)",
     "(paid_external_api_requests_total unless paid_external_api_requests_total)"),
    # ...but not after a gap (or Prometheus' first start), when every series looks new: lifetime totals.
    ("agents.yml", "and on () group(paid_agent_runs_total offset 15m))", ")"),
    ("agents.yml", "increase15m >= 5", "increase15m >= 1"),
    ("costs.yml", "paid_cost_cents:increase24h * 0 + 10000", "paid_cost_cents:increase24h * 0 + 1e9"),
    # One budget per project: the smallest; _overflow is no project.
    ("costs.yml", "min by (project_id) (paid_project_daily_budget_cents",
     "max by (project_id) (paid_project_daily_budget_cents"),
    ("costs.yml", 'project:paid_cost_cents:increase24h{project_id!="_overflow"}',
     "project:paid_cost_cents:increase24h"),
    ("workflows.yml", 'status=~"completed|failed|timed_out"}', 'status!="continued_as_new"}'),
    ("workflows.yml", 'status=~"completed|failed|timed_out"}', 'status!="nothing"}'),
    ("workflows.yml", 'increase(workflow_timeout{namespace!="temporal_system"}[15m])',
     "increase(workflow_timeout[15m])"),
    ("workflows.yml", '(workflow_timeout{namespace!="temporal_system"} unless workflow_timeout offset 15m)',
     "(workflow_timeout unless workflow_timeout)"),
    ("workflows.yml", 'taskqueue!~"temporal_sys_.*"', 'taskqueue!="x"'),
    ("workflows.yml", 'approximate_backlog_count{namespace!="temporal_system"',
     'approximate_backlog_count{namespace!="x"'),
    ("external_apis.yml", "ratio10m > 0.05", "ratio10m >= 0.05"),
    ("infrastructure.yml", "unless on (job, instance, device, mountpoint) node_filesystem_readonly == 1", ""),
    ("infrastructure.yml", "> on () (sum(increase(container_oom_events_total[10m])) or vector(0))",
     "> on () vector(0)"),
    ("watchers.yml", "or\n          sum by (instrument, reason) (paid_telemetry_dropped_records_total"
                     '{reason!~"no_usage|unauthorized|tls_handshake"} unless paid_telemetry_dropped_records_total '
                     "offset 10m) > 0", ""),
    # the no_usage exclusion (failed LLM calls are expected, not a caller bug); refused scrapes are
    # TelemetryCredentialsRefused's
    ("watchers.yml", DROPPED_INCREASE,
     'increase(paid_telemetry_dropped_records_total{reason!="no_usage"}[10m])'),
    ("watchers.yml", DROPPED_INCREASE,
     "increase(paid_telemetry_dropped_records_total[10m])"),
    # TelemetryCredentialsRefused: a refusal series new in the window counts whole; accepted calls never count.
    ("watchers.yml", 'unless rpc_server_call_duration_count offset 10m)', "unless rpc_server_call_duration_count)"),
    ("watchers.yml", 'increase(http_server_request_duration_count{http_response_status_code="401"}[10m])',
     "increase(http_server_request_duration_count[10m])"),
    ("watchers.yml", 'reason=~"unauthorized|tls_handshake"}[10m])', 'reason=~"unauthorized"}[10m])'),
    ("watchers.yml", "up == 0\n        for: 5m", "up == 0\n        for: 1m"),
    # TelemetrySpansDropped: a loss series new in the window counts whole; successful exports never count.
    ("watchers.yml", "unless otel_sdk_processor_span_processed_total offset 10m)",
     "unless otel_sdk_processor_span_processed_total)"),
    ("watchers.yml", "unless otel_sdk_exporter_span_exported_total offset 10m)",
     "unless otel_sdk_exporter_span_exported_total)"),
    ("watchers.yml", 'increase(otel_sdk_exporter_span_exported_total{error_type!=""}[10m])',
     "increase(otel_sdk_exporter_span_exported_total[10m])"),
    # Absence: a collector nobody ever pushed to has no accepted_* series; a new worker's first runs count.
    ("watchers.yml", 'or sum by (job, instance) (otelcol_process_uptime{job!="otel-gateway-self"}) * 0', ""),
    # ...but a gateway without metrics routed to it is no outage (scale topology)
    ("watchers.yml", 'otelcol_process_uptime{job!="otel-gateway-self"}', "otelcol_process_uptime"),
    ("watchers.yml", 'otelcol_receiver_accepted_metric_points{job!="otel-gateway-self"}',
     "otelcol_receiver_accepted_metric_points"),
    ("agents.yml", '(paid_agent_runs_total{status="completed"} unless paid_agent_runs_total{status="completed"} '
                   'offset 15m)', '(paid_agent_runs_total unless paid_agent_runs_total)'),
    ("agents.yml", 'offset 15m)) >= 60', 'offset 15m)) >= 30'),
    ("meta.yml", "max by (job, instance) (prometheus_notifications_alertmanagers_discovered) < 1",
     "max by (job, instance) (prometheus_notifications_alertmanagers_discovered) < 0"),
    ("meta.yml", "expr: vector(1)", "expr: vector(1) unless on () prometheus_config_last_reload_successful"),
]


@pytest.mark.parametrize(("file", "original", "mutated"), MUTATIONS,
                         ids=[f"{m[0]}:{i}" for i, m in enumerate(MUTATIONS)])
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, file: str, original: str, mutated: str) -> None:
    shutil.copytree(RULES_DIR, tmp_path / "rules")
    shutil.copytree(PROM_TESTS_DIR, tmp_path / "tests")
    target = tmp_path / "rules" / file
    text = target.read_text()
    assert text.count(original) == 1, f"mutation anchor not found once in {file}: {original!r}"
    target.write_text(text.replace(original, mutated))
    test_file = tmp_path / "tests" / file.replace(".yml", "_test.yml")
    proc = run("promtool", "test", "rules", str(test_file))
    assert proc.returncode != 0, f"promtool tests still pass with {original!r} -> {mutated!r}"


def test_live_rules_variant_only_scales_for(tmp_path: Path) -> None:
    variant = rules_variant(tmp_path, scale=150)
    proc = run("promtool", "check", "rules", *map(str, sorted(variant.glob("*.yml"))))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for path in rule_files():
        real = yaml.safe_load(path.read_text())
        test = yaml.safe_load((variant / path.name).read_text())
        for rg, tg in zip(real["groups"], test["groups"], strict=True):
            for r, t in zip(rg["rules"], tg["rules"], strict=True):
                assert {k: v for k, v in r.items() if k != "for"} == {k: v for k, v in t.items() if k != "for"}
                if "for" in r:
                    assert seconds(t["for"]) == max(1, round(seconds(r["for"]) / 150))


# -- Alertmanager ---------------------------------------------------------------------------


def test_amtool_check_config() -> None:
    proc = run("amtool", "check-config", str(AM_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " - 4 receivers" in proc.stdout and " - 1 templates" in proc.stdout
    assert " - 3 inhibit rules" in proc.stdout


def test_derived_test_config_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(alertmanager_variant("http://127.0.0.1:9/hook")))
    proc = run("amtool", "check-config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def route(*labels: str) -> str:
    proc = run("amtool", "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize(("severity", "team"), sorted(RECEIVER))
def test_routes_by_severity_and_team(severity: str, team: str) -> None:
    assert route("alertname=Any", f"severity={severity}", f"team={team}", "project_id=p1") == RECEIVER[severity, team]


def test_unlabelled_alert_still_reaches_chat() -> None:
    assert route("alertname=Unknown") == "chat"


@pytest.mark.parametrize("name", sorted(SEVERITY))
def test_every_alert_routes_to_its_receiver(name: str) -> None:
    labels = alert_rules()[name]["labels"]
    got = route(f"alertname={name}", f"severity={labels['severity']}", f"team={labels['team']}")
    assert got == ("heartbeat" if name == HEARTBEAT else RECEIVER[labels["severity"], labels["team"]])


def test_heartbeat_route_repeats_every_minute_and_takes_only_the_watchdog() -> None:
    """The dead man's switch must hear from Alertmanager every minute, and nothing else may reach it
    (a page routed there would reach nobody)."""
    routes = yaml.safe_load(AM_CONFIG.read_text())["route"]["routes"]
    first = routes[0]
    assert first["matchers"] == [f'alertname="{HEARTBEAT}"'] and first["receiver"] == "heartbeat"
    assert not first.get("continue")
    assert seconds(first["repeat_interval"]) <= 60 and seconds(first["group_interval"]) <= 60
    assert all(r["receiver"] != "heartbeat" for r in routes[1:])
    assert route("alertname=Other", "severity=none", "team=platform") == "chat"


def test_grouping_and_timers() -> None:
    cfg = yaml.safe_load(AM_CONFIG.read_text())
    root = cfg["route"]
    assert root["group_by"] == ["alertname", "project_id"]
    assert (root["group_wait"], root["group_interval"], root["repeat_interval"]) == ("30s", "5m", "4h")
    critical = next(r for r in root["routes"] if r["matchers"] == ['severity="critical"'])
    assert seconds(critical["repeat_interval"]) < seconds(root["repeat_interval"])


def test_inhibitions_name_real_alerts() -> None:
    names = set(alert_rules())
    for rule in yaml.safe_load(AM_CONFIG.read_text())["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            m = re.fullmatch(r'alertname(=~?|!=)"(.*)"', matcher)
            if m:
                assert set(m.group(2).split("|")) <= names, matcher
    # Per instance: TargetDown on host A must never mute host B (live proof in test_alerting_live.py).
    target_down = [r for r in yaml.safe_load(AM_CONFIG.read_text())["inhibit_rules"]
                   if r["source_matchers"] == ['alertname="TargetDown"']]
    assert target_down and all({"job", "instance"} <= set(r["equal"]) for r in target_down)
    first = yaml.safe_load(AM_CONFIG.read_text())["inhibit_rules"][0]
    assert first == {"source_matchers": ['alertname="AgentSuccessRateLow"'],
                     "target_matchers": ['alertname="AgentRunDurationHigh"'], "equal": ["project_id", "agent_type"]}


def test_no_secret_in_the_config() -> None:
    text = AM_CONFIG.read_text()
    cfg = yaml.safe_load(text)

    def keys(node: Any, path: str = "") -> list[tuple[str, Any]]:
        if isinstance(node, dict):
            return [kv for k, v in node.items() for kv in [(k, v), *keys(v, k)]]
        if isinstance(node, list):
            return [kv for item in node for kv in keys(item, path)]
        return []

    secret_keys = {"api_url", "slack_api_url", "auth_password", "smtp_auth_password", "routing_key",
                   "service_key", "auth_secret", "smtp_auth_secret", "credentials", "password"}
    found = [k for k, _ in keys(cfg) if k in secret_keys]
    assert not found, f"secrets must come from *_file settings: {found}"
    # The heartbeat's URL is an address, not a credential: no user info, no query token; the
    # bearer token is a file.
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(hook["url"])
            assert url.scheme == "https" and not url.username and not url.password and not url.query, hook["url"]
            assert hook["http_config"]["authorization"]["credentials_file"].startswith("/run/secrets/")
    doc = (REPO / "docs" / "alerting.md").read_text()
    for key, value in keys(cfg):
        if key.endswith("_file"):
            assert str(value).startswith("/run/secrets/") and str(value) in doc, f"{key}: {value} undocumented"


@pytest.mark.parametrize("template", ["paid.title", "paid.text", "paid.email.html"])
def test_notification_templates_render(template: str) -> None:
    proc = run("amtool", "template", "render", f"--template.glob={AM_DIR / 'templates' / '*.tmpl'}",
               f"--template.text={{{{ template \"{template}\" . }}}}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip()
    if template != "paid.title":
        assert "commonlabelkey1=commonlabelvalue1" in proc.stdout  # the labels of amtool's example alerts


def test_collector_expiry_matches_scrape_and_for_windows() -> None:
    """A dead process's series must leave the collector's /metrics before they can hold an alert
    open (or look like health) for longer than one for:, and a live one must never expire."""
    collector = yaml.safe_load((REPO / "otel-collector" / "config.yaml").read_text())
    expiry = seconds(collector["exporters"]["prometheus"]["metric_expiration"])
    scrape = seconds(yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]["scrape_interval"])
    export = Settings().metric_export_interval_ms / 1000
    assert expiry >= 10 * export and expiry >= 4 * scrape, "a live series would flicker out"
    assert expiry <= 300, "longer than Prometheus' 5m lookback: a dead worker still looks alive"
    for name in ("TelemetryNotReceived", "AgentRunsStopped"):
        assert expiry <= seconds(alert_rules()[name]["for"]), name


# -- Prometheus 3 (the major docker-compose ships), built from Go modules ----------------------


@pytest.fixture(scope="module")
def prom3() -> dict[str, str]:
    return prometheus3()


def test_prometheus3_checks_and_unit_tests_the_same_rules(prom3: dict[str, str], tmp_path: Path) -> None:
    version = subprocess.run([prom3["promtool"], "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0
    proc = subprocess.run([prom3["promtool"], "check", "rules", *map(str, rule_files())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", proc.stdout)) == len(all_rules())
    tests = sorted(PROM_TESTS_DIR.glob("*_test.yml"))
    proc = subprocess.run([prom3["promtool"], "test", "rules", *map(str, tests)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(tests)
    # The compose config itself (rules from the repository instead of /etc/prometheus).
    cfg = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    cfg["rule_files"] = [str(RULES_DIR / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([prom3["promtool"], "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
