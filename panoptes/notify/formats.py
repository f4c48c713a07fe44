"""What a notification looks like to each receiver: the generic JSON (optionally signed),
Slack, Mattermost, Microsoft Teams, ntfy, Discord, and email. No I/O.

Every format is built from the one stored payload, `{"event", "workflow", "url", "at"}`
(plus `job` for job.failed and `recovered` for workflow.stuck), so a retry sends the same
bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import orjson

from ..notify_settings import Target

SIGNATURE_HEADER = "X-Panoptes-Signature"
TIMESTAMP_HEADER = "X-Panoptes-Timestamp"
MAX_LINE = 300


@dataclass(frozen=True)
class Post:
    headers: dict[str, str]
    body: bytes


def sign(secret: str, body: bytes) -> str:
    """The X-Panoptes-Signature value: sha256=<hex HMAC-SHA256 of the exact body bytes>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _first_line(text: str | None) -> str | None:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:MAX_LINE]
    return None


def _one_line(text: str) -> str:
    """No control characters: a headline goes into headers (an email's Subject, ntfy's
    Title), where a line break would be refused or, worse, start a header of its own."""
    return "".join(c if c.isprintable() else " " for c in text)


def headline(payload: dict[str, Any]) -> str:
    """One line: what happened to which workflow ("cohort failed")."""
    wf = payload.get("workflow") or {}
    name = _one_line(str(wf.get("name") or f"workflow {wf.get('id')}"))
    event = payload["event"]
    if event == "job.failed":
        job = payload.get("job") or {}
        rule = _one_line(str(job.get("rule") or "no rule"))
        return f"{name}: job {job.get('jobid')} ({rule}) failed"
    if event == "workflow.stuck":
        return f"{name} is running again" if payload.get("recovered") else f"{name} is stuck"
    verbs = {
        "workflow.done": "finished",
        "workflow.error": "failed",
        "workflow.cancelled": "was cancelled",
        "workflow.stale": "went silent (Stale)",
    }
    return f"{name} {verbs.get(event, event)}"


def facts(payload: dict[str, Any]) -> str:
    """Status and counts: "Error, 23/24 jobs, 1 failed"."""
    wf = payload.get("workflow") or {}
    text = f"{wf.get('status')}, {wf.get('jobs_done', 0)}/{wf.get('jobs_total', 0)} jobs"
    failed = wf.get("jobs_failed") or 0
    return text + (f", {failed} failed" if failed else "")


def error_line(payload: dict[str, Any]) -> str | None:
    job = payload.get("job") or {}
    wf = payload.get("workflow") or {}
    return job.get("error_line") or _first_line(job.get("error")) or _first_line(wf.get("error"))


def subject(payload: dict[str, Any]) -> str:
    return f"[panoptes] {headline(payload)} ({_one_line(facts(payload))})"


def plain_text(payload: dict[str, Any]) -> str:
    lines = [headline(payload), facts(payload)]
    error = error_line(payload)
    if error:
        lines.append(error)
    lines.append(str(payload.get("url", "")))
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_[]()<>#|~" else c for c in text)


def _text(target: Target, payload: dict[str, Any]) -> str:
    """The message for the chat tools, with a link in each one's markup."""
    url = str(payload.get("url", ""))
    error = error_line(payload)
    if target.format == "slack":
        link = f"<{url}|{_slack_escape(headline(payload))}>"
        err = _slack_escape(error) if error else None
    else:
        link = f"[{_markdown_escape(headline(payload))}]({url})"
        err = _markdown_escape(error) if error else None
    return f"{link}\n{facts(payload)}" + (f"\n{err}" if err else "")


def _teams(payload: dict[str, Any]) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": headline(payload), "weight": "Bolder", "wrap": True},
        {"type": "TextBlock", "text": facts(payload), "wrap": True},
    ]
    error = error_line(payload)
    if error:
        body.append({"type": "TextBlock", "text": error, "wrap": True, "color": "Attention"})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": "Open in panoptes", "url": payload["url"]}],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _header(text: str) -> str:
    """A header value ntfy takes: ASCII as it is, anything else as an RFC 2047 word."""
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


NTFY_TAGS = {
    "workflow.done": "white_check_mark",
    "workflow.error": "x",
    "workflow.cancelled": "no_entry_sign",
    "workflow.stale": "hourglass",
    "workflow.stuck": "warning",
    "job.failed": "x",
}


def _ntfy(payload: dict[str, Any]) -> Post:
    event = payload["event"]
    urgent = event in {"workflow.error", "job.failed"} or (
        event == "workflow.stuck" and not payload.get("recovered")
    )
    lines = [facts(payload)]
    if error_line(payload):
        lines.append(str(error_line(payload)))
    headers = {
        "Title": _header(headline(payload)),
        "Tags": NTFY_TAGS.get(event, "bell"),
        "Priority": "high" if urgent else "default",
        "Click": str(payload.get("url", "")),
        "Content-Type": "text/plain; charset=utf-8",
    }
    return Post(headers, "\n".join(lines).encode())


JSON_HEADERS = {"Content-Type": "application/json"}


def http_post(target: Target, payload: dict[str, Any], secret: str, now: float) -> Post:
    """The request to send to a webhook target (not email)."""
    kind = target.format
    if kind == "ntfy":
        return _ntfy(payload)
    if kind in ("slack", "mattermost"):
        return Post(JSON_HEADERS, orjson.dumps({"text": _text(target, payload)}))
    if kind == "discord":
        # No @everyone or role pings from a workflow's name.
        message = {"content": _text(target, payload)[:2000], "allowed_mentions": {"parse": []}}
        return Post(JSON_HEADERS, orjson.dumps(message))
    if kind == "teams":
        return Post(JSON_HEADERS, orjson.dumps(_teams(payload)))
    body = orjson.dumps(payload)
    headers = dict(JSON_HEADERS)
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
        headers[TIMESTAMP_HEADER] = str(int(now))
    return Post(headers, body)


def email(target: Target, payload: dict[str, Any], sender: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(payload)
    message["From"] = sender
    message["To"] = ", ".join(target.emails)
    message.set_content(plain_text(payload) + "\n")
    return message
