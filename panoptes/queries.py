"""The read side: every query the API, feed and pages make. Each is one indexed statement.

A Running workflow that has gone silent for PANOPTES_STALE_HOURS is shown, filtered and
counted as Stale here (`stale_before`) before the sweeper records it, so that reads never
need to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, func, null, or_, select, type_coerce, union_all
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db import json_loads
from .models import Event, Job, Workflow, WorkflowRow, is_silent, silent_since
from .shapes import (
    count_job,
    event_message,
    grid_key,
    grid_view,
    rule_view,
    timeline_view,
    workflow_view,
)
from .status import WORKFLOW_LEVEL_PREFIX, WorkflowStatus

W = WorkflowStatus


@dataclass(frozen=True)
class Page:
    limit: int = 100
    offset: int = 0
    cursor: int | None = None


def _status_filter(statuses: list[str], stale_before: datetime | None) -> ColumnElement[bool]:
    """Workflows that reads show in one of `statuses`, as conditions the status index
    serves: a silent Running workflow counts as Stale, not Running."""
    if stale_before is None:
        return Workflow.status.in_(statuses)
    running, stale = W.RUNNING in statuses, W.STALE in statuses
    others = [status for status in statuses if status not in (W.RUNNING, W.STALE)]
    shown: list[ColumnElement[bool]] = [Workflow.status.in_(others)] if others else []
    if stale:
        shown += [Workflow.status == W.STALE, silent_since(stale_before)]
    if running:
        shown.append(and_(Workflow.status == W.RUNNING, Workflow.updated_at >= stale_before))
    return or_(*shown)


def shown(wf: Workflow | WorkflowRow, stale_before: datetime | None) -> dict[str, Any]:
    """A workflow as reads show it: Stale once silent, recorded yet or not."""
    view = workflow_view(wf)
    if is_silent(wf, stale_before):
        view["status"] = W.STALE.value
    return view


async def list_workflows(
    session: AsyncSession,
    page: Page,
    statuses: list[str] | None = None,
    search: str | None = None,
    stale_before: datetime | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first. `cursor` is the id of the last workflow of the previous page."""
    conditions = []
    if statuses:
        conditions.append(_status_filter(statuses, stale_before))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Workflow.name.ilike(f"%{escaped}%", escape="\\"))
    query = select(Workflow).where(*conditions).order_by(Workflow.id.desc())
    if page.cursor is not None:
        query = query.where(Workflow.id < page.cursor)
    found = list(await session.scalars(query.offset(page.offset).limit(page.limit)))
    workflows = [shown(wf, stale_before) for wf in found]
    if _is_everything(page, len(workflows)):
        return workflows, len(workflows)
    count = await session.scalar(select(func.count()).select_from(Workflow).where(*conditions))
    return workflows, count or 0


def _is_everything(page: Page, rows: int) -> bool:
    """Whether a page holds every matching row (a first page with room to spare), so the
    count is known without counting."""
    return page.offset == 0 and page.cursor is None and rows < page.limit


async def status_counts(
    session: AsyncSession, stale_before: datetime | None = None
) -> dict[str, int]:
    """How many workflows reads show in each status: the silent Running ones as Stale.

    One statement, both halves served by the status index: the count per stored status,
    and (the row whose status is NULL) how many Running ones are silent."""
    query = select(Workflow.status, func.count()).group_by(Workflow.status)
    if stale_before is not None:
        silent = select(null(), func.count()).where(silent_since(stale_before))
        query = union_all(query, silent)  # type: ignore[assignment]
    counts: dict[str, int] = {}
    silent_count = 0
    for status, count in await session.execute(query):
        if status is None:
            silent_count = count
        else:
            counts[status] = count
    if silent_count:
        running = counts[W.RUNNING.value] - silent_count
        counts[W.STALE.value] = counts.get(W.STALE.value, 0) + silent_count
        if running:
            counts[W.RUNNING.value] = running
        else:
            del counts[W.RUNNING.value]
    return counts


async def get_workflow(
    session: AsyncSession, workflow_id: int, stale_before: datetime | None = None
) -> dict[str, Any] | None:
    wf = await session.get(Workflow, workflow_id)
    return None if wf is None else shown(wf, stale_before)


