"""The catalogue's instruments on one meter, each with its cached, guarded label sets.

Recording code reads ``telemetry.metrics.<instrument>`` and ``.<label sets>``: one object,
built once per ``configure()``, so the hot path is attribute lookups and no locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from paid_telemetry import catalogue as cat
from paid_telemetry.guard import Guard, LabelSets
from paid_telemetry.settings import Settings


class Instruments:
    """Counters and histograms of the catalogue, plus the budget gauge's project list."""

    def __init__(self, meter: Meter, guard: Guard, settings: Settings) -> None:
        self._settings = settings
        self.known_projects: set[str] = set()

        def counter(inst: cat.Instrument) -> Any:
            return meter.create_counter(inst.name, unit=inst.unit, description=inst.description)

        def histogram(inst: cat.Instrument) -> Any:
            return meter.create_histogram(
                inst.name, unit=inst.unit, description=inst.description,
                explicit_bucket_boundaries_advisory=inst.buckets,
            )

        g = guard
        self.dropped = counter(cat.DROPPED_RECORDS)
        g.bind(self.dropped.add)
        track = self._track_project
        self.agent_runs = counter(cat.AGENT_RUNS)
        self.agent_duration = histogram(cat.AGENT_RUN_DURATION)
        self.agent_iterations = histogram(cat.AGENT_ITERATIONS)
        self.tokens = counter(cat.TOKENS)
        self.cost = counter(cat.COST_CENTS)
        self.workflow_started = counter(cat.WORKFLOW_STARTED)
        self.workflow_completed = counter(cat.WORKFLOW_COMPLETED)
        self.workflow_duration = histogram(cat.WORKFLOW_DURATION)
        self.activity_executions = counter(cat.ACTIVITY_EXECUTIONS)
        self.activity_duration = histogram(cat.ACTIVITY_DURATION)
        self.activity_retries = counter(cat.ACTIVITY_RETRIES)
        self.quality = histogram(cat.QUALITY_SCORE)
        self.external_requests = counter(cat.EXTERNAL_REQUESTS)
        self.external_duration = histogram(cat.EXTERNAL_DURATION)
        self.pull_requests = counter(cat.PULL_REQUESTS)
        meter.create_observable_gauge(
            cat.PROJECT_BUDGET.name, callbacks=[self._observe_budgets],
            unit=cat.PROJECT_BUDGET.unit, description=cat.PROJECT_BUDGET.description,
        )
        self.run_labels = LabelSets(cat.AGENT_RUNS, g, {"status": cat.AGENT_STATUSES}, track)
        self.run_hist_labels = LabelSets(cat.AGENT_RUN_DURATION, g, None, track)
        self.token_labels = LabelSets(cat.TOKENS, g, {"type": cat.TOKEN_TYPES}, track)
        self.cost_labels = LabelSets(cat.COST_CENTS, g, None, track)
        self.workflow_labels = LabelSets(cat.WORKFLOW_STARTED, g)
        self.workflow_hist_labels = LabelSets(cat.WORKFLOW_DURATION, g)
        self.workflow_status_labels = LabelSets(cat.WORKFLOW_COMPLETED, g, {"status": cat.WORKFLOW_STATUSES})
        self.activity_labels = LabelSets(cat.ACTIVITY_DURATION, g)
        self.activity_outcome_labels = LabelSets(cat.ACTIVITY_EXECUTIONS, g, {"outcome": cat.ACTIVITY_OUTCOMES})
        self.quality_labels = LabelSets(cat.QUALITY_SCORE, g, None, track)
        self.external_labels = LabelSets(cat.EXTERNAL_REQUESTS, g, {"outcome": cat.EXTERNAL_OUTCOMES})
        self.external_hist_labels = LabelSets(cat.EXTERNAL_DURATION, g)
        self.pr_labels = LabelSets(cat.PULL_REQUESTS, g, {"event": cat.PULL_REQUEST_EVENTS}, track)

    def _track_project(self, attrs: dict[str, str]) -> None:
        project = attrs.get("project_id")
        if project and project != "_overflow" and len(self.known_projects) < self._settings.cardinality_limit:
            self.known_projects.add(project)

    def _observe_budgets(self, _options: CallbackOptions) -> Iterable[Observation]:
        s = self._settings
        projects = set(self.known_projects) | set(s.budgets_cents)
        for project in sorted(projects):
            yield Observation(float(s.budgets_cents.get(project, s.default_budget_cents)), {"project_id": project})
