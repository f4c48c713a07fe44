"""A run's life outside its messages: registering it, reusing a finished one's name (or id),
turning silent ones Stale, cancelling. The moves go through machine.move, as every other."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import PurePath

from ..models import WorkflowRow, utcnow
from ..status import EventKind, Trigger, WorkflowStatus
from .machine import Store, move
from .wire import MAX_NAME_CHARS, Registration

W = WorkflowStatus
K = EventKind


def sweep_stale(store: Store, stale_hours: float, now: datetime | None = None) -> int:
    """Mark Running workflows that have been silent too long as Stale."""
    if stale_hours <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(hours=stale_hours)
    count = 0
    for wf in store.silent_workflows(cutoff):
        count += move(store, wf, Trigger.SILENT, wf.updated_at)
    return count


def register_workflow(store: Store, request: Registration, stale_hours: float) -> WorkflowRow:
    """GET /create_workflow: a new run, or the reuse of a finished one with the same name
    (or, given no name, with the id the client asked for: --wms-monitor-arg id=N)."""
    now = utcnow()
    sweep_stale(store, stale_hours, now)
    by_id = store.workflow(request.workflow_id) if request.workflow_id is not None else None
    name = request.name or (by_id.name if by_id is not None else None)
    if name is None:
        # No name asked for: the run's directory names it, or a uuid. A name made up here
        # never reuses (so never resets) another run: that is for names a client asks for.
        made = _directory_name(request) or str(uuid.uuid4())
        name = made if store.workflow_named(made) is None else suffixed(made)
    existing = store.workflow_named(name)
    if existing is not None and existing.status == W.RUNNING:
        # Restart protection: a live run is never wiped; the new one gets its own name.
        name = suffixed(name)
        existing = None
    if existing is None:
        wf = WorkflowRow.created(name)
        _start_over(wf, request, now)
        store.add_workflow(wf)
        store.changed_workflow(wf, K.WORKFLOW_CREATED)
        return wf
    store.delete_jobs(existing.id)
    existing.status = W.RUNNING
    _start_over(existing, request, now)
    store.changed_workflow(existing, K.WORKFLOW_RESET)
    return existing


def _directory_name(request: Registration) -> str | None:
    """The name of the directory the run works in (Snakemake 7/8 send it), if any."""
    for path in (request.workdir, request.snakefile and PurePath(request.snakefile).parent):
        if path:
            name = PurePath(path).name.strip()
            if name and name not in (".", ".."):
                return name[:MAX_NAME_CHARS]
    return None


SUFFIX_CHARS = 8


def suffixed(name: str) -> str:
    """The name a run gets when a live run already has the one it asked for."""
    return f"{name}-{uuid.uuid4().hex[:SUFFIX_CHARS]}"


def is_suffixed(current: str, asked: str) -> bool:
    """Whether `current` is what `asked` became at registration (see suffixed)."""
    suffix = current.removeprefix(f"{asked}-")
    return (
        current != suffix
        and len(suffix) == SUFFIX_CHARS
        and all(char in "0123456789abcdef" for char in suffix)
    )


def _start_over(wf: WorkflowRow, request: Registration, now: datetime) -> None:
    wf.jobs_done = wf.jobs_total = wf.jobs_failed = 0
    wf.plan = None
    wf.rules_seen = None
    wf.started_at = wf.updated_at = now
    wf.finished_at = None
    wf.error = None
    wf.last_job_info = None
    wf.last_digest = None
    wf.last_error = None
    wf.command = request.command
    wf.workdir = request.workdir
    wf.snakefile = request.snakefile
    wf.host = request.host
    wf.user = request.user
    wf.snakemake_version = request.snakemake_version
    wf.client = request.client
    wf.rulegraph = None
    wf.dry_run = request.dry_run


def cancel_workflow(store: Store, wf: WorkflowRow) -> None:
    if move(store, wf, Trigger.CANCELLED, utcnow()):
        store.changed_workflow(wf, K.WORKFLOW_CANCELLED)
