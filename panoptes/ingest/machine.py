"""The one state machine: a client message becomes changes to workflows and jobs.

Every level of every client is handled here, in one place, by a handler per level (the
HANDLERS table at the end); runs.py registers, reuses, sweeps and cancels runs. Both move
workflows and jobs only through `move` and `_move_job`, which follow the tables in
status.py (WORKFLOW_MOVES, JOB_MOVES): a move not in its table is refused and reported to
the store, which counts it. The machine does no I/O: it reads and changes rows through a
`Store` (in the server, the writer's transaction, store/tx.py; in the unit tests, a
dictionary), so it runs synchronously inside a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from ..errors import UnknownWorkflow
from ..models import JobRow, WorkflowRow, utcnow
from ..status import (
    FINISHED,
    EventKind,
    JobStatus,
    JobTrigger,
    Trigger,
    WorkflowStatus,
    job_move,
    workflow_move,
)
from . import facts, wire
from .wire import Level, Message

W = WorkflowStatus
J = JobStatus
K = EventKind

MAX_ERROR_CHARS = 64 * 1024


class Store(Protocol):
    """What the machine reads and changes. Rows it is given are its to change; it says
    which it changed, so the store can write and announce them."""

    def workflow(self, workflow_id: int) -> WorkflowRow | None: ...
    def workflow_named(self, name: str) -> WorkflowRow | None: ...
    def add_workflow(self, wf: WorkflowRow) -> None: ...
    def silent_workflows(self, cutoff: datetime) -> list[WorkflowRow]: ...
    def job(self, workflow_id: int, jobid: int) -> JobRow | None: ...
    def add_job(self, job: JobRow) -> None: ...
    def jobs_with_status(self, workflow_id: int, status: str) -> list[JobRow]: ...
    def job_counts(self, workflow_id: int) -> dict[str, int]: ...
    def delete_jobs(self, workflow_id: int) -> None: ...
    def changed_workflow(self, wf: WorkflowRow, kind: EventKind = K.WORKFLOW_UPDATED) -> None: ...
    def changed_job(self, job: JobRow) -> None: ...
    def changed_rules(self, workflow_id: int, rules: list[str]) -> None: ...
    def refused(self, machine: str, current: str, trigger: str) -> None: ...


# --------------------------------------------------------------------------- moves


def move(store: Store, wf: WorkflowRow, trigger: Trigger, at: datetime) -> bool:
    """Move the workflow as the table says; whether its status changed."""
    target = workflow_move(wf.status, trigger)
    if target is None:
        store.refused("workflow", wf.status, trigger)
        return False
    if target == wf.status:
        return False
    wf.status = target
    wf.finished_at = at if target in FINISHED else None
    store.changed_workflow(wf)
    return True


def can(wf: WorkflowRow, trigger: Trigger) -> bool:
    """Whether the table allows `trigger` for the workflow now."""
    return workflow_move(wf.status, trigger) is not None


def _move_job(store: Store, wf: WorkflowRow, job: JobRow, trigger: JobTrigger) -> str | None:
    """Move the job as the table says; its status before, or None if the move is refused
    or changes nothing. Keeps the workflow's count of failed jobs (latest attempt failed)."""
    before = job.status
    target = job_move(before, trigger)
    if target is None:
        store.refused("job", before, trigger)
        return None
    if target == before:
        return None
    job.status = target
    store.changed_job(job)
    failed = (target == J.ERROR) - (before == J.ERROR)
    if failed:
        wf.jobs_failed = (wf.jobs_failed or 0) + failed
        store.changed_workflow(wf)
    return before


# --------------------------------------------------------------------------- workflows


def apply_message(store: Store, message: Message) -> bool:
    """Apply one validated message. Returns False for a duplicate that was dropped."""
    wf = store.workflow(message.workflow_id)
    if wf is None:
        raise UnknownWorkflow(message.workflow_id)
    if message.digest is not None:
        if message.digest == wf.last_digest:
            return False
        wf.last_digest = message.digest
    wf.updated_at = max(wf.updated_at, utcnow())
    move(store, wf, Trigger.HEARD, message.at)
    handler = HANDLERS.get(message.level)
    if handler is not None:
        handler(store, wf, message)
    return True


