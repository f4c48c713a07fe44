"""One operation's view of the writer's open transaction: the Store the state machine and
the service's operations read and change, and the changes a batch announces as events.

Operations mark what they change (`changed_workflow`, `changed_job`); the batch turns that
into events once, at its end (`announce`): one event per changed object carrying its final
state, one rule.updated per rule whose counts may have moved (kept from batch to batch
where they can be, counted with one query per workflow where not: sql.rule_counts). The
batch holds the workflows and jobs it reads and changes as plain rows (models.Row, in
`Loaded`, maybe handed on by the batch before: sql.Carried), one copy of each, and writes
them back when it flushes. A method here that reads with SQL what the batch may have
changed flushes first.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..models import Event, Job, JobRow, WorkflowRow, utcnow
from ..shapes import event_message, feed_message, job_view, workflow_view
from ..status import EventKind, WorkflowStatus
from .rows import marks
from .sql import Loaded, RuleKey, driver, flush, insert_events, rule_counts

K = EventKind
W = WorkflowStatus

# When one batch changes a workflow in several ways, its one event carries the kind that
# tells a client most: a new workflow is announced as created whatever happened to it next,
# and a reset (the page drops its jobs) is not hidden by a rename that came first. Between
# equals the first wins.
_KIND_RANK = {K.WORKFLOW_UPDATED: 0, K.WORKFLOW_RESET: 2, K.WORKFLOW_CREATED: 3}


def _rank(kind: EventKind) -> int:
    return _KIND_RANK.get(kind, 1)


# A move the state machine refused: (machine, from, trigger).
Refusal = tuple[str, str, str]


@dataclass
class Changes:
    """Objects changed and not yet announced, one entry per object (by identity)."""

    workflows: dict[int, tuple[WorkflowRow, EventKind]] = field(default_factory=dict)
    jobs: dict[int, JobRow] = field(default_factory=dict)
    # Rules whose counts may have changed besides the rules the changed jobs end up in:
    # the rule a job had when it was looked up. A job that moves from one rule to another
    # (job_started names no rule, job_info does) changes the counts of both.
    rules: set[RuleKey] = field(default_factory=set)
    refused: list[Refusal] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.workflows or self.jobs)

    def workflow(self, wf: WorkflowRow, kind: EventKind) -> None:
        previous = self.workflows.get(id(wf))
        if previous is None or _rank(kind) > _rank(previous[1]):
            self.workflows[id(wf)] = (wf, kind)

    def merge(self, other: Changes) -> None:
        for wf, kind in other.workflows.values():
            self.workflow(wf, kind)
        self.jobs.update(other.jobs)
        self.rules |= other.rules
        self.refused += other.refused

    def forget(self, workflow_ids: Collection[int], *, workflows: bool) -> None:
        """Drop what is pending for these workflows' jobs (and for the workflows)."""
        self.jobs = {k: job for k, job in self.jobs.items() if job.workflow_id not in workflow_ids}
        self.rules = {key for key in self.rules if key[0] not in workflow_ids}
        if workflows:
            self.workflows = {
                k: entry for k, entry in self.workflows.items() if entry[0].id not in workflow_ids
            }


