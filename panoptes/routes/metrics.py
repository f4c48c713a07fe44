"""/metrics in the Prometheus text format."""

from __future__ import annotations

from quart import Blueprint, Response

from .. import queries
from ..metrics import CONTENT_TYPE
from .respond import service

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
async def metrics() -> Response:
    running = service()
    async with running.sessions() as session:
        counts = await queries.status_counts(session, running.stale_before())
    return Response(running.metrics.render(counts), content_type=CONTENT_TYPE)
