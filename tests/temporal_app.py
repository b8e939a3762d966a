"""Workflows and activities for tests/test_temporal.py and tests/temporal_worker.py.

Kept in their own module so the sandbox re-imports only this file, and so the worker
subprocess (killed with SIGKILL in a test) runs exactly the same definitions.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from opentelemetry import trace as otel_trace
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from paid_telemetry import agent_run

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0, maximum_attempts=5)


# -- activities -----------------------------------------------------------------------------
@activity.defn
async def greet(name: str) -> str:
    return f"hello {name}"


@activity.defn
async def flaky(fail_times: int) -> int:
    """Fails its first ``fail_times`` attempts, then returns the attempt number."""
    attempt = activity.info().attempt
    if attempt <= fail_times:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


@activity.defn
async def agent_activity(project_id: str) -> str:
    """Runs an agent; returns the trace id current inside it (what its logs would carry)."""
    with agent_run(project_id=project_id, agent_type="coder") as run:
        run.iteration()
        ctx = otel_trace.get_current_span().get_span_context()
        return format(ctx.trace_id, "032x")


@activity.defn
async def block_first_attempt(marker: str) -> int:
    """Attempt 1 writes ``marker`` and then hangs (heartbeating) until its worker is killed."""
    attempt = activity.info().attempt
    if attempt == 1:
        Path(marker).write_text("running")
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.2)
    return attempt


@activity.defn
async def heartbeat_until_cancelled() -> str:
    while True:
        activity.heartbeat()
        await asyncio.sleep(0.1)


# -- workflows ------------------------------------------------------------------------------
@workflow.defn
class HelloWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(greet, name, start_to_close_timeout=timedelta(seconds=10))


@workflow.defn
class NoopWorkflow:
    @workflow.run
    async def run(self) -> None:
        return None


@workflow.defn
class FailWorkflow:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("business failure", non_retryable=True)


@workflow.defn
class WaitWorkflow:
    """Waits for ever: ended by a cancellation request."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


@workflow.defn
class LoopWorkflow:
    @workflow.run
    async def run(self, remaining: int) -> int:
        await workflow.sleep(timedelta(milliseconds=10))
        if remaining > 0:
            workflow.continue_as_new(remaining - 1)
        return remaining


@workflow.defn
class RetryWorkflow:
    @workflow.run
    async def run(self, fail_times: int) -> int:
        return await workflow.execute_activity(
            flaky, fail_times, start_to_close_timeout=timedelta(seconds=10), retry_policy=FAST_RETRY
        )


@workflow.defn
class MultiStepWorkflow:
    """Several workflow tasks: with max_cached_workflows=0 each one replays the history."""

    @workflow.run
    async def run(self, steps: int) -> list[str]:
        out = []
        for i in range(steps):
            out.append(
                await workflow.execute_activity(greet, f"step{i}", start_to_close_timeout=timedelta(seconds=10))
            )
            await workflow.sleep(timedelta(milliseconds=10))
        return out


@workflow.defn
class TracedWorkflow:
    @workflow.run
    async def run(self, project_id: str) -> str:
        return await workflow.execute_activity(
            agent_activity, project_id, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn
class KillWorkflow:
    @workflow.run
    async def run(self, marker: str) -> int:
        return await workflow.execute_activity(
            block_first_attempt, marker,
            start_to_close_timeout=timedelta(seconds=60), heartbeat_timeout=timedelta(seconds=2),
            retry_policy=FAST_RETRY,
        )


@workflow.defn
class CancelActivityWorkflow:
    """Cancels its own activity after a moment and waits for the activity to acknowledge."""

    @workflow.run
    async def run(self) -> str:
        handle = workflow.start_activity(
            heartbeat_until_cancelled, start_to_close_timeout=timedelta(seconds=30),
            heartbeat_timeout=timedelta(seconds=2),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        await workflow.sleep(timedelta(milliseconds=500))
        handle.cancel()
        try:
            await handle
        except ActivityError as err:
            return type(err.cause).__name__
        return "not cancelled"


# Process-wide state for the at-least-once test; only valid with the UnsandboxedWorkflowRunner
# (the sandbox would re-import this module per run and reset it).
TASK_FAILURES_LEFT: dict[str, int] = {}


@workflow.defn(sandboxed=False)
class TaskFailsOnceWorkflow:
    """Its first workflow task fails after the interceptor recorded ``started``; the retry
    is not a replay (the failed task left no completed task in history), so it records again."""

    @workflow.run
    async def run(self) -> str:
        wid = workflow.info().workflow_id
        if TASK_FAILURES_LEFT.get(wid, 0) > 0:
            TASK_FAILURES_LEFT[wid] -= 1
            raise RuntimeError("workflow task failure (not a workflow failure)")
        return "done"


WORKFLOWS = [
    HelloWorkflow, NoopWorkflow, FailWorkflow, WaitWorkflow, LoopWorkflow, RetryWorkflow,
    MultiStepWorkflow, TracedWorkflow, KillWorkflow, CancelActivityWorkflow,
]
ACTIVITIES = [greet, flaky, agent_activity, block_first_attempt, heartbeat_until_cancelled]
