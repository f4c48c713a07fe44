"""The one state machine: a Snakemake client message becomes database changes and events.

Three client families talk to panoptes (see docs in README): Snakemake 9 with the
panoptes logger plugin, and Snakemake 7/8 with --wms-monitor. They send different levels in
different orders; every level of all of them is handled here, in one place.

Parsing (`parse_message`) validates everything before anything is written, so a malformed
message changes nothing. Applying (`apply_message`, `register_workflow`) runs inside the
writer's transaction.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, select

from .models import MAX_BIGINT, MAX_INT, Job, JobRow, Workflow, utcnow
from .status import FINISHED, JobStatus, WorkflowStatus, can_move
from .writer import DomainError, Preload, Tx

W = WorkflowStatus

MAX_ERROR_CHARS = 64 * 1024
# Workflow names are unique, and a unique index cannot hold arbitrarily long keys
# (PostgreSQL's B-tree stops near 2,700 bytes): longer names are refused, never cut.
MAX_NAME_CHARS = 200
# Snakemake's messages are a few levels deep; far deeper ones could not even be written back
# out as JSON (orjson stops at 255 levels, and stored values travel inside envelopes).
MAX_DEPTH = 64


class IngestError(DomainError):
    """A client message panoptes cannot use; nothing was stored."""

    status = 400
    error = "invalid message"


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Message:
    workflow_id: int
    level: str
    body: dict[str, Any]
    # Set for legacy messages, which carry their own event time; used to drop the
    # duplicate copy Snakemake 8 sends of every message.
    digest: str | None
    at: datetime


def _fits(number: int) -> bool:
    """Whether an INTEGER column (job ids, counts, threads, priorities) can hold it."""
    return -MAX_INT - 1 <= number <= MAX_INT


def _int_field(body: dict[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise IngestError(f"{name!r} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise IngestError(f"{name!r} must be an integer, got {value!r}") from None
    if not _fits(number):
        raise IngestError(f"{name!r} is out of range, got {value!r}")
    return number


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON value with every NUL character made U+FFFD: PostgreSQL cannot store NUL in
    text, and a client's message is kept rather than refused over one."""
    if depth > MAX_DEPTH:
        raise IngestError(f"'msg' is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [clean(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {clean(key): clean(item, depth + 1) for key, item in value.items()}
    return value


def _event_time(body: dict[str, Any], received: datetime) -> datetime:
    """The legacy clients' own event time when it is believable, else the receive time."""
    stamp = body.get("timestamp")
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and math.isfinite(stamp):
        try:
            at = datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, OSError, ValueError):
            return received
        if abs(at - received) < timedelta(days=1):
            return min(at, received)
    return received


def parse_workflow_id(value: Any) -> int:
    if value is None or value == "":
        raise IngestError("'id' is missing: call /create_workflow first and send its id")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise IngestError(f"'id' must be the integer /create_workflow returned, got {value!r}")
    try:
        workflow_id = int(value)
    except ValueError:
        raise IngestError(
            f"'id' must be the integer /create_workflow returned, got {value!r}"
        ) from None
    if not 0 <= workflow_id <= MAX_BIGINT:  # no workflow can have it
        raise IngestError(
            f"no workflow with id {workflow_id}; register with /create_workflow",
            status=422,
            error="unknown workflow",
        )
    return workflow_id


def parse_message(envelope: dict[str, Any], received: datetime | None = None) -> Message:
    """Validate an /update_workflow_status envelope ({msg, timestamp, id})."""
    received = received or utcnow()
    raw = envelope.get("msg")
    if raw is None:
        raise IngestError("'msg' is missing")
    raw_text: str | None = None
    if isinstance(raw, dict):
        body = raw
    elif isinstance(raw, str):
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise IngestError(f"'msg' is not valid JSON: {exc}") from None
        raw_text = raw
    else:
        raise IngestError("'msg' must be a JSON-encoded object")
    if not isinstance(body, dict):
        raise IngestError("'msg' must encode a JSON object")
    if raw_text is None:
        body = clean(body)  # first: orjson cannot write what is nested too deeply
        raw_text = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    elif "\\u0000" in raw_text or raw_text.count("[") + raw_text.count("{") > MAX_DEPTH:
        # The cheap tests above spare nearly every message the walk through it.
        body = clean(body)
    level = body.get("level", "")
    if not isinstance(level, str):
        raise IngestError(f"'level' must be a string, got {level!r}")
    workflow_id = parse_workflow_id(envelope.get("id"))
    validator = VALIDATORS.get(level)
    if validator is not None:
        validator(body)
    digest = hashlib.sha256(raw_text.encode()).hexdigest() if "timestamp" in body else None
    return Message(workflow_id, level, body, digest, _event_time(body, received))


