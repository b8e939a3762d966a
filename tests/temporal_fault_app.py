"""Workflows for tests/test_temporal_faults.py: they wait on a timer or a signal, so the
Temporal server can be stopped while they are in flight. Own module so the sandbox re-imports
only this file."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def finish(name: str) -> str:
    return f"done {name}"


@workflow.defn
class TimerWorkflow:
    """Sleeps on a durable timer, then runs one activity."""

    @workflow.run
    async def run(self, seconds: float) -> str:
        await workflow.sleep(timedelta(seconds=seconds))
        return await workflow.execute_activity(finish, "timer", start_to_close_timeout=timedelta(seconds=30))


@workflow.defn
class SignalWorkflow:
    """Waits for the ``go`` signal, then runs one activity."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return await workflow.execute_activity(finish, "signal", start_to_close_timeout=timedelta(seconds=30))


WORKFLOWS = [TimerWorkflow, SignalWorkflow]
ACTIVITIES = [finish]
