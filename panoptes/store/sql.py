"""The store's SQL: batched look-ups and writes, and what differs between SQLite and PostgreSQL.

Everything here runs synchronously inside the writer's open transaction (writer.py). The
statements whose shape depends on a batch (how many workflows it touches) are built once
per shape: building a SQLAlchemy expression cost more than running it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from ..models import Event, JobRow, WorkflowRow
from ..shapes import count_job, rule_view
from .rows import Driver, chunks

try:
    import fcntl
except ImportError:  # Windows: writers wait in SQLite's busy handler instead
    fcntl = None  # type: ignore[assignment]


RuleKey = tuple[int, str | None]
JobKey = tuple[int, int]


# ---- loading what a batch will look up


@dataclass(frozen=True)
class Preload:
    """Rows an operation is going to look up. A batch loads those of all its operations in
    one query per table before running them, instead of one query per lookup."""

    workflows: tuple[int, ...] = ()
    jobs: tuple[JobKey, ...] = ()


@dataclass
class Loaded:
    workflows: dict[int, WorkflowRow]
    jobs: dict[JobKey, JobRow]
    absent_workflows: set[int]
    absent_jobs: set[JobKey]


def preload(session: Session, wanted: list[Preload]) -> Loaded:
    rows = driver(session)
    workflow_ids = sorted({workflow_id for p in wanted for workflow_id in p.workflows})
    workflows = {wf.id: wf for wf in rows.workflows(workflow_ids)}
    keys = {key for p in wanted for key in p.jobs}
    by_workflow: dict[int, list[int]] = {}
    for workflow_id, jobid in sorted(keys):
        by_workflow.setdefault(workflow_id, []).append(jobid)
    jobs: dict[JobKey, JobRow] = {}
    for workflow_id, jobids in by_workflow.items():
        for job in rows.jobs(workflow_id, jobids):
            jobs[(job.workflow_id, job.jobid)] = job
    return Loaded(workflows, jobs, set(workflow_ids) - workflows.keys(), keys - jobs.keys())


def driver(session: Session) -> Driver:
    """The driver-level statements of the session's open transaction (rows.py)."""
    found = session.info.get("panoptes.driver")
    if found is None or found.connection is not session.connection():
        found = session.info["panoptes.driver"] = Driver(session)
    return found


# ---- writing


def flush(session: Session, loaded: Loaded) -> None:
    """Write what the batch changed so far: emitted events (ORM objects), the workflows,
    then the jobs. New workflows were written when they were added (Tx.add_workflow)."""
    session.flush()
    rows = driver(session)
    workflows = [wf for wf in loaded.workflows.values() if wf.changed]
    if workflows:
        rows.update_workflows(workflows)
    new = [job for job in loaded.jobs.values() if job.new]
    changed = [job for job in loaded.jobs.values() if job.changed and not job.new]
    if new:
        rows.insert_jobs(new)
    if changed:
        rows.update_jobs(changed)
    for row in (*workflows, *new, *changed):
        row.written()


def insert_events(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Write events with one statement; returns their seqs, in the order of `rows`."""
    return driver(session).insert_events(
        [(row["type"], row["workflow_id"], row["payload"], row["created_at"]) for row in rows]
    )


def _number_new_rows(session: Session, _context: Any, _instances: Any) -> None:
    """SQLite only: give new events their keys just before a flush writes them.

    Rows whose key the database picks are inserted one statement (one round trip to the
    driver) each, as SQLite cannot tell which key went to which row of a multi-row INSERT;
    rows that come with their keys go in one statement. These are the keys SQLite would
    pick: the batch holds the write lock, so nobody else inserts in between. Seqs
    (AUTOINCREMENT) continue from the highest ever handed out, which SQLite keeps in
    sqlite_sequence and moves up to the seqs given here: the keys Driver.keys hands out to
    the events (and jobs) the writer inserts itself.
    """
    new = sorted(session.new, key=lambda obj: inspect(obj).insert_order)
    events = [obj for obj in new if isinstance(obj, Event) and obj.seq is None]
    if events:
        keys = driver(session).keys("events", "seq", len(events))
        for item, number in zip(events, keys, strict=True):
            item.seq = number


class SQLiteWriteSession(Session):
    """The writer's sessions on SQLite: new rows get their keys before each flush."""


event.listen(SQLiteWriteSession, "before_flush", _number_new_rows)


# ---- counting


def rule_counts(session: Session, keys: Collection[RuleKey]) -> dict[RuleKey, dict[str, Any]]:
    """The counts of some rules as the open transaction has them, by (workflow id, rule)."""
    counts = {key: rule_view(key[1]) for key in keys}
    by_workflow: dict[int, list[str | None]] = {}
    for workflow_id, rule in sorted(keys, key=lambda key: (key[0], key[1] or "")):
        by_workflow.setdefault(workflow_id, []).append(rule)
    rows = driver(session)
    for workflow_id, rules in by_workflow.items():
        for chunk in chunks(rules):
            for rule, status, count in rows.rule_counts(workflow_id, chunk):
                count_job(counts[(workflow_id, rule)], status, count)
    return counts


# ---- taking turns with other writers
#
# Every write transaction holds the database's write lock from its first statement to its
# commit, so that writers in several processes (Hypercorn workers, servers sharing one
# database) take turns:
# - Commit order is seq order. The feed and every hub read events "after the last seq I
#   have", so a seq that became visible after a higher one would be skipped for good. On
#   PostgreSQL two transactions could take seqs 10 and 11 and commit 11 first; the advisory
#   lock below rules that out. (A rolled-back batch leaves a gap in the seqs; harmless, as
#   readers only ask for "seq > last".) SQLite hands out seqs under its single write lock.
# - An operation reads what it is about to change after every other writer committed:
#   no lost updates between processes. SQLite would otherwise run the reads before a
#   batch's first write outside the transaction (Python's sqlite3 opens it only at the first
#   INSERT/UPDATE/DELETE); BEGIN IMMEDIATE takes the write lock at once instead.
WRITE_LOCK_KEY = 0x70616E6F70746573  # "panoptes" in ASCII


def take_turn(session: Session) -> None:
    rows = driver(session)
    if rows.sqlite:
        rows.run("BEGIN IMMEDIATE")
    else:
        rows.rows("SELECT pg_advisory_xact_lock(?)", [WRITE_LOCK_KEY])


class FileTurn:
    """SQLite, several processes on one file: writers take turns through an flock on a file
    beside the database, taken before BEGIN IMMEDIATE. Releasing it wakes the next writer at
    once; SQLite's own busy handler instead polls with sleeps of 1 to 100 ms, which put
    hundreds of milliseconds on requests whenever two processes wrote at the same time.
    Taken in the writer thread, so a wait never holds up the event loop."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}-writer.lock")
        self._fd: int | None = None

    def __enter__(self) -> None:
        if fcntl is None:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if fcntl is not None and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
