"""Links that leave the host are authenticated and encrypted (docs/scaling.md), on real binaries:

- a gateway collector (otel-collector/gateway.yaml): OTLP gRPC and HTTP over TLS with a bearer
  token; the SDK sends token and CA through the standard OTEL_EXPORTER_OTLP_* variables;
- Prometheus and Alertmanager with ``--web.config.file`` built from the repository's examples
  (TLS + basic auth with a bcrypt hash); Prometheus scrapes itself and sends alerts to
  Alertmanager with the password from a file and the CA.

Each link refuses a request without (or with wrong) credentials, accepts it with them, and a
client trusting another CA is refused. Certificates, token and password are generated here.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from paid_telemetry_ops.services import REPO, Service, find_binary, free_port
from paid_telemetry_ops.stack import gateway_service, jaeger_service
from tests.promapi import wait_for
from tests.tlsutil import Pki, bcrypt_hash, make_pki, secret_file

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "paid-test")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA that signed nothing the services present: clients trusting only it must fail."""
    return make_pki(tmp_path_factory.mktemp("pki-other"), "stranger")


# -- OTLP into a gateway collector -------------------------------------------------------------
@dataclass
class Gateway:
    svc: Service
    token: str
    jaeger: Service


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Gateway]:
    wd = tmp_path_factory.mktemp("gateway")
    token, token_file = secret_file(wd / "otlp.token")
    jaeger = jaeger_service(wd)
    gw = gateway_service(wd, token_file=token_file, cert_file=pki.cert, key_file=pki.key,
                         jaeger_otlp=f"127.0.0.1:{jaeger.ports['jaeger_otlp']}")
    try:  # stop() is safe on a service that never started or failed to become ready
        jaeger.start()
        gw.start()
        yield Gateway(gw, token, jaeger)
    finally:
        gw.stop()
        jaeger.stop()


