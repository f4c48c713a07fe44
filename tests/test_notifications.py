"""Notifications (issue 14) through the real app on SQLite and PostgreSQL: real recorded
runs replayed, a real HTTP receiver and a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from panoptes.app import create_app
from panoptes.config import Config, ConfigError
from panoptes.models import utcnow
from panoptes.notify import log as notify_log
from panoptes.notify_settings import NotifySettings, Smtp, Target

from .conftest import CAPTURES, create_workflow, post_event, send_recorded
from .receivers import Receiver, receiving, smtp_server

BASE = "http://panoptes.example:5000"


@asynccontextmanager
async def serving(config: Config, *targets: Target, **notify: Any) -> AsyncIterator[Client]:
    settings = NotifySettings(
        targets=targets, retry_seconds=0.05, timeout=2.0, public_url=BASE, **notify
    )
    app = create_app(replace(config, notify=settings))
    async with app.test_app():
        yield app.test_client()


async def replay(client: Client, name: str) -> None:
    for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines():
        await send_recorded(client, json.loads(line))


async def until(done: Callable[[], bool], within: float) -> bool:
    """Whether `done` came true within `within` seconds (looked at every 20 ms)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if done():
            return True
        await asyncio.sleep(0.02)
    return done()


async def settle(receiver: Receiver, count: int, within: float = 2.0) -> list[str]:
    """The events received once `count` came (which must be within `within` seconds), and
    half a second more in which nothing else may come."""
    assert await until(lambda: len(receiver.requests) >= count, within), receiver.events()
    await asyncio.sleep(0.5)
    return receiver.events()


def json_target(receiver: Receiver, **kw: Any) -> Target:
    return Target("json", url=receiver.url, **kw)


@pytest.mark.parametrize("capture", ["sm9-fail", "sm8-fail"])
async def test_a_failed_run_is_one_error_and_one_failed_job(config: Config, capture: str):
    with receiving() as receiver:
        async with serving(config, json_target(receiver)) as client:
            await replay(client, capture)
            events = await settle(receiver, 2)
    assert sorted(events) == ["job.failed", "workflow.error"]
    error = next(r.json() for r in receiver.requests if r.json()["event"] == "workflow.error")
    assert set(error) == {"event", "workflow", "url", "at"}
    assert error["workflow"]["status"] == "Error" and error["workflow"]["id"] == 1
    assert error["url"] == f"{BASE}/workflow/1"
    job = next(r.json() for r in receiver.requests if r.json()["event"] == "job.failed")
    assert job["job"]["status"] == "Error" and job["workflow"]["id"] == 1


async def test_events_the_notifier_did_not_examine_yet_are_not_lost(config: Config):
    """What was committed while no notifier ran (a server killed between a commit and its
    examination, or one running without targets) is examined at the next start."""
    with receiving() as receiver:
        async with serving(config, json_target(receiver)) as client:
            await asyncio.sleep(0.2)  # the cursor is made, at the newest event
        async with serving(config) as client:
            await replay(client, "sm9-fail")
        assert receiver.requests == []
        async with serving(config, json_target(receiver)) as client:
            events = await settle(receiver, 2)
    assert sorted(events) == ["job.failed", "workflow.error"]


async def test_what_is_committed_right_after_start_is_told(config: Config):
    """The cursor is made when the server starts, not at the notifier's first look at the
    log: a run that begins and ends before that look (a cancel a moment after registering)
    is still told."""
    with receiving() as receiver:
        async with serving(config, json_target(receiver)) as client:
            service = client.app.extensions["panoptes"]
            async with service.sessions() as session:
                assert await notify_log.cursor(session) == 0  # before anything was written
            await replay(client, "sm9-fail")
            events = await settle(receiver, 2)
    assert sorted(events) == ["job.failed", "workflow.error"]


