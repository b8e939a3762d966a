"""Settings: the one place every setting is parsed and validated.

Precedence: ``configure()`` arguments > environment > defaults. In the environment our
``PAID_TELEMETRY_*`` variables win over the standard ``OTEL_*`` ones they overlap with, and a
signal-specific ``OTEL_*`` variable wins over the general one.

What happens to a bad value depends on who wrote it:

- an argument or a ``PAID_TELEMETRY_*`` variable raises :class:`ConfigurationError` naming
  the argument or variable, the value and what is allowed: they are ours, and a typo there
  is a deployment bug best caught when the process starts;
- a standard ``OTEL_*`` variable is ignored with a one-time warning and the default is
  used, as the OpenTelemetry SDK environment specification requires (the same variables
  are read by other OpenTelemetry components in the process, which ignore them the same
  way). Exception: a certificate variable naming a file that cannot be read raises, since
  no fallback keeps TLS working.

Hand parsing rather than pydantic-settings: half the variables follow OTel rules pydantic
does not know (milliseconds, percent-encoded ``key=value`` lists, signal-specific
overrides, warn-and-ignore instead of fail), error messages must name the variable, and the
core SDK, imported by every agent worker, stays free of a compiled dependency.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import unquote, urlparse

log = logging.getLogger("paid_telemetry")

Exporter = Literal["otlp", "prometheus", "console", "none"]
EXPORTERS: tuple[Exporter, ...] = ("otlp", "prometheus", "console", "none")
SIGNAL_EXPORTERS: dict[str, tuple[str, ...]] = {
    "traces": ("otlp", "console", "none"),
    "metrics": ("otlp", "prometheus", "console", "none"),
    "logs": ("otlp", "console", "none"),
}
SIGNALS = ("traces", "metrics", "logs")
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_BUDGET_CENTS = 10_000.0
DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigurationError(ValueError):
    """A setting has a value paid-telemetry cannot use; ``configure()`` changed nothing.

    ``setting`` is the environment variable (``PAID_TELEMETRY_PROMETHEUS_PORT``) or the
    ``configure()`` argument (``prometheus_port``), ``value`` what it held and ``allowed``
    what would be accepted.
    """

    def __init__(self, setting: str, value: Any, allowed: str, *, detail: str = "", argument: bool = False) -> None:
        self.setting = setting
        self.value = value
        self.allowed = allowed
        self.detail = detail
        what = f"configure({setting}={value!r})" if argument else f"{setting}={value!r}"
        msg = f"paid-telemetry: {what} is not valid: expected {allowed}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` decides, resolved and validated once."""

    service_name: str = "paid"
    service_version: str = ""
    environment: str = "development"
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False  # OTEL_SDK_DISABLED: a no-op set-up
    exporter: Exporter = "prometheus"  # the default of the three below
    traces_exporter: str = ""  # "" until resolved: then one of SIGNAL_EXPORTERS["traces"]
    metrics_exporter: str = ""
    logs_exporter: str = ""
    otlp_endpoint: str = ""  # base endpoint; "" until resolved (then the protocol's default)
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    otlp_endpoints: Mapping[str, str] = field(default_factory=dict)  # signal -> endpoint, used as-is
    otlp_protocols: Mapping[str, str] = field(default_factory=dict)  # signal -> protocol
    otlp_timeouts_s: Mapping[str, float] = field(default_factory=dict)  # signal -> timeout
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9464
    # Ports tried from prometheus_port when it is busy (another worker of the same server):
    # 9464..9479 by default; past the range an ephemeral port (docs/deploying.md).
    prometheus_port_range: int = 16
    # Optional basic auth and TLS on the embedded endpoint (docs/endpoint.md): a password and a key
    # are files the deployment mounts, never values in code or in the environment.
    prometheus_username: str = ""
    prometheus_password_file: str = ""
    prometheus_tls_cert_file: str = ""
    prometheus_tls_key_file: str = ""
    metric_export_interval_ms: int = 10_000
    export_timeout_s: float = 5.0
    shutdown_timeout_s: float = 5.0
    span_queue_size: int = 2048
    # Data points per OTLP metric request: one request for 50k series would pass gRPC's 4 MiB limit.
    metric_export_batch_size: int = 5000
    strict: bool = False
    max_label_length: int = 128
    cardinality_limit: int = 2000
    default_budget_cents: float = DEFAULT_BUDGET_CENTS
    budgets_cents: Mapping[str, float] = field(default_factory=dict)
    handle_sigterm: bool = True
    logs: bool = True  # export log records over OTLP when logging is configured
    log_format: Literal["json", "console", "off"] = "off"  # "off": leave the application's logging alone
    log_level: str = "info"
    genai_spans: bool = True  # count tokens and cost from GenAI client spans (docs/genai.md)
    # Where each non-default value came from (a variable, or the argument's name), for error messages.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Settings built directly (not through resolve()): signal exporters follow ``exporter``.
        for signal in SIGNALS:
            if not getattr(self, f"{signal}_exporter"):
                value = self.exporter if self.exporter in SIGNAL_EXPORTERS[signal] else "none"
                object.__setattr__(self, f"{signal}_exporter", value)
        if not self.otlp_endpoint:
            object.__setattr__(self, "otlp_endpoint", _default_endpoint(self.otlp_protocol))

    def signal_protocol(self, signal: str) -> str:
        """The OTLP protocol of one signal (``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` wins)."""
        return self.otlp_protocols.get(signal) or self.otlp_protocol

    def signal_endpoint(self, signal: str) -> str:
        """The endpoint handed to one signal's OTLP exporter.

        A signal-specific endpoint is used as-is (for OTLP/HTTP it is the full URL, as the
        spec says); otherwise OTLP/HTTP appends ``/v1/<signal>`` to the base endpoint and
        gRPC uses the base endpoint.
        """
        given = self.otlp_endpoints.get(signal)
        if given:
            return given
        protocol = self.signal_protocol(signal)
        base = self.otlp_endpoint or _default_endpoint(self.otlp_protocol)
        if protocol != self.otlp_protocol and base == _default_endpoint(self.otlp_protocol):
            base = _default_endpoint(protocol)  # the base was defaulted for the other protocol
        if protocol == "grpc":
            return base
        return base.rstrip("/") + f"/v1/{signal}"

    def signal_timeout_s(self, signal: str) -> float:
        """Per-request export timeout of one signal (``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`` wins)."""
        return self.otlp_timeouts_s.get(signal, self.export_timeout_s)

    def source(self, name: str) -> str:
        """The argument or variable a setting came from, for messages."""
        return self.sources.get(name, name)


