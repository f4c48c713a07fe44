"""The two endpoints Snakemake clients call: register a run, then post its messages.

Snakemake 7/8 abort the user's whole workflow on a 401/403/404/500 from these, so a
message panoptes cannot use is answered 400 (or 413/415/422): they print it and go on.
"""

from __future__ import annotations

import logging
import time

from quart import Blueprint, Response, request

from .. import ingest
from ..writer import DomainError
from .common import BadRequest, body_fields, json_response, panoptes

log = logging.getLogger(__name__)

bp = Blueprint("wms", __name__)


def called_by_clients(method: str, path: str) -> bool:
    """Whether Snakemake itself calls this (and so must never see a 500 from it)."""
    if path in ("/create_workflow", "/update_workflow_status", "/api/service-info"):
        return True
    return method == "PUT" and path.startswith("/api/workflow/")


def _text(fields: dict[str, object], name: str) -> str | None:
    value = fields.get(name)
    return ingest.clean(value) if isinstance(value, str) and value else None


@bp.get("/create_workflow")
async def create_workflow() -> Response:
    # The stable id: ?workflow_id= (plugin >= 0.2.2) or ?name= (older plugin, and
    # --wms-monitor-arg name=...). An empty workflow_id falls back to name.
    given = request.args.get("workflow_id") or request.args.get("name") or ""
    name = ingest.clean(given.strip()) or None
    try:
        fields = await body_fields(required=False)
    except BadRequest:
        fields = {}  # the body only describes the run; never refuse a run over it
    registration = ingest.Registration(
        name=name,
        command=_text(fields, "command"),
        workdir=_text(fields, "workdir"),
        snakefile=_text(fields, "snakefile"),
    )
    app = panoptes()
    workflow = await app.register(registration)
    app.metrics.workflows_registered.inc()
    log.info("registered workflow %s (%s)", workflow["id"], workflow["name"])
    return json_response(workflow)


@bp.post("/update_workflow_status")
async def update_workflow_status() -> Response:
    app = panoptes()
    started = time.perf_counter()
    try:
        fields = await body_fields(required=True)
        message = ingest.parse_message(fields)
        stored = await app.ingest(message)
    except (BadRequest, DomainError) as exc:  # DomainError: unknown workflow, bad fields
        log.warning("refused a message from %s: %s", request.remote_addr, exc)
        app.metrics.events.labels(outcome="refused").inc()
        raise
    outcome = "stored" if stored else "duplicate"
    app.metrics.events.labels(outcome=outcome).inc()
    app.metrics.ingest_seconds.observe(time.perf_counter() - started)
    return json_response({"status": "ok" if stored else "duplicate"})
