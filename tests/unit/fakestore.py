"""The state machine's Store, in memory: what the machine's unit tests run it against."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from panoptes.models import JobRow, WorkflowRow
from panoptes.status import EventKind, WorkflowStatus


class FakeStore:
    """Workflows and jobs in dictionaries; records what the machine says it changed."""

    def __init__(self) -> None:
        self.workflows: dict[int, WorkflowRow] = {}
        self.jobs: dict[tuple[int, int], JobRow] = {}
        self.announced: list[tuple[EventKind, int]] = []
        self.changed_jobs: list[tuple[int, int]] = []
        self.refusals: list[tuple[str, str, str]] = []
        self.changed_rule_names: list[str] = []
        self._next_id = 1

    def workflow(self, workflow_id: int) -> WorkflowRow | None:
        return self.workflows.get(workflow_id)

    def workflow_named(self, name: str) -> WorkflowRow | None:
        return next((wf for wf in self.workflows.values() if wf.name == name), None)

    def add_workflow(self, wf: WorkflowRow) -> None:
        wf.id = self._next_id
        self._next_id += 1
        self.workflows[wf.id] = wf

    def silent_workflows(self, cutoff: datetime) -> list[WorkflowRow]:
        return [
            wf
            for wf in self.workflows.values()
            if wf.status == WorkflowStatus.RUNNING and wf.updated_at < cutoff
        ]

    def job(self, workflow_id: int, jobid: int) -> JobRow | None:
        return self.jobs.get((workflow_id, jobid))

    def add_job(self, job: JobRow) -> None:
        self.jobs[(job.workflow_id, job.jobid)] = job

    def jobs_with_status(self, workflow_id: int, status: str) -> list[JobRow]:
        return [j for (w, _), j in self.jobs.items() if w == workflow_id and j.status == status]

    def job_counts(self, workflow_id: int) -> dict[str, int]:
        return dict(Counter(j.status for (w, _), j in self.jobs.items() if w == workflow_id))

    def delete_jobs(self, workflow_id: int) -> None:
        self.jobs = {key: job for key, job in self.jobs.items() if key[0] != workflow_id}

    def changed_workflow(
        self, wf: WorkflowRow, kind: EventKind = EventKind.WORKFLOW_UPDATED
    ) -> None:
        self.announced.append((kind, wf.id))

    def changed_job(self, job: JobRow) -> None:
        self.changed_jobs.append((job.workflow_id, job.jobid))

    def changed_rules(self, workflow_id: int, rules: list[str]) -> None:
        self.changed_rule_names.extend(rules)

    def refused(self, machine: str, current: str, trigger: str) -> None:
        self.refusals.append((machine, current, trigger))