async def test_a_successful_run_is_one_done(config: Config):
    with receiving() as receiver:
        async with serving(config, json_target(receiver)) as client:
            await replay(client, "sm9-success")
            events = await settle(receiver, 1)
    assert events == ["workflow.done"]
    body = receiver.requests[0].json()
    assert body["workflow"]["jobs_done"] == body["workflow"]["jobs_total"] > 0


async def test_several_failed_jobs_are_one_job_failed(config: Config):
    with receiving() as receiver:
        async with serving(config, json_target(receiver)) as client:
            await replay(client, "sm9-keepgoing")
            events = await settle(receiver, 2)
    assert sorted(events) == ["job.failed", "workflow.error"]


async def test_cancelled_and_stale_runs(config: Config):
    with receiving() as receiver:
        async with serving(replace(config, stale_hours=1 / 3600), json_target(receiver)) as c:
            cancelled = await create_workflow(c)
            await post_event(c, cancelled["id"], {"level": "progress", "done": 0, "total": 2})
            response = await c.post(f"/api/workflow/{cancelled['id']}/cancel")
            assert response.status_code == 200
            silent = await create_workflow(c)
            await post_event(c, silent["id"], {"level": "progress", "done": 0, "total": 2})
            await asyncio.sleep(1.2)
            assert await c.app.extensions["panoptes"].sweep_stale() == 1
            events = await settle(receiver, 2)
    assert [(r.json()["event"], r.json()["workflow"]["id"]) for r in receiver.requests] == [
        ("workflow.cancelled", cancelled["id"]),
        ("workflow.stale", silent["id"]),
    ]
    assert events == ["workflow.cancelled", "workflow.stale"]


async def test_retried_until_delivered_and_the_log_shows_every_attempt(config: Config):
    with receiving(Receiver(answers=[500, 500, 200])) as receiver:
        async with serving(config, json_target(receiver, events=frozenset({"workflow.done"}))) as c:
            await replay(c, "sm9-success")
            await settle(receiver, 3, within=5.0)
            listing = await (await c.get("/api/notifications")).get_json()
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1  # the same message each time
    (note,) = listing["notifications"]
    assert (note["status"], note["attempts"]) == ("delivered", 3)
    assert [a["outcome"] for a in note["log"]] == [500, 500, 200]
    assert note["event"] == "workflow.done" and note["workflow"]["id"] == 1


async def test_a_bounded_number_of_attempts(config: Config):
    with receiving(Receiver(answers=[503])) as receiver:
        target = json_target(receiver, events=frozenset({"workflow.done"}))
        async with serving(config, target, max_attempts=3) as client:
            await replay(client, "sm9-success")
            await settle(receiver, 3, within=5.0)
            failed = await client.get("/api/notifications?status=failed")
            (note,) = (await failed.get_json())["notifications"]
    assert len(receiver.requests) == 3
    assert (note["status"], note["attempts"]) == ("failed", 3)
    assert note["last_error"].startswith("HTTP 503")


async def test_a_refusal_is_not_retried(config: Config):
    with receiving(Receiver(answers=[404])) as receiver:
        async with serving(config, json_target(receiver)) as client:
            await replay(client, "sm9-success")
            await settle(receiver, 1)
            (note,) = (await (await client.get("/api/notifications")).get_json())["notifications"]
    assert (note["status"], note["attempts"]) == ("failed", 1)


async def test_retention_removes_the_old_log(config: Config):
    with receiving() as receiver:
        async with serving(config, json_target(receiver)) as client:
            await replay(client, "sm9-success")
            await settle(receiver, 1)
            service = client.app.extensions["panoptes"]
            assert await service.prune(30) == 0  # nothing is old enough yet
            assert (await (await client.get("/api/notifications")).get_json())["count"] == 1
            assert await service.prune(30, now=utcnow() + timedelta(days=31)) == 1
            assert (await (await client.get("/api/notifications")).get_json())["count"] == 0


