"""Notifications without I/O: what each chat tool is sent, the masking, the signature, and
the rules that decide what is due."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from panoptes.notify.formats import email, http_post, sign, subject
from panoptes.notify.rules import Seen, Told, examine
from panoptes.notify_settings import Target, format_for, mask_url

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
URL = "http://panoptes.lab.org/workflow/7"
WORKFLOW = {
    "id": 7,
    "name": "cohort",
    "status": "Error",
    "jobs_done": 23,
    "jobs_total": 24,
    "jobs_failed": 1,
    "error": "WorkflowError:\nAt least one job did not complete successfully.",
}
PAYLOAD: dict[str, Any] = {
    "event": "workflow.error",
    "workflow": WORKFLOW,
    "url": URL,
    "at": "2026-12-01T12:00:00+00:00",
}


def body(kind: str, payload: dict[str, Any] = PAYLOAD) -> Any:
    return orjson.loads(http_post(Target(kind, url="https://x.org/h"), payload, "", 0).body)


# ---- formats


def test_slack_and_mattermost_take_text():
    assert body("slack") == {
        "text": f"<{URL}|cohort failed>\nError, 23/24 jobs, 1 failed\nWorkflowError:"
    }
    assert body("mattermost") == {
        "text": f"[cohort failed]({URL})\nError, 23/24 jobs, 1 failed\nWorkflowError:"
    }


def test_user_text_cannot_break_out_of_the_markup():
    hostile = {**PAYLOAD, "workflow": {**WORKFLOW, "name": "a|b> <!channel> [x](y)"}}
    assert body("slack", hostile)["text"].startswith(f"<{URL}|a|b&gt; &lt;!channel&gt; [x](y)")
    discord = body("discord", hostile)
    assert discord["content"].startswith(f"[a\\|b\\> \\<!channel\\> \\[x\\]\\(y\\) failed]({URL})")
    assert discord["allowed_mentions"] == {"parse": []}  # no @everyone from a name


def test_teams_gets_an_adaptive_card():
    sent = body("teams")
    assert sent["type"] == "message"
    (attachment,) = sent["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert [block["text"] for block in card["body"]] == [
        "cohort failed",
        "Error, 23/24 jobs, 1 failed",
        "WorkflowError:",
    ]
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in panoptes", "url": URL}]


def test_ntfy_gets_plain_text_and_headers():
    post = http_post(Target("ntfy", url="https://ntfy.sh/lab"), PAYLOAD, "", 0)
    assert post.body == b"Error, 23/24 jobs, 1 failed\nWorkflowError:"
    assert post.headers["Title"] == "cohort failed"
    assert (post.headers["Tags"], post.headers["Priority"], post.headers["Click"]) == (
        "x",
        "high",
        URL,
    )
    named = {**PAYLOAD, "workflow": {**WORKFLOW, "name": "kohorte-ä"}}
    title = http_post(Target("ntfy", url="https://ntfy.sh/lab"), named, "", 0).headers["Title"]
    assert title == "=?UTF-8?B?a29ob3J0ZS3DpCBmYWlsZWQ=?="  # RFC 2047, as ntfy decodes it


def test_the_generic_json_is_the_payload_signed():
    post = http_post(Target("json", url="https://x.org/h"), PAYLOAD, "k3y", 1_800_000_000)
    assert orjson.loads(post.body) == PAYLOAD
    expected = hmac.new(b"k3y", post.body, hashlib.sha256).hexdigest()
    assert post.headers["X-Panoptes-Signature"] == f"sha256={expected}" == sign("k3y", post.body)
    assert post.headers["X-Panoptes-Timestamp"] == "1800000000"
    unsigned = http_post(Target("json", url="https://x.org/h"), PAYLOAD, "", 0)
    assert "X-Panoptes-Signature" not in unsigned.headers


def test_email_subject_and_text():
    assert subject(PAYLOAD) == "[panoptes] cohort failed (Error, 23/24 jobs, 1 failed)"
    message = email(Target("email", emails=("a@lab.org", "b@lab.org")), PAYLOAD, "p@lab.org")
    assert message["To"] == "a@lab.org, b@lab.org"
    assert message.get_content() == (
        f"cohort failed\nError, 23/24 jobs, 1 failed\nWorkflowError:\n{URL}\n"
    )


def test_job_failed_and_stuck_say_what_happened():
    job = {"jobid": 4, "rule": "align", "status": "Error", "error_line": "exit 1"}
    failed = {**PAYLOAD, "event": "job.failed", "job": job}
    assert subject(failed).startswith("[panoptes] cohort: job 4 (align) failed")
    assert body("slack", failed)["text"].endswith("\nexit 1")
    stuck = {**PAYLOAD, "event": "workflow.stuck", "recovered": False}
    assert subject(stuck).startswith("[panoptes] cohort is stuck")
    assert subject({**stuck, "recovered": True}).startswith("[panoptes] cohort is running again")


def test_formats_are_picked_by_url():
    assert format_for("https://hooks.slack.com/services/T/B/x") == "slack"
    assert format_for("https://discord.com/api/webhooks/1/x") == "discord"
    assert format_for("https://discordapp.com/api/webhooks/1/x") == "discord"
    assert format_for("https://discord.com/channels/1") == "json"
    assert format_for("https://lab.webhook.office.com/webhookb2/x") == "teams"
    assert format_for("https://prod-1.westeurope.logic.azure.com/workflows/x") == "teams"
    assert format_for("https://x.environment.api.powerplatform.com/p/x") == "teams"
    assert format_for("https://ntfy.sh/lab-runs") == "ntfy"
    assert format_for("https://hooks.lab.org/x") == "json"


def test_masking_keeps_host_and_last_four():
    assert mask_url("https://hooks.slack.com/services/T0/B0/abcdefgh1234") == (
        "https://hooks.slack.com/…1234"
    )
    assert mask_url("https://user:pw@ntfy.sh/x") == "https://ntfy.sh/…"  # short: nothing
    target = Target("slack", url="https://hooks.slack.com/services/T0/B0/secret9876")
    assert "secret" not in repr(target) and "secret" not in str(target.shown())
    assert Target("slack", url="https://hooks.slack.com/services/T0/B0/other").key != target.key


# ---- rules


def wf_event(
    status: str, minutes: float = 0, kind: str = "workflow.updated", failed: int = 0
) -> Seen:
    view = {**WORKFLOW, "status": status, "jobs_failed": failed}
    return Seen(kind, 7, {"workflow": view}, T0 + timedelta(minutes=minutes))


def events_of(seen: list[Seen], told: dict[int, Told] | None = None) -> list[str]:
    due, _ = examine(seen, {} if told is None else told)
    return [d.event + (" recovered" if d.recovered else "") for d in due]


def test_a_status_is_told_when_it_changes():
    # Error, then a retry runs (Running), then Done: error, then done.
    seen = [wf_event("Running"), wf_event("Error"), wf_event("Running"), wf_event("Done")]
    assert events_of(seen) == ["workflow.error", "workflow.done"]
    assert events_of([wf_event("Error"), wf_event("Error")]) == ["workflow.error"]
    assert events_of([wf_event("Stale"), wf_event("Running"), wf_event("Stale")]) == [
        "workflow.stale",
        "workflow.stale",
    ]
    assert events_of([wf_event("Cancelled", kind="workflow.cancelled")]) == ["workflow.cancelled"]


def test_a_rename_tells_nothing():
    # A run that ended before notifications were set up, renamed afterwards.
    assert events_of([wf_event("Done", kind="workflow.renamed")]) == []


def test_what_was_told_carries_over_between_passes():
    told: dict[int, Told] = {}
    assert events_of([wf_event("Error")], told) == ["workflow.error"]
    assert events_of([wf_event("Error")], told) == []


def test_only_the_first_failed_job_of_a_run():
    seen = [wf_event("Running"), wf_event("Running", failed=1), wf_event("Error", failed=2)]
    assert events_of(seen) == ["job.failed", "workflow.error"]
    # A new run under the same id (a finished run's name reused) may tell again.
    again = [
        wf_event("Running", failed=1),
        wf_event("Running", kind="workflow.reset"),
        wf_event("Running", failed=1),
    ]
    assert events_of(again) == ["job.failed", "job.failed"]


def test_stuck_recovers_once_on_a_sign_of_life():
    told = {7: Told(status="Running", stuck_since=T0)}
    seen = [wf_event("Running", 1), wf_event("Running", 2), wf_event("Done", 3)]
    assert events_of(seen, told) == ["workflow.stuck recovered", "workflow.done"]
    assert told[7].stuck_since is None


def test_stuck_does_not_recover_on_what_came_before_or_on_stale():
    told = {7: Told(status="Running", stuck_since=T0)}
    assert events_of([wf_event("Running", -1), wf_event("Stale", 5)], told) == ["workflow.stale"]
    assert told[7].stuck_since == T0  # still silent


def test_a_deleted_workflow_is_forgotten():
    told: dict[int, Told] = {}
    due, deleted = examine([wf_event("Done"), Seen("workflow.deleted", 7, {}, T0)], told)
    assert [d.event for d in due] == ["workflow.done"] and deleted == {7} and told == {}


def test_line_breaks_in_names_stay_out_of_headers():
    named = {**PAYLOAD, "workflow": {**WORKFLOW, "name": "evil\r\nBcc: all@lab.org"}}
    assert (
        subject(named) == "[panoptes] evil  Bcc: all@lab.org failed (Error, 23/24 jobs, 1 failed)"
    )
    message = email(Target("email", emails=("a@lab.org",)), named, "p@lab.org")
    assert message["Bcc"] is None
    post = http_post(Target("ntfy", url="https://ntfy.sh/lab"), named, "", 0)
    assert "\n" not in post.headers["Title"] and "\r" not in post.headers["Title"]