def _default_endpoint(protocol: str) -> str:
    return DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT


# -- checks: a Python value -> the validated value, or _Bad(what is allowed) ----------------
class _Bad(Exception):
    def __init__(self, allowed: str, detail: str = "") -> None:
        super().__init__(allowed)
        self.allowed = allowed
        self.detail = detail


Check = Callable[[Any], Any]
Parse = Callable[[str], Any]
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _int_range(lo: int, hi: int, what: str = "an integer") -> tuple[Check, Parse]:
    allowed = f"{what} from {lo} to {hi}"

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Bad(allowed)
        return v

    def parse(text: str) -> int:
        if not _INT.fullmatch(text.strip()):
            raise _Bad(allowed)
        return check(int(text.strip()))

    return check, parse


def _float_range(lo: float, hi: float, what: str, *, lo_open: bool = False) -> tuple[Check, Parse]:
    allowed = f"{what} greater than {lo:g} and at most {hi:g}" if lo_open else f"{what} from {lo:g} to {hi:g}"

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Bad(allowed)
        f = float(v)
        if not math.isfinite(f) or f > hi or f < lo or (lo_open and f == lo):
            raise _Bad(allowed)
        return f

    def parse(text: str) -> float:
        if not _FLOAT.fullmatch(text.strip()):
            raise _Bad(allowed)
        return check(float(text.strip()))

    return check, parse


