"""How workflows, jobs, rule counts and feed messages look on the wire.

The one definition of each shape, shared by both sides: the store records events in these
shapes when it commits, and the read side answers the API, feed and pages with them. It
imports only the tables, so either side may import it without importing the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from .models import Event, Job, JobRow, Workflow, WorkflowRow
from .status import JobStatus


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is UTC:  # what the store holds: cached, as equal times hash alike
        return _utc_iso(value)  # whatever their offset, and print differently
    return value.isoformat()


@lru_cache(maxsize=4096)  # the same times are written again and again: each event's time,
def _utc_iso(value: datetime) -> str:  # a job's start in each of its views
    return value.isoformat()


def workflow_view(wf: Workflow | WorkflowRow) -> dict[str, Any]:
    return {
        "id": wf.id,
        "name": wf.name,
        "status": wf.status,
        "jobs_done": wf.jobs_done,
        "jobs_total": wf.jobs_total,
        "jobs_failed": wf.jobs_failed or 0,
        "label": workflow_label(wf),
        "started_at": iso(wf.started_at),
        "updated_at": iso(wf.updated_at),
        "finished_at": iso(wf.finished_at),
        # The name the earlier panoptes server used; kept so its API users keep working.
        "completed_at": iso(wf.finished_at),
        "error": wf.error,
        "dry_run": wf.dry_run,
        "command": wf.command,
        "workdir": wf.workdir,
        "snakefile": wf.snakefile,
        "host": wf.host,
        "user": wf.user,
        "snakemake_version": wf.snakemake_version,
        "client": wf.client,
    }


def workflow_label(wf: Workflow | WorkflowRow) -> str | None:
    """What the run is, for people, whatever its name: its rules in the order their jobs
    came, and how many jobs it has ("make → align → count → … · 20 jobs")."""
    rules = list(wf.rules_seen or [])
    if not rules:
        return None
    shown = " → ".join(rules[:4]) + (" → …" if len(rules) > 4 else "")
    jobs = wf.jobs_total or 0
    return f"{shown} · {jobs} job{'' if jobs == 1 else 's'}" if jobs else shown


def job_view(job: Job | JobRow) -> dict[str, Any]:
    return {
        "jobid": job.jobid,
        "workflow_id": job.workflow_id,
        "rule": job.rule,
        # The earlier server called the rule "name"; kept for its API users.
        "name": job.rule,
        "status": job.status,
        "message": job.message,
        "wildcards": job.wildcards,
        "input": job.input,
        "output": job.output,
        "log": job.log,
        "shell_command": job.shellcmd,
        "threads": job.threads,
        "resources": job.resources,
        "priority": job.priority,
        "reason": job.reason,
        "is_checkpoint": job.is_checkpoint,
        "started_at": iso(job.started_at),
        # When its first attempt started (started_at is its latest attempt's start).
        "first_started_at": first_start(job),
        "finished_at": iso(job.finished_at),
        "completed_at": iso(job.finished_at),
        "attempt": job.attempt,
        "attempts": job.attempts,
        "error": job.error,
        "error_line": error_line(job),
        "exit_code": job.exit_code,
        "logs": job.logs or [],
        "benchmark": job.benchmark,
    }


def first_start(job: Job | JobRow) -> str | None:
    for record in job.attempts or []:
        if record.get("started_at"):
            return str(record["started_at"])
    return iso(job.started_at)


def error_line(job: Job | JobRow) -> str | None:
    """A failed job's reason in one line, for the pages: the last line its first log ends
    with (where tools write why they stop; plugin 1.0.0 sends the logs), else the first line
    of its error text that says more than an exception's name."""
    if job.error is None:
        return None
    for log in job.logs or []:
        lines = [line.strip() for line in str(log.get("tail") or "").splitlines()]
        if any(lines):
            return [line for line in lines if line][-1][:MAX_LINE_CHARS]
    return first_error_line(job.error)[:MAX_LINE_CHARS]


MAX_LINE_CHARS = 300
# A line that only names an exception ("RuleException:", Snakemake 8's header above the
# reason) says nothing about why.
_BARE_EXCEPTION = re.compile(r"^\w*(Exception|Error)?:?$")


def first_error_line(error: str | None) -> str:
    """The line of an error text that says why it failed."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    for line in lines:
        if not _BARE_EXCEPTION.match(line):
            return line
    return lines[0] if lines else ""


def rule_view(rule: str | None) -> dict[str, Any]:
    """A rule's counts before any job is counted; a job whose rule is not known yet counts
    under the rule "" (Snakemake 9 announces a job before describing it)."""
    return {
        "rule": rule or "",
        "planned": None,
        "total": 0,
        "done": 0,
        "running": 0,
        "error": 0,
        "waiting": 0,
    }


def count_job(counts: dict[str, Any], status: str, number: int) -> None:
    """Add `number` jobs of `status` to a rule's counts."""
    counts[JobStatus(status).value.lower()] += number
    counts["total"] += number


