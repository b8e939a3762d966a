"""Shared helpers for the alerting tests: read the repository's rules and Alertmanager config,
and derive the test variants from them (never from a hand-kept copy)."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "prometheus" / "rules"
PROM_TESTS_DIR = REPO / "prometheus" / "tests"
AM_DIR = REPO / "alertmanager"
AM_CONFIG = AM_DIR / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/paid-dev/paid-telemetry/blob/main/docs/runbooks/"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def all_rules() -> list[dict[str, Any]]:
    """Every rule of every group, with ``_file`` set to the file it came from."""
    out = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append({**rule, "_file": path.name})
    return out


def alert_rules() -> dict[str, dict[str, Any]]:
    alerts: dict[str, dict[str, Any]] = {}
    for rule in all_rules():
        if "alert" in rule:
            assert rule["alert"] not in alerts, f"alert {rule['alert']} defined twice"
            alerts[rule["alert"]] = rule
    return alerts


def recorded_names() -> set[str]:
    return {r["record"] for r in all_rules() if "record" in r}


# -- metric names in PromQL ----------------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "Inf", "NaN"}


def metric_names(expr: str) -> set[str]:
    """Metric (and recorded) names a PromQL expression reads: identifiers that are not
    functions, keywords, label names, strings or durations."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {m.group(1) for m in _IDENT.finditer(text) if not m.group(2) and m.group(1) not in _KEYWORDS}


# -- test variants ---------------------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "5m", "500ms") in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(int(n) * _UNITS[u] for n, u in parts)


def rules_variant(dst: Path, scale: float = 150.0) -> Path:
    """Copies of the repository's rule files with every ``for:`` divided by ``scale`` (at least 1s).

    Only ``for:`` changes, and proportionally, so the order in which alerts fire is the real one
    (AgentSuccessRateLow's 5m before AgentRunDurationHigh's 15m: the page is there to inhibit the
    warning). Expressions, range windows, thresholds, labels and annotations are the repository's,
    so the live test proves the real rules; it just does not wait 5-15 minutes.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for path in rule_files():
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and rule.get("for"):
                    rule["for"] = f"{max(1, round(seconds(str(rule['for'])) / scale))}s"
        (dst / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


def _retime(route: dict[str, Any], timing: dict[str, str], root: bool = True) -> None:
    """Set the timers on the root route; children keep inheriting unless they set their own."""
    for key, value in timing.items():
        if root or key in route:
            route[key] = value
    for child in route.get("routes", []):
        _retime(child, timing, root=False)


def alertmanager_variant(webhook_base: str, timing: dict[str, str] | None = None) -> dict[str, Any]:
    """alertmanager/alertmanager.yml with every receiver replaced by a webhook to
    ``{webhook_base}/{receiver name}`` and the group timers shortened.

    Routes, matchers, grouping and inhibition rules are untouched: they are what the test proves.
    The secret-file settings go (the integrations that need them are gone with the receivers).
    """
    timing = timing or {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
    cfg: dict[str, Any] = copy.deepcopy(yaml.safe_load(AM_CONFIG.read_text()))
    cfg["global"] = {k: v for k, v in cfg.get("global", {}).items() if not k.startswith(("slack_", "smtp_"))}
    cfg["templates"] = [str(AM_DIR / t) for t in cfg.get("templates", [])]
    cfg["receivers"] = [
        {"name": r["name"],
         "webhook_configs": [{"url": f"{webhook_base}/{r['name']}", "send_resolved": True, "max_alerts": 0}]}
        for r in cfg["receivers"]
    ]
    _retime(cfg["route"], timing)
    return cfg


def prometheus3() -> dict[str, str]:
    """``{"prometheus": path, "promtool": path}`` of Prometheus 3, built from Go modules and cached
    by scripts/build-prometheus3.sh (scripts/install.sh runs it; a cold build takes minutes)."""
    from paid_telemetry_ops.services import MissingBinary

    script = REPO / "scripts" / "build-prometheus3.sh"
    try:
        out = subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True, timeout=3600).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise MissingBinary(f"Prometheus 3 not built; run: bash scripts/build-prometheus3.sh (needs Go)\n"
                            f"{detail[-2000:]}") from exc
    paths = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {"prometheus": paths["PROMETHEUS3"], "promtool": paths["PROMTOOL3"]}
