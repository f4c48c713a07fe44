"""The OpenAPI document's part for the notifications' delivery log (routes/notifications.py,
notify/log.py)."""

from __future__ import annotations

from ...notify_settings import DELIVERY_STATUSES, EVENTS, FORMATS
from .common import UNAUTHORIZED, _error, _json, _query
from .schemas import COUNT, TEXT, TIME, Schema, nullable, obj, ref

ID: Schema = {"type": "integer"}
MASKED = "the URL's scheme and host and its last 4 characters, or the email addresses"


def notification_schemas() -> dict[str, Schema]:
    target = obj(
        {
            "key": {**TEXT, "description": "a stable short id of the target (not its secret)"},
            "format": {"type": "string", "enum": list(FORMATS)},
            "target": {**TEXT, "description": MASKED},
            "events": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}},
            "workflows": {**TEXT, "description": "the names it is for (a glob)"},
        },
        "A notification target, as configured (masked).",
    )
    attempt = obj(
        {
            "at": TIME,
            "outcome": {
                "type": ["integer", "string"],
                "description": "the HTTP status, 'sent' (email), or the error's name",
            },
            "ms": COUNT,
        }
    )
    notification = obj(
        {
            "id": ID,
            "event": {"type": "string", "enum": list(EVENTS)},
            "workflow": obj({"id": nullable(ID), "name": nullable(TEXT)}),
            "jobid": nullable(ID),
            "recovered": {
                "type": ["boolean", "null"],
                "description": "workflow.stuck: whether it is the all-clear; else null",
            },
            "target": obj(
                {
                    "key": TEXT,
                    "format": {"type": ["string", "null"], "enum": [*FORMATS, None]},
                    "target": {**TEXT, "description": MASKED},
                }
            ),
            "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
            "attempts": COUNT,
            "log": {"type": "array", "items": attempt},
            "last_error": nullable(TEXT),
            "created_at": TIME,
            "next_attempt_at": nullable(TIME),
            "delivered_at": nullable(TIME),
        },
        "One message to one target, and every attempt to deliver it.",
    )
    return {
        "NotifyTarget": target,
        "Notification": notification,
        "NotificationList": obj(
            {
                "targets": {"type": "array", "items": ref("NotifyTarget")},
                "notifications": {"type": "array", "items": ref("Notification")},
                "count": COUNT,
                "limit": COUNT,
                "offset": COUNT,
            }
        ),
    }


def notification_paths() -> dict[str, Schema]:
    statuses = _query(
        "status",
        {"type": "array", "items": {"type": "string", "enum": list(DELIVERY_STATUSES)}},
        "only these statuses; repeat it or separate with commas",
    )
    paging = [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            "how many to return",
        ),
        _query(
            "offset",
            {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
            "how many to skip",
        ),
    ]
    return {
        "/api/notifications": {
            "get": {
                "summary": "The notifications' delivery log, newest first, and the targets",
                "description": "With a token set, it needs the token even when reading is "
                "public. Secrets (a webhook URL's path, the SMTP password) are never shown.",
                "parameters": [statuses, *paging],
                "responses": {
                    "200": _json(ref("NotificationList"), "a page"),
                    "400": _error("a query parameter is malformed or out of range"),
                    "401": UNAUTHORIZED,
                },
            }
        }
    }
