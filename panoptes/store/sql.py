"""The store's SQL: batched look-ups and writes, and what differs between SQLite and PostgreSQL.

Everything here runs synchronously inside the writer's open transaction (writer.py). The
statements whose shape depends on a batch (how many workflows it touches) are built once
per shape: building a SQLAlchemy expression cost more than running it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from ..models import JOB_COLUMNS, Event, JobRow, WorkflowRow
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
    """The workflows and jobs a batch holds (its own copies, written back by flush), those
    it looked for when it began and did not find, and the per-rule job counts it knows."""

    workflows: dict[int, WorkflowRow] = field(default_factory=dict)
    jobs: dict[JobKey, JobRow] = field(default_factory=dict)
    absent_workflows: set[int] = field(default_factory=set)
    absent_jobs: set[JobKey] = field(default_factory=set)
    # Jobs by status of some (workflow, rule)s, as the database has them after the last
    # flush: flush moves them with each job it writes; rule_counts counts the others.
    counts: dict[RuleKey, dict[str, int]] = field(default_factory=dict)

    def forget(self, workflow_ids: Collection[int], *, workflows: bool) -> None:
        """These workflows' jobs are gone (and, if `workflows`, the workflows)."""
        for job_key in [key for key in self.jobs if key[0] in workflow_ids]:
            del self.jobs[job_key]
        _drop_counts(self.counts, workflow_ids)
        if workflows:
            for workflow_id in workflow_ids:
                self.workflows.pop(workflow_id, None)
                self.absent_workflows.add(workflow_id)


def preload(session: Session, wanted: list[Preload], loaded: Loaded | None = None) -> Loaded:
    """What the batch's operations will look up, in one query per table: added to `loaded`
    (rows an earlier batch handed on, see Carried), read only where it lacks them."""
    loaded = Loaded() if loaded is None else loaded
    rows = driver(session)
    workflow_ids = sorted(
        {workflow_id for p in wanted for workflow_id in p.workflows} - loaded.workflows.keys()
    )
    for wf in rows.workflows(workflow_ids):
        loaded.workflows[wf.id] = wf
    keys = {key for p in wanted for key in p.jobs} - loaded.jobs.keys()
    by_workflow: dict[int, list[int]] = {}
    for workflow_id, jobid in sorted(keys):
        by_workflow.setdefault(workflow_id, []).append(jobid)
    for workflow_id, jobids in by_workflow.items():
        for job in rows.jobs(workflow_id, jobids):
            loaded.jobs[(job.workflow_id, job.jobid)] = job
    loaded.absent_workflows = set(workflow_ids) - loaded.workflows.keys()
    loaded.absent_jobs = keys - loaded.jobs.keys()
    return loaded


class Carried:
    """The rows and counts one batch hands on to the next, on an SQLite file: a job gets
    several messages (job_info, job_started, job_finished), each about a workflow that had
    one a moment before, and reading the rows again (and counting their rules) with each
    was a seventh of all a message cost (benchmarks/README.md).

    They are what the database holds as long as nobody else wrote to it: SQLite's
    data_version moves when another connection (another process, a command) has committed,
    and it is read with the write lock held, so nobody can commit between that reading
    and the batch's commit. A batch that did not commit leaves its rows changed in memory
    only: they are dropped (`drop`). What the batch deletes it forgets (Loaded.forget).
    Past MAX_JOBS and MAX_WORKFLOWS the oldest are let go (a job held weighs about 3 KB)."""

    MAX_JOBS = 2048
    MAX_WORKFLOWS = 256
    MAX_COUNTS = 8192

    def __init__(self) -> None:
        self.loaded = Loaded()
        self._connection: Any = None
        self._version: int | None = None

    def take(self, session: Session) -> Loaded:
        """What the last batch left, if it is still what the database holds. Called inside
        the batch's transaction, after it took the write lock."""
        rows = driver(session)
        ((version,),) = rows.rows("PRAGMA data_version")
        if rows.dbapi is not self._connection or version != self._version:
            self.loaded = Loaded()
        self._connection, self._version = rows.dbapi, version
        return self.loaded

    def keep(self) -> None:
        """The batch committed: what it holds is stored; the oldest past the limits go."""
        loaded = self.loaded
        _let_go(loaded.jobs, self.MAX_JOBS)
        _let_go(loaded.workflows, self.MAX_WORKFLOWS)
        if len(loaded.counts) > self.MAX_COUNTS:
            loaded.counts.clear()

    def drop(self) -> None:
        """The batch did not commit: its rows hold changes the database does not."""
        self.loaded = Loaded()


def _let_go(table: dict[Any, Any], limit: int) -> None:
    """Past `limit`, the oldest entries go, down to half of it."""
    if len(table) > limit:
        for key in list(islice(table, len(table) - limit // 2)):
            del table[key]


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
    if loaded.counts:
        _count_moves(loaded.counts, new, changed)  # before writing: it reads what was stored
    if new:
        rows.insert_jobs(new)
    if changed:
        rows.update_jobs(changed)
    for row in (*workflows, *new, *changed):
        row.written()


_RULE = JOB_COLUMNS.index("rule")
_STATUS = JOB_COLUMNS.index("status")


def _count_moves(
    counts: dict[RuleKey, dict[str, int]], new: list[JobRow], changed: list[JobRow]
) -> None:
    """Move the known counts by the jobs about to be written: a new job counts where it is,
    a changed one leaves the (rule, status) it was stored with."""

    def move(key: RuleKey, status: str, by: int) -> None:
        tally = counts.get(key)
        if tally is not None:
            tally[status] = tally.get(status, 0) + by

    for job in new:
        move((job.workflow_id, job.rule), job.status, 1)
    for job in changed:
        if job.encoded is None:  # what it was stored with is not known: count again
            _drop_counts(counts, {job.workflow_id})
            continue
        was = job.encoded[0]
        rule, status = was[_RULE], was[_STATUS]
        if rule != job.rule or status != job.status:
            move((job.workflow_id, rule), status, -1)
            move((job.workflow_id, job.rule), job.status, 1)


def _drop_counts(counts: dict[RuleKey, dict[str, int]], workflow_ids: Collection[int]) -> None:
    """These workflows' rules are counted again when next needed."""
    for key in [key for key in counts if key[0] in workflow_ids]:
        del counts[key]


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


def rule_counts(
    session: Session, keys: Collection[RuleKey], known: dict[RuleKey, dict[str, int]]
) -> dict[RuleKey, dict[str, Any]]:
    """The counts of some rules as the open transaction has them, by (workflow id, rule):
    those in `known` as they are there, the others counted (and added to `known`). Call
    after a flush."""
    counts = {key: rule_view(key[1]) for key in keys}
    by_workflow: dict[int, list[str | None]] = {}
    for key in sorted(keys, key=lambda key: (key[0], key[1] or "")):
        if key not in known:
            by_workflow.setdefault(key[0], []).append(key[1])
    rows = driver(session)
    for workflow_id, rules in by_workflow.items():
        for rule in rules:
            known[(workflow_id, rule)] = {}
        for chunk in chunks(rules):
            for rule, status, count in rows.rule_counts(workflow_id, chunk):
                known[(workflow_id, rule)][status] = count
    for key, view in counts.items():
        for status, count in known[key].items():
            if count:
                count_job(view, status, count)
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
