"""Build hook: ship the ops commands' files (paid_telemetry_ops.assets.SHIPPED) as package data.

The configs stay where docker-compose and the docs expect them (the repository root); the
wheel gets a copy under paid_telemetry_ops/_assets. Editable installs read the checkout instead.
"""

import ast
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def shipped() -> tuple[str, ...]:
    tree = ast.parse((ROOT / "src" / "paid_telemetry_ops" / "assets.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SHIPPED" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("SHIPPED not found in src/paid_telemetry_ops/assets.py")


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "paid_telemetry_ops" / "_assets"
        shutil.rmtree(dest, ignore_errors=True)
        for rel in shipped():
            src, out = ROOT / rel, dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"))
            else:
                shutil.copy2(src, out)


setup(cmdclass={"build_py": BuildWithAssets})
