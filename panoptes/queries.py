"""The read side: every query the API, feed and pages make. Each is one indexed statement."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

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
    query = select(Workflow).where(*conditions).order_by(Workflow.id.desc())
    if page.cursor is not None:
        query = query.where(Workflow.id < page.cursor)
    workflows = list(await session.scalars(query.offset(page.offset).limit(page.limit)))
    if _is_everything(page, len(workflows)):
        return workflows, len(workflows)
    count = await session.scalar(select(func.count()).select_from(Workflow).where(*conditions))
    return workflows, count or 0


def _is_everything(page: Page, rows: int) -> bool:
    """Whether a page holds every matching row (a first page with room to spare), so the
    count is known without counting."""
    return page.offset == 0 and page.cursor is None and rows < page.limit


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
    query = select(Job).where(*conditions).order_by(Job.id)
    if page.cursor is not None:
        query = query.where(Job.id > page.cursor)
    jobs = list(await session.scalars(query.offset(page.offset).limit(page.limit)))
    if _is_everything(page, len(jobs)):
        return jobs, len(jobs)
    count = await session.scalar(select(func.count()).select_from(Job).where(*conditions))
    return jobs, count or 0


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


# Keeps each statement well inside every database's limit on bound parameters.
KEYS_PER_QUERY = 500


@lru_cache(maxsize=64)
def _rule_counts_query(workflows: int, unnamed: bool) -> Select[int, str | None, str, int]:
    """Counts by (workflow, rule, status) for `workflows` workflows, each with its own list
    of rules, and (if `unnamed`) the jobs with no rule yet of a list of workflows. Built once
    per shape: building the expression cost more than running it."""
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


def rule_counts(
    session: Session, keys: Collection[tuple[int, str | None]]
) -> dict[tuple[int, str | None], dict[str, Any]]:
    """The counts of some rules, by (workflow id, rule); a job whose rule is not known yet
    counts under None (shown as "")."""
    counts = {key: _empty_rule(key[1] or "") for key in keys}
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
            entry = counts[(workflow_id, rule)]
            entry[JobStatus(status).value.lower()] += count
            entry["total"] += count
    return counts


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
