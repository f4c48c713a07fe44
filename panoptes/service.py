"""The running server's parts (database, writer, hub) and the changes users can ask for."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from . import ingest
from .broadcast import backend_for
from .config import Config
from .db import make_engine, make_sessionmaker
from .hub import Hub
from .metrics import Metrics
from .migrations import check_schema, upgrade_schema
from .models import Event, Workflow, utcnow
from .queries import EventLog
from .status import FINISHED, WorkflowStatus, can_move
from .writer import DomainError, Tx, Writer

log = logging.getLogger(__name__)
W = WorkflowStatus

# Retention: how often the server looks for expired workflows, and how many one write removes.
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 200
# Statuses retention may remove: finished runs, and Stale ones (never Running).
PRUNABLE = frozenset({*FINISHED, W.STALE})


class NotFound(DomainError):
    status = 404
    error = "not found"


class Conflict(DomainError):
    status = 409
    error = "conflict"


class Panoptes:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = make_engine(config.db_url)
        self.sessions = make_sessionmaker(self.engine)
        self.hub = Hub(
            backend_for(config.broadcast_url, config.db_url),
            queue_size=config.subscriber_queue,
            events=EventLog(self.sessions),
        )
        self.metrics = Metrics()
        self.hub.on_count = self.metrics.subscribers.set
        # Open feed connections per client address, for PANOPTES_MAX_FEED_PER_CLIENT.
        self.feed_clients: Counter[str] = Counter()
        self.writer = Writer(self.engine, self.hub.publish, config.write_batch_size)
        self._last_sweep = 0.0
        self._last_prune = 0.0
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.open()
        await self.sweep_stale()
        await self.prune_expired()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="panoptes-stale")

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
        await self.writer.stop()
        await self.hub.close()
        await self.engine.dispose()
        self.metrics.close()

    # ---- ingest

    async def register(self, request: ingest.Registration) -> dict[str, Any]:
        from .views import workflow_view

        def op(tx: Tx) -> dict[str, Any]:
            wf = ingest.register_workflow(tx, request, self.config.stale_hours)
            tx.session.flush()
            return workflow_view(wf)

        return await self.writer.submit(op)

    async def ingest(self, message: ingest.Message) -> bool:
        return await self.writer.submit(
            lambda tx: ingest.apply_message(tx, message), ingest.rows_to_load(message)
        )

    # ---- stale runs

    async def sweep_stale(self) -> int:
        self._last_sweep = time.monotonic()
        if self.config.stale_hours <= 0:
            return 0
        return await self.writer.submit(lambda tx: ingest.sweep_stale(tx, self.config.stale_hours))

    async def sweep_if_due(self) -> None:
        """Read paths call this so a silent run shows Stale without waiting for the timer."""
        if time.monotonic() - self._last_sweep >= self.config.stale_check_seconds:
            await self.sweep_stale()

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
        """Whether the database answers, and how: for /api/service-info and health checks."""
        started = time.perf_counter()
        try:
            async with self.sessions() as session:
                await session.execute(select(1))
        except Exception as exc:  # any failure to reach it is the answer
            log.warning("the database health check failed: %s", exc)
            return {"ok": False, "backend": self.engine.dialect.name, "error": type(exc).__name__}
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
        removed = 0
        while True:
            count = await self.writer.submit(lambda tx: self._prune_batch(tx, cutoff))
            removed += count
            if count < PRUNE_BATCH:
                return removed

    def _prune_batch(self, tx: Tx, cutoff: datetime) -> int:
        ended = func.coalesce(Workflow.finished_at, Workflow.updated_at)
        tx.flush()  # the batch's changes to these columns count
        expired = list(
            tx.session.scalars(
                select(Workflow)
                .where(Workflow.status.in_(PRUNABLE), ended < cutoff)
                .order_by(Workflow.id)
                .limit(PRUNE_BATCH)
            )
        )
        if expired:
            # Their events go too, before the deletion events are written: a feed client
            # resuming from before still learns of the deletion, and nothing else about them.
            ids = [wf.id for wf in expired]
            tx.session.execute(
                delete(Event).where(Event.workflow_id.in_(ids)),
                execution_options={"synchronize_session": False},
            )
        self._remove(tx, expired)
        return len(expired)

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

    def _existing(self, tx: Tx, workflow_id: int) -> Workflow:
        wf = tx.session.get(Workflow, workflow_id)
        if wf is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        return wf

    async def rename(self, workflow_id: int, name: str) -> Workflow:
        def op(tx: Tx) -> Workflow:
            wf = self._existing(tx, workflow_id)
            if wf.name == name:
                return wf
            tx.flush()  # a workflow this batch registered or renamed may have it
            taken = tx.session.scalar(select(Workflow.id).where(Workflow.name == name))
            if taken is not None:
                raise Conflict(f"another workflow (id {taken}) is already named {name!r}")
            wf.name = name
            tx.changed_workflow(wf, "workflow.renamed")
            return wf

        try:
            return await self.writer.submit(op)
        except IntegrityError:
            raise Conflict(f"another workflow is already named {name!r}") from None

    async def cancel(self, workflow_id: int) -> Workflow:
        def op(tx: Tx) -> Workflow:
            wf = self._existing(tx, workflow_id)
            if wf.status == W.CANCELLED:
                return wf
            if not can_move(wf.status, W.CANCELLED):
                raise Conflict(
                    f"workflow {workflow_id} is {wf.status}; only Running or Stale "
                    "workflows can be cancelled"
                )
            ingest.cancel_workflow(tx, wf)
            return wf

        return await self.writer.submit(op)

    async def delete(self, workflow_id: int) -> None:
        def op(tx: Tx) -> None:
            wf = self._existing(tx, workflow_id)
            if wf.status == W.RUNNING:
                raise Conflict(
                    f"workflow {workflow_id} is still running; cancel it first with "
                    f"POST /api/workflow/{workflow_id}/cancel",
                    error="workflow is running",
                )
            self._remove(tx, [wf])

        await self.writer.submit(op)

    def _remove(self, tx: Tx, workflows: list[Workflow]) -> None:
        for wf in workflows:
            tx.session.delete(wf)
        # First: what the batch had pending for their jobs is not written (their rows go
        # with them), and the deletion is announced.
        tx.deleted_workflows([wf.id for wf in workflows])
        tx.flush()  # gone for the rest of the batch: a later get() finds nothing

    async def delete_all(self) -> int:
        def op(tx: Tx) -> int:
            tx.flush()  # what the batch added goes too
            ids = list(tx.session.scalars(select(Workflow.id)))
            count = tx.session.scalar(select(func.count()).select_from(Workflow))
            tx.session.execute(delete(Workflow))
            tx.deleted_workflows(ids)
            return count or 0

        return await self.writer.submit(op)