def _check_job(body: dict[str, Any]) -> None:
    _int_field(body, "jobid")


def _check_strings(body: dict[str, Any], *names: str) -> None:
    for name in names:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise IngestError(f"{name!r} must be a string, got {type(value).__name__}")


def _check_job_error(body: dict[str, Any]) -> None:
    _check_job(body)
    _check_strings(body, "name", "shellcmd")


def _check_optional_job(body: dict[str, Any]) -> None:
    _int_field(body, "jobid", optional=True)


def _check_job_info(body: dict[str, Any]) -> None:
    _check_job(body)
    for name in ("input", "output", "log"):
        value = body.get(name)
        if value is not None and not isinstance(value, list | str):
            raise IngestError(f"{name!r} must be a list of paths, got {type(value).__name__}")
    _check_strings(body, "name", "msg", "shellcmd", "reason")
    wildcards = body.get("wildcards")
    if wildcards is not None and not isinstance(wildcards, dict | list):
        raise IngestError("'wildcards' must be an object")
    _int_field(body, "threads", optional=True)
    _int_field(body, "priority", optional=True)


def _check_job_started(body: dict[str, Any]) -> None:
    jobs = body.get("jobs")
    items = jobs if isinstance(jobs, list) else [jobs]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not _fits(item):
            raise IngestError(f"'jobs' must be a list of integer job ids, got {jobs!r}")


def _check_progress(body: dict[str, Any]) -> None:
    for name in ("done", "total"):
        value = _int_field(body, name)
        if value is not None and value < 0:
            raise IngestError(f"{name!r} must not be negative")


VALIDATORS: dict[str, Callable[[dict[str, Any]], None]] = {
    "job_info": _check_job_info,
    "job_started": _check_job_started,
    "job_finished": _check_job,
    "job_error": _check_job_error,
    "shellcmd": _check_optional_job,
    "progress": _check_progress,
}


@dataclass(frozen=True)
class Registration:
    """What /create_workflow was asked for."""

    name: str | None = None
    command: str | None = None
    workdir: str | None = None
    snakefile: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and len(self.name) > MAX_NAME_CHARS:
            raise IngestError(
                f"the workflow id is {len(self.name)} characters long; "
                f"at most {MAX_NAME_CHARS} are allowed"
            )

    @property
    def dry_run(self) -> bool:
        if not self.command:
            return False
        try:
            words = shlex.split(self.command)
        except ValueError:
            words = self.command.split()
        return any(w in ("-n", "--dry-run", "--dryrun", "--dry_run") for w in words)


# --------------------------------------------------------------------------- applying


def rows_to_load(message: Message) -> Preload:
    """The workflow and jobs applying the message looks up, for the writer to load at once."""
    body = message.body
    jobids: list[Any] = []
    if message.level == "job_started":
        jobids = body["jobs"] if isinstance(body["jobs"], list) else [body["jobs"]]
    elif message.level in ("job_info", "job_finished", "job_error", "shellcmd"):
        jobids = [body["jobid"]] if body.get("jobid") is not None else []
    workflow_id = message.workflow_id
    return Preload(workflows=(workflow_id,), jobs=tuple((workflow_id, int(j)) for j in jobids))


