"""The REST API for scripts: read workflows and jobs, rename, cancel, delete."""

from __future__ import annotations

import asyncio

from quart import Blueprint, Response, request

from .. import __version__, eta, queries
from ..errors import BadRequest, NotFound
from ..models import WorkflowRow, utcnow
from ..shapes import TRACE_FIELDS, job_view, trace_rows
from ..status import JobStatus, WorkflowStatus
from .bodies import body_fields, ids_in_range, int_arg, list_arg, no_nul
from .openapi import openapi_document
from .respond import json_response, service

bp = Blueprint("api", __name__, url_prefix="/api")
bp.url_value_preprocessor(ids_in_range)

WORKFLOW_STATUSES = {s.value.lower(): s.value for s in WorkflowStatus}
JOB_STATUSES = {s.value.lower(): s.value for s in JobStatus}
MAX_PAGE = 1000


def _statuses(known: dict[str, str]) -> list[str] | None:
    values = list_arg("status")
    if values is None:
        return None
    unknown = [v for v in values if v.lower() not in known]
    if unknown:
        raise BadRequest(
            f"unknown status {', '.join(unknown)}; use one of {', '.join(known.values())}"
        )
    return [known[v.lower()] for v in values]


def _page() -> queries.Page:
    # An empty ?cursor= is the first page, like no cursor at all.
    cursor = int_arg("cursor", 0, minimum=0) if request.args.get("cursor") else None
    return queries.Page(
        limit=int_arg("limit", 100, minimum=1, maximum=MAX_PAGE),
        offset=int_arg("offset", 0),
        cursor=cursor,
    )


@bp.get("/openapi.json")
async def openapi() -> Response:
    return json_response(openapi_document())


@bp.get("/service-info")
async def service_info() -> Response:
    # Snakemake 7/8 refuse to start unless this says "running"; it does so whenever panoptes
    # can store what they send. A broken link to other processes only delays live updates.
    running = service()
    database = await running.database_status()
    body = {
        "status": "running" if database["ok"] else "unavailable",
        "version": __version__,
        "database": database,
        "hub": running.hub.status,
        "event_loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
    }
    return json_response(body, status=200 if database["ok"] else 503)


@bp.get("/workflows")
async def list_workflows() -> Response:
    statuses = _statuses(WORKFLOW_STATUSES)
    page = _page()
    text = (request.args.get("q") or request.args.get("name") or "").strip()
    search = no_nul(text, "query parameter 'q'") or None
    running = service()
    async with running.sessions() as session:
        workflows, count = await queries.list_workflows(
            session, page, statuses, search, running.stale_before()
        )
        left = await eta.eta_seconds(session, workflows, utcnow())
    for workflow in workflows:
        workflow["eta_seconds"] = left[workflow["id"]]
    body: dict[str, object] = {
        "workflows": workflows,
        "count": count,
        "limit": page.limit,
        "offset": page.offset,
        "next_cursor": workflows[-1]["id"] if len(workflows) == page.limit else None,
    }
    return json_response(body)


@bp.get("/workflows/stats")
async def workflow_stats() -> Response:
    """How many workflows there are in each status (the dashboard's counters)."""
    running = service()
    async with running.sessions() as session:
        counts = await queries.status_counts(session, running.stale_before())
    return json_response({"counts": counts, "total": sum(counts.values())})


async def _workflow_or_404(workflow_id: int) -> dict[str, object]:
    running = service()
    async with running.sessions() as session:
        wf = await queries.get_workflow(session, workflow_id, running.stale_before())
    if wf is None:
        raise NotFound(f"no workflow with id {workflow_id}")
    return wf


@bp.get("/workflow/<int:workflow_id>")
async def get_workflow(workflow_id: int) -> Response:
    """One workflow, with the estimate of its time left (eta.py; not in the feed's shape:
    it is worth its queries when asked for, not at every event)."""
    running = service()
    async with running.sessions() as session:
        wf = await queries.get_workflow(session, workflow_id, running.stale_before())
        if wf is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        wf["eta_seconds"] = (await eta.eta_seconds(session, [wf], utcnow()))[workflow_id]
    return json_response({"workflow": wf})


