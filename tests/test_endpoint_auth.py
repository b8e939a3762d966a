"""Optional basic auth and TLS on the embedded /metrics endpoint (issue 15): refused without
credentials or trust, counted, and scraped by a real Prometheus 2.42 with ``password_file`` and
``ca_file``. Certificates and secrets are generated per run (tests/tlsutil.py)."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import paid_telemetry as pt
from paid_telemetry_ops import dashbench
from tests.promapi import query, wait_for
from tests.tlsutil import Pki, make_pki, secret_file


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def _get(url: str, password: str | None, ctx: ssl.SSLContext | None, user: str = "prometheus") -> tuple[int, str, Any]:
    req = urllib.request.Request(url)
    if password is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def _refused(handle: pt.Telemetry) -> dict[str, float]:
    """paid_telemetry_dropped_records_total{instrument="prometheus_endpoint"} by reason, read in-process."""
    reader = handle.providers.endpoint.reader
    body = reader.body().decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith('paid_telemetry_dropped_records_total{instrument="prometheus_endpoint"'):
            reason = line.split('reason="')[1].split('"')[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def test_basic_auth_and_tls_refuse_count_and_a_real_prometheus_scrapes(tmp_path: Path, pki: Pki) -> None:
    other = make_pki(tmp_path / "other", "stranger")
    password, password_file = secret_file(tmp_path / "metrics.password")
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, service_name="secured",
                          prometheus_username="prometheus", prometheus_password_file=str(password_file),
                          prometheus_tls_cert_file=str(pki.cert), prometheus_tls_key_file=str(pki.key))
    prom = None
    try:
        url = handle.prometheus_url or ""
        assert url.startswith("https://127.0.0.1:")
        with pt.agent_run(project_id="tls", agent_type="coder"):
            pass
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))

        status, _, headers = _get(url, None, ctx)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="paid-telemetry", charset="UTF-8"'
        assert _get(url, "wrong", ctx)[0] == 401
        assert _get(url, password, ctx, user="someone")[0] == 401
        assert _get(url, password + "x", ctx)[0] == 401
        status, body, _ = _get(url, password, ctx)
        assert status == 200
        assert 'paid_agent_runs_total{agent_type="coder",project_id="tls",status="completed"} 1\n' in body
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(url, password, ssl.create_default_context(cafile=str(other.ca_cert)))
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
            urllib.request.urlopen(url.replace("https://", "http://"), timeout=5).read()  # plaintext
        # 4 refused requests; 2 failed handshakes (the distrusting client, the plaintext one)
        assert wait_for(lambda: _refused(handle) if _refused(handle).get("tls_handshake") == 2 else None,
                        timeout=10, what="both failed handshakes counted") == {"unauthorized": 4, "tls_handshake": 2}

        target = url.removeprefix("https://").split("/")[0]
        config = yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [{
            "job_name": "secured", "scheme": "https", "tls_config": {"ca_file": str(pki.ca_cert)},
            "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
            "static_configs": [{"targets": [target]}]}]})
        prom = dashbench.prometheus(tmp_path / "prometheus", config).start(60)
        prom_url = f"http://127.0.0.1:{prom.ports['http']}"
        runs = wait_for(lambda: query(prom_url, 'paid_agent_runs_total{job="secured"}') or None, timeout=30,
                        what="Prometheus scraping the secured endpoint")
        assert [(r["metric"]["project_id"], r["value"][1]) for r in runs] == [("tls", "1")]
        refused = query(prom_url, 'paid_telemetry_dropped_records_total{job="secured",'
                                  'instrument="prometheus_endpoint"}')
        assert {r["metric"]["reason"]: r["value"][1] for r in refused} == {"unauthorized": "4", "tls_handshake": "2"}
        assert query(prom_url, 'up{job="secured"}')[0]["value"][1] == "1"
    finally:
        if prom is not None:
            prom.stop()
        pt.shutdown()


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def test_basic_auth_without_tls_and_head(tmp_path: Path) -> None:
    """Basic auth alone (e.g. behind a TLS-terminating proxy): HEAD is refused the same way."""
    password, password_file = secret_file(tmp_path / "pw")
    handle = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False,
                          prometheus_username="scraper", prometheus_password_file=str(password_file))
    try:
        url = handle.prometheus_url or ""
        assert url.startswith("http://127.0.0.1:")
        assert _get(url, None, None)[0] == 401
        assert _get(url, password, None, user="scraper")[0] == 200
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5)
        assert err.value.code == 401
        # the body is rendered on demand with a bounded age: the one served to the good scrape
        # above may still be current, so wait for a render that has the HEAD's refusal
        assert wait_for(lambda: _refused(handle) if _refused(handle).get("unauthorized") == 2 else None,
                        timeout=10, what="both refusals in a fresh body") == {"unauthorized": 2}
    finally:
        pt.shutdown()


def test_stalled_tls_handshakes_hold_no_threads(tmp_path: Path, pki: Pki) -> None:
    """100 clients that connect and never finish (or never start) the handshake: a real scrape is
    answered meanwhile, no handler thread is taken, and the server closes them after its read timeout."""
    from opentelemetry.sdk.metrics import MeterProvider

    from paid_telemetry.export.prometheus import EmbeddedPrometheusReader, serve, tls_context

    reader = EmbeddedPrometheusReader()
    MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("c").add(7)
    server = serve(reader, "127.0.0.1", 0, max_threads=4, read_timeout_s=1.0,
                   tls=tls_context(str(pki.cert), str(pki.key)))
    host, port = server.server_address[:2]
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    clients = []
    try:
        for i in range(100):
            c = socket.create_connection((host, port), timeout=5)
            if i % 2:
                c.sendall(b"\x16\x03\x01\x00\xc8\x01")  # the first bytes of a ClientHello, then nothing
            clients.append(c)
        start = time.monotonic()
        body = urllib.request.urlopen(f"https://localhost:{port}/metrics", timeout=5, context=ctx).read()
        assert b"c_total 7" in body and time.monotonic() - start < 2.0
        assert sum(1 for t in threading.enumerate() if t.name.startswith("paid-telemetry-http_")) <= 4
        deadline = time.monotonic() + 15
        for c in clients:
            c.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert c.recv(1024) == b""  # closed by the server
            except ConnectionResetError:
                pass
        assert time.monotonic() < deadline
    finally:
        for c in clients:
            c.close()
        server.shutdown()
        server.server_close()


def test_reconfigure_on_the_same_port_switches_auth_on(tmp_path: Path) -> None:
    """A reconfigure that keeps the port hands the running server the new credentials."""
    password, password_file = secret_file(tmp_path / "pw")
    first = pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    try:
        port = first.providers.endpoint.port
        assert _get(first.prometheus_url or "", None, None)[0] == 200
        second = pt.configure(exporter="prometheus", prometheus_port=port, handle_sigterm=False,
                              prometheus_username="u", prometheus_password_file=str(password_file))
        assert second.providers.endpoint.port == port
        assert _get(second.prometheus_url or "", None, None)[0] == 401
        assert _get(second.prometheus_url or "", password, None, user="u")[0] == 200
    finally:
        pt.shutdown()


@pytest.fixture
def env_clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("PAID_TELEMETRY_PROMETHEUS_USERNAME", "PAID_TELEMETRY_PROMETHEUS_PASSWORD_FILE",
                "PAID_TELEMETRY_PROMETHEUS_TLS_CERT_FILE", "PAID_TELEMETRY_PROMETHEUS_TLS_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    yield


def test_settings_go_in_pairs_and_bad_files_name_the_setting(tmp_path: Path, pki: Pki, env_clean: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from paid_telemetry.settings import resolve

    with pytest.raises(pt.ConfigurationError, match=r"prometheus_username='u'.*prometheus_password_file"):
        resolve(env={}, prometheus_username="u")
    with pytest.raises(pt.ConfigurationError,
                       match=r"PAID_TELEMETRY_PROMETHEUS_TLS_CERT_FILE='/c'.*prometheus_tls_key_file"):
        resolve(env={"PAID_TELEMETRY_PROMETHEUS_TLS_CERT_FILE": "/c"})
    with pytest.raises(pt.ConfigurationError, match="without ':'"):
        resolve(env={}, prometheus_username="a:b", prometheus_password_file="/p")
    s = resolve(env={"PAID_TELEMETRY_PROMETHEUS_USERNAME": "u", "PAID_TELEMETRY_PROMETHEUS_PASSWORD_FILE": "/p",
                     "PAID_TELEMETRY_PROMETHEUS_TLS_CERT_FILE": "/c", "PAID_TELEMETRY_PROMETHEUS_TLS_KEY_FILE": "/k"})
    assert (s.prometheus_username, s.prometheus_password_file, s.prometheus_tls_cert_file,
            s.prometheus_tls_key_file) == ("u", "/p", "/c", "/k")

    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prometheus_username": "u", "prometheus_password_file": str(tmp_path / "missing")},
         r"configure\(prometheus_password_file=.*a readable file holding the password.*FileNotFoundError"),
        ({"prometheus_username": "u", "prometheus_password_file": str(empty)},
         r"prometheus_password_file=.*is empty"),
        ({"prometheus_tls_cert_file": str(pki.key), "prometheus_tls_key_file": str(pki.key)},
         r"prometheus_tls_cert_file=.*PEM certificate"),
        ({"prometheus_tls_cert_file": str(pki.cert), "prometheus_tls_key_file": str(tmp_path / "nokey")},
         r"prometheus_tls_cert_file=.*FileNotFoundError"),
    ]
    for kwargs, match in cases:
        with pytest.raises(pt.ConfigurationError, match=match):
            pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False, **kwargs)
    monkeypatch.setenv("PAID_TELEMETRY_PROMETHEUS_USERNAME", "u")
    monkeypatch.setenv("PAID_TELEMETRY_PROMETHEUS_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(pt.ConfigurationError, match=r"^paid-telemetry: PAID_TELEMETRY_PROMETHEUS_PASSWORD_FILE="):
        pt.configure(exporter="prometheus", prometheus_port=0, handle_sigterm=False)
    pt.shutdown()
