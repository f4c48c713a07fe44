"""Status names and the only table of allowed workflow transitions."""

from __future__ import annotations

from enum import StrEnum


class WorkflowStatus(StrEnum):
    RUNNING = "Running"
    DONE = "Done"
    ERROR = "Error"
    CANCELLED = "Cancelled"
    STALE = "Stale"


class JobStatus(StrEnum):
    WAITING = "Waiting"
    RUNNING = "Running"
    DONE = "Done"
    ERROR = "Error"


W = WorkflowStatus

# (from, to) pairs that may happen. Everything else is refused by `can_move`, which is how
# a late progress 8/8 cannot turn an Error or Cancelled run back into Done.
TRANSITIONS: frozenset[tuple[WorkflowStatus, WorkflowStatus]] = frozenset(
    {
        (W.RUNNING, W.DONE),  # progress done == total, workflow_success, nothing to be done
        (W.RUNNING, W.ERROR),  # error, job_error
        (W.RUNNING, W.CANCELLED),  # the user cancels
        (W.RUNNING, W.STALE),  # silent for longer than PANOPTES_STALE_HOURS
        (W.STALE, W.RUNNING),  # any event revives it
        (W.STALE, W.CANCELLED),
        # A job failed and Snakemake retries it (--retries): the run goes on.
        (W.ERROR, W.RUNNING),
        # Snakemake 7/8 log their final WorkflowError after the 'Complete log' line.
        (W.DONE, W.ERROR),
    }
)

FINISHED = frozenset({W.DONE, W.ERROR, W.CANCELLED})


def can_move(current: WorkflowStatus | str, target: WorkflowStatus) -> bool:
    return current == target or (WorkflowStatus(current), target) in TRANSITIONS