@bp.get("/workflow/<int:workflow_id>/jobs")
async def list_jobs(workflow_id: int) -> Response:
    statuses = _statuses(JOB_STATUSES)
    rules = list_arg("rule")
    page = _page()
    await _workflow_or_404(workflow_id)
    async with service().sessions() as session:
        jobs, count = await queries.list_jobs(session, workflow_id, page, statuses, rules)
    return json_response(
        {
            "jobs": [job_view(job) for job in jobs],
            "count": count,
            "limit": page.limit,
            "offset": page.offset,
            "next_cursor": jobs[-1].id if len(jobs) == page.limit else None,
        }
    )


@bp.get("/workflow/<int:workflow_id>/job/<int:jobid>")
async def get_job(workflow_id: int, jobid: int) -> Response:
    await _workflow_or_404(workflow_id)
    async with service().sessions() as session:
        job = await queries.get_job(session, workflow_id, jobid)
    if job is None:
        raise NotFound(f"workflow {workflow_id} has no job {jobid}")
    view = job_view(job)
    # "jobs" (one object) is what the earlier panoptes server answered here.
    return json_response({"job": view, "jobs": view})


@bp.get("/workflow/<int:workflow_id>/rules")
async def rule_progress(workflow_id: int) -> Response:
    await _workflow_or_404(workflow_id)
    async with service().sessions() as session:
        rules = await queries.rule_progress(session, workflow_id)
    return json_response({"rules": rules})


@bp.get("/workflow/<int:workflow_id>/dag")
async def rule_graph(workflow_id: int) -> Response:
    await _workflow_or_404(workflow_id)
    async with service().sessions() as session:
        graph = await queries.rule_graph(session, workflow_id)
    return json_response(graph)


@bp.get("/workflow/<int:workflow_id>/grid")
async def grid(workflow_id: int) -> Response:
    await _workflow_or_404(workflow_id)
    key = (request.args.get("key") or "").strip() or None
    async with service().sessions() as session:
        found = await queries.grid(session, workflow_id, key)
    return json_response(found)


@bp.get("/workflow/<int:workflow_id>/timeline")
async def timeline(workflow_id: int) -> Response:
    await _workflow_or_404(workflow_id)
    async with service().sessions() as session:
        found = await queries.timeline(session, workflow_id)
    return json_response(found)


@bp.get("/workflow/<int:workflow_id>/trace.tsv")
async def trace(workflow_id: int) -> Response:
    """Every attempt of every job, a row each, tab-separated (like Nextflow's trace)."""
    await _workflow_or_404(workflow_id)
    async with service().sessions() as session:
        jobs = await queries.all_jobs(session, workflow_id)
    lines = ["\t".join(TRACE_FIELDS), *("\t".join(row) for row in trace_rows(jobs))]
    return Response(
        "\n".join(lines) + "\n",
        content_type="text/tab-separated-values; charset=utf-8",
        headers={"Content-Disposition": f'inline; filename="workflow-{workflow_id}-trace.tsv"'},
    )


@bp.put("/workflow/<int:workflow_id>")
async def rename_workflow(workflow_id: int) -> Response:
    fields = await body_fields(required=False)
    if "name" not in fields:
        # Snakemake 8 sends {} (or its --wms-monitor-arg pairs) right after registering
        # and aborts the run on a 404/500; there is simply nothing to change.
        return json_response({"workflow": await _workflow_or_404(workflow_id)})
    name = fields["name"]
    if not isinstance(name, str):
        raise BadRequest(f"'name' must be a string, got {type(name).__name__}")
    name = name.strip()
    if not name:
        raise BadRequest("'name' must not be empty")
    no_nul(name, "'name'")
    return json_response({"workflow": _changed(await service().rename(workflow_id, name))})


def _changed(wf: WorkflowRow) -> dict[str, object]:
    """A workflow a change left, as reads show it."""
    return queries.shown(wf, service().stale_before())


@bp.post("/workflow/<int:workflow_id>/cancel")
async def cancel_workflow(workflow_id: int) -> Response:
    return json_response({"workflow": _changed(await service().cancel(workflow_id))})


@bp.delete("/workflow/<int:workflow_id>")
async def delete_workflow(workflow_id: int) -> Response:
    await service().delete(workflow_id)
    return Response("", status=204)


@bp.delete("/workflows/all")
async def delete_all_workflows() -> Response:
    deleted = await service().delete_all()
    return json_response({"deleted": deleted, "msg": "Database clean up is complete"})
