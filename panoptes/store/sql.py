"""The store's SQL: batched look-ups and writes, and what differs between SQLite and PostgreSQL.

Everything here runs synchronously inside the writer's open transaction (writer.py). The
statements whose shape depends on a batch (how many workflows it touches) are built once
per shape: building a SQLAlchemy expression cost more than running it.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Executable,
    Select,
    and_,
    bindparam,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from ..models import JOB_COLUMNS, JOBS, Event, Job, JobRow, Workflow
from ..shapes import count_job, rule_view

try:
    import fcntl
except ImportError:  # Windows: writers wait in SQLite's busy handler instead
    fcntl = None  # type: ignore[assignment]

# Keeps each statement well inside every database's limit on bound parameters.
KEYS_PER_QUERY = 500

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
    workflows: list[Workflow]  # held here: the session's identity map holds them weakly
    jobs: dict[JobKey, JobRow]
    absent_jobs: set[JobKey]


_WORKFLOWS_BY_ID = select(Workflow).where(Workflow.id.in_(bindparam("ids", expanding=True)))

JOB_BY_KEY = select(JOBS).where(
    JOBS.c.workflow_id == bindparam("workflow_id"), JOBS.c.jobid == bindparam("jobid")
)


@lru_cache(maxsize=64)
def _jobs_by_key(workflows: int) -> Select[Any]:
    """The jobs of `workflows` workflows, each with its own list of job ids."""
    return select(JOBS).where(
        or_(
            *(
                and_(
                    JOBS.c.workflow_id == bindparam(f"w{i}"),
                    JOBS.c.jobid.in_(bindparam(f"j{i}", expanding=True)),
                )
                for i in range(workflows)
            )
        )
    )


def preload(session: Session, wanted: list[Preload]) -> Loaded:
    workflow_ids = sorted({workflow_id for p in wanted for workflow_id in p.workflows})
    workflows: list[Workflow] = []
    for start in range(0, len(workflow_ids), KEYS_PER_QUERY):
        chunk = workflow_ids[start : start + KEYS_PER_QUERY]
        workflows += session.scalars(_WORKFLOWS_BY_ID, {"ids": chunk})
    keys = sorted({key for p in wanted for key in p.jobs})
    jobs: dict[JobKey, JobRow] = {}
    for start in range(0, len(keys), KEYS_PER_QUERY):
        by_workflow: dict[int, list[int]] = {}
        for workflow_id, jobid in keys[start : start + KEYS_PER_QUERY]:
            by_workflow.setdefault(workflow_id, []).append(jobid)
        params: dict[str, Any] = {}
        for i, (workflow_id, jobids) in enumerate(by_workflow.items()):
            params[f"w{i}"] = workflow_id
            params[f"j{i}"] = jobids
        for row in session.execute(_jobs_by_key(len(by_workflow)), params):
            jobs[(row.workflow_id, row.jobid)] = JobRow(row._mapping, new=False)
    return Loaded(workflows, jobs, set(keys) - jobs.keys())


# ---- writing


# A job row is written whole: one statement shape for every changed job.
_UPDATE_JOB = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("p_id"))
    .values({name: bindparam(f"p_{name}", type_=JOBS.c[name].type) for name in JOB_COLUMNS[1:]})
)


def flush(session: Session, jobs: dict[JobKey, JobRow]) -> None:
    """Write what the batch changed so far: ORM objects (workflows, emitted events) first,
    then the jobs, which may belong to a workflow just written."""
    session.flush()
    new = [job for job in jobs.values() if job.new]
    changed = [job for job in jobs.values() if job.changed and not job.new]
    if new:
        _insert_jobs(session, new)
    if changed:
        session.execute(
            _UPDATE_JOB, [{f"p_{k}": v for k, v in job.values().items()} for job in changed]
        )
    for job in (*new, *changed):
        job.written()


def _insert_jobs(session: Session, new: list[JobRow]) -> None:
    """New jobs in one statement, each given its id."""
    rows = [{k: v for k, v in job.values().items() if k != "id"} for job in new]
    ids = _insert_numbered(session, JOBS.c.id, _LAST_JOB_ID, rows)
    for job, number in zip(new, ids, strict=True):
        job.id = number


EVENTS = Event.metadata.tables[Event.__tablename__]
_LAST_JOB_ID = select(func.max(Job.id))
_LAST_SEQ = text(
    "SELECT max((SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'),"
    " (SELECT coalesce(max(seq), 0) FROM events))"
)


def insert_events(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Write events with one statement; returns their seqs, in the order of `rows`."""
    return _insert_numbered(session, EVENTS.c.seq, _LAST_SEQ, rows)