def _ms_as_seconds(lo_ms: int, hi_ms: int) -> Parse:
    """An OTel duration variable: an integer number of milliseconds, returned in seconds."""
    _, parse_ms = _int_range(lo_ms, hi_ms, "an integer number of milliseconds")
    return lambda text: parse_ms(text) / 1000.0


def _choice(values: tuple[str, ...]) -> tuple[Check, Parse]:
    allowed = "one of " + ", ".join(repr(v) for v in values)

    def check(v: Any) -> str:
        if not isinstance(v, str) or v.strip().lower() not in values:
            raise _Bad(allowed)
        return v.strip().lower()

    return check, check


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("True or False")
    return v


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise _Bad("true or false (or 1/0, yes/no, on/off)")


def _text(max_len: int, *, empty: bool = False) -> tuple[Check, Parse]:
    allowed = f"{'a' if empty else 'a non-empty'} string of at most {max_len} printable characters"

    def check(v: Any) -> str:
        if not isinstance(v, str) or len(v) > max_len or (not empty and not v.strip()) or not v.isprintable():
            raise _Bad(allowed)
        return v

    return check, lambda text: check(text.strip())


def _check_host(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > 253 or any(c.isspace() or c in "/?#@" for c in v):
        raise _Bad("a host name or IP address to bind, such as 127.0.0.1")
    return v


def _username() -> tuple[Check, Parse]:
    allowed = "a user name of at most 255 printable characters without ':' (empty: no basic auth)"

    def check(v: Any) -> str:
        if not isinstance(v, str) or len(v) > 255 or ":" in v or not v.isprintable():
            raise _Bad(allowed)
        return v.strip()

    return check, check


def _path() -> tuple[Check, Parse]:
    allowed = "a file path (empty: off)"

    def check(v: Any) -> str:
        if isinstance(v, os.PathLike):
            v = os.fspath(v)
        if not isinstance(v, str) or len(v) > 4096 or "\x00" in v:
            raise _Bad(allowed)
        return v.strip()

    return check, check


def _check_url(v: Any) -> str:
    allowed = "an http:// or https:// URL with a host, such as http://127.0.0.1:4317"
    if not isinstance(v, str):
        raise _Bad(allowed)
    try:
        u = urlparse(v.strip())
        _ = u.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise _Bad(allowed) from exc
    if u.scheme not in ("http", "https") or not u.hostname:
        raise _Bad(allowed)
    return v.strip()


def _check_str_map(v: Any) -> dict[str, str]:
    allowed = "a mapping of non-empty string keys to string values"
    if not isinstance(v, Mapping) or not all(isinstance(k, str) and k and isinstance(x, str) for k, x in v.items()):
        raise _Bad(allowed)
    return dict(v)


def _check_budgets(v: Any) -> dict[str, float]:
    allowed = "a mapping of project ids to budgets in cents, each a finite number >= 0"
    if not isinstance(v, Mapping):
        raise _Bad(allowed)
    number, _ = _float_range(0.0, 1e15, "a finite number")
    out: dict[str, float] = {}
    for k, x in v.items():
        if not isinstance(k, str) or not k.strip():
            raise _Bad(allowed)
        try:
            out[k] = number(x)
        except _Bad as exc:
            raise _Bad(allowed, f"{k}={x!r}") from exc
    return out


def _parse_budgets(text: str) -> dict[str, float]:
    allowed = "comma-separated project=cents pairs, each budget a finite number >= 0 (acme=5000,globex=20000)"
    out: dict[str, float] = {}
    _, number = _float_range(0.0, 1e15, "a finite number")
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        if not sep or not key.strip():
            raise _Bad(allowed, f"{part.strip()!r} is not project=cents")
        try:
            out[key.strip()] = number(raw)
        except _Bad as exc:
            raise _Bad(allowed, f"{key.strip()}={raw.strip()!r}") from exc
    return out


def _check_signal_map(values: tuple[str, ...] | None, what: str) -> Check:
    def check(v: Any) -> dict[str, Any]:
        allowed = f"a mapping from {', '.join(SIGNALS)} to {what}"
        if not isinstance(v, Mapping) or not all(k in SIGNALS for k in v):
            raise _Bad(allowed)
        for x in v.values():
            if values is not None and x not in values:
                raise _Bad(allowed)
        return dict(v)

    return check


def _check_timeouts(v: Any) -> dict[str, float]:
    check = _check_signal_map(None, "timeouts in seconds")(v)
    number, _ = _float_range(0.0, 3600.0, "a number of seconds", lo_open=True)
    try:
        return {k: number(x) for k, x in check.items()}
    except _Bad as exc:
        raise _Bad("a mapping from traces, metrics, logs to timeouts in seconds, each > 0 and <= 3600") from exc


def _check_endpoints(v: Any) -> dict[str, str]:
    check = _check_signal_map(None, "URLs")(v)
    return {k: _check_url(x) for k, x in check.items()}


def _exporter_choice(signal: str) -> tuple[Check, Parse]:
    return _choice(SIGNAL_EXPORTERS[signal])


# Settings that are plain values: field -> (check, parse, PAID_TELEMETRY_* variable or None).
_PORT = _int_range(0, 65535, "a TCP port (0: any free port)")
_SPECS: dict[str, tuple[Check, Parse | None, str | None]] = {
    "service_name": (*_text(255), None),
    "service_version": (*_text(255, empty=True), "PAID_TELEMETRY_SERVICE_VERSION"),
    "environment": (*_text(255), "PAID_TELEMETRY_ENVIRONMENT"),
    "resource_attributes": (_check_str_map, None, None),
    "disabled": (_check_bool, _parse_bool, None),
    "exporter": (*_choice(EXPORTERS), "PAID_TELEMETRY_EXPORTER"),
    "traces_exporter": (*_exporter_choice("traces"), None),
    "metrics_exporter": (*_exporter_choice("metrics"), None),
    "logs_exporter": (*_exporter_choice("logs"), None),
    "otlp_endpoint": (_check_url, None, None),
    "otlp_protocol": (*_choice(PROTOCOLS), None),
    "otlp_endpoints": (_check_endpoints, None, None),
    "otlp_protocols": (_check_signal_map(PROTOCOLS, "'grpc' or 'http/protobuf'"), None, None),
    "otlp_timeouts_s": (_check_timeouts, None, None),
    "prometheus_host": (_check_host, lambda t: _check_host(t.strip()), "PAID_TELEMETRY_PROMETHEUS_HOST"),
    "prometheus_port": (*_PORT, "PAID_TELEMETRY_PROMETHEUS_PORT"),
    "prometheus_port_range": (*_int_range(1, 1024, "a number of ports"), "PAID_TELEMETRY_PROMETHEUS_PORT_RANGE"),
    "prometheus_username": (*_username(), "PAID_TELEMETRY_PROMETHEUS_USERNAME"),
    "prometheus_password_file": (*_path(), "PAID_TELEMETRY_PROMETHEUS_PASSWORD_FILE"),
    "prometheus_tls_cert_file": (*_path(), "PAID_TELEMETRY_PROMETHEUS_TLS_CERT_FILE"),
    "prometheus_tls_key_file": (*_path(), "PAID_TELEMETRY_PROMETHEUS_TLS_KEY_FILE"),
    "metric_export_interval_ms": (*_int_range(1, 86_400_000, "an integer number of milliseconds"), None),
    "export_timeout_s": (*_float_range(0.0, 3600.0, "a number of seconds", lo_open=True),
                         "PAID_TELEMETRY_EXPORT_TIMEOUT"),
    "shutdown_timeout_s": (*_float_range(0.0, 3600.0, "a number of seconds", lo_open=True),
                           "PAID_TELEMETRY_SHUTDOWN_TIMEOUT"),
    "span_queue_size": (*_int_range(1, 10_000_000), None),
    "metric_export_batch_size": (*_int_range(1, 10_000_000), None),
    "strict": (_check_bool, _parse_bool, "PAID_TELEMETRY_STRICT"),
    "max_label_length": (*_int_range(16, 65_536), "PAID_TELEMETRY_MAX_LABEL_LENGTH"),
    "cardinality_limit": (*_int_range(1, 1_000_000), "PAID_TELEMETRY_CARDINALITY_LIMIT"),
    "default_budget_cents": (*_float_range(0.0, 1e15, "a finite number of cents"),
                             "PAID_TELEMETRY_DEFAULT_BUDGET_CENTS"),
    "budgets_cents": (_check_budgets, _parse_budgets, "PAID_TELEMETRY_BUDGETS"),
    "handle_sigterm": (_check_bool, _parse_bool, "PAID_TELEMETRY_HANDLE_SIGTERM"),
    "logs": (_check_bool, _parse_bool, "PAID_TELEMETRY_LOGS"),
    "log_format": (*_choice(("json", "console", "off")), "PAID_TELEMETRY_LOG_FORMAT"),
    "log_level": (*_choice(LOG_LEVELS), "PAID_TELEMETRY_LOG_LEVEL"),
    "genai_spans": (_check_bool, _parse_bool, "PAID_TELEMETRY_GENAI_SPANS"),
}
ENV_VARS: dict[str, str] = {var: name for name, (_, _, var) in _SPECS.items() if var}  # variable -> field


# -- OTEL_* variables: parsed as the OTel spec says; a bad value is ignored with a warning ---
_warned: set[tuple[str, str]] = set()


def _warn_ignored(var: str, value: str, allowed: str, default: str) -> None:
    if (var, value) in _warned:
        return
    _warned.add((var, value))
    log.warning("paid-telemetry: ignoring %s=%r (expected %s); using %s", var, value, allowed, default)


def _otel(e: Mapping[str, str], var: str, parse: Parse, default: str) -> Any:
    """The parsed value of an OTEL_* variable, or None when unset, empty or invalid (warned once)."""
    raw = e.get(var, "")
    if not raw.strip():
        return None
    try:
        return parse(raw)
    except _Bad as exc:
        _warn_ignored(var, raw, exc.allowed, default)
        return None


def otel_bool(e: Mapping[str, str], var: str) -> bool | None:
    """OTel boolean: only "true" (any case) is true; anything but "false"/empty warns."""
    raw = e.get(var, "").strip()
    if not raw:
        return None
    if raw.lower() == "true":
        return True
    if raw.lower() != "false":
        _warn_ignored(var, raw, "'true' or 'false'", "false")
    return False


def _parse_resource(raw: str) -> dict[str, str]:
    """``key=value,...`` with percent-encoded values (W3C Baggage style, as the spec says)."""
    out: dict[str, str] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            _warn_ignored("OTEL_RESOURCE_ATTRIBUTES", part.strip(), "key=value pairs", "no attribute for it")
            continue
        out[key.strip()] = unquote(value.strip())
    return out


def _parse_exporter_list(signal: str) -> Parse:
    """``OTEL_<SIGNAL>_EXPORTER``: the spec allows a list; one exporter per signal is supported."""
    values = SIGNAL_EXPORTERS[signal]
    allowed = "one of " + ", ".join(repr(v) for v in values)

    def parse(text: str) -> str:
        items = [t.strip().lower() for t in text.split(",") if t.strip()]
        if len(items) != 1 or items[0] not in values:
            raise _Bad(allowed + " (one exporter per signal)")
        return items[0]

    return parse


def _otel_settings(e: Mapping[str, str], out: dict[str, Any], src: dict[str, str]) -> None:
    """Settings from the standard OTEL_* variables (lower precedence than PAID_TELEMETRY_*)."""

    def put(key: str, value: Any, var: str) -> None:
        if value is not None:
            out[key] = value
            src[key] = var

    disabled = otel_bool(e, "OTEL_SDK_DISABLED")
    if disabled:
        put("disabled", True, "OTEL_SDK_DISABLED")
    res = _parse_resource(e.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    if res:
        put("resource_attributes", res, "OTEL_RESOURCE_ATTRIBUTES")
        if res.get("service.name"):
            put("service_name", res["service.name"], "OTEL_RESOURCE_ATTRIBUTES")
        if "service.version" in res:
            put("service_version", res["service.version"], "OTEL_RESOURCE_ATTRIBUTES")
        env_name = res.get("deployment.environment.name") or res.get("deployment.environment")
        if env_name:
            put("environment", env_name, "OTEL_RESOURCE_ATTRIBUTES")
    if e.get("OTEL_SERVICE_NAME", "").strip():
        put("service_name", e["OTEL_SERVICE_NAME"].strip(), "OTEL_SERVICE_NAME")
    put("otlp_endpoint", _otel(e, "OTEL_EXPORTER_OTLP_ENDPOINT", _check_url, "the default endpoint"),
        "OTEL_EXPORTER_OTLP_ENDPOINT")
    put("otlp_protocol", _otel(e, "OTEL_EXPORTER_OTLP_PROTOCOL", _choice(PROTOCOLS)[1], "grpc"),
        "OTEL_EXPORTER_OTLP_PROTOCOL")
    timeout = _otel(e, "OTEL_EXPORTER_OTLP_TIMEOUT", _ms_as_seconds(1, 3_600_000), "the export timeout")
    put("export_timeout_s", timeout, "OTEL_EXPORTER_OTLP_TIMEOUT")
    put("metric_export_interval_ms",
        _otel(e, "OTEL_METRIC_EXPORT_INTERVAL", _int_range(1, 86_400_000, "an integer number of milliseconds")[1],
              "10000"), "OTEL_METRIC_EXPORT_INTERVAL")
    put("span_queue_size", _otel(e, "OTEL_BSP_MAX_QUEUE_SIZE", _int_range(1, 10_000_000)[1], "2048"),
        "OTEL_BSP_MAX_QUEUE_SIZE")
    endpoints: dict[str, str] = {}
    protocols: dict[str, str] = {}
    timeouts: dict[str, float] = {}
    for signal in SIGNALS:
        sig = signal.upper()
        exporter = _otel(e, f"OTEL_{sig}_EXPORTER", _parse_exporter_list(signal), "the default exporter")
        put(f"{signal}_exporter", exporter, f"OTEL_{sig}_EXPORTER")
        var = f"OTEL_EXPORTER_OTLP_{sig}_ENDPOINT"
        url = _otel(e, var, _check_url, "the base endpoint")
        if url is not None:
            endpoints[signal] = url
        protocol = _otel(e, f"OTEL_EXPORTER_OTLP_{sig}_PROTOCOL", _choice(PROTOCOLS)[1], "the base protocol")
        if protocol is not None:
            protocols[signal] = protocol
        t = _otel(e, f"OTEL_EXPORTER_OTLP_{sig}_TIMEOUT", _ms_as_seconds(1, 3_600_000), "the export timeout")
        if t is not None:
            timeouts[signal] = t
    put("otlp_endpoints", endpoints or None, "OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT")
    put("otlp_protocols", protocols or None, "OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL")
    put("otlp_timeouts_s", timeouts or None, "OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT")


def _check_certificates(e: Mapping[str, str]) -> None:
    """Certificate variables the OTLP exporters read themselves must name readable files:
    the gRPC exporter would fail deep inside, the HTTP one on every export."""
    for signal in ("", "TRACES_", "METRICS_", "LOGS_"):
        for kind in ("CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"):
            var = f"OTEL_EXPORTER_OTLP_{signal}{kind}"
            path = e.get(var, "").strip()
            if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                raise ConfigurationError(var, path, "the path of a readable PEM file", detail="no such readable file")


def from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings found in the environment, as keyword arguments (validated)."""
    return _from_env(os.environ if env is None else env, {})


def _from_env(e: Mapping[str, str], src: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _otel_settings(e, out, src)
    _check_certificates(e)
    for var, key in ENV_VARS.items():
        raw = e.get(var, "")
        if not raw.strip():
            continue
        parse = _SPECS[key][1]
        assert parse is not None
        try:
            out[key] = parse(raw)
        except _Bad as exc:
            raise ConfigurationError(var, raw, exc.allowed, detail=exc.detail) from None
        src[key] = var
    return out


def resolve(env: Mapping[str, str] | None = None, **kwargs: Any) -> Settings:
    """Merge defaults < environment < arguments (``None`` arguments mean "not given"), validated.

    Raises :class:`ConfigurationError` for a bad argument or ``PAID_TELEMETRY_*`` variable.
    """
    known = {f.name for f in fields(Settings)} - {"sources"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigurationError(unknown[0], kwargs[unknown[0]], "one of: " + ", ".join(sorted(known)),
                                 detail="unknown setting", argument=True)
    src: dict[str, str] = {}
    merged = _from_env(os.environ if env is None else env, src)
    for key, value in kwargs.items():
        if value is None:
            continue
        try:
            merged[key] = _SPECS[key][0](value)
        except _Bad as exc:
            raise ConfigurationError(key, value, exc.allowed, detail=exc.detail, argument=True) from None
        src[key] = key
    # Exporters: per-signal argument > exporter argument > OTEL_<SIGNAL>_EXPORTER >
    # PAID_TELEMETRY_EXPORTER > otlp when an OTLP endpoint for the signal is set, else
    # prometheus (metrics) / none (traces, logs).
    exporter_arg = "exporter" in kwargs and kwargs["exporter"] is not None
    endpoints = merged.get("otlp_endpoints", {})
    any_endpoint = "otlp_endpoint" in merged or bool(endpoints)
    umbrella = merged.get("exporter") or ("otlp" if any_endpoint else "prometheus")
    merged["exporter"] = umbrella
    for signal in SIGNALS:
        key = f"{signal}_exporter"
        if kwargs.get(key) is not None:
            continue
        env_value = merged.get(key)
        if env_value and not exporter_arg:
            continue  # OTEL_<SIGNAL>_EXPORTER
        if "exporter" in src:
            choice = umbrella
        else:
            choice = "otlp" if ("otlp_endpoint" in merged or signal in endpoints) else "prometheus"
        if choice not in SIGNAL_EXPORTERS[signal]:
            choice = "none"  # prometheus is for metrics only
        merged[key] = choice
        src[key] = src.get("exporter", key)
    for first, second in (("prometheus_username", "prometheus_password_file"),
                          ("prometheus_tls_cert_file", "prometheus_tls_key_file")):
        if bool(merged.get(first)) != bool(merged.get(second)):
            given, missing = (first, second) if merged.get(first) else (second, first)
            var = _SPECS[missing][2]
            raise ConfigurationError(src.get(given, given), merged[given],
                                     f"{missing} (or {var}) set as well", detail="they go together",
                                     argument=not src.get(given, given).isupper())
    return Settings(**merged, sources=src)


def error(s: Settings, name: str, allowed: str, detail: str = "") -> ConfigurationError:
    """A :class:`ConfigurationError` about the current value of setting ``name``, naming
    the variable or argument it came from (for checks only possible when building)."""
    source = s.source(name)
    return ConfigurationError(source, getattr(s, name), allowed, detail=detail, argument=not source.isupper())
