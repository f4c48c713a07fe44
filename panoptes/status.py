"""Status names, event kinds, and the tables of every move a workflow or a job may make.

This is the only module that spells these strings; everything else uses the enums. The two
tables below are the whole state machine's shape (ingest/machine.py applies them): a move
that is not in its table is refused, changes nothing, and is counted
(`panoptes_refused_moves_total`). A move to the state a workflow or job is already in is in
the table where it is harmless (a second job failure of a failed run), so that only real
refusals are counted.
"""

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


class EventKind(StrEnum):
    """What a stored event (and the feed message made from it) says happened."""

    WORKFLOW_CREATED = "workflow.created"
    WORKFLOW_UPDATED = "workflow.updated"
    WORKFLOW_RESET = "workflow.reset"  # a finished run's name was reused: its jobs are gone
    WORKFLOW_RENAMED = "workflow.renamed"
    WORKFLOW_CANCELLED = "workflow.cancelled"
    WORKFLOW_DELETED = "workflow.deleted"
    JOB_UPDATED = "job.updated"
    RULE_UPDATED = "rule.updated"
    LEGACY_MESSAGE = "legacy.message"  # a panoptes 1.x message, kept by the migration


# Event kinds that begin with this concern a workflow as a whole: the feed of every
# workflow (/ws) carries only these.
WORKFLOW_LEVEL_PREFIX = "workflow."


def is_workflow_level(kind: str) -> bool:
    return kind.startswith(WORKFLOW_LEVEL_PREFIX)


class Trigger(StrEnum):
    """What moves a workflow."""

    SUCCEEDED = "succeeded"  # workflow_success, "Nothing to be done", a dry run's end, ...
    ALL_DONE = "all done"  # progress with done == total
    FAILED = "failed"  # an error message, a job_error
    CANCELLED = "cancelled"  # the user, from the API or a page
    SILENT = "silent"  # no event for PANOPTES_STALE_HOURS
    HEARD = "heard"  # any message from the run
    RETRIED = "retried"  # a failed job runs again (--retries) and no other job is failing


class JobTrigger(StrEnum):
    """What moves a job."""

    STARTED = "started"  # job_started, or the job_info of a job that runs
    FINISHED = "finished"  # job_finished
    FAILED = "failed"  # job_error
    RUN_SUCCEEDED = "run succeeded"  # the run succeeded: whatever it started has finished


W = WorkflowStatus
J = JobStatus
T = Trigger
JT = JobTrigger

WORKFLOW_MOVES: dict[WorkflowStatus, dict[Trigger, WorkflowStatus]] = {
    W.RUNNING: {
        T.SUCCEEDED: W.DONE,
        T.ALL_DONE: W.DONE,
        T.FAILED: W.ERROR,
        T.CANCELLED: W.CANCELLED,
        T.SILENT: W.STALE,
        T.HEARD: W.RUNNING,
    },
    W.STALE: {
        T.HEARD: W.RUNNING,  # any event revives it
        T.CANCELLED: W.CANCELLED,
        T.SILENT: W.STALE,
    },
    W.ERROR: {
        T.FAILED: W.ERROR,
        # A job failed and Snakemake retries it (--retries): the run goes on.
        T.RETRIED: W.RUNNING,
        T.HEARD: W.ERROR,
    },
    W.DONE: {
        T.SUCCEEDED: W.DONE,
        T.ALL_DONE: W.DONE,
        # Snakemake 7/8 log their final WorkflowError after the 'Complete log' line.
        T.FAILED: W.ERROR,
        T.HEARD: W.DONE,
    },
    # Nothing moves a cancelled run: a late progress 8/8 or error from the client is refused.
    W.CANCELLED: {T.CANCELLED: W.CANCELLED, T.HEARD: W.CANCELLED},
}

JOB_MOVES: dict[JobStatus, dict[JobTrigger, JobStatus]] = {
    # A real run's client describes a job when it runs it: at a successful end, a job it
    # described and never said started has run (a dry run's planned jobs stay Waiting).
    J.WAITING: {
        JT.STARTED: J.RUNNING,
        JT.FINISHED: J.DONE,
        JT.FAILED: J.ERROR,
        JT.RUN_SUCCEEDED: J.DONE,
    },
    J.RUNNING: {
        JT.STARTED: J.RUNNING,
        JT.FINISHED: J.DONE,
        JT.FAILED: J.ERROR,
        JT.RUN_SUCCEEDED: J.DONE,
    },
    # Started again: a retry (--retries, or a rerun of the same job id), a new attempt.
    J.DONE: {JT.STARTED: J.RUNNING, JT.FINISHED: J.DONE, JT.FAILED: J.ERROR},
    J.ERROR: {JT.STARTED: J.RUNNING, JT.FINISHED: J.DONE, JT.FAILED: J.ERROR},
}

FINISHED = frozenset({W.DONE, W.ERROR, W.CANCELLED})


# A status read from the database is a plain str; it finds its row all the same (a StrEnum
# member hashes and compares as its value), without building an enum member per message.


def workflow_move(current: WorkflowStatus | str, trigger: Trigger) -> WorkflowStatus | None:
    """Where `trigger` takes a workflow in `current`, or None: the move is refused."""
    return WORKFLOW_MOVES[current].get(trigger)  # type: ignore[index]


def job_move(current: JobStatus | str, trigger: JobTrigger) -> JobStatus | None:
    """Where `trigger` takes a job in `current`, or None: the move is refused."""
    return JOB_MOVES[current].get(trigger)  # type: ignore[index]
