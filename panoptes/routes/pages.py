"""Server-rendered pages; panoptes-feed.js then keeps them current over the websocket."""

from __future__ import annotations

from quart import Blueprint, Response, redirect, request
from sqlalchemy.ext.asyncio import AsyncSession

from .. import queries
from ..errors import BadRequest, NotFound
from ..shapes import job_view
from ..status import JobStatus, WorkflowStatus
from .bodies import ids_in_range, int_arg, no_nul
from .html import Row, badge_svg, render_page
from .respond import service

bp = Blueprint("pages", __name__)
bp.url_value_preprocessor(ids_in_range)

PAGE_SIZE = 200
JOBS_PER_PAGE = 100
# Failed jobs listed at the top of a workflow page (all of them are one filter away).
FAILED_SHOWN = 50


async def _page(template: str, **context: object) -> Response:
    html = await render_page(template, **context)
    return Response(html, content_type="text/html; charset=utf-8")


@bp.get("/")
async def dashboard() -> Response:
    status = request.args.get("status") or None
    if status is not None and status not in {s.value for s in WorkflowStatus}:
        raise BadRequest(f"unknown status {status!r}")
    search = no_nul((request.args.get("q") or "").strip(), "'q'") or None
    offset = int_arg("offset", 0)
    running = service()
    stale_before = running.stale_before()
    async with running.sessions() as session:
        seq = await queries.last_seq(session)
        counts = await queries.status_counts(session, stale_before)
        workflows, matching = await queries.list_workflows(
            session,
            queries.Page(limit=PAGE_SIZE, offset=offset),
            [status] if status else None,
            search,
            stale_before,
        )
    return await _page(
        "dashboard.html",
        seq=seq,
        counts=counts,
        total=sum(counts.values()),
        statuses=[s.value for s in WorkflowStatus],
        status=status,
        search=search or "",
        workflows=[Row(wf) for wf in workflows],
        matching=matching,
        offset=offset,
        page_size=PAGE_SIZE,
    )


@bp.get("/workflows")
@bp.get("/workflows/")
async def workflows_list() -> Response:
    return redirect("/", 308)  # type: ignore[return-value]


async def _workflow(session: AsyncSession, workflow_id: int) -> dict[str, object]:
    wf = await queries.get_workflow(session, workflow_id, service().stale_before())
    if wf is None:
        raise NotFound(f"no workflow with id {workflow_id}")
    return wf


@bp.get("/workflow/<int:workflow_id>")
async def workflow_page(workflow_id: int) -> Response:
    """One page of the workflow's jobs (JOBS_PER_PAGE, in the order they started), so the page
    costs the same for a run of ten jobs and one of a hundred thousand; ?status= and ?rule=
    filter them, ?offset= pages through them."""
    status = request.args.get("status") or None
    if status is not None and status not in {s.value for s in JobStatus}:
        raise BadRequest(f"unknown job status {status!r}")
    rule = no_nul(request.args.get("rule") or "", "'rule'") or None
    offset = int_arg("offset", 0)
    async with service().sessions() as session:
        # The feed position before the data: the page's feed replays whatever changed after.
        seq = await queries.last_seq(session)
        workflow = await _workflow(session, workflow_id)
        rules = await queries.rule_progress(session, workflow_id)
        failed, _ = await queries.list_jobs(
            session, workflow_id, queries.Page(limit=FAILED_SHOWN), [JobStatus.ERROR.value]
        )
        jobs, count = await queries.list_jobs(
            session,
            workflow_id,
            queries.Page(limit=JOBS_PER_PAGE, offset=offset),
            [status] if status else None,
            [rule] if rule else None,
        )
    return await _page(
        "workflow.html",
        seq=seq,
        workflow=workflow,
        rules=[Row(rule) for rule in rules],
        jobs=[Row(job_view(job)) for job in jobs],
        failed_jobs=[Row(job_view(job)) for job in failed],
        job_count=count,
        job_statuses=[s.value for s in JobStatus],
        filter_status=status or "",
        filter_rule=rule or "",
        offset=offset,
        page_size=JOBS_PER_PAGE,
    )


@bp.get("/workflow/<int:workflow_id>/job/<int:jobid>")
async def job_page(workflow_id: int, jobid: int) -> Response:
    async with service().sessions() as session:
        seq = await queries.last_seq(session)
        workflow = await _workflow(session, workflow_id)
        job = await queries.get_job(session, workflow_id, jobid)
    if job is None:
        raise NotFound(f"workflow {workflow_id} has no job {jobid}")
    return await _page("job.html", seq=seq, workflow=workflow, job=job_view(job))


@bp.get("/badge/<int:workflow_id>.svg")
async def badge(workflow_id: int) -> Response:
    """The run's status for wikis and READMEs: name, status, done/total."""
    async with service().sessions() as session:
        wf = await _workflow(session, workflow_id)
    # Embedded images are fetched again each time, so the badge follows the run.
    return Response(
        badge_svg(wf), content_type="image/svg+xml", headers={"Cache-Control": "no-cache"}
    )


@bp.get("/about")
async def about() -> Response:
    return await _page("about.html", seq=0)