def event_message(event: Event) -> dict[str, Any]:
    """An event as the feed sends it: type, seq, workflow_id, at, and the payload."""
    return feed_message(event.type, event.seq, event.workflow_id, event.created_at, event.payload)


def feed_message(
    kind: str, seq: int, workflow_id: int | None, at: datetime, payload: dict[str, Any]
) -> dict[str, Any]:
    return {"type": kind, "seq": seq, "workflow_id": workflow_id, "at": iso(at), **payload}


# --------------------------------------------------------------------------- at a glance

# A cell shows its most telling job when several share it: a failure over a running job,
# over a waiting one, over a done one (pages.js CELL_ORDER twins it, for live updates).
_CELL_ORDER = {JobStatus.ERROR: 0, JobStatus.RUNNING: 1, JobStatus.WAITING: 2, JobStatus.DONE: 3}


def grid_key(wildcards: list[Any]) -> tuple[str | None, dict[str, int]]:
    """The wildcard a run's datasets are named by: the one taking the most values (ties: the
    first seen), with every wildcard's count of values for the user to pick another, from
    the jobs' wildcards (in job id order; the same one once or many times)."""
    values: dict[str, set[str]] = {}
    for each in wildcards:
        for name, value in (each or {}).items():
            seen = values.get(name)
            if seen is None:
                seen = values[name] = set()
            seen.add(value if isinstance(value, str) else str(value))
    counts = {str(name): len(seen) for name, seen in values.items()}
    return (max(counts, key=lambda name: counts[name]) if counts else None), counts


def grid_view(jobs: list[Any], rules: list[str], key: str | None) -> dict[str, Any]:
    """Datasets x rules: a row per value of `key`, a cell per rule with that row's job (the
    most telling one, and how many there are). Rules none of whose jobs has `key` (`all`, a
    merge) are left out of the columns and named under `other_rules`. `jobs` are rows of
    queries.GRID_COLUMNS in job id order (queries.all_jobs), so of equally telling jobs a
    cell shows the first. Written for 10,000 jobs: rows unpacked, no lookup twice."""
    rows: dict[str, dict[str, Any]] = {}
    keyed: set[str] = set()
    rank = _CELL_ORDER
    for jobid, rule, wildcards, status, attempt in jobs:
        if not rule or not wildcards or key not in wildcards:
            continue
        value = wildcards[key]
        name = value if isinstance(value, str) else str(value)
        row = rows.get(name)
        if row is None:
            row = rows[name] = {"wildcards": {key: value}, "cells": {}}
        cells = row["cells"]
        cell = cells.get(rule)
        if cell is None:
            keyed.add(rule)
            cells[rule] = {"jobid": jobid, "status": status, "attempt": attempt, "jobs": 1}
            continue
        cell["jobs"] += 1
        if rank[status] < rank[cell["status"]]:
            cell.update(jobid=jobid, status=status, attempt=attempt)
    columns = [rule for rule in rules if rule in keyed]
    for row in rows.values():
        statuses = [cell["status"] for cell in row["cells"].values()]
        row["done"] = statuses.count(JobStatus.DONE)
        row["failed"] = statuses.count(JobStatus.ERROR)
        row["total"] = len(columns)
    ordered = sorted(rows.items(), key=lambda item: (not item[1]["failed"], _natural(item[0])))
    return {
        "key": key,
        "rules": columns,
        "other_rules": [rule for rule in rules if rule not in keyed],
        "rows": [row for _, row in ordered],
    }


