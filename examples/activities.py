"""Activities: where the agent runs and where it talks to the outside world.

All telemetry here is a few lines of paid_telemetry: ``agent_run`` (one run: status,
duration, iterations, span), ``record_tokens`` (tokens, cost priced by genai-prices),
``record_quality``, ``external_call`` (latency and outcome of the GitHub call) and
``record_pull_request``. Workflow and activity counts come from the interceptor, not from here.
Ids (workflow id, run id) go on spans and log lines, never into metric labels.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

import paid_telemetry as pt
from examples.fake_llm import FakeLLM, LLMError

log = structlog.get_logger()
llm = FakeLLM.from_env()

AGENT_FAILED = "AgentFailed"  # ApplicationError type: the agent gave up; retrying would not help
GITHUB_FLAKY_SHARE = 0.25  # share of sessions whose first pull-request attempt gets a 502


@dataclass
class AgentTask:
    project_id: str
    agent_type: str
    task: str


@dataclass
class AgentOutcome:
    """What one agent run did (returned on success; the failure's details otherwise)."""

    project_id: str
    agent_type: str
    status: str
    iterations: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_cents: float = 0.0
    quality: float | None = None
    duration_seconds: float = 0.0
    error: str = ""


@dataclass
class PullRequest:
    number: int
    url: str


@activity.defn
async def run_agent(task: AgentTask) -> AgentOutcome:
    """Run the agent loop until the model says it is done; an LLM error makes the run fail."""
    info = activity.info()
    bound = log.bind(workflow_id=info.workflow_id, agent_type=task.agent_type, attempt=info.attempt)
    outcome = AgentOutcome(task.project_id, task.agent_type, status="failed")
    start = time.perf_counter()
    # run_id on the span and in the log lines: the workflow id ties the run to its session.
    run = pt.agent_run(project_id=task.project_id, agent_type=task.agent_type,
                       run_id=f"{info.workflow_id}/{info.attempt}",
                       attributes={"paid.workflow.id": info.workflow_id})
    try:
        with run:
            bound.info("agent run started", task=task.task)
            for step in range(1, 100):
                run.iteration()
                reply = await llm.acomplete(project_id=task.project_id, agent_type=task.agent_type,
                                            session=task.task, step=step)
                run.record_tokens(provider=reply.provider, model=reply.model,
                                  input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
                bound.debug("llm reply", step=step, input_tokens=reply.input_tokens,
                            output_tokens=reply.output_tokens)
                if reply.done:
                    break
            run.record_quality(reply.quality, prompt_slug=f"{task.agent_type}-v1")
            outcome.quality = reply.quality
    except LLMError as exc:
        outcome.error = str(exc)
    outcome.status = run.status or "failed"
    outcome.iterations = run.iterations
    outcome.input_tokens = int(run.input_tokens)
    outcome.output_tokens = int(run.output_tokens)
    outcome.cost_cents = round(run.cost_cents, 4)
    outcome.duration_seconds = round(time.perf_counter() - start, 4)
    if outcome.status != "completed":
        bound.warning("agent gave up", error=outcome.error, iterations=outcome.iterations)
        # non-retryable: the workflow fails and reports what the run consumed
        raise ApplicationError(f"agent run failed: {outcome.error}", asdict(outcome),
                               type=AGENT_FAILED, non_retryable=True)
    return outcome


@activity.defn
async def open_pull_request(task: AgentTask) -> PullRequest:
    """Open the agent's pull request on GitHub (simulated: no network).

    A quarter of the sessions get a 502 on the first attempt: the external call counts an
    ``error``, the activity fails and Temporal retries it (``paid_activity_retries_total``).
    """
    info = activity.info()
    rng = random.Random(f"github/{task.project_id}/{task.task}")
    flaky, number = rng.random() < GITHUB_FLAKY_SHARE, rng.randint(100, 9999)
    with pt.external_call("github", "create_pull_request"):
        await asyncio.sleep(rng.uniform(0.01, 0.05))
        if flaky and info.attempt == 1:
            log.warning("github returned 502; Temporal will retry", workflow_id=info.workflow_id)
            raise RuntimeError("github: 502 Bad Gateway")
    pt.record_pull_request("created", project_id=task.project_id)
    url = f"https://github.example/{task.project_id}/repo/pull/{number}"
    log.info("pull request opened", workflow_id=info.workflow_id, project_id=task.project_id, url=url)
    return PullRequest(number, url)