@dataclass
class Tx:
    """One operation's view of the open transaction, plus the changes it makes."""

    session: Session
    events: list[Event]
    # Every workflow and job the batch loaded or made, and those it looked for when it
    # began and did not find: the batch's own copies, written back by flush().
    loaded: Loaded
    # What the batch's earlier operations changed, and what this one changes: merged into
    # the batch when the operation succeeds, dropped when it raises a PanoptesError.
    batch: Changes = field(default_factory=Changes)
    changes: Changes = field(default_factory=Changes)

    # ---- what changed

    def changed_workflow(self, wf: WorkflowRow, kind: EventKind = K.WORKFLOW_UPDATED) -> None:
        self.changes.workflow(wf, kind)

    def changed_job(self, job: JobRow) -> None:
        self.changes.jobs[id(job)] = job

    def changed_rules(self, workflow_id: int, rules: list[str]) -> None:
        """These rules' counts (or plan) changed, whether or not a job of them did."""
        self.changes.rules.update((workflow_id, rule) for rule in rules)

    def refused(self, machine: str, current: str, trigger: str) -> None:
        self.changes.refused.append((machine, current, trigger))

    def emit(self, kind: EventKind | str, workflow_id: int | None, payload: dict[str, Any]) -> None:
        """An event as it is, numbered in the order emitted (before the batch's changes)."""
        event = Event(type=kind, workflow_id=workflow_id, payload=payload, created_at=utcnow())
        self.session.add(event)
        self.events.append(event)

    def flush(self) -> None:
        """Write what the batch changed so far, before a query that must see it."""
        flush(self.session, self.loaded)

    # ---- workflows

    def workflow(self, workflow_id: int) -> WorkflowRow | None:
        found = self.loaded.workflows.get(workflow_id)
        if found is None and workflow_id not in self.loaded.absent_workflows:
            rows = self._cached(driver(self.session).workflows([workflow_id]))
            if not rows:
                self.loaded.absent_workflows.add(workflow_id)
            return rows[0] if rows else None
        return found

    def workflow_named(self, name: str) -> WorkflowRow | None:
        self.flush()  # the batch may have registered or renamed a workflow of this name
        found = self._cached(driver(self.session).workflows_where("name = ?", [name]))
        return found[0] if found else None

    def add_workflow(self, wf: WorkflowRow) -> None:
        """A new workflow, written at once: it has its id from here on."""
        driver(self.session).insert_workflows([wf])
        wf.written()
        self.loaded.workflows[wf.id] = wf
        self.loaded.absent_workflows.discard(wf.id)

    def silent_workflows(self, cutoff: datetime) -> list[WorkflowRow]:
        """Running workflows with no event since `cutoff` (models.silent_since)."""
        self.flush()  # the batch's changes to these columns count
        rows = driver(self.session)
        found = rows.workflows_where(
            "status = ? AND updated_at < ?", [W.RUNNING.value, rows.time_in(cutoff)]
        )
        return self._cached(found)

    def ended_before(
        self, cutoff: datetime, statuses: Collection[str], limit: int
    ) -> list[WorkflowRow]:
        """Workflows in `statuses` that finished (or, unfinished, went silent) before
        `cutoff`, oldest id first."""
        self.flush()
        rows = driver(self.session)
        found = rows.workflows_where(
            f"status IN ({marks(len(statuses))})"
            " AND coalesce(finished_at, updated_at) < ? ORDER BY id LIMIT ?",
            [*statuses, rows.time_in(cutoff), limit],
        )
        return self._cached(found)

    def _cached(self, found: list[WorkflowRow]) -> list[WorkflowRow]:
        """Rows just read, each as the batch's copy: the one it holds already if it does."""
        cache = self.loaded.workflows
        return [cache.setdefault(wf.id, wf) for wf in found]

    def remove_workflows(self, workflows: list[WorkflowRow], *, with_events: bool = False) -> None:
        """Delete workflows with their jobs (and, if asked, their events), and announce it.

        Their events go before the deletion events are written: a feed client resuming from
        before still learns of the deletion, and nothing else about them."""
        ids = [wf.id for wf in workflows]
        if with_events and ids:
            self.session.execute(
                delete(Event).where(Event.workflow_id.in_(ids)),
                execution_options={"synchronize_session": False},
            )
        # First: what the batch had pending for them and their jobs is not written (their
        # rows go with them), and the deletion is announced.
        self.deleted_workflows(ids)
        driver(self.session).delete_workflows(ids)

    def remove_all_workflows(self) -> int:
        self.flush()  # what the batch added goes too
        ids = [row[0] for row in driver(self.session).rows("SELECT id FROM workflows")]
        self.deleted_workflows(ids)
        driver(self.session).run("DELETE FROM workflows")
        return len(ids)

    def deleted_workflows(self, workflow_ids: Collection[int]) -> None:
        """Announce deleted workflows; whatever the batch changed in them goes unsaid."""
        self._forget(set(workflow_ids), workflows=True)
        for workflow_id in workflow_ids:
            self.emit(K.WORKFLOW_DELETED, workflow_id, {"workflow": {"id": workflow_id}})

    # ---- jobs

    def job(self, workflow_id: int, jobid: int) -> JobRow | None:
        key = (workflow_id, jobid)
        job = self.loaded.jobs.get(key)
        if job is None and key not in self.loaded.absent_jobs:
            found = driver(self.session).jobs(workflow_id, [jobid])
            if found:
                job = self.loaded.jobs[key] = found[0]
        if job is not None:
            self.changes.rules.add((workflow_id, job.rule))
        return job

    def add_job(self, job: JobRow) -> None:
        self.loaded.jobs[(job.workflow_id, job.jobid)] = job

    def jobs_with_status(self, workflow_id: int, status: str) -> list[JobRow]:
        """The workflow's jobs that have this status, as the batch has left them."""
        self.flush()
        rows = driver(self.session).jobs_where(
            "workflow_id = ? AND status = ?", (workflow_id, status)
        )
        found = []
        for row in rows:
            key = (workflow_id, row.jobid)
            job = self.loaded.jobs.get(key)
            if job is None:
                job = self.loaded.jobs[key] = row
            found.append(job)
        return found

    def job_counts(self, workflow_id: int) -> dict[str, int]:
        """How many of the workflow's jobs are in each status, as the batch has left them."""
        self.flush()
        rows = self.session.execute(
            select(Job.status, func.count())
            .where(Job.workflow_id == workflow_id)
            .group_by(Job.status)
        )
        return {status: count for status, count in rows}

    def delete_jobs(self, workflow_id: int) -> None:
        """The workflow's jobs are gone: nothing of them to look up or announce."""
        self.session.execute(delete(Job).where(Job.workflow_id == workflow_id))
        self._forget({workflow_id}, workflows=False)

    def _forget(self, workflow_ids: set[int], *, workflows: bool) -> None:
        self.loaded.forget(workflow_ids, workflows=workflows)
        self.batch.forget(workflow_ids, workflows=workflows)
        self.changes.forget(workflow_ids, workflows=workflows)