async def test_generic_posts_are_signed(config: Config):
    secret = "s3cret-for-hmac"
    with receiving() as receiver:
        async with serving(config, json_target(receiver), secret=secret) as client:
            await replay(client, "sm9-success")
            await settle(receiver, 1)
    request = receiver.requests[0]
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-panoptes-signature"] == f"sha256={expected}"
    assert abs(int(request.headers["x-panoptes-timestamp"]) - time.time()) < 60


async def test_rules_pick_events_and_workflows(config: Config):
    with receiving() as receiver:
        errors_only = json_target(receiver, events=frozenset({"workflow.error"}))
        other_names = Target("json", url=receiver.url + "x", workflows="cohort-*")
        async with serving(config, errors_only, other_names) as client:
            await replay(client, "sm9-fail")
            events = await settle(receiver, 1)
    assert events == ["workflow.error"]


async def test_an_email_target(config: Config):
    with smtp_server() as (mailbox, port):
        smtp = Smtp(host="127.0.0.1", port=port, tls="none", sender="panoptes@lab.org")
        target = Target("email", emails=("a@lab.org", "b@lab.org"))
        async with serving(config, target, smtp=smtp) as client:
            await replay(client, "sm9-fail")
            await until(lambda: len(mailbox.messages) >= 2, 2.0)
            await asyncio.sleep(0.3)
    messages = mailbox.messages
    assert len(messages) == 2, [m["Subject"] for m in messages]
    subjects = sorted(str(m["Subject"]) for m in messages)
    assert any(s.startswith("[panoptes] ") and " failed (Error, " in s for s in subjects), subjects
    error = next(m for m in messages if "(Error, " in str(m["Subject"]))
    assert error["To"] == "a@lab.org, b@lab.org" and error["From"] == "panoptes@lab.org"
    assert f"{BASE}/workflow/1" in error.get_payload()
    assert sorted(mailbox.envelopes[0].rcpt_tos) == ["a@lab.org", "b@lab.org"]


async def test_stuck_once_and_recovered_once(config: Config):
    with receiving() as receiver:
        target = json_target(receiver)
        async with serving(config, target, stuck_minutes=0.01, stuck_check_seconds=0.1) as c:
            workflow = await create_workflow(c)
            started = {"level": "progress", "done": 0, "total": 2}
            await post_event(c, workflow["id"], started)
            first = await settle(receiver, 1, within=3.0)
            await post_event(c, workflow["id"], {"level": "progress", "done": 1, "total": 2})
            await settle(receiver, 2, within=3.0)
            # Silent again: stuck again, once.
            await settle(receiver, 3, within=3.0)
    assert first == ["workflow.stuck"]
    bodies = [r.json() for r in receiver.requests]
    assert [(b["event"], b["recovered"]) for b in bodies] == [
        ("workflow.stuck", False),
        ("workflow.stuck", True),
        ("workflow.stuck", False),
    ]


