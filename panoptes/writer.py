"""The single write path: every change goes through one task that commits in batches.

Callers `submit` an operation (a plain function of a `Tx`) and wait for its result, which
is returned only after the transaction holding it has committed: an acknowledged event is
on disk. Operations queued while a commit is in flight are committed together (group
commit), which is what makes SQLite ingest fast. A batch runs synchronously from start to
commit; on an SQLite file, in a thread of its own (see Writer). After each commit the
events the batch recorded are handed, in sequence order, to `publish` (the broadcast hub).

Operations mark what they change (`Tx.changed_workflow`, `Tx.changed_job`); the batch turns
that into events once, at its end: one event per changed object carrying its final state,
one rule.updated per rule whose counts may have moved, all counted in one query. Sessions
do not autoflush: an operation that reads with SQL what the batch may have changed flushes
first (`Tx.flush`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

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
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from .db import make_sync_sqlite_engine
from .migrations import sqlite_file
from .models import JOB_COLUMNS, JOBS, Event, Job, JobRow, Workflow, utcnow
from .queries import KEYS_PER_QUERY, rule_counts
from .views import event_message, feed_message, job_view, workflow_view

try:
    import fcntl
except ImportError:  # Windows: writers wait in SQLite's busy handler instead
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")


class DomainError(Exception):
    """An operation refused before it changed anything (unknown id, conflict, ...).

    It does not roll back the batch it ran in: operations promise to check first and
    write after, so raising one of these leaves nothing half-done.
    """

    status = 400
    error = "bad request"

    def __init__(self, detail: str, *, status: int | None = None, error: str | None = None):
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if error is not None:
            self.error = error


# When one batch changes a workflow in several ways, its one event carries the kind that
# tells a client most: a new workflow is announced as created whatever happened to it next,
# and a reset (the page drops its jobs) is not hidden by a rename that came first. Between
# equals the first wins.
_KIND_RANK = {"workflow.updated": 0, "workflow.reset": 2, "workflow.created": 3}


def _rank(kind: str) -> int:
    return _KIND_RANK.get(kind, 1)


RuleKey = tuple[int, str | None]


@dataclass
class Changes:
    """Objects changed and not yet announced, one entry per object (by identity)."""

    workflows: dict[int, tuple[Workflow, str]] = field(default_factory=dict)
    jobs: dict[int, JobRow] = field(default_factory=dict)
    # Rules whose counts may have changed besides the rules the changed jobs end up in:
    # the rule a job had when it was looked up. A job that moves from one rule to another
    # (job_started names no rule, job_info does) changes the counts of both.
    rules: set[RuleKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.workflows or self.jobs)

    def workflow(self, wf: Workflow, kind: str) -> None:
        previous = self.workflows.get(id(wf))
        if previous is None or _rank(kind) > _rank(previous[1]):
            self.workflows[id(wf)] = (wf, kind)

    def merge(self, other: Changes) -> None:
        for wf, kind in other.workflows.values():
            self.workflow(wf, kind)
        self.jobs.update(other.jobs)
        self.rules |= other.rules

    def forget(self, workflow_ids: Collection[int], *, workflows: bool) -> None:
        """Drop what is pending for these workflows' jobs (and for the workflows)."""
        self.jobs = {k: job for k, job in self.jobs.items() if job.workflow_id not in workflow_ids}
        self.rules = {key for key in self.rules if key[0] not in workflow_ids}
        if workflows:
            self.workflows = {
                k: entry for k, entry in self.workflows.items() if entry[0].id not in workflow_ids
            }


