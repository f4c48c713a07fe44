"""The two endpoints Snakemake clients call: register a run, then post its messages.

Snakemake 7/8 abort the user's whole workflow on a 401/403/404/500 from these, so a
message panoptes cannot use is answered 400 (or 413/415/422): they print it and go on.
POST /update_workflow_status is served by the fast endpoint (ingest.py) in front of the
app; the route here gives the same answers through Quart, and is what the fast endpoint is
tested against (tests/test_parity.py).
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Blueprint, Response, request

from ..errors import PanoptesError, Unavailable
from ..ingest import wire
from ..models import MAX_BIGINT
from ..service import Service
from .bodies import body_fields
from .respond import json_response, service

log = logging.getLogger(__name__)

bp = Blueprint("wms", __name__)
# As long as Quart waits for a request body (app.config["BODY_TIMEOUT"]).
BODY_TIMEOUT_SECONDS = 30
INGEST_PATH = "/update_workflow_status"


def called_by_clients(method: str, path: str) -> bool:
    """Whether Snakemake itself calls this (and so must never see a 500 from it)."""
    if path in ("/create_workflow", INGEST_PATH, "/api/service-info"):
        return True
    return method == "PUT" and path.startswith("/api/workflow/")


def _text(fields: dict[str, object], name: str) -> str | None:
    value = fields.get(name)
    return wire.clean(value) if isinstance(value, str) and value else None


def _existing_id(value: str | None) -> int | None:
    """--wms-monitor-arg id=N: the workflow to report into, if N can be one."""
    if value is None or not value.strip().isdigit():
        return None
    number = int(value)
    return number if number <= MAX_BIGINT else None


@bp.get("/create_workflow")
async def create_workflow() -> Response:
    # The stable id: ?workflow_id= (plugin >= 0.2.2) or ?name= (older plugin, and
    # --wms-monitor-arg name=...). An empty workflow_id falls back to name.
    given = request.args.get("workflow_id") or request.args.get("name") or ""
    name = wire.clean(given.strip()) or None
    if name is not None and len(name) > wire.MAX_NAME_CHARS:
        # Snakemake 7/8 cannot start without an id: never refuse one over its name.
        log.warning(
            "a workflow id of %d characters was cut to its first %d: %s...",
            len(name),
            wire.MAX_NAME_CHARS,
            name[:40],
        )
        name = name[: wire.MAX_NAME_CHARS]
    try:
        fields = await body_fields(required=False)
    except PanoptesError:  # not UTF-8, not JSON, an unknown type
        fields = {}  # the body only describes the run; never refuse a run over it
    registration = wire.Registration(
        name=name,
        command=_text(fields, "command"),
        workdir=_text(fields, "workdir"),
        snakefile=_text(fields, "snakefile"),
        host=_text(fields, "host"),
        user=_text(fields, "user"),
        snakemake_version=_text(fields, "snakemake_version"),
        client=_text(fields, "client"),
        workflow_id=_existing_id(request.args.get("id")),
    )
    running = service()
    workflow = await running.register(registration)
    running.metrics.workflows_registered.inc()
    log.info("registered workflow %s (%s)", workflow["id"], workflow["name"])
    return json_response(workflow)


async def ingest_fields(running: Service, fields: dict[str, Any], client: str) -> dict[str, str]:
    """Store one client message (a decoded body): the answer, or a PanoptesError raised.

    The one way in for messages, for this route and the fast endpoint alike."""
    try:
        stored = await running.ingest(wire.parse_message(fields))
    except Unavailable as exc:  # the database failed or hangs: not the message's fault
        log.warning("could not store a message from %s: %s", client, exc)
        running.metrics.ingested("unavailable")
        raise
    except PanoptesError as exc:  # a malformed message, an unknown workflow
        refused(running, client, exc)
        raise
    running.metrics.ingested("stored" if stored else "duplicate")
    return {"status": "ok" if stored else "duplicate"}


def refused(running: Service, client: str, exc: PanoptesError) -> None:
    log.warning("refused a message from %s: %s", client, exc)
    running.metrics.ingested("refused")


# No automatic OPTIONS: the fast endpoint answers every other method with 405 too.
@bp.post(INGEST_PATH, provide_automatic_options=False)
async def update_workflow_status() -> Response:
    running = service()
    client = request.remote_addr or "unknown"
    try:
        fields = await body_fields(required=True)
    except PanoptesError as exc:
        refused(running, client, exc)
        raise
    return json_response(await ingest_fields(running, fields, client))