def _add_error(store: Store, wf: WorkflowRow, text: str) -> None:
    # Once, though the run's own error may come twice (its `error`, then workflow_error).
    if text and text not in (wf.error or "").split("\n\n"):
        wf.error = "\n\n".join(filter(None, [wf.error, text]))[:MAX_ERROR_CHARS]
        store.changed_workflow(wf)


def _finish_successfully(store: Store, wf: WorkflowRow, at: datetime) -> None:
    if wf.status not in (W.RUNNING, W.STALE):
        return
    # The run succeeded, so every job it started finished, even where the client did not
    # say so (snakemake -q sends job_started but no job_finished); so did every job it
    # described, unless it was a dry run, which only plans them.
    ended = [J.RUNNING] if wf.dry_run else [J.RUNNING, J.WAITING]
    for status in ended:
        for job in store.jobs_with_status(wf.id, status):
            _end_job(store, wf, job, JobTrigger.RUN_SUCCEEDED, at, None)
    # Counts from the job rows: what really ran (an --until run never reaches its total).
    counts = store.job_counts(wf.id)
    wf.jobs_total, wf.jobs_done = sum(counts.values()), counts.get(J.DONE, 0)
    store.changed_workflow(wf)
    move(store, wf, Trigger.SUCCEEDED, at)


# --------------------------------------------------------------------------- jobs


def _job(
    store: Store, wf: WorkflowRow, jobid: int, at: datetime, *, starts: bool = True
) -> tuple[JobRow, bool]:
    """The job, created if unseen: Running if `starts` (and the run is not a dry run), else
    Waiting. The bool says whether it is new."""
    job = store.job(wf.id, jobid)
    if job is not None:
        return job, False
    running = starts and not wf.dry_run
    values: dict[str, Any] = {
        "workflow_id": wf.id,
        "jobid": jobid,
        "status": J.RUNNING if running else J.WAITING,
        "started_at": at if running else None,
        "attempt": 1,
        "attempts": [_attempt_record(1, at)] if running else [],
        "wildcards": {},
        "input": [],
        "output": [],
        "log": [],
        "is_checkpoint": False,
    }
    job = JobRow(values, new=True)
    store.add_job(job)
    store.changed_job(job)
    return job, True


def _attempt_record(number: int, at: datetime) -> dict[str, Any]:
    return {
        "attempt": number,
        "status": J.RUNNING.value,
        "started_at": at.isoformat(),
        "finished_at": None,
        "error": None,
    }


def _end_job(
    store: Store, wf: WorkflowRow, job: JobRow, trigger: JobTrigger, at: datetime, error: str | None
) -> bool:
    """The job's attempt ended (finished or failed): whether the job moved."""
    if _move_job(store, wf, job, trigger) is None:
        return False
    job.finished_at = at
    job.error = error if job.status == J.ERROR else job.error
    attempts = list(job.attempts or [])
    if not attempts:
        attempts.append(_attempt_record(job.attempt, job.started_at or at))
    last = dict(attempts[-1])
    last.update(status=job.status, finished_at=at.isoformat(), error=error)
    attempts[-1] = last
    job.attempts = attempts  # a new list, so the JSON column sees the change
    return True


def _start_job(store: Store, wf: WorkflowRow, jobid: int, at: datetime) -> JobRow:
    """The job is running: new, waiting, or a retry of a failed attempt."""
    job, new = _job(store, wf, jobid, at)
    if new and not wf.dry_run:
        return job
    if job.status == J.WAITING and wf.dry_run:
        return job  # a dry run only plans its jobs
    before = _move_job(store, wf, job, JobTrigger.STARTED)
    if before == J.WAITING:
        job.started_at = at
        job.attempts = [_attempt_record(job.attempt, at)]
    elif before in (J.ERROR, J.DONE):
        _retry(store, wf, job, before, at)
    return job


