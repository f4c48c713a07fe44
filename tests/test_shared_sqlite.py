"""Two server processes on one SQLite file, with no broker (the default memory://), see
each other's events live (issue 15.8): the file carries the notices (hub/backends.py,
SQLiteFileBackend). Real processes, real websockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from .conftest import LiveServer, form_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    db = tmp_path / "shared.db"
    first = LiveServer(db=db).start()
    second = LiveServer(db=db).start()
    yield first, second
    second.stop()
    first.stop()


async def next_event(feed: ClientConnection) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(feed.recv(), 10))
        if "seq" in message:
            return message


async def posted_then_seen(
    http: httpx.AsyncClient,
    poster: LiveServer,
    watcher: LiveServer,
    workflow_id: int,
    msg: dict[str, Any],
) -> dict[str, Any]:
    """Post msg to one process; the job as the other's feed of that workflow shows it."""
    path = f"/ws/workflow/{workflow_id}"
    async with connect(watcher.url.replace("http", "ws") + path) as jobs:
        assert json.loads(await jobs.recv())["type"] == "hello"
        body = form_body(workflow_id, msg)
        answer = await http.post(f"{poster.url}/update_workflow_status", content=body, headers=FORM)
        assert answer.status_code == 200
        seen = await next_event(jobs)
        while seen["type"] != "job.updated":
            seen = await next_event(jobs)
        job: dict[str, Any] = seen["job"]
        return job


async def test_a_feed_on_one_process_shows_what_the_other_stored(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    first, second = pair
    async with httpx.AsyncClient(timeout=30) as http:
        info = (await http.get(f"{first.url}/api/service-info")).json()
        assert info["hub"]["backend"] == "sqlite"
        async with connect(first.url.replace("http", "ws") + "/ws") as everything:
            assert json.loads(await everything.recv())["type"] == "hello"
            # Registered through the second: the first's feed of everything hears of it.
            workflow_id = (await http.get(f"{second.url}/create_workflow")).json()["id"]
            created = await next_event(everything)
            assert (created["type"], created["workflow"]["id"]) == ("workflow.created", workflow_id)
        started = {"level": "job_started", "jobs": [4]}
        job = await posted_then_seen(http, second, first, workflow_id, started)
        assert (job["jobid"], job["status"]) == (4, "Running")
        # And the other way: the second's feed hears what the first stored.
        finished = {"level": "job_finished", "jobid": 4}
        job = await posted_then_seen(http, first, second, workflow_id, finished)
        assert (job["jobid"], job["status"]) == (4, "Done")