@dataclass
class Tx:
    """One operation's view of the open transaction, plus the changes it makes."""

    session: Session
    events: list[Event]
    # Every job the batch loaded or made, by (workflow id, jobid): the batch's own copy,
    # written back by flush().
    jobs_cache: dict[tuple[int, int], JobRow]
    # Jobs the batch looked for when it began and did not find.
    absent_jobs: set[tuple[int, int]] = field(default_factory=set)
    # What the batch's earlier operations changed, and what this one changes: merged into
    # the batch when the operation succeeds, dropped when it raises a DomainError.
    batch: Changes = field(default_factory=Changes)
    changes: Changes = field(default_factory=Changes)

    def changed_workflow(self, wf: Workflow, kind: str = "workflow.updated") -> None:
        self.changes.workflow(wf, kind)

    def changed_job(self, job: JobRow) -> None:
        self.changes.jobs[id(job)] = job

    def emit(self, kind: str, workflow_id: int | None, payload: dict[str, Any]) -> None:
        """An event as it is, numbered in the order emitted (before the batch's changes)."""
        event = Event(type=kind, workflow_id=workflow_id, payload=payload, created_at=utcnow())
        self.session.add(event)
        self.events.append(event)

    def flush(self) -> None:
        """Write what the batch changed so far, before a query that must see it."""
        _flush(self.session, self.jobs_cache)

    def job(self, workflow_id: int, jobid: int) -> JobRow | None:
        key = (workflow_id, jobid)
        job = self.jobs_cache.get(key)
        if job is None and key not in self.absent_jobs:
            row = self.session.execute(
                _JOB_BY_KEY, {"workflow_id": workflow_id, "jobid": jobid}
            ).first()
            if row is not None:
                job = self.jobs_cache[key] = JobRow(row._mapping, new=False)
        if job is not None:
            self.changes.rules.add((workflow_id, job.rule))
        return job

    def jobs_with_status(self, workflow_id: int, status: str) -> list[JobRow]:
        """The workflow's jobs that have this status, as the batch has left them."""
        self.flush()
        rows = self.session.execute(
            select(JOBS).where(JOBS.c.workflow_id == workflow_id, JOBS.c.status == status)
        )
        found = []
        for row in rows:
            key = (workflow_id, row.jobid)
            job = self.jobs_cache.get(key)
            if job is None:
                job = self.jobs_cache[key] = JobRow(row._mapping, new=False)
            found.append(job)
        return found

    def add_job(self, job: JobRow) -> None:
        self.jobs_cache[(job.workflow_id, job.jobid)] = job

    def forget_jobs(self, workflow_id: int) -> None:
        """The workflow's jobs are gone (deleted with SQL): nothing to look up or announce."""
        self._forget({workflow_id}, workflows=False)

    def deleted_workflows(self, workflow_ids: Collection[int]) -> None:
        """Announce deleted workflows; whatever the batch changed in them goes unsaid."""
        self._forget(set(workflow_ids), workflows=True)
        for workflow_id in workflow_ids:
            self.emit("workflow.deleted", workflow_id, {"workflow": {"id": workflow_id}})

    def _forget(self, workflow_ids: set[int], *, workflows: bool) -> None:
        for key in [key for key in self.jobs_cache if key[0] in workflow_ids]:
            del self.jobs_cache[key]
        self.batch.forget(workflow_ids, workflows=workflows)
        self.changes.forget(workflow_ids, workflows=workflows)


@dataclass(frozen=True)
class Preload:
    """Rows an operation is going to look up. A batch loads those of all its operations in
    one query per table before running them, instead of one query per lookup."""

    workflows: tuple[int, ...] = ()
    jobs: tuple[tuple[int, int], ...] = ()


@dataclass
class _Loaded:
    workflows: list[Workflow]  # held here: the session's identity map holds them weakly
    jobs: dict[tuple[int, int], JobRow]
    absent_jobs: set[tuple[int, int]]


_WORKFLOWS_BY_ID = select(Workflow).where(Workflow.id.in_(bindparam("ids", expanding=True)))


@lru_cache(maxsize=64)
def _jobs_by_key(workflows: int) -> Select[Any]:
    """The jobs of `workflows` workflows, each with its own list of job ids. Built once per
    number of workflows: building the expression cost more than running it."""
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