async def test_secrets_are_never_shown(config: Config, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    with receiving(Receiver(answers=[500, 200])) as receiver:
        smtp = Smtp(host="127.0.0.1", port=1, tls="none", password="smtp-PASSWORD-xyz")
        email = Target("email", emails=("ops@lab.org",), events=frozenset({"workflow.done"}))
        async with serving(config, json_target(receiver), email, smtp=smtp) as client:
            await replay(client, "sm9-success")
            await settle(receiver, 2, within=4.0)
            api = await (await client.get("/api/notifications")).get_data(as_text=True)
            page = await (await client.get("/notifications")).get_data(as_text=True)
    listing = json.loads(api)
    shown = {t["format"]: t["target"] for t in listing["targets"]}
    assert shown["json"] == "http://127.0.0.1/…abcd"
    assert shown["email"] == "ops@lab.org"
    for text in (api, page, caplog.text):
        assert "SECRET-TOKEN" not in text and "smtp-PASSWORD" not in text
    assert "http://127.0.0.1/…abcd" in page and "delivered" in page
    assert "ConnectionRefusedError" in api  # the email's failure is told, without secrets


async def test_bad_query_and_admin_only(config: Config):
    async with serving(config) as client:
        bad = await client.get("/api/notifications?status=sent")
        assert bad.status_code == 400
        assert "unknown status sent" in (await bad.get_json())["detail"]
        fine = await (await client.get("/api/notifications")).get_json()
        assert fine == {"targets": [], "notifications": [], "count": 0, "limit": 100, "offset": 0}
    token = "t" * 24
    async with serving(replace(config, token=token)) as client:
        assert (await client.get("/api/notifications")).status_code == 401
        assert (await client.get("/notifications")).status_code == 401
        assert (await client.get("/api/workflows")).status_code == 200  # reads stay public
        ok = await client.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200


# ---- settings


def test_webhook_url_alone(tmp_path: Path):
    env = {"PANOPTES_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/xyz1, https://x.org/h"}
    targets = Config.from_env(env).notify.targets
    assert [t.format for t in targets] == ["slack", "json"]
    assert {"workflow.done", "workflow.error", "workflow.stale"} <= targets[0].events
    assert "url=" not in repr(targets[0]) and "xyz1" not in repr(Config.from_env(env))


def test_a_config_file(tmp_path: Path):
    path = tmp_path / "notify.toml"
    path.write_text(
        '[[target]]\nurl_env = "MM_HOOK"\nformat = "mattermost"\nworkflows = "cohort*"\n'
        '[[target]]\nemail = "a@lab.org, b@lab.org"\nevents = ["workflow.error"]\n'
    )
    env = {
        "PANOPTES_NOTIFY_CONFIG": str(path),
        "MM_HOOK": "https://chat.lab.org/hooks/abc123",
        "PANOPTES_SMTP_HOST": "smtp.lab.org",
        "PANOPTES_SMTP_PASSWORD": "pw",
    }
    notify = Config.from_env(env).notify
    mm, mail = notify.targets
    assert (mm.format, mm.workflows, mm.wants("job.failed", "cohort-2")) == (
        "mattermost",
        "cohort*",
        True,
    )
    assert not mm.wants("workflow.done", "other")
    assert (mail.format, mail.emails, mail.events) == (
        "email",
        ("a@lab.org", "b@lab.org"),
        frozenset({"workflow.error"}),
    )
    assert notify.smtp.port == 587 and "pw" not in repr(notify)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PANOPTES_WEBHOOK_URL": "hooks.slack.com/x"}, "not an http\\(s\\) URL"),
        ({"PANOPTES_NOTIFY_EVENTS": "workflow.finished"}, "unknown event workflow.finished"),
        ({"PANOPTES_STUCK_MINUTES": "soon"}, "PANOPTES_STUCK_MINUTES must be a number"),
        ({"PANOPTES_SMTP_TLS": "maybe"}, "PANOPTES_SMTP_TLS must be one of"),
        ({"PANOPTES_NOTIFY_CONFIG": "/nonexistent/n.toml"}, "cannot read"),
    ],
)
def test_bad_settings_are_refused_clearly(env: dict[str, str], says: str):
    with pytest.raises(ConfigError, match=says):
        Config.from_env(env)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[[target]\n", "is not TOML"),
        ('[[target]]\nurl = "https://x.org/h"\nformat = "telex"\n', "format must be one of"),
        ('[[target]]\nurl_env = "NOPE_UNSET"\n', "NOPE_UNSET is not set"),
        ('[[target]]\nemail = "a@lab.org"\n', "needs PANOPTES_SMTP_HOST"),
        ('[[target]]\nurls = "https://x.org"\n', "unknown key urls"),
    ],
)
def test_bad_config_files_are_refused_clearly(tmp_path: Path, text: str, says: str):
    path = tmp_path / "notify.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        Config.from_env({"PANOPTES_NOTIFY_CONFIG": str(path)})
