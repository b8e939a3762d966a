"""The demo workload: a stream of agent runs with a deterministic fake LLM.

Some runs fail, one project is costly; at the end the operator sees what Prometheus would
see, read back from the SDK's own /metrics endpoint.
"""

from __future__ import annotations

import random
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

import paid_telemetry as pt

PROJECTS = ("acme", "globex", "initech")
COSTLY_PROJECT = "globex"
AGENTS = ("coder", "reviewer", "planner")
MODELS = (("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o-mini"))


@dataclass(frozen=True)
class FakeCompletion:
    input_tokens: int
    output_tokens: int
    quality: float


class FakeLLM:
    """Deterministic stand-in for an LLM client: same seed, same tokens, same costs."""

    def __init__(self, seed: int = 7) -> None:
        self._rng = random.Random(seed)

    def complete(self, project: str) -> FakeCompletion:
        scale = 20 if project == COSTLY_PROJECT else 1
        return FakeCompletion(
            input_tokens=self._rng.randint(800, 4000) * scale,
            output_tokens=self._rng.randint(100, 1200) * scale,
            quality=round(self._rng.uniform(0.4, 1.0), 2),
        )


def run_workload(runs: int = 60, *, seed: int = 7, out: TextIO = sys.stderr) -> dict[str, int]:
    """Run ``runs`` agent runs; returns runs by status (the truth the metrics must show)."""
    llm = FakeLLM(seed)
    rng = random.Random(seed + 1)
    truth: dict[str, int] = defaultdict(int)
    for i in range(runs):
        project = PROJECTS[i % len(PROJECTS)]
        agent = AGENTS[rng.randrange(len(AGENTS))]
        provider, model = MODELS[rng.randrange(len(MODELS))]
        try:
            with pt.agent_run(project_id=project, agent_type=agent) as run:
                for _ in range(rng.randint(1, 6)):
                    run.iteration()
                    reply = llm.complete(project)
                    run.record_tokens(provider=provider, model=model,
                                      input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
                with pt.external_call("github", "create_pull_request"):
                    time.sleep(0.005)
                if rng.random() < 0.15:
                    raise RuntimeError("agent gave up")
                run.record_quality(reply.quality, prompt_slug=f"{agent}-v1")
                pt.record_pull_request("created", project_id=project)
        except RuntimeError:
            pass
        truth[run.status or "unknown"] += 1
        _progress(i + 1, runs, out)
    out.write("\n")
    return dict(truth)


def _progress(done: int, total: int, out: TextIO) -> None:
    width = 30
    filled = width * done // total
    out.write(f"\r  agent runs [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    out.flush()


def summary(metrics_url: str) -> str:
    """A short operator's table read back from the /metrics endpoint."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    runs: dict[str, float] = defaultdict(float)
    tokens: dict[str, float] = defaultdict(float)
    cost: dict[str, float] = defaultdict(float)
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "paid_agent_runs_total":
                runs[s.labels["status"]] += s.value
            elif s.name == "paid_tokens_total":
                tokens[s.labels["project_id"]] += s.value
            elif s.name == "paid_cost_cents_total":
                cost[s.labels["project_id"]] += s.value
            elif s.name == "paid_agent_run_duration_seconds_bucket":
                buckets[float(s.labels["le"])] += s.value
    total = sum(runs.values())
    lines = ["", "Runs by status:"]
    lines += [f"  {status:<10} {int(n):>5}" for status, n in sorted(runs.items())]
    lines.append(f"  p95 duration bucket: <= {_p95(buckets, total):g} s")
    lines += ["", f"  {'project':<10} {'tokens':>12} {'cost $':>10}"]
    for project in sorted(set(tokens) | set(cost)):
        lines.append(f"  {project:<10} {int(tokens[project]):>12} {cost[project] / 100:>10.2f}")
    return "\n".join(lines)


def _p95(buckets: dict[float, float], total: float) -> float:
    for bound in sorted(buckets):
        if total and buckets[bound] >= 0.95 * total:
            return bound
    return float("inf")


def main(runs: int = 60, serve_seconds: float = 0.0) -> int:
    handle = pt.configure(service_name="paid-demo")
    print(f"paid-telemetry demo: metrics at {handle.prometheus_url}", file=sys.stderr)
    truth = run_workload(runs)
    print(summary(handle.prometheus_url or ""))
    print(f"\nTruth from the workload: {dict(sorted(truth.items()))}")
    if serve_seconds:
        print(f"Serving {handle.prometheus_url} for {serve_seconds:g}s (Ctrl-C to stop)", file=sys.stderr)
        try:
            time.sleep(serve_seconds)
        except KeyboardInterrupt:
            pass
    pt.shutdown()
    return 0