_JOB_BY_KEY = select(JOBS).where(
    JOBS.c.workflow_id == bindparam("workflow_id"), JOBS.c.jobid == bindparam("jobid")
)


def _preload(session: Session, wanted: list[Preload]) -> _Loaded:
    workflow_ids = sorted({workflow_id for p in wanted for workflow_id in p.workflows})
    workflows: list[Workflow] = []
    for start in range(0, len(workflow_ids), KEYS_PER_QUERY):
        chunk = workflow_ids[start : start + KEYS_PER_QUERY]
        workflows += session.scalars(_WORKFLOWS_BY_ID, {"ids": chunk})
    keys = sorted({key for p in wanted for key in p.jobs})
    jobs: dict[tuple[int, int], JobRow] = {}
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
    return _Loaded(workflows, jobs, set(keys) - jobs.keys())


# A job row is written whole: one statement shape for every changed job.
_UPDATE_JOB = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("p_id"))
    .values({name: bindparam(f"p_{name}", type_=JOBS.c[name].type) for name in JOB_COLUMNS[1:]})
)


def _flush(session: Session, jobs: dict[tuple[int, int], JobRow]) -> None:
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


def _announce(
    session: Session, changes: Changes, jobs: dict[tuple[int, int], JobRow]
) -> list[dict[str, Any]]:
    """Turn what a batch changed into numbered events, one per object with its final state,
    and return them as the feed sends them."""
    _flush(session, jobs)  # ids for new rows; the counts below see every change
    if not changes:
        return []
    rules = changes.rules | {(job.workflow_id, job.rule) for job in changes.jobs.values()}
    counts = rule_counts(session, rules)
    now = utcnow()
    rows: list[dict[str, Any]] = []

    def add(kind: str, workflow_id: int, payload: dict[str, Any]) -> None:
        rows.append(
            {"type": kind, "workflow_id": workflow_id, "payload": payload, "created_at": now}
        )

    for wf, kind in changes.workflows.values():
        add(kind, wf.id, {"workflow": workflow_view(wf)})
    for job in changes.jobs.values():
        add("job.updated", job.workflow_id, {"job": job_view(job)})
    for key in sorted(rules, key=lambda key: (key[0], key[1] or "")):
        add("rule.updated", key[0], {"rule": counts[key]})
    seqs = _insert_events(session, rows)
    return [
        feed_message(row["type"], seq, row["workflow_id"], now, row["payload"])
        for row, seq in zip(rows, seqs, strict=True)
    ]


_EVENTS = Event.metadata.tables[Event.__tablename__]
_LAST_JOB_ID = select(func.max(Job.id))
_LAST_SEQ = text(
    "SELECT max((SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'events'),"
    " (SELECT coalesce(max(seq), 0) FROM events))"
)