def sweep_stale(tx: Tx, stale_hours: float, now: datetime | None = None) -> int:
    """Mark Running workflows that have been silent too long as Stale."""
    if stale_hours <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(hours=stale_hours)
    tx.flush()  # the batch's changes to these columns count
    silent = tx.session.scalars(
        select(Workflow).where(Workflow.status == W.RUNNING, Workflow.updated_at < cutoff)
    )
    count = 0
    for wf in silent:
        wf.status = W.STALE
        tx.changed_workflow(wf)
        count += 1
    return count


def register_workflow(tx: Tx, request: Registration, stale_hours: float) -> Workflow:
    """GET /create_workflow: a new run, or the reuse of a finished one with the same name."""
    now = utcnow()
    sweep_stale(tx, stale_hours, now)
    name = request.name or str(uuid.uuid4())
    # The batch may have registered or renamed a workflow of this name, or started jobs of
    # the one the name belongs to (which the reset below must delete too).
    tx.flush()
    existing = tx.session.scalar(select(Workflow).where(Workflow.name == name))
    if existing is not None and existing.status == W.RUNNING:
        # Restart protection: a live run is never wiped; the new one gets its own name.
        name = f"{name}-{uuid.uuid4().hex[:8]}"
        existing = None
    if existing is None:
        wf = Workflow(name=name, started_at=now, updated_at=now)
        _describe(wf, request)
        tx.session.add(wf)
        tx.changed_workflow(wf, "workflow.created")
        return wf
    tx.session.execute(delete(Job).where(Job.workflow_id == existing.id))
    tx.forget_jobs(existing.id)
    existing.status = W.RUNNING
    existing.jobs_done = existing.jobs_total = 0
    existing.started_at = existing.updated_at = now
    existing.finished_at = None
    existing.error = None
    existing.last_job_info = None
    existing.last_digest = None
    existing.last_error = None
    _describe(existing, request)
    tx.changed_workflow(existing, "workflow.reset")
    return existing


def _describe(wf: Workflow, request: Registration) -> None:
    wf.command = request.command
    wf.workdir = request.workdir
    wf.snakefile = request.snakefile
    wf.dry_run = request.dry_run


def apply_message(tx: Tx, message: Message) -> bool:
    """Apply one validated message. Returns False for a duplicate that was dropped."""
    wf = tx.session.get(Workflow, message.workflow_id)
    if wf is None:
        raise IngestError(
            f"no workflow with id {message.workflow_id}; register with /create_workflow",
            status=422,
            error="unknown workflow",
        )
    if message.digest is not None:
        if message.digest == wf.last_digest:
            return False
        wf.last_digest = message.digest
    wf.updated_at = max(wf.updated_at, utcnow())
    if wf.status == W.STALE:
        _move(tx, wf, W.RUNNING, message.at)
    handler = HANDLERS.get(message.level)
    if handler is not None:
        handler(tx, wf, message.body, message.at)
    return True


def _move(tx: Tx, wf: Workflow, target: WorkflowStatus, at: datetime) -> bool:
    if wf.status == target or not can_move(wf.status, target):
        return False
    wf.status = target
    wf.finished_at = at if target in FINISHED else None
    tx.changed_workflow(wf)
    return True


def cancel_workflow(tx: Tx, wf: Workflow) -> None:
    if _move(tx, wf, W.CANCELLED, utcnow()):
        tx.changed_workflow(wf, "workflow.cancelled")


def _add_error(tx: Tx, wf: Workflow, text: str) -> None:
    lines = wf.error.split("\n") if wf.error else []
    if text and text not in lines:
        wf.error = "\n".join([*lines, text])[:MAX_ERROR_CHARS]
        tx.changed_workflow(wf)


def _reconcile_counts(tx: Tx, wf: Workflow) -> None:
    """Counts from the job rows: what really ran (an --until run never reaches its total)."""
    total, done = (
        tx.session.execute(
            select(func.count(), func.count().filter(Job.status == JobStatus.DONE)).where(
                Job.workflow_id == wf.id
            )
        )
    ).one()
    wf.jobs_total, wf.jobs_done = total, done
    tx.changed_workflow(wf)


