"""The notifications' read side: the delivery log for GET /api/notifications and the page,
and the cheap checks that spare the writer a turn when there is nothing to do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..models import Event, Notification, Workflow
from ..notify_settings import NotifySettings
from ..shapes import iso
from .queue import NOTES, PENDING
from .queue import STATE as NOTES_STATE
from .rules import Batch, Seen


async def head(session: AsyncSession) -> int:
    return await session.scalar(select(func.max(Event.seq))) or 0


# The events the rules look at: the workflow-level ones (rules.py), a few per batch.
WANTED = "workflow.%"
EVENTS_PER_PASS = 500


async def cursor(session: AsyncSession) -> int | None:
    seq: int | None = await session.scalar(select(NOTES_STATE.c.seq).where(NOTES_STATE.c.id == 1))
    return seq


async def events_after(session: AsyncSession, seq: int, head: int) -> Batch:
    """The next workflow-level events after `seq`, up to `head`, in seq order."""
    query = (
        select(Event.seq, Event.type, Event.workflow_id, Event.payload, Event.created_at)
        .where(Event.seq > seq, Event.seq <= head, Event.type.like(WANTED))
        .order_by(Event.seq)
        .limit(EVENTS_PER_PASS)
    )
    rows = list(await session.execute(query))
    seen = [Seen(r.type, r.workflow_id, r.payload or {}, r.created_at) for r in rows]
    full = len(rows) == EVENTS_PER_PASS
    # Nothing else up to head matters: the cursor may move there.
    return Batch(seq, rows[-1].seq if full else head, seen, full)


async def due_now(session: AsyncSession, now: datetime) -> bool:
    query = select(NOTES.c.id).where(NOTES.c.status == PENDING, NOTES.c.next_attempt_at <= now)
    return await session.scalar(query.limit(1)) is not None


def _shown(row: Notification, names: dict[int, str], settings: NotifySettings) -> dict[str, Any]:
    target = settings.target(row.target)
    view = (row.payload or {}).get("workflow") or {}
    return {
        "id": row.id,
        "event": row.event,
        "workflow": {
            "id": row.workflow_id,
            "name": names.get(row.workflow_id or -1, view.get("name")),
        },
        "jobid": row.jobid,
        "recovered": (row.payload or {}).get("recovered"),
        "target": {
            "key": row.target,
            "format": target.format if target else None,
            "target": target.masked if target else "(no longer configured)",
        },
        "status": row.status,
        "attempts": row.attempts,
        "log": list(row.log or []),
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.status == PENDING else None,
        "delivered_at": iso(row.delivered_at),
    }


async def deliveries(
    session: AsyncSession,
    settings: NotifySettings,
    limit: int,
    offset: int,
    statuses: list[str] | None,
) -> dict[str, Any]:
    """Newest first, with the targets configured (masked)."""
    conditions = [Notification.status.in_(statuses)] if statuses else []
    query = select(Notification).where(*conditions).order_by(Notification.id.desc())
    rows = list(await session.scalars(query.offset(offset).limit(limit)))
    count = await session.scalar(select(func.count()).select_from(Notification).where(*conditions))
    ids = sorted({row.workflow_id for row in rows if row.workflow_id is not None})
    names: dict[int, str] = {}
    if ids:
        found = await session.execute(
            select(Workflow.id, Workflow.name).where(Workflow.id.in_(ids))
        )
        names = {workflow_id: name for workflow_id, name in found}
    return {
        "targets": [target.shown() for target in settings.targets],
        "notifications": [_shown(row, names, settings) for row in rows],
        "count": count or 0,
        "limit": limit,
        "offset": offset,
    }