def _insert_events(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Write events with one statement; returns their seqs, in the order of `rows`."""
    return _insert_numbered(session, _EVENTS.c.seq, _LAST_SEQ, rows)


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
        for number, event in enumerate(events, last + 1):
            event.seq = number


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


def _take_turn(session: Session) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
    elif dialect == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))


class _SQLiteWriteSession(Session):
    """The writer's sessions on SQLite: new rows get their keys before each flush."""


event.listen(_SQLiteWriteSession, "before_flush", _number_new_rows)


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


Operation = Callable[[Tx], Any]
Publisher = Callable[[list[dict[str, Any]]], Awaitable[None]]
Outcome = tuple[list[tuple[bool, Any]], list[dict[str, Any]]]


@dataclass
class _Pending:
    operation: Operation
    future: asyncio.Future[Any]
    preload: Preload | None = None


class Writer:
    """Runs each batch of operations as one synchronous transaction.

    On an SQLite file the whole batch runs in one thread of its own, on a plain sqlite3
    connection: one hand-off between the event loop and that thread per batch. (Through
    aiosqlite every statement costs about four, each a wake-up of the loop; they were most
    of a batch's cost.) Elsewhere (PostgreSQL, SQLite in memory) the same code runs through
    AsyncSession.run_sync on the app's async engine."""

    def __init__(self, engine: AsyncEngine, publish: Publisher, batch_size: int = 256) -> None:
        self._publish = publish
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        sqlite = engine.dialect.name == "sqlite"
        session_class = _SQLiteWriteSession if sqlite else Session
        self._async_sessions = async_sessionmaker(
            engine, expire_on_commit=False, autoflush=False, sync_session_class=session_class
        )
        database = sqlite_file(engine.url)
        self._thread: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        self._turn: FileTurn | None = None
        if database is not None:
            self._sync_engine = make_sync_sqlite_engine(engine.url)
            self._sync_sessions = sessionmaker(
                self._sync_engine,
                class_=_SQLiteWriteSession,
                expire_on_commit=False,
                autoflush=False,
            )
            self._turn = FileTurn(database)

    async def start(self) -> None:
        if self._sync_engine is not None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="panoptes-writer")
        self._task = asyncio.create_task(self._run(), name="panoptes-writer")

    async def stop(self) -> None:
        """Commit everything already submitted, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._turn is not None:
            self._turn.close()

    async def submit(self, operation: Callable[[Tx], T], preload: Preload | None = None) -> T:
        """Run `operation` in a write transaction; its result once that has committed.

        The operation runs synchronously, maybe in the writer's thread, together with the
        other operations of its batch: it may only use the Tx it is given."""
        if self._task is None or self._task.done():
            raise RuntimeError("the writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(operation, future, preload))
        return await future

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Pending] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self._batch_size and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        try:
            results, messages = await self._run_in_transaction(batch)
        except Exception:
            # Something unexpected failed: nothing of the batch was kept. Run each
            # operation alone so one bad message cannot cost the others.
            log.exception("a write batch of %d failed; retrying one by one", len(batch))
            for pending in batch:
                await self._commit_alone(pending)
            return
        await self._finish(batch, results, messages)

    async def _commit_alone(self, pending: _Pending) -> None:
        try:
            results, messages = await self._run_in_transaction([pending])
        except Exception as exc:
            log.exception("a write operation failed")
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        await self._finish([pending], results, messages)

    async def _run_in_transaction(self, batch: list[_Pending]) -> Outcome:
        """Run the operations in one transaction; their results, and the committed events as
        the feed sends them."""
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._in_thread, batch)
        async with self._async_sessions() as session, session.begin():
            return await session.run_sync(_transaction, batch)

    def _in_thread(self, batch: list[_Pending]) -> Outcome:
        assert self._turn is not None
        with self._turn, self._sync_sessions() as session, session.begin():
            return _transaction(session, batch)

    async def _finish(
        self,
        batch: list[_Pending],
        results: list[tuple[bool, Any]],
        messages: list[dict[str, Any]],
    ) -> None:
        for pending, (ok, value) in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)
        if messages:
            try:
                await self._publish(messages)
            except Exception:
                log.exception("publishing %d events failed", len(messages))


def _transaction(session: Session, batch: list[_Pending]) -> Outcome:
    """A batch's operations in the open transaction of `session`, which commits after."""
    events: list[Event] = []
    results: list[tuple[bool, Any]] = []
    _take_turn(session)
    loaded = _preload(session, [p.preload for p in batch if p.preload])
    changes = Changes()
    for pending in batch:
        tx = Tx(
            session=session,
            events=events,
            jobs_cache=loaded.jobs,
            absent_jobs=loaded.absent_jobs,
            batch=changes,
        )
        try:
            value = pending.operation(tx)
        except DomainError as exc:
            results.append((False, exc))
            continue
        if tx.changes:
            changes.merge(tx.changes)
        results.append((True, value))
    announced = _announce(session, changes, loaded.jobs)  # flushes everything first
    emitted = [event_message(event) for event in events]  # numbered now they are written
    return results, sorted([*emitted, *announced], key=lambda message: message["seq"])
