"""The package layout holds: imports go one way (ops and integrations -> core -> OpenTelemetry)
and no module imports itself back through another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
INTEGRATIONS = ("paid_telemetry.integrations", "paid_telemetry.temporal", "paid_telemetry.asgi")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """module -> our modules it imports anywhere in its body (lazy imports count too)."""
    modules = {_module_name(p): p for p in SRC.glob("paid_telemetry*/**/*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                # the longest known module the import names (``from pkg import mod`` names pkg.mod)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    deps.add(target)
        graph[name] = deps
    return graph


def _is_core(name: str) -> bool:
    return name.startswith("paid_telemetry") and not name.startswith(("paid_telemetry_ops", *INTEGRATIONS))


def test_core_never_imports_integrations_or_ops() -> None:
    wrong = {
        (mod, dep)
        for mod, deps in _graph().items()
        if _is_core(mod) and mod != "paid_telemetry"
        for dep in deps
        if not _is_core(dep)
    }
    assert wrong == set()


def test_sdk_never_imports_ops() -> None:
    graph = _graph()
    wrong = {(m, d) for m, deps in graph.items() if not m.startswith("paid_telemetry_ops")
             for d in deps if d.startswith("paid_telemetry_ops")}
    assert wrong == set()
    assert "paid_telemetry_ops.cli" in graph and "paid_telemetry.runtime" in graph  # the walk saw both packages


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over every import, lazy ones included."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    # The package __init__ re-exports its modules, which import each other through their full
    # names, not through the package: a cycle that only passes through "paid_telemetry" is not one.
    assert [c for c in cycles if c != ["paid_telemetry"]] == []


def test_a_worker_imports_neither_ops_nor_optional_dependencies() -> None:
    code = (
        "import sys, paid_telemetry as pt\n"
        "pt.configure(exporter='none', handle_sigterm=False)\n"
        "with pt.agent_run(project_id='p', agent_type='a') as run:\n"
        "    run.record_tokens(provider='openai', model='gpt-4o', input_tokens=1, output_tokens=1)\n"
        "pt.shutdown()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "('paid_telemetry_ops', 'temporalio', 'starlette', 'yaml', 'grpc')} | "
        "{m for m in sys.modules if m.startswith('paid_telemetry.integrations')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
