"""The single write path: every change goes through one task that commits in batches.

Callers `submit` an operation (an async function of a `Tx`) and wait for its result, which
is returned only after the transaction holding it has committed: an acknowledged event is
on disk. Operations queued while a commit is in flight are committed together (group
commit), which is what makes SQLite ingest fast. After each commit the events the batch
recorded are handed, in sequence order, to `publish` (the broadcast hub).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Event, Job, Workflow, utcnow
from .queries import rule_counts
from .views import event_message, job_view, workflow_view

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


@dataclass
class Tx:
    """One operation's view of the open transaction, plus the changes it makes."""

    session: AsyncSession
    events: list[Event]
    jobs_cache: dict[tuple[int, int], Job]
    _dirty_workflows: dict[int, tuple[Workflow, str]] = field(default_factory=dict)
    _dirty_jobs: dict[int, Job] = field(default_factory=dict)
    # Rules that jobs had when this operation looked them up: a job that moves from one rule
    # to another (job_started names no rule, job_info does) changes the counts of both.
    _rules_before: set[tuple[int, str | None]] = field(default_factory=set)

    def changed_workflow(self, wf: Workflow, kind: str = "workflow.updated") -> None:
        previous = self._dirty_workflows.get(id(wf))
        # A more specific kind (created, reset, ...) wins over a plain update.
        if previous is None or previous[1] == "workflow.updated":
            self._dirty_workflows[id(wf)] = (wf, kind)

    def changed_job(self, job: Job) -> None:
        self._dirty_jobs[id(job)] = job

    def emit(self, kind: str, workflow_id: int | None, payload: dict[str, Any]) -> None:
        event = Event(type=kind, workflow_id=workflow_id, payload=payload, created_at=utcnow())
        self.session.add(event)
        self.events.append(event)

    async def record_changes(self) -> None:
        """Turn what the operation changed into numbered events (one per object)."""
        if not (self._dirty_workflows or self._dirty_jobs):
            return
        await self.session.flush()  # ids for new rows
        for wf, kind in self._dirty_workflows.values():
            self.emit(kind, wf.id, {"workflow": workflow_view(wf)})
        rules = set(self._rules_before)
        for job in self._dirty_jobs.values():
            self.emit("job.updated", job.workflow_id, {"job": job_view(job)})
            rules.add((job.workflow_id, job.rule))
        for workflow_id, rule in sorted(rules, key=lambda key: (key[0], key[1] or "")):
            counts = await rule_counts(self.session, workflow_id, rule)
            self.emit("rule.updated", workflow_id, {"rule": counts})
        self._dirty_workflows.clear()
        self._dirty_jobs.clear()
        self._rules_before.clear()

    async def job(self, workflow_id: int, jobid: int) -> Job | None:
        key = (workflow_id, jobid)
        job = self.jobs_cache.get(key)
        if job is None:
            job = await self.session.scalar(
                select(Job).where(Job.workflow_id == workflow_id, Job.jobid == jobid)
            )
            if job is not None:
                self.jobs_cache[key] = job
        if job is not None:
            self._rules_before.add((workflow_id, job.rule))
        return job

    def add_job(self, job: Job) -> None:
        self.session.add(job)
        self.jobs_cache[(job.workflow_id, job.jobid)] = job

    def forget_jobs(self, workflow_id: int) -> None:
        for key in [key for key in self.jobs_cache if key[0] == workflow_id]:
            del self.jobs_cache[key]


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


async def _take_turn(session: AsyncSession) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
    elif dialect == "sqlite":
        await session.execute(text("BEGIN IMMEDIATE"))


Operation = Callable[[Tx], Awaitable[Any]]
Publisher = Callable[[list[dict[str, Any]]], Awaitable[None]]


@dataclass
class _Pending:
    operation: Operation
    future: asyncio.Future[Any]


class Writer:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publish: Publisher,
        batch_size: int = 256,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._publish = publish
        self._batch_size = batch_size
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="panoptes-writer")

    async def stop(self) -> None:
        """Commit everything already submitted, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None

    async def submit(self, operation: Callable[[Tx], Awaitable[T]]) -> T:
        if self._task is None or self._task.done():
            raise RuntimeError("the writer is not running")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(operation, future))
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
            results, events = await self._run_in_transaction(batch)
        except Exception:
            # Something unexpected failed: nothing of the batch was kept. Run each
            # operation alone so one bad message cannot cost the others.
            log.exception("a write batch of %d failed; retrying one by one", len(batch))
            for pending in batch:
                await self._commit_alone(pending)
            return
        await self._finish(batch, results, events)

    async def _commit_alone(self, pending: _Pending) -> None:
        try:
            results, events = await self._run_in_transaction([pending])
        except Exception as exc:
            log.exception("a write operation failed")
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        await self._finish([pending], results, events)

    async def _run_in_transaction(
        self, batch: list[_Pending]
    ) -> tuple[list[tuple[bool, Any]], list[Event]]:
        events: list[Event] = []
        results: list[tuple[bool, Any]] = []
        async with self._sessionmaker() as session, session.begin():
            await _take_turn(session)
            cache: dict[tuple[int, int], Job] = {}
            for pending in batch:
                tx = Tx(session=session, events=events, jobs_cache=cache)
                try:
                    value = await pending.operation(tx)
                except DomainError as exc:
                    results.append((False, exc))
                    continue
                await tx.record_changes()
                results.append((True, value))
        return results, events

    async def _finish(
        self, batch: list[_Pending], results: list[tuple[bool, Any]], events: list[Event]
    ) -> None:
        for pending, (ok, value) in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)
        if events:
            messages = [event_message(event) for event in sorted(events, key=lambda e: e.seq)]
            try:
                await self._publish(messages)
            except Exception:
                log.exception("publishing %d events failed", len(messages))