def grpc_export(port: int, ca: Path | None, token: str | None) -> grpc.StatusCode:
    """Status of one (empty) OTLP metrics Export over TLS trusting ``ca`` (None: plaintext)."""
    target = f"127.0.0.1:{port}"
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.read_bytes())) if ca \
        else grpc.insecure_channel(target)
    with channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token is not None else None
        try:
            stub.Export(metrics_service_pb2.ExportMetricsServiceRequest(), metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_otlp_grpc_needs_the_token(gateway: Gateway, pki: Pki) -> None:
    port = gateway.svc.ports["otlp_grpc"]
    assert grpc_export(port, pki.ca_cert, None) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(port, pki.ca_cert, "not-the-token") == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_export(port, pki.ca_cert, gateway.token) == grpc.StatusCode.OK


def test_otlp_grpc_refuses_another_ca_and_plaintext(gateway: Gateway, other_ca: Pki) -> None:
    port = gateway.svc.ports["otlp_grpc"]
    assert grpc_export(port, other_ca.ca_cert, gateway.token) == grpc.StatusCode.UNAVAILABLE
    assert grpc_export(port, None, gateway.token) == grpc.StatusCode.UNAVAILABLE


def test_otlp_http_needs_the_token_and_the_right_ca(gateway: Gateway, pki: Pki, other_ca: Pki) -> None:
    url = f"https://127.0.0.1:{gateway.svc.ports['otlp_http']}/v1/metrics"
    proto = {"Content-Type": "application/x-protobuf"}
    body = metrics_service_pb2.ExportMetricsServiceRequest().SerializeToString()
    with httpx.Client(verify=ssl.create_default_context(cafile=pki.ca_cert), timeout=5) as client:
        assert client.post(url, content=body, headers=proto).status_code == 401
        bad = {**proto, "Authorization": "Bearer not-the-token"}
        assert client.post(url, content=body, headers=bad).status_code == 401
        good = {**proto, "Authorization": f"Bearer {gateway.token}"}
        assert client.post(url, content=body, headers=good).status_code == 200
    with httpx.Client(verify=ssl.create_default_context(cafile=other_ca.ca_cert), timeout=5) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.post(url, content=body, headers=good)
    plain = httpx.post(url.replace("https://", "http://"), content=body, headers=good, timeout=5)
    assert plain.status_code == 400  # Go's TLS listener: "Client sent an HTTP request to an HTTPS server"


def refusals(gw: Gateway) -> tuple[float, float]:
    """(gRPC calls answered UNAUTHENTICATED, HTTP requests answered 401) in the gateway's own metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.svc.ports['self']}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    grpc_n = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("rpc_server_call_duration_count{")
                 and 'rpc_response_status_code="UNAUTHENTICATED"' in line)
    http_n = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(
        "http_server_request_duration_count{") and 'http_response_status_code="401"' in line)
    return grpc_n, http_n


def test_refused_requests_are_counted(gateway: Gateway, pki: Pki) -> None:
    before = refusals(gateway)
    for token in (None, "not-the-token", None):
        assert grpc_export(gateway.svc.ports["otlp_grpc"], pki.ca_cert, token) == grpc.StatusCode.UNAUTHENTICATED
    url = f"https://127.0.0.1:{gateway.svc.ports['otlp_http']}/v1/metrics"
    with httpx.Client(verify=ssl.create_default_context(cafile=pki.ca_cert), timeout=5) as client:
        for _ in range(2):
            assert client.post(url, content=b"", headers={"Content-Type": "application/x-protobuf"}).status_code == 401
    def counted() -> tuple[float, float]:
        after = refusals(gateway)
        return after[0] - before[0], after[1] - before[1]

    # recorded as each request ends (the HTTP one just after its response): wait for exactly these
    wait_for(lambda: counted() == (3, 2) or None, timeout=10, what="3 gRPC + 2 HTTP refusals counted")
    assert counted() == (3, 2)


def run_worker(tmp: Path, project: str, runs: int, env: dict[str, str]) -> dict[str, Any]:
    out = tmp / f"{project}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.scale_worker", "--project", project, "--runs", str(runs), "--out", str(out)],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a refused export never breaks the caller
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def gateway_samples(gw: Gateway, name: str) -> dict[str, float]:
    """{project_id: value} of ``name`` on the gateway's Prometheus exporter."""
    url = f"http://127.0.0.1:{gw.svc.ports['prometheus']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {s.labels["project_id"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name}


def test_sdk_sends_token_and_trusts_the_ca_from_standard_variables(
    gateway: Gateway, pki: Pki, tmp_path: Path
) -> None:
    base = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"https://127.0.0.1:{gateway.svc.ports['otlp_grpc']}",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki.ca_cert),
        "PAID_TELEMETRY_EXPORT_TIMEOUT": "3",
    }
    # without the token first: if the gateway took anything from it, it is there before the good run's data
    run_worker(tmp_path, "tls-no-token", 2, base)
    with_token = {**base, "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{gateway.token}"}
    good = run_worker(tmp_path, "tls-ok", 3, with_token)
    samples = wait_for(lambda: gateway_samples(gateway, "paid_agent_runs_total") or None, timeout=20,
                       what="the SDK's runs on the gateway")
    assert samples == {"tls-ok": 3.0}

    def spans() -> set[str] | None:
        url = f"http://127.0.0.1:{gateway.jaeger.ports['jaeger_ui']}/api/traces?service=paid-scale&limit=100"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data = json.loads(resp.read())["data"]
        found = {s["spanID"] for t in data for s in t["spans"]}
        return found if found >= set(good["span_ids"]) else None

    assert wait_for(spans, timeout=20, what="the SDK's spans in Jaeger") == set(good["span_ids"])


# -- Prometheus and Alertmanager with --web.config.file ----------------------------------------
@dataclass
class WebAuth:
    user: str
    password: str
    password_file: Path


def web_config(example: Path, out: Path, pki: Pki, user: str, password: str) -> Path:
    """The repository's example web config with this run's certificate and a bcrypt hash."""
    cfg: dict[str, Any] = yaml.safe_load(example.read_text())
    assert list(cfg["basic_auth_users"]) == [user]
    cfg["tls_server_config"].update(cert_file=str(pki.cert), key_file=str(pki.key))
    cfg["basic_auth_users"] = {user: bcrypt_hash(password)}
    out.write_text(yaml.safe_dump(cfg))
    return out


def https_get(url: str, ca: Path, auth: WebAuth | None, password: str | None = None) -> int:
    """HTTP status of a GET over TLS trusting ``ca``, with basic auth if given."""
    req = urllib.request.Request(url)
    if auth is not None:
        raw = f"{auth.user}:{password if password is not None else auth.password}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(raw).decode())
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def https_ready(url: str, ca: Path, auth: WebAuth) -> bool:
    """Readiness probe: 200 with credentials (connection refused while starting is "not yet")."""
    try:
        return https_get(url, ca, auth) == 200
    except OSError:
        return False


