"""Alerting on real services: the SDK's workload -> real Prometheus (the repository's rules) ->
real Alertmanager (routes and inhibitions of the repository's config) -> a webhook run by the test.

RDR-011 test scenarios 2 (success rate below 50% -> alert) and 3 (daily budget exceeded ->
warning sent), and "notifications reach configured channels": the receiver a notification
arrives on is the one the real route chose.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client

import paid_telemetry as pt
from paid_telemetry.agents import agent_run, record_token_usage
from paid_telemetry_ops import external_metrics
from paid_telemetry_ops.services import Service, find_binary, free_port, http_ok, temporal_server
from tests.alerting_support import RULES_DIR, RUNBOOK_BASE, alertmanager_variant, all_rules, prometheus3, rules_variant
from tests.promapi import get_json, query

pytestmark = pytest.mark.e2e

FAIL_PROJECT, AGENT = "proj-fail", "writer"
BUDGET_PROJECT, BUDGET_CENTS = "proj-budget", 5.0
WAIT = 45.0  # bound on every wait below; the whole test takes about 30 s


class Webhook:
    """A tiny Alertmanager webhook receiver on 127.0.0.1: keeps (receiver, payload) in order."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.received.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, alertname: str, status: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(receiver, alert) for every delivered alert named ``alertname`` (and ``status``)."""
        with self._lock:
            return [(receiver, a) for receiver, payload in self.received for a in payload["alerts"]
                    if a["labels"].get("alertname") == alertname and status in (None, a["status"])]