def _retry(store: Store, wf: WorkflowRow, job: JobRow, before: str, at: datetime) -> None:
    job.attempt += 1
    job.started_at = at
    job.finished_at = None
    job.error = None
    job.exit_code = None
    job.logs = None  # they told why the attempt before failed
    job.attempts = [*(job.attempts or []), _attempt_record(job.attempt, at)]
    if before == J.ERROR and wf.status == W.ERROR and not wf.jobs_failed:
        # The run was taken for failed on an error nobody could place, and Snakemake
        # retries the failed job (--retries): the run goes on.
        if move(store, wf, Trigger.RETRIED, at):
            wf.error = None


# --------------------------------------------------------------------------- handlers


def on_job_started(store: Store, wf: WorkflowRow, message: Message) -> None:
    for jobid in wire.started_jobs(message.body):
        _start_job(store, wf, jobid, message.at)


def on_job_info(store: Store, wf: WorkflowRow, message: Message) -> None:
    body, at = message.body, message.at
    jobid = int(body["jobid"])
    if message.stamped:
        # Snakemake 7/8 send no job_started: their job_info is the job starting.
        job = _start_job(store, wf, jobid, at)
    else:
        # The Snakemake 9 plugin says job_started when a job runs; a job_info alone (a
        # dry run's plan with plugin 0.1.1) describes a job that waits.
        job, _ = _job(store, wf, jobid, at, starts=False)
    facts.describe_job(job, body)
    _seen_rule(wf, job.rule)
    wf.last_job_info = jobid
    store.changed_job(job)


MAX_RULES_SEEN = 20


def _seen_rule(wf: WorkflowRow, rule: str | None) -> None:
    """Note a rule for the run's label. Not announced by itself: the label travels with the
    workflow's next event (a progress follows every finished job), so a batch's events stay
    one per job and rule."""
    seen = wf.rules_seen or []
    if rule and rule not in seen and len(seen) < MAX_RULES_SEEN:
        wf.rules_seen = [*seen, rule]  # a new list, so the JSON column sees the change


def on_job_finished(store: Store, wf: WorkflowRow, message: Message) -> None:
    job, _ = _job(store, wf, int(message.body["jobid"]), message.at)
    _end_job(store, wf, job, JobTrigger.FINISHED, message.at, None)
    measured = facts.benchmark(message.body.get("benchmark"))
    if measured is not None:
        job.benchmark = measured
        store.changed_job(job)


def on_job_error(store: Store, wf: WorkflowRow, message: Message) -> None:
    """A job failed. The run goes on (--keep-going, --retries) until its own end says
    otherwise (on_error), so the workflow stays where it is and counts the failure."""
    body = message.body
    job, _ = _job(store, wf, int(body["jobid"]), message.at)
    job.rule = job.rule or body.get("name") or None
    if body.get("shellcmd") and not job.shellcmd:
        job.shellcmd = body["shellcmd"]
    # The error text comes with it (plugin 1.0.0) or in the `error` message just before
    # (RuleException ...).
    text = (body.get("error") or wf.last_error or "job failed")[:MAX_ERROR_CHARS]
    wf.last_error = None
    if _end_job(store, wf, job, JobTrigger.FAILED, message.at, text):
        job.exit_code = facts.exit_code(body, text)
        job.logs = facts.log_tails(body.get("logs"))


def _ends_the_run(store: Store, wf: WorkflowRow, text: str) -> bool:
    if wire.says_the_run_failed(text):
        return True
    if wire.names_a_job_failure(text):
        return False
    # An error nobody can place: while jobs still run it is taken for theirs (a job_error
    # may follow); the run's own end comes with one of _RUN_ERRORS.
    return not store.job_counts(wf.id).get(J.RUNNING)


def on_error(store: Store, wf: WorkflowRow, message: Message) -> None:
    body = message.body
    parts = [str(body.get("msg") or body.get("exception") or "error")]
    for key in ("rule", "location"):
        if body.get(key):
            parts.append(f"{key}: {body[key]}")
    if body.get("traceback"):
        parts.append(str(body["traceback"]))
    text = " | ".join(parts)
    wf.last_error = text
    if _ends_the_run(store, wf, text):
        _add_error(store, wf, text)
        move(store, wf, Trigger.FAILED, message.at)


