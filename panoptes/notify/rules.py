"""Which notifications the events are due: no I/O, so the rules are tested on plain data.

The notifier reads only the workflow-level events (workflow.*): a few per batch, where
job.updated are most of the log. A run's first failed job shows there as `jobs_failed`
going above 0.

Per workflow the notifier keeps what it last told (`Told`): the status, whether this run's
first failed job was told, and since when the workflow is stuck. A status is told when it
differs from the last one told, so Error -> Running (a retry) -> Done tells error, then
done, and two events both saying Error tell one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..status import EventKind, WorkflowStatus

K = EventKind
W = WorkflowStatus

# The statuses told, and the event each is told as.
TOLD_STATUSES = {
    W.DONE.value: "workflow.done",
    W.ERROR.value: "workflow.error",
    W.CANCELLED.value: "workflow.cancelled",
    W.STALE.value: "workflow.stale",
}
STUCK = "workflow.stuck"
JOB_FAILED = "job.failed"
# A new run under this id: what was told of the earlier one no longer counts.
NEW_RUN = {K.WORKFLOW_CREATED.value, K.WORKFLOW_RESET.value}
# What a stuck workflow recovers on: a sign of life from its client, not the sweeper's
# Stale nor a user's cancel.
LIVE_STATUSES = {W.RUNNING.value, W.DONE.value, W.ERROR.value}


@dataclass
class Told:
    status: str | None = None
    job_failed: bool = False
    stuck_since: datetime | None = None


@dataclass(frozen=True)
class Due:
    """A notification to enqueue (for every target that wants it)."""

    event: str
    workflow_id: int
    jobid: int | None = None
    workflow: dict[str, Any] | None = None  # the workflow view, when the event carries it
    job: dict[str, Any] | None = None
    recovered: bool = False


@dataclass(frozen=True)
class Seen:
    """One event of the log, as the rules need it."""

    type: str
    workflow_id: int | None
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Batch:
    """The events after seq `after`, up to seq `last` (those that matter, as Seen)."""

    after: int
    last: int
    seen: list[Seen]
    more: bool  # the batch was full: more may follow


def _recovers(event: Seen, told: Told) -> bool:
    if told.stuck_since is None or event.created_at <= told.stuck_since:
        return False
    status = (event.payload.get("workflow") or {}).get("status")
    return event.type.startswith("workflow.") and status in LIVE_STATUSES


def examine(events: list[Seen], told: dict[int, Told]) -> tuple[list[Due], set[int]]:
    """The notifications `events` make due, in order, and the workflows deleted among
    them. `told` is updated in place (a missing workflow is added)."""
    due: list[Due] = []
    deleted: set[int] = set()
    for event in events:
        workflow_id = event.workflow_id
        if workflow_id is None:
            continue
        if event.type == K.WORKFLOW_DELETED:
            told.pop(workflow_id, None)
            deleted.add(workflow_id)
            continue
        deleted.discard(workflow_id)
        state = told.setdefault(workflow_id, Told())
        if event.type in NEW_RUN:
            told[workflow_id] = state = Told()
        view = event.payload.get("workflow")
        if _recovers(event, state):
            state.stuck_since = None
            due.append(Due(STUCK, workflow_id, workflow=view, recovered=True))
        if not isinstance(view, dict):
            continue
        failed = view.get("jobs_failed")
        if isinstance(failed, int) and failed > 0 and not state.job_failed:
            state.job_failed = True  # the job itself is looked up when it is enqueued
            due.append(Due(JOB_FAILED, workflow_id, workflow=view))
        if event.type.startswith("workflow."):
            status = view.get("status")
            if status == W.CANCELLED:
                state.stuck_since = None
            changed = status != state.status and event.type != K.WORKFLOW_RENAMED
            if status in TOLD_STATUSES and changed:
                due.append(Due(TOLD_STATUSES[status], workflow_id, workflow=view))
            if isinstance(status, str):
                state.status = status
    return due, deleted
