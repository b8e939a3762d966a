"""``AgentSessionWorkflow``: run an agent on a task, then open its pull request.

No metric code here: the ``TelemetryInterceptor`` on the worker's client counts workflow
starts/ends and activity attempts, replay-safely, and traces them. Log lines written with
structlog while the workflow replays are dropped by paid_telemetry's log processors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    import structlog

    from examples.activities import AGENT_FAILED, AgentOutcome, AgentTask, PullRequest, open_pull_request, run_agent

AGENT_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=[AGENT_FAILED])
GITHUB_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0, maximum_attempts=5)


@dataclass
class SessionRequest:
    project_id: str
    agent_type: str
    task: str


@dataclass
class SessionResult:
    outcome: AgentOutcome
    pull_request: PullRequest


@workflow.defn
class AgentSessionWorkflow:
    @workflow.run
    async def run(self, request: SessionRequest) -> SessionResult:
        log = structlog.get_logger().bind(workflow_id=workflow.info().workflow_id, project_id=request.project_id)
        log.info("agent session started", agent_type=request.agent_type)
        task = AgentTask(request.project_id, request.agent_type, request.task)
        try:
            outcome = await workflow.execute_activity(
                run_agent, task, start_to_close_timeout=timedelta(minutes=10), retry_policy=AGENT_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            details = cause.details if isinstance(cause, ApplicationError) else ()
            log.warning("agent session failed", error=str(cause))
            # fails the workflow (paid_workflow_completed_total{status="failed"}), keeping the run's numbers
            raise ApplicationError("agent run failed", *details, type=AGENT_FAILED, non_retryable=True) from err
        pull_request = await workflow.execute_activity(
            open_pull_request, task, start_to_close_timeout=timedelta(seconds=30), retry_policy=GITHUB_RETRY,
        )
        log.info("agent session completed", pull_request=pull_request.url)
        return SessionResult(outcome, pull_request)
