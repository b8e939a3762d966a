"""``paid-telemetry``: demo, local stack, generated docs.

Installed from a wheel, the commands use the configs shipped as package data; ``init DIR``
copies them (and docker-compose.yml, the example platform) to a directory of your own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paid_telemetry_ops import assets
from paid_telemetry_ops.services import MissingBinary

# Optional packages -> the extra that brings them (pyproject.toml).
_EXTRAS = {"yaml": "ops", "grafana_foundation_sdk": "ops", "cryptography": "ops",
           "temporalio": "demo", "httpx": "demo", "uvicorn": "demo", "starlette": "demo",
           "opentelemetry": "demo"}


def _stack_dir() -> Path:
    return assets.state_dir()


def _cmd_stack(args: argparse.Namespace) -> int:
    from paid_telemetry_ops import stack

    workdir = _stack_dir()
    if args.action == "up":
        if stack.saved_status(workdir):
            print(f"a stack is already recorded in {workdir}; run `paid-telemetry stack down` first", file=sys.stderr)
            return 1
        s = stack.Stack(workdir, node_exporter=True, victoriametrics=args.store, scale=args.scale,
                        scrape_interval="5s", evaluation_interval="5s").up()
        s.save()
        for svc in s.services.values():
            svc.proc = None  # keep them running after this process exits
        metrics = {"gateway_metrics": s.gateway_metrics_urls} if args.scale else {
            "collector_metrics": s.collector_metrics_url}
        print(json.dumps({
            "prometheus": s.prometheus_url, "jaeger": s.jaeger_url, "alertmanager": s.alertmanager_url,
            "otlp": s.otlp_endpoint, "temporal": s.temporal_address, **metrics,
            **({"victoriametrics": s.store_url} if args.store else {}),
        }, indent=2))
        print(f"export OTEL_EXPORTER_OTLP_ENDPOINT={s.otlp_endpoint}", file=sys.stderr)
        return 0
    if args.action == "down":
        stopped = stack.stop_saved(workdir)
        print("stopped: " + (", ".join(stopped) or "nothing"))
        return 0
    state = stack.saved_status(workdir)
    print(json.dumps(state, indent=2) if state else "no stack running")
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    dest = Path(args.directory)
    try:
        written = assets.init(dest, force=args.force)
    except FileExistsError as exc:
        print(f"paid-telemetry init: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"wrote the stack's configs to {dest} (docker compose: see docker-compose.yml there)", file=sys.stderr)
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from paid_telemetry.catalogue import render_markdown

    sys.stdout.write(render_markdown())
    return 0


def _cmd_dashboards(args: argparse.Namespace) -> int:
    from paid_telemetry_ops.dashboards import write_all

    for path in write_all(Path(args.directory) if args.directory else assets.dashboards_dir()):
        print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from paid_telemetry_ops.demo import main as demo_main

    mode = "start" if args.stack else "off" if args.embedded else "auto"
    return demo_main(runs=args.runs, serve_seconds=args.serve, stack=mode, stack_dir=_stack_dir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paid-telemetry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="run agent sessions through the example platform and show what an operator sees",
        description="Uses a running stack recorded by `paid-telemetry stack up` if there is one, "
                    "else the embedded set-up (Temporal dev server + a /metrics endpoint).",
    )
    demo.add_argument("--runs", type=int, default=60, help="agent sessions to run (default 60, ~15 s)")
    demo.add_argument("--serve", type=float, default=0.0, help="keep everything up this many seconds afterwards")
    where = demo.add_mutually_exclusive_group()
    where.add_argument("--stack", action="store_true",
                       help="start the local stack for the demo (full pipeline: OTLP, Prometheus, Jaeger)")
    where.add_argument("--embedded", action="store_true", help="ignore a recorded stack; embedded set-up only")
    demo.set_defaults(func=_cmd_demo)
    st = sub.add_parser("stack", help="the local stack: collector, Jaeger, Prometheus, Alertmanager, Temporal")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("--store", action="store_true",
                    help="also VictoriaMetrics, fed by Prometheus' remote_write (docs/scaling.md)")
    st.add_argument("--scale", action="store_true",
                    help="an agent collector in front of two gateways (TLS + token) instead of the single "
                         "collector; otlp is the agent's (docs/scaling.md)")
    st.set_defaults(func=_cmd_stack)
    dash = sub.add_parser("dashboards", help="regenerate the Grafana dashboards from paid_telemetry_ops.dashboards")
    dash.add_argument("directory", nargs="?", default=None,
                      help="default: the checkout's grafana/dashboards, else ./grafana/dashboards")
    dash.set_defaults(func=_cmd_dashboards)
    init = sub.add_parser("init", help="copy the stack's configs, docker-compose.yml and the example platform to DIR")
    init.add_argument("directory")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    init.set_defaults(func=_cmd_init)
    docs = sub.add_parser("docs", help="print generated docs")
    docs.add_argument("what", choices=["metrics"])
    docs.set_defaults(func=_cmd_docs)
    args = parser.parse_args(argv)
    from paid_telemetry_ops.stack import MissingDependency

    try:
        return int(args.func(args))
    except (MissingBinary, assets.MissingAsset, MissingDependency) as exc:
        print(f"paid-telemetry {args.command}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRAS:
            raise
        extra = "demo" if args.command == "demo" else _EXTRAS[top]
        print(f"paid-telemetry {args.command} needs the Python package {exc.name!r}, which is not installed: "
              f"pip install 'paid-telemetry[{extra}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
