"""The notifications' delivery log: GET /api/notifications and the admin page
/notifications. With a token set, both need it even when reading is public (auth.py)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from ..notify_settings import DELIVERY_STATUSES
from .bodies import int_arg, list_arg
from .html import render_page
from .respond import json_response, service

bp = Blueprint("notifications", __name__)
MAX_PAGE = 1000
PAGE_SIZE = 100


async def _deliveries(default_limit: int) -> dict[str, Any]:
    statuses = list_arg("status", set(DELIVERY_STATUSES))
    limit = int_arg("limit", default_limit, minimum=1, maximum=MAX_PAGE)
    return await service().notifier.deliveries(limit, int_arg("offset", 0), statuses)


@bp.get("/api/notifications")
async def list_notifications() -> Response:
    return json_response(await _deliveries(100))


@bp.get("/notifications")
async def notifications_page() -> Response:
    found = await _deliveries(PAGE_SIZE)
    html = await render_page(
        "notifications.html",
        seq=0,
        statuses=DELIVERY_STATUSES,
        enabled=service().notifier.enabled,
        **found,
    )
    return Response(html, content_type="text/html; charset=utf-8")
