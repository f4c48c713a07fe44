"""The read side: every query the API, feed and pages make. Each is one indexed statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Event, Job, Workflow
from .status import JobStatus
from .views import event_message


@dataclass(frozen=True)
class Page:
    limit: int = 100
    offset: int = 0
    cursor: int | None = None


async def list_workflows(
    session: AsyncSession,
    page: Page,
    statuses: list[str] | None = None,
    search: str | None = None,
) -> tuple[list[Workflow], int]:
    """Newest first. `cursor` is the id of the last workflow of the previous page."""
    conditions = []
    if statuses:
        conditions.append(Workflow.status.in_(statuses))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Workflow.name.ilike(f"%{escaped}%", escape="\\"))
    count = await session.scalar(select(func.count()).select_from(Workflow).where(*conditions))
    query = select(Workflow).where(*conditions).order_by(Workflow.id.desc())
    if page.cursor is not None:
        query = query.where(Workflow.id < page.cursor)
    query = query.offset(page.offset).limit(page.limit)
    return list(await session.scalars(query)), count or 0


async def status_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Workflow.status, func.count()).group_by(Workflow.status))
    return {status: count for status, count in rows}


async def get_workflow(session: AsyncSession, workflow_id: int) -> Workflow | None:
    return await session.get(Workflow, workflow_id)


async def list_jobs(
    session: AsyncSession,
    workflow_id: int,
    page: Page,
    statuses: list[str] | None = None,
    rules: list[str] | None = None,
) -> tuple[list[Job], int]:
    """In the order Snakemake started them."""
    conditions = [Job.workflow_id == workflow_id]
    if statuses:
        conditions.append(Job.status.in_(statuses))
    if rules:
        conditions.append(Job.rule.in_(rules))
    count = await session.scalar(select(func.count()).select_from(Job).where(*conditions))
    query = select(Job).where(*conditions).order_by(Job.id)
    if page.cursor is not None:
        query = query.where(Job.id > page.cursor)
    query = query.offset(page.offset).limit(page.limit)
    return list(await session.scalars(query)), count or 0


async def get_job(session: AsyncSession, workflow_id: int, jobid: int) -> Job | None:
    return await session.scalar(
        select(Job).where(Job.workflow_id == workflow_id, Job.jobid == jobid)
    )


def _empty_rule(name: str) -> dict[str, Any]:
    return {"rule": name, "total": 0, "done": 0, "running": 0, "error": 0, "waiting": 0}


async def rule_progress(session: AsyncSession, workflow_id: int) -> list[dict[str, Any]]:
    """Per rule: how many of its jobs are done, running, failed, waiting; sorted by rule."""
    rows = await session.execute(
        select(Job.rule, Job.status, func.count())
        .where(Job.workflow_id == workflow_id)
        .group_by(Job.rule, Job.status)
    )
    rules: dict[str, dict[str, Any]] = {}
    for rule, status, count in rows:
        entry = rules.setdefault(rule or "", _empty_rule(rule or ""))
        entry[JobStatus(status).value.lower()] += count
        entry["total"] += count
    return [rules[name] for name in sorted(rules)]


async def rule_counts(session: AsyncSession, workflow_id: int, rule: str | None) -> dict[str, Any]:
    """The counts of one rule (jobs whose rule is not known yet count under "")."""
    match = Job.rule.is_(None) if rule is None else Job.rule == rule
    rows = await session.execute(
        select(Job.status, func.count())
        .where(Job.workflow_id == workflow_id, match)
        .group_by(Job.status)
    )
    entry = _empty_rule(rule or "")
    for status, count in rows:
        entry[JobStatus(status).value.lower()] += count
        entry["total"] += count
    return entry


async def events_since(
    session: AsyncSession, since: int, workflow_id: int | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """What the feed missed: one workflow's events, or every workflow-level event."""
    query = select(Event).where(Event.seq > since).order_by(Event.seq).limit(limit)
    if workflow_id is not None:
        query = query.where(Event.workflow_id == workflow_id)
    else:
        query = query.where(Event.type.startswith("workflow."))
    return [event_message(event) for event in await session.scalars(query)]


async def last_seq(session: AsyncSession) -> int:
    return await session.scalar(select(func.max(Event.seq))) or 0


class EventLog:
    """Every event, in seq order, as the hub's pump reads it (hub.EventLog)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def head(self) -> int:
        async with self._sessions() as session:
            return await last_seq(session)

    async def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        query = select(Event).where(Event.seq > seq).order_by(Event.seq).limit(limit)
        async with self._sessions() as session:
            return [event_message(event) for event in await session.scalars(query)]
