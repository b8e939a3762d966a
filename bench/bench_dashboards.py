"""Time every Grafana panel query over a week of demo-like history in a real Prometheus.

    python bench/bench_dashboards.py                 # 7 days at 15 s, ranges 24h and 7d
    python bench/bench_dashboards.py --interval 30 --repeat 3
    python bench/bench_dashboards.py --url http://127.0.0.1:9090 --end now   # an existing Prometheus

Without --url it writes the history as OpenMetrics (one file per 2-hour block), backfills it
with ``promtool tsdb create-blocks-from openmetrics``, starts Prometheus on 127.0.0.1 over
those blocks, and sends each query the way Grafana does (query_range, Grafana's step and
$__rate_interval for the range). Reports the slowest panel; exits 1 if any query takes
2 s or more (RDR-011: "Dashboard queries return in < 2 seconds").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from paid_telemetry_ops import dashbench as bench

TARGET_S = 2.0
RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=7.0, help="days of history to backfill (default 7)")
    ap.add_argument("--interval", type=int, default=15, help="seconds between samples (the scrape interval, 15)")
    ap.add_argument("--ranges", default="24h,7d", help=f"dashboard time ranges, among {','.join(RANGES)}")
    ap.add_argument("--repeat", type=int, default=1, help="run each query N times, report the worst")
    ap.add_argument("--url", help="bench an existing Prometheus instead of starting one")
    ap.add_argument("--end", default="history", help="'now' or 'history' (end of the backfilled data)")
    ap.add_argument("--workdir", type=Path, help="keep the history and TSDB here (default: a temp dir)")
    ap.add_argument("--top", type=int, default=10, help="how many of the slowest queries to list")
    args = ap.parse_args(argv)
    ranges = {name: RANGES[name] for name in args.ranges.split(",")}

    with tempfile.TemporaryDirectory(prefix="bench-dashboards-") as tmp:
        work = args.workdir or Path(tmp)
        prom = None
        if args.url:
            url, end = args.url.rstrip("/"), time.time()
        else:
            t0 = time.perf_counter()
            hist = bench.write_openmetrics(work / "om", days=args.days, interval_s=args.interval)
            gen_s = time.perf_counter() - t0
            promtool_s = bench.backfill_history(hist, work / "tsdb")
            print(f"history: {hist.series} series, {hist.samples / 1e6:.1f} M samples, {hist.bytes / 1e9:.2f} GB "
                  f"OpenMetrics in {len(hist.files)} block files; generated in {gen_s:.0f} s, "
                  f"promtool {promtool_s:.0f} s")
            prom = bench.prometheus(work, "global: {scrape_interval: 15s}\nscrape_configs: []\n", tsdb=work / "tsdb")
            prom.start(300)
            url, end = f"http://127.0.0.1:{prom.ports['http']}", float(hist.end)
        if args.end == "now":
            end = time.time()
        try:
            queries = bench.panel_queries()
            worst: dict[tuple[str, str], bench.Timing] = {}
            for _ in range(args.repeat):
                for t in bench.time_range_queries(url, queries, ranges, end=end, scrape_s=args.interval):
                    key = (t.query.key, t.range_name)
                    if key not in worst or t.seconds > worst[key].seconds:
                        worst[key] = t
        finally:
            if prom is not None:
                prom.stop()

    timings = sorted(worst.values(), key=lambda t: t.seconds, reverse=True)
    print(f"\n{len(queries)} queries x {len(ranges)} ranges ({', '.join(ranges)}), worst of {args.repeat}:")
    print(f"{'ms':>8}  {'range':>5}  {'series':>6}  panel")
    for t in timings[: args.top]:
        print(f"{t.seconds * 1000:8.0f}  {t.range_name:>5}  {t.series:6d}  {t.query.key}")
    by_dash: dict[str, list[float]] = {}
    for t in timings:
        by_dash.setdefault(t.query.dashboard, []).append(t.seconds)
    print("\nper dashboard: slowest / median / sum of its queries (ms)")
    for uid, secs in sorted(by_dash.items()):
        print(f"  {uid:22s} {max(secs) * 1000:6.0f} {statistics.median(secs) * 1000:6.0f} {sum(secs) * 1000:7.0f}")
    slowest = timings[0]
    print(f"\nslowest panel: {slowest.query.key} over {slowest.range_name}: {slowest.seconds * 1000:.0f} ms "
          f"(target < {TARGET_S * 1000:.0f} ms)")
    over = [t for t in timings if t.seconds >= TARGET_S]
    if over:
        print(f"{len(over)} queries at or over {TARGET_S} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
