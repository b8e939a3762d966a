"""Where the ops commands find their files, and where they write.

The stack's configs (collector, Prometheus and its rules, Alertmanager, Grafana, Jaeger), the
collector build script, docker-compose.yml and the demo's example platform are the repository's
own files in a source checkout. A wheel carries the same files as package data
(``paid_telemetry_ops/_assets``, copied at build time by setup.py from :data:`SHIPPED`), and
``paid-telemetry init DIR`` copies them to a directory the user names.

Nothing is ever written next to them: the ``stack up`` state goes to :func:`state_dir`
(the checkout's ``.stack/``, else ``$XDG_STATE_HOME/paid-telemetry/stack``), built binaries to
``~/.cache/paid-telemetry``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Paths relative to the repository root; setup.py reads this tuple (ast) to build the wheel's _assets.
SHIPPED = (
    "otel-collector",
    "prometheus",
    "alertmanager",
    "grafana",
    "jaeger",
    "examples",
    "docker-compose.yml",
    ".env.example",
    "scripts/build-collector.sh",
    "scripts/build-thanos.sh",
)
REPO = Path(__file__).resolve().parents[2]  # the checkout root when running from src/
PACKAGED = Path(__file__).resolve().parent / "_assets"
_MARKER = Path("otel-collector") / "config.yaml"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


class MissingAsset(RuntimeError):
    """A file the command needs is neither in a checkout nor in the installed package."""


def checkout() -> Path | None:
    """The source checkout this package runs from (editable install / PYTHONPATH=src), else None."""
    if (REPO / "pyproject.toml").is_file() and (REPO / _MARKER).is_file():
        return REPO
    return None


def root() -> Path:
    """The directory holding :data:`SHIPPED`: the checkout, else the wheel's package data."""
    found = checkout()
    if found is not None:
        return found
    if (PACKAGED / _MARKER).is_file():
        return PACKAGED
    raise MissingAsset(
        f"the stack's configs are not installed (looked in {PACKAGED}); reinstall paid-telemetry from a wheel "
        "or sdist built by `pip wheel`/`python -m build`, or run from a source checkout"
    )


def path(rel: str) -> Path:
    """One shipped file or directory, e.g. ``path("prometheus/rules")``."""
    p = root() / rel
    if not p.exists():
        raise MissingAsset(f"{rel} is missing from {root()}")
    return p


def state_dir() -> Path:
    """Where ``paid-telemetry stack up`` records its stack (PAID_TELEMETRY_STACK_DIR overrides).

    In a checkout: its ``.stack/`` (the repository's workflow). Installed: a per-user state
    directory, never the package's own directory.
    """
    if os.environ.get("PAID_TELEMETRY_STACK_DIR"):
        return Path(os.environ["PAID_TELEMETRY_STACK_DIR"])
    found = checkout()
    if found is not None:
        return found / ".stack"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "paid-telemetry" / "stack"


def dashboards_dir() -> Path:
    """Default output of ``paid-telemetry dashboards``: the checkout's, else ./grafana/dashboards."""
    found = checkout()
    return (found if found is not None else Path.cwd()) / "grafana" / "dashboards"


def init(dest: Path, *, force: bool = False) -> list[Path]:
    """Copy :data:`SHIPPED` into ``dest`` (created); refuse to overwrite unless ``force``."""
    src = root()
    targets = [(src / rel, dest / rel) for rel in SHIPPED]
    clash = [t for _s, t in targets if t.exists()]
    if clash and not force:
        raise FileExistsError(f"{', '.join(str(c) for c in clash)} already exist(s); use --force to overwrite")
    written = []
    for s, t in targets:
        t.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, t, ignore=_IGNORE, dirs_exist_ok=True)
        else:
            shutil.copy2(s, t)
        written.append(t)
    return written
