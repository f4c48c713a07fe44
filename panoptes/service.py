"""The running server's parts (database, writer, hub) and the operations users ask for.

`Service` owns what lives as long as the server: the engine and read sessions, the writer
(the only write path), the hub (live fan-out) and the metrics. Its methods are what the
routes call: register a run, apply a message, rename, cancel, delete, prune. Each change is
one operation submitted to the writer, written against the store's `Tx`; none runs SQL.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import ingest
from .config import Config
from .db import make_engine, make_sessionmaker
from .errors import BadRequest, Conflict, DatabaseUnavailable, NotFound, PanoptesError
from .hub import Hub, backend_for
from .ingest import machine, runs
from .ingest.wire import MAX_NAME_CHARS
from .metrics import Metrics
from .migrations import check_schema, upgrade_schema
from .models import WorkflowRow, is_silent, utcnow
from .notify import Notifier
from .queries import EventLog
from .shapes import workflow_view
from .status import FINISHED, EventKind, Trigger, WorkflowStatus
from .store import Preload, Tx, Writer
from .store.writer import FILE_ADVICE

log = logging.getLogger(__name__)
W = WorkflowStatus
R = TypeVar("R")

# Retention: how often the server looks for expired workflows, and how many one write removes.
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 200
# Seconds a write that removes many workflows at once may take before it counts as hung (any
# other write: PANOPTES_DB_TIMEOUT).
LONG_WRITE_SECONDS = 120.0
# Statuses retention may remove: finished runs, and Stale ones (never Running).
PRUNABLE = frozenset({*FINISHED, W.STALE})


def _base_url(config: Config) -> str:
    """Where the links in notifications point: PANOPTES_PUBLIC_URL, else this server."""
    if config.notify.public_url:
        return config.notify.public_url
    host = "127.0.0.1" if config.host in ("", "0.0.0.0", "::") else config.host
    return f"http://{f'[{host}]' if ':' in host else host}:{config.port}"


def _nothing(tx: Tx) -> None:
    """An empty write: whether the write path works."""


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = make_engine(config.db_url, config.db_timeout)
        self.sessions = make_sessionmaker(self.engine)
        self.hub = Hub(
            backend_for(config.broadcast_url, config.db_url),
            queue_size=config.subscriber_queue,
            events=EventLog(self.sessions),
        )
        self.metrics = Metrics(self.engine.dialect.name, self.hub.backend.name)
        self.hub.on_count = self.metrics.subscribers.set
        # Open feed connections per client address, for PANOPTES_MAX_FEED_PER_CLIENT.
        self.feed_clients: Counter[str] = Counter()
        self.notifier = Notifier(config.notify, self.sessions, self._write, _base_url(config))
        self.writer = Writer(
            self.engine,
            self._publish,
            config.write_batch_size,
            self.metrics.count_refused,
            timeout=config.db_timeout,
            on_busy=self.hub.turns.writing,
        )
        self._last_prune = 0.0
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.open()
        await self.sweep_stale()
        await self.prune_expired()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="panoptes-stale")
        await self.notifier.start()
        # What is loaded by now (modules, the app, its templates) lives as long as the
        # process: out of the collector's way, so that a request making many objects (the
        # grid of 10,000 jobs) does not pay for scanning it again (benchmarks/glance.py).
        gc.freeze()

    async def open(self) -> None:
        """Database at the current schema, hub and writer: what one-off commands need too."""
        if self.config.auto_migrate:
            await upgrade_schema(self.engine)
        else:
            await check_schema(self.engine)
        await self.hub.start()
        await self.writer.start()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
        await self.notifier.stop()
        await self.writer.stop()
        await self.hub.close()
        await self.engine.dispose()
        self.metrics.close()

    async def _publish(self, messages: list[dict[str, Any]]) -> None:
        await self.hub.publish(messages)
        self.notifier.wake()

    async def _write(self, operation: Callable[[Session], R]) -> R:
        """The notifier's own short writes: operations of the writer's queue, never part of
        an ingest operation, so they take the same write turn (notify/queue.py). They read
        through the session what the batch's earlier operations changed: it is written
        first."""

        def op(tx: Tx) -> R:
            tx.flush()
            return operation(tx.session)

        return await self.writer.submit(op)

    # ---- ingest

    async def register(self, request: ingest.Registration) -> dict[str, Any]:
        def op(tx: Tx) -> dict[str, Any]:
            wf = runs.register_workflow(tx, request, self.config.stale_hours)
            tx.flush()  # its id
            return workflow_view(wf)

        return await self.writer.submit(op)

    async def ingest(self, message: ingest.Message) -> bool:
        """Store a message; whether it was new. One listing many jobs is stored in shares,
        each in a write turn of its own, so no message holds the writer for long."""
        stored = False
        for share in message.shares():
            workflow_id = share.workflow_id
            jobs = share.jobids()
            rows = Preload(workflows=(workflow_id,), jobs=tuple((workflow_id, j) for j in jobs))
            stored |= await self.writer.submit(
                partial(machine.apply_message, message=share), rows, weight=1 + len(jobs)
            )
        return stored

    # ---- stale runs

    def stale_before(self, now: datetime | None = None) -> datetime | None:
        """Running workflows last heard of before this are Stale (None: never), whether or
        not the sweeper has recorded it yet: reads show them so (queries.py)."""
        if self.config.stale_hours <= 0:
            return None
        return (now or utcnow()) - timedelta(hours=self.config.stale_hours)

    async def sweep_stale(self) -> int:
        """Record (and announce) the Running workflows that have gone Stale."""
        if self.config.stale_hours <= 0:
            return 0
        return await self.writer.submit(self._sweep)

    def _sweep(self, tx: Tx) -> int:
        return runs.sweep_stale(tx, self.config.stale_hours)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(self.config.stale_check_seconds, 1.0) * 6)
            try:
                await self.sweep_stale()
            except Exception:
                log.exception("the stale check failed")
            await self.prune_if_due()

    # ---- health

    async def database_status(self) -> dict[str, Any]:
        """Whether the database answers, and how: for /api/service-info and health checks.
        When writes have failed or hang, whether one goes through now (an empty one)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.db_timeout):
                async with self.sessions() as session:
                    await session.execute(select(1))
            problem = self.writer.file_problem()
            if problem is not None:
                raise DatabaseUnavailable(problem, FILE_ADVICE)
            if self.writer.failing or self.writer.stalled_for() is not None:
                await self.writer.submit(_nothing)
        except Exception as exc:  # any failure to reach it is the answer
            detail = exc.detail if isinstance(exc, PanoptesError) else str(exc)
            if isinstance(exc, TimeoutError):
                detail = f"no answer within {self.config.db_timeout:g} s"
            log.warning("the database health check failed: %s", detail)
            return {
                "ok": False,
                "backend": self.engine.dialect.name,
                "error": type(exc).__name__,
                "detail": detail,
            }
        return {
            "ok": True,
            "backend": self.engine.dialect.name,
            "latency_ms": round(1000 * (time.perf_counter() - started), 2),
        }

    # ---- retention

    async def prune(self, days: float, now: datetime | None = None) -> int:
        """Remove Done, Error, Cancelled and Stale workflows that ended (Stale: went silent)
        more than `days` ago, with their jobs and events. Returns how many were removed."""
        cutoff = (now or utcnow()) - timedelta(days=days)

        def op(tx: Tx) -> int:
            expired = tx.ended_before(cutoff, PRUNABLE, PRUNE_BATCH)
            tx.remove_workflows(expired, with_events=True)
            return len(expired)

        removed = 0
        while True:
            count = await self.writer.submit(op, allowed_seconds=LONG_WRITE_SECONDS)
            removed += count
            if count < PRUNE_BATCH:
                await self.notifier.forget_before(cutoff)  # the delivery log too
                return removed

    async def prune_expired(self) -> int:
        """Apply PANOPTES_RETENTION_DAYS, if set: at start, then hourly from the sweeper."""
        self._last_prune = time.monotonic()
        if self.config.retention_days <= 0:
            return 0
        try:
            removed = await self.prune(self.config.retention_days)
        except Exception:
            log.exception("removing expired workflows failed")
            return 0
        if removed:
            log.info("removed %d workflows older than %g days", removed, self.config.retention_days)
        return removed

    async def prune_if_due(self) -> None:
        if time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS:
            await self.prune_expired()

    # ---- what users change through the API and pages

    def _existing(self, tx: Tx, workflow_id: int) -> WorkflowRow:
        wf = tx.workflow(workflow_id)
        if wf is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        return wf

    async def rename(self, workflow_id: int, name: str) -> WorkflowRow:
        """Rename; but Snakemake 8 renames its run to the name it registered with right
        after registering, and that call gets the workflow as it is when registering
        already settled the name: cut to MAX_NAME_CHARS, suffixed because a live run had
        it, or both. Never a refusal, which would abort the client's run."""
        asked = name[:MAX_NAME_CHARS]

        def op(tx: Tx) -> WorkflowRow:
            wf = self._existing(tx, workflow_id)
            registered_as_asked = wf.name == asked or runs.is_suffixed(wf.name, asked)
            if wf.name == name or (len(name) > MAX_NAME_CHARS and registered_as_asked):
                return wf.snapshot()
            if len(name) > MAX_NAME_CHARS:
                raise BadRequest(f"'name' must be at most {MAX_NAME_CHARS} characters")
            taken = tx.workflow_named(name)
            if taken is not None:
                if registered_as_asked:  # asked == name here
                    return wf.snapshot()
                raise Conflict(f"another workflow (id {taken.id}) is already named {name!r}")
            wf.name = name
            tx.changed_workflow(wf, EventKind.WORKFLOW_RENAMED)
            return wf.snapshot()

        try:
            return await self.writer.submit(op)
        except IntegrityError:
            raise Conflict(f"another workflow is already named {name!r}") from None

    async def cancel(self, workflow_id: int) -> WorkflowRow:
        def op(tx: Tx) -> WorkflowRow:
            wf = self._existing(tx, workflow_id)
            if wf.status == W.CANCELLED:
                return wf.snapshot()
            if not machine.can(wf, Trigger.CANCELLED):
                raise Conflict(
                    f"workflow {workflow_id} is {wf.status}; only Running or Stale "
                    "workflows can be cancelled"
                )
            runs.cancel_workflow(tx, wf)
            return wf.snapshot()

        return await self.writer.submit(op)

    async def delete(self, workflow_id: int) -> None:
        def op(tx: Tx) -> None:
            wf = self._existing(tx, workflow_id)
            # A run that has gone silent is Stale, as the pages show it, swept or not yet.
            if wf.status == W.RUNNING and not is_silent(wf, self.stale_before()):
                raise Conflict(
                    f"workflow {workflow_id} is still running; cancel it first with "
                    f"POST /api/workflow/{workflow_id}/cancel",
                    error="workflow is running",
                )
            tx.remove_workflows([wf])

        await self.writer.submit(op)

    async def delete_all(self) -> int:
        return await self.writer.submit(
            lambda tx: tx.remove_all_workflows(), allowed_seconds=LONG_WRITE_SECONDS
        )