def _natural(text: str) -> list[Any]:
    """S2 before S10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


BENCHMARK_NAMES = ("s", "max_rss", "max_vms", "io_in", "io_out", "mean_load", "cpu_time")
TRACE_FIELDS = (
    "jobid",
    "rule",
    "wildcards",
    "attempt",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "threads",
    "resources",
    "exit_code",
    "error",
    *(f"benchmark_{name}" for name in BENCHMARK_NAMES),
)


def trace_rows(jobs: list[Any]) -> list[list[str]]:
    """One row per attempt of every job, in TRACE_FIELDS order (a Nextflow-like trace).
    `jobs` are rows of queries.TRACE_COLUMNS, in job id order (queries.all_jobs). The
    benchmark and exit code belong to a job's latest attempt. Written for 10,000 jobs
    (benchmarks/glance.py): what a job's attempts share is made once, and only the text a
    user may have written (names, resources, errors) goes through _cell; the rest is
    panoptes' own (numbers, statuses, ISO times)."""
    rows = []
    unmeasured = [""] * len(BENCHMARK_NAMES)
    for job in jobs:
        jobid, rule, wildcards, status, attempt, attempts, threads, resources, code, used = job
        named = [str(jobid), _text(rule), _text(_pairs(wildcards))]
        shared = ["" if threads is None else str(threads), _text(_pairs(resources))]
        for record in attempts or [{"attempt": attempt, "status": status}]:
            latest = record.get("attempt") == attempt
            start, end = record.get("started_at"), record.get("finished_at")
            measured = unmeasured
            if latest and used:
                measured = [_text(used.get(name)) for name in BENCHMARK_NAMES]
            rows.append(
                [
                    *named,
                    _text(record.get("attempt")),
                    _text(record.get("status")),
                    start or "",
                    end or "",
                    _seconds(start, end) or "",
                    *shared,
                    "" if code is None or not latest else str(code),
                    _text(first_error_line(record.get("error")) or None),
                    *measured,
                ]
            )
    return rows


def _text(value: Any) -> str:
    return "" if value is None else _cell(value)


def _pairs(values: dict[str, Any] | None) -> str | None:
    return ",".join(f"{name}={value}" for name, value in values.items()) if values else None


def _seconds(start: str | None, end: str | None) -> str | None:
    if not start or not end:
        return None
    took = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return f"{took.total_seconds():.3f}"


def _cell(value: Any) -> str:
    """A TSV cell: no tab or line break inside."""
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


# A timeline bar's status, as a small number (pages' timeline.js STATUSES twins the order).
TIMELINE_STATUSES = (JobStatus.DONE, JobStatus.RUNNING, JobStatus.ERROR, JobStatus.WAITING)


def timeline_view(jobs: Iterable[Sequence[Any]], rules: list[str]) -> dict[str, Any]:
    """Every attempt of every job as a bar, compact enough for 10,000 jobs: `bars` are
    [jobid, rule index, attempt, status index, start ms, end ms or null, wildcards index],
    times counted from `origin` (the first start), rules, statuses and wildcards ("name=value"
    pairs, "" for none) indexed into `rules`, `statuses` and `wildcards`.

    `jobs` are (jobid, rule, wildcards, attempt, attempts) rows in job id order
    (queries.timeline); jobs sharing one wildcards object (SQLite's, decoded once per text)
    have it turned into text once."""
    names = list(rules)
    index = {rule: number for number, rule in enumerate(names)}
    codes = {status.value: number for number, status in enumerate(TIMELINE_STATUSES)}
    running = codes[JobStatus.RUNNING.value]
    pairs: list[str] = [""]
    by_text = {"": 0}
    by_object: dict[int, int] = {}  # by id(): the rows hold every wildcards object
    parse = datetime.fromisoformat
    spans = []
    origin: float | None = None
    first = None  # origin as stored
    for jobid, rule, wildcards, attempt, attempts in jobs:
        started = [record for record in attempts or () if record.get("started_at")]
        if not started:
            continue  # no bar: neither its rule nor its wildcards are named for it
        rule = rule or ""
        number = index.get(rule)
        if number is None:
            number = index[rule] = len(names)
            names.append(rule)
        seen = 0
        if wildcards:
            seen = by_object.get(id(wildcards), -1)
            if seen < 0:
                text = _pairs(wildcards) or ""
                seen = by_text.get(text, -1)
                if seen < 0:
                    seen = by_text[text] = len(pairs)
                    pairs.append(text)
                by_object[id(wildcards)] = seen
        for record in started:
            start = parse(record["started_at"]).timestamp()
            if origin is None or start < origin:
                origin, first = start, record["started_at"]
            finished = record.get("finished_at")
            spans.append(
                (
                    jobid,
                    number,
                    record.get("attempt") or attempt,
                    codes.get(str(record.get("status")), running),
                    start,
                    parse(finished).timestamp() if finished else None,
                    seen,
                )
            )
    bars = [
        [
            jobid,
            rule,
            attempt,
            status,
            round((start - origin) * 1000),
            None if end is None else round((end - origin) * 1000),
            seen,
        ]
        for jobid, rule, attempt, status, start, end, seen in spans
        if origin is not None
    ]
    return {
        "origin": iso(parse(first)) if first else None,
        "rules": names,
        "statuses": [status.value for status in TIMELINE_STATUSES],
        "wildcards": pairs,
        "bars": bars,
    }