def on_progress(store: Store, wf: WorkflowRow, message: Message) -> None:
    if wf.status == W.DONE:
        return  # counts were reconciled when it finished
    done, total = int(message.body["done"]), int(message.body["total"])
    if (wf.jobs_done, wf.jobs_total) != (done, total):
        wf.jobs_done, wf.jobs_total = done, total
        store.changed_workflow(wf)
    if total > 0 and done >= total:
        move(store, wf, Trigger.ALL_DONE, message.at)


def on_run_info(store: Store, wf: WorkflowRow, message: Message) -> None:
    """The plan: jobs per rule and in all, from plugin 1.0.0's `stats`, else from the
    "Job stats" table Snakemake 7/8 send."""
    plan = facts.planned(message.body.get("stats")) or wire.parse_job_stats(message.body.get("msg"))
    if plan is None:
        return
    rules, total = plan
    if len(rules) > wire.MAX_PLANNED_RULES:
        rules = {}
    if not wf.jobs_total:
        wf.jobs_total = total
    store.changed_workflow(wf)
    if rules:  # none from a table too long to plan by (wire.MAX_PLANNED_RULES)
        wf.plan = rules
        store.changed_rules(wf.id, list(rules))


def on_shellcmd(store: Store, wf: WorkflowRow, message: Message) -> None:
    command = message.body.get("msg")
    if not isinstance(command, str) or not command:
        return
    jobid = message.body.get("jobid")
    if jobid is None:
        # Snakemake 7/8 send the command right after the job_info it belongs to.
        jobid = wf.last_job_info
    if jobid is None:
        return
    job = store.job(wf.id, int(jobid))
    if job is not None and not job.shellcmd:
        job.shellcmd = command
        store.changed_job(job)


def on_info(store: Store, wf: WorkflowRow, message: Message) -> None:
    text = message.body.get("msg")
    if not isinstance(text, str):
        return
    if text.startswith("Nothing to be done"):
        _finish_successfully(store, wf, message.at)
    elif text.startswith("Terminating processes on user request"):
        # Snakemake 7/8 stopped by Ctrl-C (SIGINT): the run ends here, and it did not
        # succeed, whatever "Complete log" says next.
        _add_error(store, wf, f"interrupted: {text}")
        move(store, wf, Trigger.FAILED, message.at)
    elif text.startswith("This was a dry-run"):
        wf.dry_run = True
        _finish_successfully(store, wf, message.at)
    elif text.startswith("Complete log"):
        # Snakemake 7/8 write this at the end of every real run; a failed run has
        # already turned Error, so a still-running workflow has succeeded (--until too).
        _finish_successfully(store, wf, message.at)


def on_workflow_success(store: Store, wf: WorkflowRow, message: Message) -> None:
    _finish_successfully(store, wf, message.at)


def on_workflow_error(store: Store, wf: WorkflowRow, message: Message) -> None:
    """Plugin 1.0.0's end of a failed run, with the run's last error."""
    text = message.body.get("msg")
    _add_error(store, wf, text if isinstance(text, str) and text else "the run failed")
    move(store, wf, Trigger.FAILED, message.at)


def on_rulegraph(store: Store, wf: WorkflowRow, message: Message) -> None:
    if "rules" not in message.body and "edges" not in message.body:
        return  # not plugin 1.0.0's graph (docs/wire.md)
    wf.rulegraph = facts.rulegraph(message.body)
    store.changed_workflow(wf)


Handler = Callable[[Store, WorkflowRow, Message], None]

HANDLERS: dict[str, Handler] = {
    Level.JOB_STARTED: on_job_started,
    Level.JOB_INFO: on_job_info,
    Level.JOB_FINISHED: on_job_finished,
    Level.JOB_ERROR: on_job_error,
    Level.ERROR: on_error,
    Level.PROGRESS: on_progress,
    Level.RUN_INFO: on_run_info,
    Level.SHELLCMD: on_shellcmd,
    Level.INFO: on_info,
    Level.WORKFLOW_SUCCESS: on_workflow_success,
    Level.WORKFLOW_ERROR: on_workflow_error,
    Level.RULEGRAPH: on_rulegraph,
}