def https_json(url: str, ca: Path, auth: WebAuth) -> Any:
    req = urllib.request.Request(url)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth.user}:{auth.password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=5, context=ssl.create_default_context(cafile=str(ca))) as resp:
        return json.loads(resp.read())


@dataclass
class SecureMonitoring:
    prometheus: str
    alertmanager: str
    prom_auth: WebAuth
    am_auth: WebAuth


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureMonitoring]:
    wd = tmp_path_factory.mktemp("secure-monitoring")
    prom_pw, prom_pw_file = secret_file(wd / "prometheus.password")
    am_pw, am_pw_file = secret_file(wd / "alertmanager.password")
    prom_auth = WebAuth("grafana", prom_pw, prom_pw_file)
    am_auth = WebAuth("prometheus", am_pw, am_pw_file)
    am_port, prom_port = free_port(), free_port()

    am_dir = wd / "alertmanager"
    am_dir.mkdir()
    (am_dir / "alertmanager.yml").write_text(yaml.safe_dump(
        {"route": {"receiver": "null", "group_wait": "1s"}, "receivers": [{"name": "null"}]}))
    am_web = web_config(REPO / "alertmanager" / "web-config.example.yml", am_dir / "web.yml", pki, am_auth.user, am_pw)
    am = Service("alertmanager", [
        find_binary("prometheus-alertmanager"), f"--config.file={am_dir / 'alertmanager.yml'}",
        f"--storage.path={am_dir / 'data'}", f"--web.listen-address=127.0.0.1:{am_port}",
        "--cluster.listen-address=", f"--web.config.file={am_web}",
    ], am_dir, ready=lambda: https_ready(f"https://127.0.0.1:{am_port}/-/ready", pki.ca_cert, am_auth))

    prom_dir = wd / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "always.yml").write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [
        {"alert": "SecureLinkProbe", "expr": "vector(1)", "labels": {"severity": "info"}}]}]}))
    tls = {"ca_file": str(pki.ca_cert)}
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(prom_dir / "always.yml")],
        "alerting": {"alertmanagers": [{
            "scheme": "https", "tls_config": tls,
            "basic_auth": {"username": am_auth.user, "password_file": str(am_pw_file)},
            "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}],
        }]},
        "scrape_configs": [{
            "job_name": "prometheus", "scheme": "https", "tls_config": tls,
            "basic_auth": {"username": prom_auth.user, "password_file": str(prom_pw_file)},
            "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}],
        }],
    }))
    prom_web = web_config(REPO / "prometheus" / "web-config.example.yml", prom_dir / "web.yml", pki,
                          prom_auth.user, prom_pw)
    prom = Service("prometheus", [
        find_binary("prometheus"), f"--config.file={prom_dir / 'prometheus.yml'}",
        f"--storage.tsdb.path={prom_dir / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
        f"--web.config.file={prom_web}",
        # the first notification goes out before the Alertmanager is discovered; resend soon, not in 1 min
        "--rules.alert.resend-delay=1s",
    ], prom_dir, ready=lambda: https_ready(f"https://127.0.0.1:{prom_port}/-/ready", pki.ca_cert, prom_auth))
    try:
        am.start()
        prom.start()
        yield SecureMonitoring(f"https://127.0.0.1:{prom_port}", f"https://127.0.0.1:{am_port}", prom_auth, am_auth)
    finally:
        prom.stop()
        am.stop()


@pytest.mark.parametrize("which", ["prometheus", "alertmanager"])
def test_web_api_needs_basic_auth_over_tls(monitoring: SecureMonitoring, pki: Pki, other_ca: Pki, which: str) -> None:
    base, auth = (monitoring.prometheus, monitoring.prom_auth) if which == "prometheus" \
        else (monitoring.alertmanager, monitoring.am_auth)
    url = base + ("/api/v1/query?query=1" if which == "prometheus" else "/api/v2/status")
    assert https_get(url, pki.ca_cert, None) == 401
    assert https_get(url, pki.ca_cert, auth, password="wrong-password") == 401
    assert https_get(url, pki.ca_cert, auth) == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        https_get(url, other_ca.ca_cert, auth)
    with pytest.raises(urllib.error.HTTPError) as plain:
        urllib.request.urlopen(url.replace("https://", "http://"), timeout=5)
    assert plain.value.code == 400  # TLS only