async def workflow_exists(session: AsyncSession, workflow_id: int) -> bool:
    found = await session.scalar(select(Workflow.id).where(Workflow.id == workflow_id))
    return found is not None


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


async def rule_progress(session: AsyncSession, workflow_id: int) -> list[dict[str, Any]]:
    """Per rule: jobs planned (null without a plan), and how many are done, running, failed
    and waiting. In pipeline order, as far as it is known: the rules that have jobs in the
    order their first job came, then the planned rules no job of which came yet, in the
    plan's order (Snakemake's Job stats lists them by name, so it gives none of its own)."""
    plan = await session.scalar(select(Workflow.plan).where(Workflow.id == workflow_id))
    rows = await session.execute(
        select(Job.rule, Job.status, func.count(), func.min(Job.id))
        .where(Job.workflow_id == workflow_id)
        .group_by(Job.rule, Job.status)
    )
    rules: dict[str, dict[str, Any]] = {}
    first: dict[str, int] = {}
    for rule, status, count, first_id in rows:
        name = rule or ""
        count_job(rules.setdefault(name, rule_view(rule)), status, count)
        first[name] = min(first.get(name, first_id), first_id)
    order = _pipeline_order(first, plan)
    for name in order:
        rules.setdefault(name, rule_view(name))
    if plan is not None:
        for name in order:
            rules[name]["planned"] = plan.get(name)
    return [rules[name] for name in order]


def _pipeline_order(first: dict[str, int], plan: dict[str, Any] | None) -> list[str]:
    """Rules in pipeline order, as far as it is known (rule_progress), from the id of each
    rule's first job and the plan."""
    order = sorted(first, key=lambda name: first[name])
    return order + [name for name in plan or {} if name not in first]


async def rule_order(session: AsyncSession, workflow_id: int) -> list[str]:
    """The rules' names in rule_progress' order, without counting their jobs."""
    plan = await session.scalar(select(Workflow.plan).where(Workflow.id == workflow_id))
    rows = await session.execute(
        select(Job.rule, func.min(Job.id)).where(Job.workflow_id == workflow_id).group_by(Job.rule)
    )
    first = {rule or "": first_id for rule, first_id in rows}
    return _pipeline_order(first, plan)


async def rule_graph(session: AsyncSession, workflow_id: int) -> dict[str, Any]:
    """The run's rules as a graph, each with its counts: the graph the client sent (plugin
    1.0.0), else the one its jobs' files make (a rule that reads what another writes
    runs after it), which knows only the jobs described so far."""
    graph = await session.scalar(select(Workflow.rulegraph).where(Workflow.id == workflow_id))
    counts = {rule["rule"]: rule for rule in await rule_progress(session, workflow_id)}
    if graph is not None:
        rules, edges, source = list(graph["rules"]), graph["edges"], "client"
    else:
        rules, edges, source = [], await _edges_from_files(session, workflow_id), "jobs"
    rules += [rule for rule in counts if rule not in rules and rule]
    nodes = []
    for rule in rules:
        count = counts.get(rule) or rule_view(rule)
        nodes.append(
            {
                "rule": rule,
                "planned": count["planned"],
                "total": count["total"],
                "done": count["done"],
                "running": count["running"],
                "failed": count["error"],
                "waiting": count["waiting"],
            }
        )
    return {"nodes": nodes, "edges": edges, "edges_from": source}


async def _edges_from_files(session: AsyncSession, workflow_id: int) -> list[list[str]]:
    query = select(Job.rule, _as_text(Job.input), _as_text(Job.output)).where(
        Job.workflow_id == workflow_id, Job.rule.is_not(None)
    )
    rows = [
        (rule, _decoded(inputs), _decoded(outputs))
        for rule, inputs, outputs in await _every_row(session, query)
    ]
    made_by = {path: rule for rule, _, output in rows for path in output or []}
    edges: dict[tuple[str, str], None] = {}
    for rule, inputs, _ in rows:
        for path in inputs or []:
            producer = made_by.get(path)
            if producer is not None and producer != rule:
                edges.setdefault((producer, rule))
    return [list(edge) for edge in edges]


