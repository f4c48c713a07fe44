"""The notifications' SQL on the write side: each function runs synchronously in a write
transaction (the writer's, which has taken the database's write turn: BEGIN IMMEDIATE on
SQLite, the advisory lock on PostgreSQL), so replicas take turns at each step.

- `enqueue`: examine the events after the cursor and insert what they make due, one row
  per target, and move the cursor with a compare-and-set: a replica that finds the cursor
  moved did nothing, so every notification is enqueued once.
- `mark_stuck`: Running workflows silent for PANOPTES_STUCK_MINUTES, marked in the same
  transaction as their notification.
- `claim` and `record`: a delivery takes a lease on a row before sending (outside any
  transaction) and records the outcome after; a process killed mid-send leaves the row
  pending, sent again once the lease is over (at least once).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from ..models import (
    JOBS,
    Base,
    Event,
    JobRow,
    Notification,
    NotifierState,
    NotifyWorkflow,
    Workflow,
)
from ..notify_settings import NotifySettings
from ..shapes import iso, job_view, workflow_view
from ..status import JobStatus, WorkflowStatus
from .rules import JOB_FAILED, STUCK, Batch, Due, Told, examine

NOTES = Base.metadata.tables[Notification.__tablename__]
TOLD = Base.metadata.tables[NotifyWorkflow.__tablename__]
STATE = Base.metadata.tables[NotifierState.__tablename__]
STUCK_PER_PASS = 100
# Events the notifier comes to later than this (it was off) update what it knows of each
# workflow but send nothing: a notifier turned on is not a flood of old news.
HORIZON = timedelta(hours=1)
LONGEST_RETRY = timedelta(hours=1)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def _changed(session: Session, statement: Executable) -> int:
    """How many rows an UPDATE changed."""
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def page_url(base: str, workflow_id: int) -> str:
    return f"{base}/workflow/{workflow_id}"


def _told(session: Session, ids: Iterable[int]) -> dict[int, Told]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = session.execute(select(TOLD).where(TOLD.c.workflow_id.in_(wanted)))
    return {r.workflow_id: Told(r.status, r.job_failed, r.stuck_since) for r in rows}


def _keep_told(session: Session, told: dict[int, Told], before: set[int], gone: set[int]) -> None:
    if gone:
        session.execute(delete(TOLD).where(TOLD.c.workflow_id.in_(sorted(gone))))
    for workflow_id, state in told.items():
        values = {
            "status": state.status,
            "job_failed": state.job_failed,
            "stuck_since": state.stuck_since,
        }
        if workflow_id in before:
            session.execute(update(TOLD).where(TOLD.c.workflow_id == workflow_id).values(**values))
        else:
            session.execute(insert(TOLD).values(workflow_id=workflow_id, **values))


def _first_failed(session: Session, item: Due) -> dict[str, Any] | None:
    """The job a job.failed is about: the workflow's first job whose latest attempt failed."""
    query = (
        select(JOBS)
        .where(JOBS.c.workflow_id == item.workflow_id, JOBS.c.status == JobStatus.ERROR)
        .order_by(JOBS.c.finished_at, JOBS.c.id)
        .limit(1)
    )
    row = session.execute(query).mappings().first()  # plain rows, as the writer's jobs are
    return None if row is None else job_view(JobRow(row, new=False))


def _rows(
    session: Session, due: list[Due], settings: NotifySettings, base: str, now: datetime
) -> list[dict[str, Any]]:
    """One row per due notification and target that wants it."""
    rows: list[dict[str, Any]] = []
    for item in due:
        view = item.workflow
        if view is None:
            wf = session.get(Workflow, item.workflow_id)
            if wf is None:
                continue
            view = workflow_view(wf)
        payload: dict[str, Any] = {
            "event": item.event,
            "workflow": view,
            "url": page_url(base, item.workflow_id),
            "at": iso(now),
        }
        job = item.job if item.event != JOB_FAILED or item.job else _first_failed(session, item)
        if job is not None:
            payload["job"] = job
        if item.event == STUCK:
            payload["recovered"] = item.recovered
        for target in settings.targets:
            if target.wants(item.event, str(view.get("name", ""))):
                rows.append(
                    {
                        "created_at": now,
                        "event": item.event,
                        "workflow_id": item.workflow_id,
                        "jobid": job["jobid"] if job else item.jobid,
                        "target": target.key,
                        "payload": payload,
                        "status": PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "log": [],
                    }
                )
    return rows


def start_cursor(session: Session) -> int:
    """The cursor; on the first start with notifications, made at the newest event: what
    happened before notifications were set up is not told."""
    seq = session.scalar(select(STATE.c.seq).where(STATE.c.id == 1))
    if seq is None:
        seq = session.scalar(select(Event.seq).order_by(Event.seq.desc()).limit(1)) or 0
        session.execute(insert(STATE).values(id=1, seq=seq))
    return seq