def test_prometheus_scrapes_itself_and_alerts_over_authenticated_tls(monitoring: SecureMonitoring, pki: Pki) -> None:
    def self_scrape_up() -> list[Any] | None:
        body = https_json(monitoring.prometheus + "/api/v1/query?query=up%7Bjob%3D%22prometheus%22%7D",
                          pki.ca_cert, monitoring.prom_auth)
        result = body["data"]["result"]
        return result if result and result[0]["value"][1] == "1" else None

    wait_for(self_scrape_up, timeout=20, what="Prometheus scraping itself with basic auth over TLS")

    def alert_delivered() -> list[Any] | None:
        alerts = https_json(monitoring.alertmanager + "/api/v2/alerts", pki.ca_cert, monitoring.am_auth)
        return [a for a in alerts if a["labels"].get("alertname") == "SecureLinkProbe"] or None

    wait_for(alert_delivered, timeout=30, what="the alert in Alertmanager, sent with basic auth over TLS")
    notifications = https_json(monitoring.prometheus + "/api/v1/alertmanagers", pki.ca_cert, monitoring.prom_auth)
    assert [am["url"] for am in notifications["data"]["activeAlertmanagers"]] == \
        [monitoring.alertmanager + "/api/v2/alerts"]


# -- the alert on refused credentials, live -----------------------------------------------------
def test_refused_credentials_alert_on_a_real_prometheus(gateway: Gateway, pki: Pki, tmp_path: Path) -> None:
    """TelemetryCredentialsRefused, from the repository's rule file, evaluated by a real Prometheus
    that scrapes a real gateway (tokens refused) and an SDK's /metrics (a wrong password): pending
    for exactly those two targets with exactly the refusals each counted; TelemetryRecordsDropped
    stays quiet (a refused scrape is no dropped record)."""
    import base64

    import paid_telemetry as pt
    from paid_telemetry_ops import dashbench
    from tests.alerting_support import RULES_DIR
    from tests.promapi import query

    _, password_file = secret_file(tmp_path / "metrics.password")
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, service_name="api",
                          prometheus_username="prometheus", prometheus_password_file=str(password_file))
    prom = None
    try:
        sdk_url = handle.prometheus_url or ""
        sdk_target = sdk_url.removeprefix("http://").split("/")[0]
        gw_target = f"127.0.0.1:{gateway.svc.ports['self']}"
        before = refusals(gateway)
        for token in ("stale-token", None):
            assert grpc_export(gateway.svc.ports["otlp_grpc"], pki.ca_cert, token) == grpc.StatusCode.UNAUTHENTICATED
        for wrong in ("wrong", None):
            req = urllib.request.Request(sdk_url)
            if wrong is not None:
                req.add_header("Authorization", "Basic " + base64.b64encode(f"prometheus:{wrong}".encode()).decode())
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=5)
            assert refused.value.code == 401
        # every refusal of this module's tests so far, as the gateway counts them itself
        expected_gw = sum(wait_for(lambda: refusals(gateway) if refusals(gateway)[0] == before[0] + 2 else None,
                                   timeout=10, what="the two refused calls counted by the gateway"))

        config = yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "otel-gateway-self", "static_configs": [{"targets": [gw_target]}]},
                {"job_name": "api", "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
                 "static_configs": [{"targets": [sdk_target]}]},
            ]})
        prom = dashbench.prometheus(tmp_path / "prometheus", config,
                                    rules=(RULES_DIR / "watchers.yml").read_text()).start(60)
        prom_url = f"http://127.0.0.1:{prom.ports['http']}"
        rule = next(r for g in yaml.safe_load((RULES_DIR / "watchers.yml").read_text())["groups"]
                    for r in g["rules"] if r.get("alert") == "TelemetryCredentialsRefused")

        def pending() -> set[tuple[str, str]] | None:
            found = {(a["metric"]["job"], a["metric"]["instance"]) for a in
                     query(prom_url, 'ALERTS{alertname="TelemetryCredentialsRefused",alertstate="pending"}')}
            return found if len(found) == 2 else None

        assert wait_for(pending, timeout=30, what="TelemetryCredentialsRefused pending") == \
            {("otel-gateway-self", gw_target), ("api", sdk_target)}
        values = {(r["metric"]["job"], r["metric"]["instance"]): float(r["value"][1])
                  for r in query(prom_url, rule["expr"])}
        assert values == {("otel-gateway-self", gw_target): expected_gw, ("api", sdk_target): 2.0}
        assert query(prom_url, 'up{job="api"}')[0]["value"][1] == "1"  # Prometheus' own scrape passes
        assert query(prom_url, 'ALERTS{alertname="TelemetryRecordsDropped"}') == []
    finally:
        if prom is not None:
            prom.stop()
        pt.shutdown()