async def grid(session: AsyncSession, workflow_id: int, key: str | None) -> dict[str, Any]:
    """Datasets x rules (shapes.grid_view): by `key`, or by the wildcard with most values."""
    jobs, wildcards = await grid_jobs(session, workflow_id)
    chosen, keys = grid_key(wildcards)
    rules = [rule for rule in await rule_order(session, workflow_id) if rule]
    return {**grid_view(jobs, rules, key or chosen), "keys": keys}


async def timeline(session: AsyncSession, workflow_id: int) -> dict[str, Any]:
    """Every attempt of every job on a time axis, grouped by rule (shapes.timeline_view)."""
    query = (
        select(Job.jobid, Job.rule, _as_text(Job.wildcards), Job.attempt, _as_text(Job.attempts))
        .where(Job.workflow_id == workflow_id)
        .order_by(Job.jobid)
    )
    seen: dict[str, Any] = {}
    jobs = [
        (jobid, rule, _decoded(wildcards, seen), attempt, _decoded(attempts))
        for jobid, rule, wildcards, attempt, attempts in await _every_row(session, query)
    ]
    return timeline_view(jobs, await rule_order(session, workflow_id))


# The grid, the trace, the timeline and the rule graph's edges read every job of a run: made
# for 10,000 (benchmarks/glance.py). They load only the columns they read, as tuples rather
# than Job objects, and the JSON columns as text, decoded here: SQLAlchemy's decoding of
# every row, the ORM's objects and their garbage cost most of their time. A text many jobs
# share (a dataset's wildcards, a rule's resources) is decoded once.


async def _every_row(session: AsyncSession, query: Any) -> Any:
    """A Core query's rows through the session's connection, past the ORM's result handling
    (a third of the time of reading 10,000 rows)."""
    return await (await session.connection()).execute(query)


def _as_text(column: Any) -> Any:
    return type_coerce(column, Text)


# In the order shapes.grid_view unpacks them.
GRID_COLUMNS = (Job.jobid, Job.rule, _as_text(Job.wildcards), Job.status, Job.attempt)
# In the order shapes.trace_rows unpacks them.
TRACE_COLUMNS = (
    *GRID_COLUMNS,
    _as_text(Job.attempts),
    Job.threads,
    _as_text(Job.resources),
    Job.exit_code,
    _as_text(Job.benchmark),
)


def _decoded(stored: Any, seen: dict[str, Any] | None = None) -> Any:
    """A JSON column's value from its text (asyncpg's come decoded), from `seen` if that
    text was decoded before."""
    if not isinstance(stored, str):
        return stored
    if seen is None:
        return json_loads(stored)
    value = seen.get(stored)
    if value is None:
        value = seen[stored] = json_loads(stored)
    return value


async def grid_jobs(
    session: AsyncSession, workflow_id: int
) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """Every job of a workflow as GRID_COLUMNS, by job id, and their wildcards (each
    distinct one once with SQLite, every job's with PostgreSQL) for shapes.grid_key."""
    query = select(*GRID_COLUMNS).where(Job.workflow_id == workflow_id).order_by(Job.jobid)
    seen: dict[str, Any] = {}
    jobs = [
        (jobid, rule, _decoded(wildcards, seen), status, attempt)
        for jobid, rule, wildcards, status, attempt in await _every_row(session, query)
    ]
    return jobs, list(seen.values()) if seen else [job[2] for job in jobs]


async def all_jobs(session: AsyncSession, workflow_id: int) -> list[tuple[Any, ...]]:
    """Every job of a workflow as TRACE_COLUMNS, by job id (the trace)."""
    query = select(*TRACE_COLUMNS).where(Job.workflow_id == workflow_id).order_by(Job.jobid)
    wildcards: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    return [
        (
            *job[:2],
            _decoded(job[2], wildcards),
            *job[3:5],
            _decoded(job[5]),
            job[6],
            _decoded(job[7], resources),
            job[8],
            _decoded(job[9]),
        )
        for job in await _every_row(session, query)
    ]


async def events_since(
    session: AsyncSession, since: int, workflow_id: int | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """What the feed missed: one workflow's events, or every workflow-level event."""
    query = select(Event).where(Event.seq > since).order_by(Event.seq).limit(limit)
    if workflow_id is not None:
        query = query.where(Event.workflow_id == workflow_id)
    else:
        query = query.where(Event.type.startswith(WORKFLOW_LEVEL_PREFIX))
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
