"""/metrics in the Prometheus text format."""

from __future__ import annotations

from quart import Blueprint, Response

from .. import queries
from ..metrics import CONTENT_TYPE
from .common import panoptes

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
async def metrics() -> Response:
    app = panoptes()
    async with app.sessions() as session:
        counts = await queries.status_counts(session)
    return Response(app.metrics.render(counts), content_type=CONTENT_TYPE)