def _finish_successfully(tx: Tx, wf: Workflow, at: datetime) -> None:
    if wf.status in (W.RUNNING, W.STALE):
        # The run succeeded, so every job it started finished, even where the client
        # did not say so (snakemake -q sends job_started but no job_finished).
        for job in tx.jobs_with_status(wf.id, JobStatus.RUNNING):
            job.status = JobStatus.DONE
            job.finished_at = at
            _end_attempt(job, JobStatus.DONE, at, None)
            tx.changed_job(job)
        tx.flush()
        _reconcile_counts(tx, wf)
        _move(tx, wf, W.DONE, at)


# ---- job lifecycle


def _job(tx: Tx, wf: Workflow, jobid: int, at: datetime) -> tuple[JobRow, bool]:
    """The job, created if unseen. The bool says whether it is new."""
    job = tx.job(wf.id, jobid)
    if job is not None:
        return job, False
    status = JobStatus.WAITING if wf.dry_run else JobStatus.RUNNING
    values = {
        "workflow_id": wf.id,
        "jobid": jobid,
        "status": status,
        "started_at": None if wf.dry_run else at,
        "attempt": 1,
        "attempts": [] if wf.dry_run else [_attempt_record(1, at)],
        "wildcards": {},
        "input": [],
        "output": [],
        "log": [],
        "is_checkpoint": False,
    }
    job = JobRow(values, new=True)
    tx.add_job(job)
    tx.changed_job(job)
    return job, True


def _attempt_record(number: int, at: datetime) -> dict[str, Any]:
    return {
        "attempt": number,
        "status": JobStatus.RUNNING.value,
        "started_at": at.isoformat(),
        "finished_at": None,
        "error": None,
    }


def _end_attempt(job: JobRow, status: JobStatus, at: datetime, error: str | None) -> None:
    attempts = list(job.attempts or [])
    if not attempts:
        attempts.append(_attempt_record(job.attempt, job.started_at or at))
    last = dict(attempts[-1])
    last.update(status=status.value, finished_at=at.isoformat(), error=error)
    attempts[-1] = last
    job.attempts = attempts  # a new list, so the JSON column sees the change


def _start_job(tx: Tx, wf: Workflow, jobid: int, at: datetime) -> JobRow:
    """The job is running: new, waiting, or a retry of a failed attempt."""
    job, new = _job(tx, wf, jobid, at)
    if new and not wf.dry_run:
        return job
    if job.status in (JobStatus.ERROR, JobStatus.DONE):
        _retry(tx, wf, job, at)
    elif job.status == JobStatus.WAITING and not wf.dry_run:
        job.status = JobStatus.RUNNING
        job.started_at = at
        job.attempts = [_attempt_record(job.attempt, at)]
        tx.changed_job(job)
    return job


def _retry(tx: Tx, wf: Workflow, job: JobRow, at: datetime) -> None:
    was_error = job.status == JobStatus.ERROR
    job.attempt += 1
    job.status = JobStatus.RUNNING
    job.started_at = at
    job.finished_at = None
    job.error = None
    job.attempts = [*(job.attempts or []), _attempt_record(job.attempt, at)]
    tx.changed_job(job)
    if was_error and wf.status == W.ERROR:
        tx.flush()
        failing = tx.session.scalar(
            select(func.count()).where(Job.workflow_id == wf.id, Job.status == JobStatus.ERROR)
        )
        if not failing and _move(tx, wf, W.RUNNING, at):
            # Snakemake retries the job (--retries): the run goes on. The failed attempt
            # keeps its error in the job's attempts.
            wf.error = None