def wait_until(check: Callable[[], Any], what: str, tick: Callable[[], None] | None = None,
               timeout: float = WAIT) -> Any:
    """Poll ``check`` (running ``tick`` between polls, e.g. more workload) until truthy or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if tick:
            tick()
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def prometheus(workdir: Path, targets: dict[str, str], alertmanager: str | None = None,
               scrape_self: bool = False) -> Service:
    """A real Prometheus (not started) scraping ``targets`` ({job: host:port}) every second.

    It loads the repository's rules with every for: divided by 150 (5m -> 2s, 15m -> 6s; windows,
    thresholds and annotations unchanged): with 1s scrapes and evaluations the test takes seconds,
    not the 5-15 minutes of the real for: durations, and alerts fire in the real order.
    """
    port = free_port()
    rules = rules_variant(workdir / "rules", scale=150)
    if scrape_self:
        targets = {**targets, "prometheus": f"127.0.0.1:{port}"}
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.yml")],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in targets.items()],
    }
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    svc = Service("prometheus", [
        find_binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        # Alerts evaluated before the Alertmanager is discovered are dropped and re-sent after this
        # delay (default 1m, like every for: it is scaled down).
        "--rules.alert.resend-delay=1s",
    ], workdir, ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), ports={"web": port})
    return svc


@pytest.fixture
def telemetry() -> Iterator[pt.Telemetry]:
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                          budgets_cents={BUDGET_PROJECT: BUDGET_CENTS})
    yield handle
    pt.shutdown()


@pytest.fixture
def services(tmp_path: Path, telemetry: pt.Telemetry) -> Iterator[dict[str, Any]]:
    """Webhook, Alertmanager (config derived from the repo's) and Prometheus (repo rules, short for:)."""
    with Webhook() as webhook:
        am_port = free_port()
        am_dir, prom_dir = tmp_path / "alertmanager", tmp_path / "prometheus"
        am_dir.mkdir()
        prom_dir.mkdir()
        (am_dir / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_variant(webhook.url), sort_keys=False))
        am = Service("alertmanager", [
            find_binary("prometheus-alertmanager"), f"--config.file={am_dir / 'alertmanager.yml'}",
            f"--storage.path={am_dir / 'data'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ], am_dir, ready=lambda: http_ok(f"http://127.0.0.1:{am_port}/-/ready"))

        sdk = urllib.parse.urlparse(telemetry.prometheus_url or "")
        prom = prometheus(prom_dir, {"paid-sdk": sdk.netloc, "alertmanager": f"127.0.0.1:{am_port}"},
                          alertmanager=f"127.0.0.1:{am_port}", scrape_self=True)
        try:
            am.start()
            prom.start()
            yield {"webhook": webhook, "prom": f"http://127.0.0.1:{prom.ports['web']}",
                   "am": f"http://127.0.0.1:{am_port}", "prom_svc": prom, "am_svc": am}
        finally:
            prom.stop()
            am.stop()


def run(status: str, *, minutes: float = 0.0) -> None:
    """One agent run through the SDK's own code path. ``minutes`` backdates its start, so the SDK
    records the duration of a run that really took that long (nobody waits 40 minutes)."""
    with agent_run(project_id=FAIL_PROJECT, agent_type=AGENT) as r:
        r._start -= minutes * 60  # private, but the only way to age a run without waiting
        r.status = status


def prom_alert_state(prom: str, name: str) -> str | None:
    for a in get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]:
        if a["labels"]["alertname"] == name:
            return str(a["state"])
    return None


def am_alert(am: str, name: str) -> dict[str, Any] | None:
    url = f"{am}/api/v2/alerts?" + urllib.parse.urlencode({"filter": f'alertname="{name}"'})
    found = get_json(url)
    return found[0] if found else None


def test_alerts_fire_route_inhibit_and_resolve(services: dict[str, Any]) -> None:
    webhook: Webhook = services["webhook"]
    prom, am = services["prom"], services["am"]

    # Counters must exist before they rise: increase() never sees a series' first sample.
    run("completed")
    record_token_usage(project_id=BUDGET_PROJECT, provider="openai", model="gpt-4o",
                       input_tokens=100, output_tokens=10, cost_cents=1.0)
    wait_until(lambda: query(prom, f'paid_cost_cents_total{{project_id="{BUDGET_PROJECT}"}}'),
               "the first scrape of the SDK")

    # Scenario 3: the project passes its 5-cent budget.
    record_token_usage(project_id=BUDGET_PROJECT, provider="openai", model="gpt-4o",
                       input_tokens=5000, output_tokens=500, cost_cents=20.0)

    # Scenario 2: 1 run in 4 completes (and the failing ones take 40 minutes).
    ticks = 0

    def failing_workload() -> None:
        nonlocal ticks
        ticks += 1
        run("completed")
        for _ in range(3):
            run("failed", minutes=40)

    def delivered_and_inhibited() -> bool:
        return bool(webhook.alerts("AgentSuccessRateLow", "firing") and webhook.alerts("DailyBudgetExceeded", "firing")
                    and prom_alert_state(prom, "AgentRunDurationHigh") == "firing"
                    and (am_alert(am, "AgentRunDurationHigh") or {}).get("status", {}).get("inhibitedBy"))

    wait_until(delivered_and_inhibited, "AgentSuccessRateLow and DailyBudgetExceeded delivered, "
               "AgentRunDurationHigh firing but inhibited", tick=failing_workload)

    # The critical went to the on-call receiver, with the rule's exact labels and annotations.
    receiver, alert = webhook.alerts("AgentSuccessRateLow", "firing")[0]
    assert receiver == "oncall"
    assert alert["labels"] == {"alertname": "AgentSuccessRateLow", "severity": "critical", "team": "product",
                               "project_id": FAIL_PROJECT, "agent_type": AGENT}
    assert alert["annotations"]["summary"] == f"Agent success rate below 50% for {AGENT} in project {FAIL_PROJECT}"
    m = re.fullmatch(rf"Only ([\d.]+)% of {AGENT} runs in project {FAIL_PROJECT} completed over the last 5 or 15 "
                     r"minutes \(threshold 50%; (\d+) runs ended in the last 15 minutes\)\.",
                     alert["annotations"]["description"])
    assert m, alert["annotations"]["description"]
    assert 15 <= float(m.group(1)) < 50 and int(m.group(2)) >= 5
    assert alert["annotations"]["runbook_url"] == RUNBOOK_BASE + "AgentSuccessRateLow.md"

    # The budget warning went to the product chat receiver.
    receiver, alert = webhook.alerts("DailyBudgetExceeded", "firing")[0]
    assert receiver == "chat"
    assert alert["labels"] == {"alertname": "DailyBudgetExceeded", "severity": "warning", "team": "product",
                               "project_id": BUDGET_PROJECT}
    assert alert["annotations"]["summary"] == f"Daily budget exceeded for project {BUDGET_PROJECT}"
    m = re.fullmatch(rf"Project {BUDGET_PROJECT} spent (\d+) cents on LLM calls in the last 24 hours, "
                     r"above its daily budget of 5 cents\.", alert["annotations"]["description"])
    # 20 cents were spent after the first scrape; increase() extrapolates a few-seconds-old series
    # by up to an interval at each end, so the young series reads 20 to ~30 (1s scrapes).
    assert m and 20 <= int(m.group(1)) <= 30, alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"] == RUNBOOK_BASE + "DailyBudgetExceeded.md"

    # The warning the page explains: firing in Prometheus, held back by Alertmanager, never sent.
    inhibited = am_alert(am, "AgentRunDurationHigh")
    assert inhibited is not None and inhibited["status"]["state"] == "suppressed"
    source = am_alert(am, "AgentSuccessRateLow")
    assert source is not None and inhibited["status"]["inhibitedBy"] == [source["fingerprint"]]
    time.sleep(3)  # three group intervals: a notification would have gone by now
    assert webhook.alerts("AgentRunDurationHigh") == []

    # Recovery: twice as many successful runs as failed ones -> the success rate passes 50%.
    for _ in range(2 * 3 * ticks):
        run("completed")
    resolved = wait_until(lambda: webhook.alerts("AgentSuccessRateLow", "resolved"),
                          "the resolved notification of AgentSuccessRateLow")
    receiver, alert = resolved[0]
    assert receiver == "oncall"
    assert alert["labels"]["project_id"] == FAIL_PROJECT and alert["labels"]["agent_type"] == AGENT
    assert alert["endsAt"] > alert["startsAt"]

    # With its cause gone the duration warning (still true: p95 over 1h) is no longer inhibited,
    # and goes where warnings of the product team go: proof it was held back by the inhibition.
    late = wait_until(lambda: webhook.alerts("AgentRunDurationHigh", "firing"),
                      "AgentRunDurationHigh delivered once no longer inhibited")
    receiver, alert = late[0]
    assert receiver == "chat"
    assert alert["labels"] == {"alertname": "AgentRunDurationHigh", "severity": "warning", "team": "product",
                               "project_id": FAIL_PROJECT, "agent_type": AGENT}
    assert alert["annotations"]["runbook_url"] == RUNBOOK_BASE + "AgentRunDurationHigh.md"
    assert not services["prom_svc"].tail().count("level=error")


META_ALERTS = ("PrometheusRuleEvaluationFailing", "PrometheusNotificationsFailing",
               "AlertmanagerNotificationsFailing", "MonitoringConfigReloadFailed")


def test_watchdog_heartbeat_and_meta_monitoring(services: dict[str, Any]) -> None:
    """The Watchdog reaches the heartbeat receiver (and nothing else does), again and again; the
    meta-monitoring rules read metric names that exist on these real Prometheus and Alertmanager
    binaries, and stay quiet while the pipeline is healthy."""
    webhook: Webhook = services["webhook"]
    prom = services["prom"]
    first = wait_until(lambda: webhook.alerts("Watchdog", "firing"), "the Watchdog's heartbeat")
    receiver, alert = first[0]
    assert receiver == "heartbeat"
    assert alert["labels"] == {"alertname": "Watchdog", "severity": "none", "team": "platform"}
    assert {r for r, _ in webhook.alerts("Watchdog")} == {"heartbeat"}
    with webhook._lock:
        others = [a["labels"]["alertname"] for r, p in webhook.received if r == "heartbeat" for a in p["alerts"]]
    assert set(others) == {"Watchdog"}

    names = {n for group in ("prometheus (self)", "alertmanager (self)")
             for n in external_metrics.EXTERNAL_METRICS[group]}
    wait_until(lambda: all(query(prom, n) for n in names), f"every meta-monitoring series: {sorted(names)}")
    assert {r["metric"]["integration"] for r in query(prom, "alertmanager_notifications_failed_total")} >= {
        "webhook", "slack", "email", "pagerduty"}
    assert {r["metric"]["rule_group"].rsplit(";", 1)[1]
            for r in query(prom, "prometheus_rule_evaluation_failures_total")} >= {"paid-meta", "paid-agents"}
    # Healthy pipeline: for: has elapsed many times over (5m/150 = 2s), none of them is pending or firing.
    time.sleep(4)
    assert [n for n in META_ALERTS if prom_alert_state(prom, n)] == []


def test_workflow_queue_depth_fires_from_the_real_temporal_backlog(tmp_path: Path) -> None:
    """101 workflows on a task queue nobody polls: the Temporal dev server's own backlog gauge,
    scraped by Prometheus, fires WorkflowQueueDepthHigh with the queue's labels; 100 would not."""
    # The gauge is emitted every matching.backlogMetricsEmitInterval (default 1m): 1s for the test.
    temporal = temporal_server(tmp_path / "temporal", backlog_interval="1s")
    prom = prometheus(tmp_path / "prometheus", {"temporal": f"127.0.0.1:{temporal.ports['metrics']}"})
    try:
        temporal.start()
        prom.start()
        url = f"http://127.0.0.1:{prom.ports['web']}"

        async def start(n: int, queue: str) -> None:
            client = await Client.connect(f"127.0.0.1:{temporal.ports['grpc']}")
            await asyncio.gather(*(client.start_workflow("NobodyRunsThis", id=f"{queue}-{i}", task_queue=queue)
                                   for i in range(n)))

        asyncio.run(start(101, "agent-backlog"))
        asyncio.run(start(100, "just-full"))

        def firing() -> list[dict[str, Any]]:
            return [a for a in get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
                    if a["labels"]["alertname"] == "WorkflowQueueDepthHigh" and a["state"] == "firing"]

        alerts = wait_until(firing, "WorkflowQueueDepthHigh firing from approximate_backlog_count")
        # Both queues are in the sum (the server sanitises '-' to '_' in the label), only one fires.
        # The server refreshes each partition's approximate count on its own schedule: wait for both.
        expected = {"agent_backlog": 101.0, "just_full": 100.0}

        def depth() -> dict[str, float] | None:
            got = {r["metric"]["taskqueue"]: float(r["value"][1])
                   for r in query(url, 'job_taskqueue:approximate_backlog_count:sum{namespace="default"}')}
            return got if got == expected else None

        assert wait_until(depth, "both backlogs at their exact size") == expected
        alerts = firing()
        assert [a["labels"] for a in alerts] == [{
            "alertname": "WorkflowQueueDepthHigh", "severity": "warning", "team": "product", "job": "temporal",
            "namespace": "default", "taskqueue": "agent_backlog", "task_type": "Workflow",
        }]
        assert alerts[0]["annotations"]["summary"] == (
            "Temporal task queue agent_backlog has a backlog of 101 Workflow tasks")
    finally:
        prom.stop()
        temporal.stop()


def test_target_down_inhibits_only_its_own_instance(tmp_path: Path) -> None:
    """The repository's inhibition on a real Alertmanager: TargetDown for node-exporter on host A
    mutes host A's disk warning, never host B's (equal: [job, instance])."""
    with Webhook() as webhook:
        port = free_port()
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_variant(webhook.url), sort_keys=False))
        am = Service("alertmanager", [
            find_binary("prometheus-alertmanager"), f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ], tmp_path, ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"))
        url = f"http://127.0.0.1:{port}"
        try:
            am.start()
            platform = {"severity": "warning", "team": "platform", "job": "node"}
            alerts = [
                {"alertname": "TargetDown", **platform, "instance": "host-a:9100"},
                {"alertname": "DiskUsageHigh", **platform, "instance": "host-a:9100", "mountpoint": "/"},
                {"alertname": "DiskUsageHigh", **platform, "instance": "host-b:9100", "mountpoint": "/"},
            ]
            body = json.dumps([{"labels": labels, "annotations": {"summary": "test"}} for labels in alerts]).encode()
            req = urllib.request.Request(f"{url}/api/v2/alerts", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200

            def states() -> dict[str, dict[str, Any]] | None:
                found = {a["labels"]["alertname"] + "@" + a["labels"]["instance"]: a
                         for a in get_json(f"{url}/api/v2/alerts")}
                return found if len(found) == 3 and all(a["status"]["state"] != "unprocessed"
                                                        for a in found.values()) else None

            # The API computes a state on each read, and the inhibitor learns of the posted TargetDown
            # asynchronously (CI once read host A's warning as "active" 40 ms after the POST): wait
            # for the inhibition to take hold; without it this times out.
            def inhibited() -> dict[str, dict[str, Any]] | None:
                found = states()
                return found if found and found["DiskUsageHigh@host-a:9100"]["status"]["state"] == "suppressed" \
                    else None

            found = wait_until(inhibited, "host A's disk warning inhibited by its TargetDown")
            source = found["TargetDown@host-a:9100"]
            assert found["DiskUsageHigh@host-a:9100"]["status"]["state"] == "suppressed"
            assert found["DiskUsageHigh@host-a:9100"]["status"]["inhibitedBy"] == [source["fingerprint"]]
            assert found["DiskUsageHigh@host-b:9100"]["status"] == {
                "state": "active", "inhibitedBy": [], "silencedBy": []}
            delivered = wait_until(lambda: webhook.alerts("DiskUsageHigh", "firing"), "host B's disk warning delivered")
            assert [(r, a["labels"]["instance"]) for r, a in delivered] == [("platform-chat", "host-b:9100")]
            time.sleep(3)  # three group intervals: host A's would have gone by now
            assert [a["labels"]["instance"] for _, a in webhook.alerts("DiskUsageHigh")] == ["host-b:9100"]
        finally:
            am.stop()


def test_prometheus3_loads_and_evaluates_every_rule(tmp_path: Path) -> None:
    """The repository's rule files, unchanged, on a real Prometheus 3 (built from Go modules, the
    major docker-compose ships): every rule loads, evaluates without error, and the Watchdog fires."""
    binary = prometheus3()["prometheus"]
    port = free_port()
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "rule_files": [str(RULES_DIR / "*.yml")],
           "scrape_configs": [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    url = f"http://127.0.0.1:{port}"
    prom = Service("prometheus3", [
        binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], tmp_path, ready=lambda: http_ok(f"{url}/-/ready"))
    try:
        prom.start()

        def evaluated() -> list[dict[str, Any]] | None:
            rules = [r for g in get_json(f"{url}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            return rules if rules and all(r["health"] != "unknown" for r in rules) else None

        rules = wait_until(evaluated, "every rule evaluated once")
        assert len(rules) == len(all_rules())
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        firing = [a["labels"]["alertname"] for a in get_json(f"{url}/api/v1/alerts")["data"]["alerts"]
                  if a["state"] == "firing"]
        assert "Watchdog" in firing
    finally:
        prom.stop()
