"""The single write path: every change goes through one task that commits in batches.

Callers `submit` an operation (a plain function of a `Tx`) and wait for its result, which
is returned only after the transaction holding it has committed: an acknowledged event is
on disk. Operations queued while a commit is in flight are committed together (group
commit), which is what makes SQLite ingest fast. A batch runs synchronously from start to
commit; on an SQLite file, in a thread of its own (see Writer). After each commit the
events the batch recorded are handed, in sequence order, to `publish` (the broadcast hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from ..config import DEFAULT_DB_TIMEOUT
from ..db import database_failed, make_sync_sqlite_engine, sqlite_file
from ..errors import DatabaseUnavailable, PanoptesError
from ..models import Event
from .sql import Carried, FileTurn, Preload, SQLiteWriteSession, preload, take_turn
from .tx import Changes, Refusal, Tx, announce

log = logging.getLogger(__name__)

# What to do about an SQLite file deleted or replaced under the server (Writer.file_problem).
FILE_ADVICE = "restart panoptes to open the file that is at that path now"

# How much work one batch may hold, in rows (a message weighs one, and one more per job it
# lists): with the batch size, what keeps a batch, and so the wait of every message
# queued behind it, short.
MAX_BATCH_WEIGHT = 1_000

# Between batches the writer lets the event loop run until submissions stop coming: at most
# GATHER_PASSES passes, ending after QUIET_PASSES in a row that queued nothing. The answers
# a batch just gave bring the clients' next messages, and requests already read are parsed
# and submitted meanwhile; committed together, they share one transaction's fixed cost
# (measured with 32 clients: batches of 29 messages instead of 15, about 20% more events/s;
# benchmarks/README.md). With nothing coming the passes take microseconds, and a lone
# client's message never waits for them: its answer was given before they begin.
GATHER_PASSES = 16
QUIET_PASSES = 6

T = TypeVar("T")

Operation = Callable[[Tx], Any]
Publisher = Callable[[list[dict[str, Any]]], Awaitable[None]]
# Told, after each commit, of the moves its operations' state machine refused.
RefusalCounter = Callable[[list[Refusal]], None]


@dataclass
class _Outcome:
    results: list[tuple[bool, Any]]
    messages: list[dict[str, Any]]
    refused: list[Refusal]


@dataclass(eq=False)
class _Pending:
    operation: Operation
    future: asyncio.Future[Any]
    preload: Preload | None = None
    weight: int = 1
    # Seconds it may take (the writer's timeout unless the submitter asked for longer), and
    # when (time.monotonic) they are up.
    allowance: float = 0.0
    deadline: float = 0.0


class Writer:
    """Runs each batch of operations as one synchronous transaction.

    On an SQLite file the whole batch runs in one thread of its own, on a plain sqlite3
    connection: one hand-off between the event loop and that thread per batch. (Through
    aiosqlite every statement costs about four, each a wake-up of the loop; they were most
    of a batch's cost.) Elsewhere (PostgreSQL, SQLite in memory) the same code runs through
    AsyncSession.run_sync on the app's async engine.

    The watchdog: a submitter waits at most `timeout` seconds for its commit, then gets
    Unavailable (503) and its operation is dropped unless it has begun; while a batch has
    been running longer than that, the database is taken for hung and new submissions are
    refused at once rather than queued behind it."""

    def __init__(
        self,
        engine: AsyncEngine,
        publish: Publisher,
        batch_size: int = 256,
        on_refused: RefusalCounter | None = None,
        timeout: float = DEFAULT_DB_TIMEOUT,
        on_busy: Callable[[bool], None] | None = None,
    ) -> None:
        self._publish = publish
        self._batch_size = batch_size
        self._on_refused = on_refused
        self.timeout = timeout
        # Told True when a batch starts and False when it has ended (the feed's turns).
        self._on_busy = on_busy
        # When the batch in flight began (time.monotonic), if one is, and how long it may take.
        self._busy_since: float | None = None
        self._allowance = timeout
        # Whether the database failed the last write (until a write succeeds again).
        self.failing = False
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        # What submitters wait for, and the task that gives up on it when its time is up:
        # one timer for all of them, instead of one per submission.
        self._waiting: set[_Pending] = set()
        self._watchdog: asyncio.Task[None] | None = None
        sqlite = engine.dialect.name == "sqlite"
        session_class = SQLiteWriteSession if sqlite else Session
        self._async_sessions = async_sessionmaker(
            engine, expire_on_commit=False, autoflush=False, sync_session_class=session_class
        )
        database = sqlite_file(engine.url)
        self._file = database
        # The SQLite file's (device, inode) when the writer started: a file deleted or
        # replaced under the server is noticed, not written into an unlinked inode.
        self._file_id: tuple[int, int] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        self._turn: FileTurn | None = None
        # What one batch hands on to the next, on a file (sql.Carried). PostgreSQL's other
        # writers (replicas) leave no trace a batch could check.
        self._carried: Carried | None = None
        if database is not None:
            self._carried = Carried()
            self._sync_engine = make_sync_sqlite_engine(engine.url, timeout)
            self._sync_sessions = sessionmaker(
                self._sync_engine,
                class_=SQLiteWriteSession,
                expire_on_commit=False,
                autoflush=False,
            )
            self._turn = FileTurn(database)

    async def start(self) -> None:
        if self._file is not None:
            stat = os.stat(self._file)
            self._file_id = (stat.st_dev, stat.st_ino)
        if self._sync_engine is not None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="panoptes-writer")
        self._task = asyncio.create_task(self._run(), name="panoptes-writer")
        self._watchdog = asyncio.create_task(self._watch(), name="panoptes-writer-watchdog")

    async def stop(self) -> None:
        """Commit everything already submitted, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._turn is not None:
            self._turn.close()

    async def submit(
        self,
        operation: Callable[[Tx], T],
        preload: Preload | None = None,
        weight: int = 1,
        allowed_seconds: float | None = None,
    ) -> T:
        """Run `operation` in a write transaction; its result once that has committed.

        The operation runs synchronously, maybe in the writer's thread, together with the
        other operations of its batch: it may only use the Tx it is given. `weight` is
        about how many rows it writes (see MAX_BATCH_WEIGHT). `allowed_seconds`, for what
        may rightly take long (removing many workflows at once), replaces the writer's
        timeout: a batch holding it is taken for hung only after that long. A submitter
        cancelled while it waits (Hypercorn cancels a request whose client went away) cancels
        the operation too: not yet begun, it never runs; begun, it commits unanswered."""
        allowance = max(allowed_seconds or 0.0, self.timeout)
        if self._task is None or self._task.done():
            raise RuntimeError("the writer is not running")
        stalled = self.stalled_for()
        if stalled is not None:
            raise DatabaseUnavailable(f"has not finished a write for {stalled:.0f} s")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        deadline = time.monotonic() + allowance
        pending = _Pending(operation, future, preload, weight, allowance, deadline)
        self._waiting.add(pending)
        try:
            self._queue.put_nowait(pending)  # the queue has no bound
            return await future
        finally:
            self._waiting.discard(pending)

    async def _watch(self) -> None:
        """Give up on what has waited longer than its allowance: the submitter gets
        Unavailable. Not yet begun: it never will be (the writer skips what is done).
        Begun: it may still commit, as a message a client sends again would be stored
        twice. Checked a few times a second, so a wait ends at most a tick late."""
        tick = min(0.25, self.timeout / 8)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for pending in [p for p in self._waiting if p.deadline <= now]:
                if not pending.future.done():
                    pending.future.set_exception(
                        DatabaseUnavailable(f"did not answer within {pending.allowance:g} s")
                    )

    def file_problem(self) -> str | None:
        """What is wrong with the SQLite file, if it is no longer the one the server opened."""
        if self._file is None or self._file_id is None:
            return None
        try:
            stat = os.stat(self._file)
        except FileNotFoundError:
            return f"file {self._file} was deleted while the server ran"
        except OSError as exc:
            return f"file {self._file} cannot be read ({exc.strerror})"
        if (stat.st_dev, stat.st_ino) != self._file_id:
            return f"file {self._file} was replaced while the server ran"
        return None

    def _tell_busy(self, busy: bool) -> None:
        if self._on_busy is not None:
            self._on_busy(busy)

    def stalled_for(self) -> float | None:
        """How long the batch in flight has run, if longer than the time limit."""
        since = self._busy_since
        if since is None:
            return None
        running = time.monotonic() - since
        return running if running > self._allowance else None

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            batch: list[_Pending] = []
            weight = 0
            if first is None:
                stopping = True
            else:
                batch.append(first)
                weight = first.weight
            while (
                len(batch) < self._batch_size
                and weight < MAX_BATCH_WEIGHT
                and not self._queue.empty()
            ):
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    continue
                batch.append(item)
                weight += item.weight
            batch = [pending for pending in batch if not pending.future.done()]  # given up
            if batch:
                self._allowance = max(pending.allowance for pending in batch)
                self._busy_since = time.monotonic()
                self._tell_busy(True)
                try:
                    await self._commit_batch(batch)
                finally:
                    self._busy_since = None
                    self._tell_busy(False)
                await self._gather()

    async def _gather(self) -> None:
        quiet = 0
        for _ in range(GATHER_PASSES):
            queued = self._queue.qsize()
            await asyncio.sleep(0)
            quiet = quiet + 1 if self._queue.qsize() == queued else 0
            if quiet >= QUIET_PASSES:
                return

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        problem = self.file_problem()
        if problem is not None:  # what it committed would be lost with the unlinked inode
            log.error("refusing a write batch of %d: the database %s", len(batch), problem)
            self._fail(batch, problem, FILE_ADVICE)
            return
        try:
            outcome = await self._run_in_transaction(batch)
        except Exception as exc:
            if database_failed(exc):
                # Alone, each would only fail the same way, each after its own wait.
                log.error("the database failed a write batch of %d: %r", len(batch), exc)
                self._fail(batch, f"failed ({type(exc).__name__})")
                return
            # Something unexpected failed: nothing of the batch was kept. Run each
            # operation alone so one bad message cannot cost the others.
            log.exception("a write batch of %d failed; retrying one by one", len(batch))
            for pending in batch:
                await self._commit_alone(pending)
            return
        await self._finish(batch, outcome)

    def _fail(self, batch: list[_Pending], what: str, advice: str = "try again later") -> None:
        self.failing = True
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(DatabaseUnavailable(what, advice))

    async def _commit_alone(self, pending: _Pending) -> None:
        try:
            outcome = await self._run_in_transaction([pending])
        except Exception as exc:
            log.exception("a write operation failed")
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        await self._finish([pending], outcome)

    async def _run_in_transaction(self, batch: list[_Pending]) -> _Outcome:
        """Run the operations in one transaction; their results, and the committed events as
        the feed sends them."""
        if self._thread is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._thread, self._in_thread, batch)
        async with self._async_sessions() as session, session.begin():
            return await session.run_sync(_transaction, batch)

    def _in_thread(self, batch: list[_Pending]) -> _Outcome:
        assert self._turn is not None and self._carried is not None
        carried = self._carried
        try:
            with self._turn, self._sync_sessions() as session, session.begin():
                outcome = _transaction(session, batch, carried)
        except BaseException:
            carried.drop()  # its rows hold what was not committed
            raise
        carried.keep()
        return outcome

    async def _finish(self, batch: list[_Pending], outcome: _Outcome) -> None:
        self.failing = False
        for pending, (ok, value) in zip(batch, outcome.results, strict=True):
            if pending.future.done():
                continue
            if ok:
                pending.future.set_result(value)
            else:
                pending.future.set_exception(value)
        if outcome.refused and self._on_refused is not None:
            self._on_refused(outcome.refused)
        if outcome.messages:
            try:
                await self._publish(outcome.messages)
            except Exception:
                log.exception("publishing %d events failed", len(outcome.messages))


def _transaction(
    session: Session, batch: list[_Pending], carried: Carried | None = None
) -> _Outcome:
    """A batch's operations in the open transaction of `session`, which commits after,
    starting from what the batch before left if `carried`."""
    events: list[Event] = []
    results: list[tuple[bool, Any]] = []
    take_turn(session)
    known = carried.take(session) if carried is not None else None
    loaded = preload(session, [p.preload for p in batch if p.preload], known)
    changes = Changes()
    for pending in batch:
        tx = Tx(session=session, events=events, loaded=loaded, batch=changes)
        try:
            value = pending.operation(tx)
        except PanoptesError as exc:
            results.append((False, exc))
            continue
        changes.merge(tx.changes)
        results.append((True, value))
    messages = announce(session, changes, loaded, events)  # flushes everything first
    return _Outcome(results, messages, changes.refused)