def announce(
    session: Session, changes: Changes, loaded: Loaded, emitted: Iterable[Event]
) -> list[dict[str, Any]]:
    """Turn what a batch changed into numbered events, one per object with its final state,
    and return them with the events emitted as they were, as the feed sends them, in seq
    order."""
    flush(session, loaded)  # ids for new rows; the counts below see every change
    messages = [event_message(event) for event in emitted]  # numbered now they are written
    if not changes:
        return messages
    rules = changes.rules | {(job.workflow_id, job.rule) for job in changes.jobs.values()}
    counts = rule_counts(session, rules, loaded.counts)
    now = utcnow()
    rows: list[dict[str, Any]] = []

    def add(kind: EventKind, workflow_id: int, payload: dict[str, Any]) -> None:
        rows.append(
            {"type": kind, "workflow_id": workflow_id, "payload": payload, "created_at": now}
        )

    for wf, kind in changes.workflows.values():
        add(kind, wf.id, {"workflow": workflow_view(wf)})
    for job in changes.jobs.values():
        add(K.JOB_UPDATED, job.workflow_id, {"job": job_view(job)})
    plans: dict[int, dict[str, Any] | None] = {}  # by workflow id
    for key in sorted(rules, key=lambda key: (key[0], key[1] or "")):
        if key[0] not in plans:
            owner = loaded.workflows.get(key[0])  # loaded by the operation that changed it
            if owner is None:
                owner = next(iter(driver(session).workflows([key[0]])), None)
            plans[key[0]] = owner.plan if owner is not None else None
        plan = plans[key[0]]
        counts[key]["planned"] = plan.get(key[1] or "") if plan is not None else None
        add(K.RULE_UPDATED, key[0], {"rule": counts[key]})
    seqs = insert_events(session, rows)
    messages += [
        feed_message(row["type"], seq, row["workflow_id"], now, row["payload"])
        for row, seq in zip(rows, seqs, strict=True)
    ]
    return sorted(messages, key=lambda message: message["seq"])