def on_job_started(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    jobs: list[int] = body["jobs"] if isinstance(body["jobs"], list) else [body["jobs"]]
    for jobid in jobs:
        _start_job(tx, wf, jobid, at)


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def on_job_info(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    jobid = int(body["jobid"])
    job = _start_job(tx, wf, jobid, at)
    job.rule = body.get("name") or job.rule
    job.message = body.get("msg")
    job.input = _paths(body.get("input"))
    job.output = _paths(body.get("output"))
    job.log = _paths(body.get("log"))
    wildcards = body.get("wildcards")
    job.wildcards = wildcards if isinstance(wildcards, dict) else {}
    job.is_checkpoint = bool(body.get("is_checkpoint", False))
    if body.get("shellcmd"):
        job.shellcmd = body["shellcmd"]
    for name in ("threads", "priority"):
        if body.get(name) is not None:
            setattr(job, name, int(body[name]))
    if body.get("resources") is not None:
        resources = body["resources"]
        # Snakemake 7/8 send an unnamed positional list; keep it, under a name.
        job.resources = resources if isinstance(resources, dict) else {"values": resources}
    job.reason = body.get("reason") or job.reason
    wf.last_job_info = jobid
    tx.changed_job(job)


def on_job_finished(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    job, _ = _job(tx, wf, int(body["jobid"]), at)
    if job.status == JobStatus.DONE:
        return
    job.status = JobStatus.DONE
    job.finished_at = at
    _end_attempt(job, JobStatus.DONE, at, None)
    tx.changed_job(job)


def on_job_error(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    job, _ = _job(tx, wf, int(body["jobid"]), at)
    job.rule = job.rule or body.get("name") or None
    if body.get("shellcmd") and not job.shellcmd:
        job.shellcmd = body["shellcmd"]
    # The error text comes in the `error` message just before (RuleException ...).
    text = wf.last_error or "job failed"
    wf.last_error = None
    if job.status != JobStatus.ERROR:
        job.status = JobStatus.ERROR
        job.finished_at = at
        job.error = text
        _end_attempt(job, JobStatus.ERROR, at, text)
        tx.changed_job(job)
    _add_error(tx, wf, f"job {job.jobid} ({job.rule or 'unknown rule'}) failed")
    _move(tx, wf, W.ERROR, at)


def on_error(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    parts = [str(body.get("msg") or body.get("exception") or "error")]
    for key in ("rule", "location"):
        if body.get(key):
            parts.append(f"{key}: {body[key]}")
    if body.get("traceback"):
        parts.append(str(body["traceback"]))
    text = " | ".join(parts)
    wf.last_error = text
    _add_error(tx, wf, text)
    _move(tx, wf, W.ERROR, at)


def on_progress(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    if wf.status == W.DONE:
        return  # counts were reconciled when it finished
    done, total = int(body["done"]), int(body["total"])
    if (wf.jobs_done, wf.jobs_total) != (done, total):
        wf.jobs_done, wf.jobs_total = done, total
        tx.changed_workflow(wf)
    if total > 0 and done >= total:
        _move(tx, wf, W.DONE, at)


def on_shellcmd(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    command = body.get("msg")
    if not isinstance(command, str) or not command:
        return
    jobid = body.get("jobid")
    if jobid is None:
        # Snakemake 7/8 send the command right after the job_info it belongs to.
        jobid = wf.last_job_info
    if jobid is None:
        return
    job = tx.job(wf.id, int(jobid))
    if job is not None and not job.shellcmd:
        job.shellcmd = command
        tx.changed_job(job)


def on_info(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    text = body.get("msg")
    if not isinstance(text, str):
        return
    if text.startswith("Nothing to be done"):
        _finish_successfully(tx, wf, at)
    elif text.startswith("This was a dry-run"):
        wf.dry_run = True
        _finish_successfully(tx, wf, at)
    elif text.startswith("Complete log"):
        # Snakemake 7/8 write this at the end of every real run; a failed run has
        # already turned Error, so a still-running workflow has succeeded (--until too).
        _finish_successfully(tx, wf, at)


def on_workflow_success(tx: Tx, wf: Workflow, body: dict[str, Any], at: datetime) -> None:
    _finish_successfully(tx, wf, at)


Handler = Callable[[Tx, Workflow, dict[str, Any], datetime], None]

HANDLERS: dict[str, Handler] = {
    "job_started": on_job_started,
    "job_info": on_job_info,
    "job_finished": on_job_finished,
    "job_error": on_job_error,
    "error": on_error,
    "progress": on_progress,
    "shellcmd": on_shellcmd,
    "info": on_info,
    "workflow_success": on_workflow_success,
}
