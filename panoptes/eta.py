"""Time left: an estimate of how long a running workflow still needs (docs/eta.md).

A read-side part, like queries.py: it only reads. `estimate` is the arithmetic, a pure
function of what `eta_seconds` gathers in five statements at most for a whole page of
workflows: their plans, their jobs counted and timed per rule and status, their running
jobs, and (two statements, only when needed) earlier runs' Done jobs of the rules a run has
timed no job of yet, by rule name, the same Snakefile's runs first.

The model, in cores (Snakemake schedules jobs by their threads): every job still to run
takes its rule's mean duration (this run's Done jobs, else earlier runs', else this run's
mean over all rules) times its threads, every running job the rest of its rule's mean, and
all of it is shared out over the cores the run has kept busy so far (the core-seconds its
jobs ran, over the seconds since its first job started). Without a plan the jobs left have
no rule: they are taken to be like the jobs that finished in the last quarter of the run so
far. None when that cannot be said: no duration known anywhere, or nothing known to be left.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Float, and_, case, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from .models import Job, UTCDateTime, Workflow
from .status import JobStatus, WorkflowStatus

J = JobStatus
# Earlier runs looked at for a rule's duration: the newest SCANNED_RUNS workflows, of which
# the HISTORY_RUNS with the same Snakefile first, then the newest others; of those, the
# newest HISTORY_JOBS Done jobs per rule, for at most HISTORY_RULES rules per page.
SCANNED_RUNS = 200
HISTORY_RUNS = 20
HISTORY_JOBS = 200
HISTORY_RULES = 50
# The running jobs of one page of workflows read one by one; beyond that, they count as
# jobs left (the estimate gets coarser, never slower).
MAX_RUNNING = 10_000


@dataclass
class Mean:
    """Jobs summed: how many, their seconds and their threads."""

    jobs: int = 0
    seconds: float = 0.0
    threads: float = 0.0

    def add(self, jobs: int, seconds: float, threads: float | None = None) -> None:
        self.jobs += jobs
        self.seconds += max(seconds, 0.0)  # clocks that went back: no negative durations
        self.threads += jobs if threads is None else max(threads, 0.0)

    @property
    def value(self) -> float | None:
        return self.seconds / self.jobs if self.jobs else None

    @property
    def width(self) -> float | None:
        return max(self.threads / self.jobs, 1.0) if self.jobs else None


@dataclass
class Running:
    rule: str | None
    seconds: float  # how long it has run
    threads: float = 1.0


@dataclass
class RunFacts:
    """What the estimate of one running workflow is made from. Rules are None for jobs
    whose rule is not known yet (started, not described)."""

    jobs_total: int = 0
    plan: Mapping[str, int] | None = None  # jobs planned per rule, when the client sent one
    counts: dict[str | None, Counter[str]] = field(default_factory=dict)  # rule -> status
    threads: dict[str | None, float] = field(default_factory=dict)  # rule -> mean threads
    timed: dict[str | None, Mean] = field(default_factory=dict)  # this run's Done jobs
    history: dict[str, Mean] = field(default_factory=dict)  # earlier runs' Done jobs
    running: list[Running] = field(default_factory=list)
    recent: dict[str | None, int] = field(default_factory=dict)  # Done in the last quarter
    busy: float = 0.0  # core-seconds its jobs have run (threads x seconds, latest attempts)
    wall: float = 0.0  # seconds since its first job started

    def count(self, rule: str | None, status: str) -> int:
        return self.counts.get(rule, Counter())[status]


def _left(facts: RunFacts) -> tuple[dict[str | None, int], int]:
    """Jobs still to start, per rule as far as known, and the number of no known rule."""
    left: dict[str | None, int] = {}
    if facts.plan:
        for name, planned in facts.plan.items():
            started = sum(facts.count(name, s) for s in (J.RUNNING, J.DONE, J.ERROR))
            left[name] = max(int(planned) - started, 0)
        known = sum(int(n) for n in facts.plan.values())
        for rule, statuses in facts.counts.items():
            if rule not in facts.plan:
                left[rule] = statuses[J.WAITING]
                known += sum(statuses.values())
        return left, max(facts.jobs_total - known, 0)
    for rule, statuses in facts.counts.items():
        left[rule] = statuses[J.WAITING]
    seen = sum(sum(statuses.values()) for statuses in facts.counts.values())
    return left, max(facts.jobs_total - seen, 0)


@dataclass
class _Rule:
    seconds: float  # a job's expected duration
    threads: float


def _rules(facts: RunFacts) -> tuple[dict[str | None, _Rule], _Rule | None]:
    """Each rule's expected duration and threads: this run's, else earlier runs', else the
    fallback (this run's mean over all rules, else earlier runs'), which is returned too.
    A rule's running jobs raise its duration: jobs that have run longer than its finished
    ones say those were the quick ones (the first jobs of a rule to finish are its shortest)."""
    overall, earlier = Mean(), Mean()
    for mean in facts.timed.values():
        overall.add(mean.jobs, mean.seconds, mean.threads)
    for mean in facts.history.values():
        earlier.add(mean.jobs, mean.seconds, mean.threads)
    base = overall if overall.jobs else earlier
    if base.value is None or base.width is None:
        return {}, None
    fallback = _Rule(base.value, base.width)
    ran: dict[str | None, Mean] = {}
    for job in facts.running:
        ran.setdefault(job.rule, Mean()).add(1, job.seconds)
    rules: dict[str | None, _Rule] = {}
    for rule in {*facts.timed, *facts.counts, *(facts.plan or {})}:
        here, before = facts.timed.get(rule, Mean()), facts.history.get(rule or "", Mean())
        seconds = next((v for v in (here.value, before.value) if v is not None), fallback.seconds)
        if rule in ran:  # what its finished and running jobs have taken at least
            seconds = max(
                seconds, (here.seconds + ran[rule].seconds) / (here.jobs + ran[rule].jobs)
            )
        threads = facts.threads.get(rule) or before.width or 1.0
        rules[rule] = _Rule(seconds, threads)
    return rules, fallback


def _recent(facts: RunFacts, rules: dict[str | None, _Rule], fallback: _Rule) -> _Rule:
    """A job of no known rule (no plan): like the jobs that finished in the last quarter of
    the run so far, whose rules say where the run is now (in a pipeline of steps, a better
    guess of what comes than all it has done)."""
    jobs = sum(facts.recent.values())
    if not jobs:
        return fallback
    mix = [(rules.get(rule, fallback), n) for rule, n in facts.recent.items()]
    seconds = sum(r.seconds * r.threads * n for r, n in mix) / jobs
    threads = sum(r.threads * n for r, n in mix) / jobs
    return _Rule(seconds / threads, threads)


def estimate(facts: RunFacts) -> float | None:
    """Seconds a running workflow still needs, or None when that is not known."""
    rules, fallback = _rules(facts)
    if fallback is None:
        return None  # no job with a known duration, here or before
    left, unruled = _left(facts)
    pending = sum(left.values()) + unruled
    if pending == 0 and not facts.running:
        return None  # nothing known to be left, though the run has not said it ended
    rests = [
        (max(rules.get(job.rule, fallback).seconds - job.seconds, 0.0), job.threads)
        for job in facts.running
    ]
    if unruled:
        fallback = _recent(facts, rules, fallback)
    starting = [(rules.get(rule, fallback), n) for rule, n in left.items() if n]
    starting += [(fallback, unruled)] if unruled else []
    work = sum(r.seconds * r.threads * n for r, n in starting) + sum(s * t for s, t in rests)
    width = sum(r.threads * n for r, n in starting) + sum(t for _, t in rests)
    cores = facts.busy / facts.wall if facts.wall > 0 else 1.0
    cores = min(max(cores, 1.0), width)
    # No sooner than the longest running job's rest, nor than one job still to start.
    longest = max([*(s for s, _ in rests), *(r.seconds for r, _ in starting)], default=0.0)
    return round(max(work / cores, longest), 1)


# --------------------------------------------------------------------------- SQL


class _epoch(FunctionElement[float]):
    """A timestamp column as seconds since 1970 (UTC), in SQLite or PostgreSQL."""

    type = Float()
    name = "epoch"
    inherit_cache = True


@compiles(_epoch, "sqlite")
def _epoch_sqlite(element: _epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"((julianday({compiler.process(element.clauses, **kw)}) - 2440587.5) * 86400.0)"


@compiles(_epoch)
def _epoch_default(element: _epoch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) AS FLOAT)"


def _seconds(later: Any, earlier: Any) -> Any:
    return _epoch(later) - _epoch(earlier)


THREADS = func.coalesce(Job.threads, 1)


async def eta_seconds(
    session: AsyncSession, workflows: list[dict[str, Any]], now: datetime
) -> dict[int, float | None]:
    """The estimate of each workflow (as reads show it) by id: None for all but the running
    ones (not dry runs), and for those where it is not known."""
    running = [wf for wf in workflows if wf["status"] == WorkflowStatus.RUNNING]
    ids = [wf["id"] for wf in running if not wf["dry_run"]]
    found: dict[int, float | None] = {wf["id"]: None for wf in workflows}
    if not ids:
        return found
    facts = await _facts(session, ids, now)
    await _add_history(session, facts, {wf["id"]: wf["snakefile"] for wf in workflows})
    for workflow_id, run in facts.items():
        found[workflow_id] = estimate(run)
    return found


async def _facts(session: AsyncSession, ids: list[int], now: datetime) -> dict[int, RunFacts]:
    facts: dict[int, RunFacts] = {}
    lately: dict[int, Any] = {}  # the start of the last quarter of each run so far
    for workflow_id, total, plan, started in await session.execute(
        select(Workflow.id, Workflow.jobs_total, Workflow.plan, Workflow.started_at).where(
            Workflow.id.in_(ids)
        )
    ):
        facts[workflow_id] = RunFacts(jobs_total=total or 0, plan=plan)
        lately[workflow_id] = literal(started + (now - started) * 0.75, UTCDateTime())
    # A date is parsed twice a row at most (SQLite keeps them as text), relative to now so
    # that sums over many rows keep their precision. Grouped by threads too, so that core-
    # seconds are threads x seconds of a group.
    ended = and_(Job.started_at.is_not(None), Job.finished_at.is_not(None))
    going = and_(Job.started_at.is_not(None), Job.finished_at.is_(None))
    recent = and_(ended, Job.finished_at >= case(lately, value=Job.workflow_id))
    rows = await session.execute(
        select(
            Job.workflow_id,
            Job.rule,
            Job.status,
            Job.threads,
            func.count().label("jobs"),
            func.count(Job.id).filter(ended).label("ended"),
            func.sum(_epoch(Job.finished_at) - now.timestamp()).filter(ended).label("ends"),
            func.sum(_epoch(Job.started_at) - now.timestamp()).filter(ended).label("starts"),
            func.count(Job.id).filter(going).label("going"),
            func.sum(_epoch(Job.started_at) - now.timestamp()).filter(going).label("since"),
            func.count(Job.id).filter(recent).label("recent"),
            func.min(Job.started_at).label("first"),
        )
        .where(Job.workflow_id.in_(ids))
        .group_by(Job.workflow_id, Job.rule, Job.status, Job.threads)  # the index's order
    )
    first: dict[int, datetime] = {}
    widths: dict[tuple[int, str | None], Mean] = {}
    for row in rows:
        run, threads = facts[row.workflow_id], max(float(row.threads or 1), 1.0)
        run.counts.setdefault(row.rule, Counter())[row.status] += row.jobs
        widths.setdefault((row.workflow_id, row.rule), Mean()).add(row.jobs, 0, threads * row.jobs)
        seconds = float(row.ends or 0) - float(row.starts or 0)  # of the ended ones
        run.busy += threads * max(seconds - float(row.since or 0), 0.0)
        if row.status == J.DONE and row.ended:
            mean = run.timed.setdefault(row.rule, Mean())
            mean.add(row.ended, seconds, threads * row.ended)
            if row.recent:
                run.recent[row.rule] = run.recent.get(row.rule, 0) + row.recent
        if row.first is not None:
            first[row.workflow_id] = min(first.get(row.workflow_id, row.first), row.first)
    for (workflow_id, rule), mean in widths.items():
        facts[workflow_id].threads[rule] = mean.width or 1.0
    for workflow_id, start in first.items():
        facts[workflow_id].wall = max((now - start).total_seconds(), 0.0)
    at = literal(now, UTCDateTime())
    running = await session.execute(
        select(Job.workflow_id, Job.rule, _seconds(at, Job.started_at), THREADS)
        .where(Job.workflow_id.in_(ids), Job.status == J.RUNNING, Job.started_at.is_not(None))
        .limit(MAX_RUNNING)
    )
    for workflow_id, rule, ran, threads in running:
        job = Running(rule, max(float(ran or 0.0), 0.0), max(float(threads or 1), 1.0))
        facts[workflow_id].running.append(job)
    return facts


def _wanted(run: RunFacts) -> set[str]:
    """The rules of a run that still have jobs to run and no job of which it has timed."""
    rules = {job.rule for job in run.running} | set(run.plan or {}) | set(run.counts)
    return {rule for rule in rules if rule is not None and rule not in run.timed}


async def _add_history(
    session: AsyncSession, facts: dict[int, RunFacts], snakefiles: dict[int, str | None]
) -> None:
    """Earlier runs' durations of the rules the runs have no durations of themselves."""
    wanted = sorted(set().union(*(_wanted(run) for run in facts.values())))[:HISTORY_RULES]
    if not wanted:
        return
    newest_runs = await session.execute(
        select(Workflow.id, Workflow.snakefile)
        .where(Workflow.id.not_in(list(facts)))
        .order_by(Workflow.id.desc())
        .limit(SCANNED_RUNS)
    )
    others: dict[int, str | None] = {wid: snakefile for wid, snakefile in newest_runs}
    mine = {snakefiles.get(workflow_id) for workflow_id in facts} - {None}
    same = [wid for wid, snakefile in others.items() if snakefile in mine][:HISTORY_RUNS]
    rest = [wid for wid, snakefile in others.items() if snakefile not in mine][:HISTORY_RUNS]
    if not same + rest:
        return
    found: dict[str, dict[str | None, Mean]] = {}  # rule -> the runs' Snakefile -> jobs
    for wid, rule, jobs, seconds, threads in await session.execute(
        union_all(*(_newest(rule, same + rest) for rule in wanted))
    ):
        by_snakefile = found.setdefault(rule, {})
        by_snakefile.setdefault(others.get(wid), Mean()).add(jobs, float(seconds), float(threads))
    for workflow_id, run in facts.items():
        own = snakefiles.get(workflow_id)
        for rule in _wanted(run):
            by_snakefile = found.get(rule, {})
            if own is not None and own in by_snakefile:
                run.history[rule] = by_snakefile[own]  # the same Snakefile's runs first
            elif by_snakefile:
                run.history[rule] = mean = Mean()
                for each in by_snakefile.values():
                    mean.add(each.jobs, each.seconds, each.threads)


def _newest(rule: str, runs: list[int]) -> Any:
    """The newest HISTORY_JOBS Done jobs of `rule` in `runs`, summed per run (the index on
    workflow_id and rule finds them)."""
    newest = (
        select(
            Job.workflow_id.label("wid"),
            _seconds(Job.finished_at, Job.started_at).label("seconds"),
            THREADS.label("threads"),
        )
        .where(
            Job.workflow_id.in_(runs),
            Job.rule == rule,
            Job.status == J.DONE,
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )
        .order_by(Job.workflow_id.desc())
        .limit(HISTORY_JOBS)
        .subquery()
    )
    c = newest.c
    return select(
        c.wid, literal(rule).label("rule"), func.count(), func.sum(c.seconds), func.sum(c.threads)
    ).group_by(c.wid)