def _insert_numbered(
    session: Session, key: Column[int], last: Executable, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert rows into the table of `key` with one statement; returns their keys, in the
    order of `rows`. SQLite would number the rows of a multi-row INSERT one statement at a
    time (see _number_new_rows), so there they are numbered here, after the highest key
    `last` finds: the batch holds the write lock. Elsewhere INSERT ... RETURNING gives them,
    in parameter order."""
    table = key.table
    if session.get_bind().dialect.name == "sqlite":
        start = (session.scalar(last) or 0) + 1
        keys = list(range(start, start + len(rows)))
        numbered = [{**row, key.name: number} for row, number in zip(rows, keys, strict=True)]
        session.execute(insert(table), numbered)
        return keys
    returning = insert(table).returning(key, sort_by_parameter_order=True)
    return list(session.execute(returning, rows).scalars())


def _number_new_rows(session: Session, _context: Any, _instances: Any) -> None:
    """SQLite only: give new events their keys just before a flush writes them.

    Rows whose key the database picks are inserted one statement (one round trip to the
    driver) each, as SQLite cannot tell which key went to which row of a multi-row INSERT;
    rows that come with their keys go in one statement. These are the keys SQLite would
    pick: the batch holds the write lock, so nobody else inserts in between. Seqs
    (AUTOINCREMENT) continue from the highest ever handed out, which SQLite keeps in
    sqlite_sequence and moves up to the seqs given here. (Jobs are numbered the same way
    in _insert_jobs.)
    """
    new = sorted(session.new, key=lambda obj: inspect(obj).insert_order)
    events = [obj for obj in new if isinstance(obj, Event) and obj.seq is None]
    if events:
        last = session.connection().scalar(_LAST_SEQ) or 0
        for number, item in enumerate(events, last + 1):
            item.seq = number


class SQLiteWriteSession(Session):
    """The writer's sessions on SQLite: new rows get their keys before each flush."""


event.listen(SQLiteWriteSession, "before_flush", _number_new_rows)


# ---- counting


@lru_cache(maxsize=64)
def _rule_counts_query(workflows: int, unnamed: bool) -> Select[int, str | None, str, int]:
    """Counts by (workflow, rule, status) for `workflows` workflows, each with its own list
    of rules, and (if `unnamed`) the jobs with no rule yet of a list of workflows."""
    matches = [
        and_(
            Job.workflow_id == bindparam(f"w{i}"), Job.rule.in_(bindparam(f"r{i}", expanding=True))
        )
        for i in range(workflows)
    ]
    if unnamed:
        matches.append(
            and_(Job.workflow_id.in_(bindparam("unnamed", expanding=True)), Job.rule.is_(None))
        )
    return (
        select(Job.workflow_id, Job.rule, Job.status, func.count())
        .where(or_(*matches))
        .group_by(Job.workflow_id, Job.rule, Job.status)
    )


def rule_counts(session: Session, keys: Collection[RuleKey]) -> dict[RuleKey, dict[str, Any]]:
    """The counts of some rules as the open transaction has them, by (workflow id, rule)."""
    counts = {key: rule_view(key[1]) for key in keys}
    ordered = sorted(keys, key=lambda key: (key[0], key[1] or ""))
    for start in range(0, len(ordered), KEYS_PER_QUERY):
        named: dict[int, list[str]] = {}
        unnamed: list[int] = []
        for workflow_id, rule in ordered[start : start + KEYS_PER_QUERY]:
            if rule is None:
                unnamed.append(workflow_id)
            else:
                named.setdefault(workflow_id, []).append(rule)
        params: dict[str, Any] = {"unnamed": unnamed} if unnamed else {}
        for i, (workflow_id, rules) in enumerate(named.items()):
            params[f"w{i}"] = workflow_id
            params[f"r{i}"] = rules
        rows = session.execute(_rule_counts_query(len(named), bool(unnamed)), params)
        for workflow_id, rule, status, count in rows:
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
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
    elif dialect == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))


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