def enqueue(
    session: Session,
    events: Batch,
    settings: NotifySettings,
    base: str,
    now: datetime,
) -> int:
    """Enqueue what `events` (read outside the transaction, after seq `events.after`) make
    due, if no one examined them yet; how many notifications that made.

    Committed events never change, so they are read (and their JSON decoded) outside the
    write turn; only moving the cursor and what depends on it happens inside it."""
    moved = _changed(
        session,
        update(STATE).where(STATE.c.id == 1, STATE.c.seq == events.after).values(seq=events.last),
    )
    if moved != 1:  # another replica examined them
        return 0
    seen = events.seen
    told = _told(session, (s.workflow_id for s in seen if s.workflow_id is not None))
    before = set(told)
    fresh = next((i for i, s in enumerate(seen) if s.created_at >= now - HORIZON), len(seen))
    _, gone_old = examine(seen[:fresh], told)
    due, gone = examine(seen[fresh:], told)
    gone |= gone_old
    _keep_told(session, told, before, gone & before)
    rows = _rows(session, due, settings, base, now)
    if rows:
        session.execute(insert(NOTES), rows)
    return len(rows)


def mark_stuck(session: Session, settings: NotifySettings, base: str, now: datetime) -> int:
    """Enqueue workflow.stuck for Running workflows silent for stuck_minutes, once each."""
    cutoff = now - timedelta(minutes=settings.stuck_minutes)
    query = (
        select(Workflow)
        .outerjoin(TOLD, TOLD.c.workflow_id == Workflow.id)
        .where(
            Workflow.status == WorkflowStatus.RUNNING,
            Workflow.updated_at < cutoff,
            TOLD.c.stuck_since.is_(None),
        )
        .order_by(Workflow.id)
        .limit(STUCK_PER_PASS)
    )
    workflows = list(session.scalars(query))
    if not workflows:
        return 0
    told = _told(session, (wf.id for wf in workflows))
    before = set(told)
    due = []
    for wf in workflows:
        told.setdefault(wf.id, Told(status=wf.status)).stuck_since = now
        due.append(Due(STUCK, wf.id, workflow=workflow_view(wf)))
    _keep_told(session, told, before, set())
    rows = _rows(session, due, settings, base, now)
    if rows:
        session.execute(insert(NOTES), rows)
    return len(rows)


@dataclass(frozen=True)
class Claimed:
    id: int
    target: str
    payload: dict[str, Any]
    attempts: int


def claim(session: Session, me: str, now: datetime, lease: float, limit: int) -> list[Claimed]:
    """Lease up to `limit` due notifications to this process."""
    free = or_(NOTES.c.lease_until.is_(None), NOTES.c.lease_until < now)
    due = NOTES.c.status == PENDING, NOTES.c.next_attempt_at <= now, free
    ids = list(
        session.scalars(
            select(NOTES.c.id)
            .where(*due)
            .order_by(NOTES.c.next_attempt_at, NOTES.c.id)
            .limit(limit)
        )
    )
    taken = []
    until = now + timedelta(seconds=lease)
    for note_id in ids:
        statement = (
            update(NOTES)
            .where(NOTES.c.id == note_id, *due)
            .values(claimed_by=me, lease_until=until)
        )
        if _changed(session, statement) == 1:
            taken.append(note_id)
    if not taken:
        return []
    rows = session.execute(
        select(NOTES.c.id, NOTES.c.target, NOTES.c.payload, NOTES.c.attempts)
        .where(NOTES.c.id.in_(taken))
        .order_by(NOTES.c.id)
    )
    return [Claimed(r.id, r.target, r.payload, r.attempts) for r in rows]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    outcome: str | int  # the HTTP status, "sent" (email), or the error's name
    ms: int
    error: str | None = None
    final: bool = False  # a refusal that no retry changes (a 4xx, an unknown target)


def retry_delay(settings: NotifySettings, attempts: int) -> timedelta:
    """Exponential backoff with jitter after the `attempts`-th failed attempt."""
    seconds = settings.retry_seconds * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)
    return min(timedelta(seconds=seconds), LONGEST_RETRY)


def record(
    session: Session,
    note_id: int,
    me: str,
    result: Outcome,
    settings: NotifySettings,
    now: datetime,
) -> str | None:
    """Write an attempt's outcome (if the lease is still ours); the row's status now."""
    row = session.execute(
        select(NOTES.c.attempts, NOTES.c.log).where(
            NOTES.c.id == note_id, NOTES.c.claimed_by == me, NOTES.c.status == PENDING
        )
    ).first()
    if row is None:
        return None
    attempts = row.attempts + 1
    log = [*(row.log or []), {"at": iso(now), "outcome": result.outcome, "ms": result.ms}]
    values: dict[str, Any] = {"attempts": attempts, "log": log, "lease_until": None}
    if result.ok:
        values.update(status=DELIVERED, delivered_at=now, last_error=None)
    elif result.final or attempts >= settings.max_attempts:
        values.update(status=FAILED, last_error=result.error)
    else:
        values.update(
            last_error=result.error, next_attempt_at=now + retry_delay(settings, attempts)
        )
    session.execute(update(NOTES).where(NOTES.c.id == note_id).values(**values))
    return str(values.get("status", PENDING))


def forget_before(session: Session, cutoff: datetime) -> int:
    """Remove the delivered and failed notifications made before `cutoff` (retention)."""
    done = NOTES.c.status.in_([DELIVERED, FAILED])
    return _changed(session, delete(NOTES).where(done, NOTES.c.created_at < cutoff))
