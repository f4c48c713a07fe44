"""Feed load (issue 15.5), through a real server process: subscribers do not stand between a
client and its acknowledgement, there is a cap on feed connections in all, and with a token
the feed can be kept to those who have it while pages and the API stay open."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .conftest import LiveServer, form_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = "feed-load-token-0123456789"


def ws(server: LiveServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


@pytest.fixture
def crowded(tmp_path: Path) -> Iterator[LiveServer]:
    # Under Hypercorn every event goes to a subscriber through its queue and its turn
    # (hub/turns.py). Under uvicorn the hub writes most of them itself, a few hundred
    # subscribers a pass, after the batch's answers: a fan-out to 300 is then over within
    # about a POST's round trip, so which ends first says nothing there, and
    # tests/unit/test_direct_delivery.py holds that path to the same promise.
    env = {"PANOPTES_MAX_FEED_PER_CLIENT": "0", "PANOPTES_SERVER": "hypercorn"}
    live = LiveServer(db=tmp_path / "crowd.db", env=env).start()
    yield live
    live.stop()


async def test_the_next_post_does_not_wait_for_the_fan_out(crowded: LiveServer) -> None:
    """A client posts A, then B as soon as A is answered (as Snakemake does). Without
    turns, the server sent A's event to every subscriber in one pass of its loop, and B's
    request waited behind that pass: B was answered only after the last subscriber had
    A's event. Now B is answered while A's event is still on its way to some."""
    subscribers = 300
    async with httpx.AsyncClient(base_url=crowded.url, timeout=30) as http:
        workflow_id = (await http.get("/create_workflow")).json()["id"]
    feeds: list[ClientConnection] = []
    try:
        for start in range(0, subscribers, 50):
            feeds += await asyncio.gather(
                *(
                    connect(ws(crowded, f"/ws/workflow/{workflow_id}"))
                    for _ in range(start, start + 50)
                )
            )
        for feed in feeds:
            assert json.loads(await feed.recv())["type"] == "hello"
        received: list[float] = []
        answered: list[float] = []

        async def first_event(feed: ClientConnection) -> None:
            while json.loads(await asyncio.wait_for(feed.recv(), 30)).get("seq") is None:
                pass  # a ping
            received.append(time.monotonic())

        def post_a_then_b() -> None:
            with httpx.Client(base_url=crowded.url, timeout=30) as http:
                for msg in (
                    {"level": "job_started", "jobs": [1]},
                    {"level": "progress", "done": 0, "total": 3},
                ):
                    body = form_body(workflow_id, msg)
                    answer = http.post("/update_workflow_status", content=body, headers=FORM)
                    answered.append(time.monotonic())
                    assert answer.status_code == 200

        poster = threading.Thread(target=post_a_then_b)
        waiting = asyncio.gather(*(first_event(feed) for feed in feeds))
        poster.start()
        await waiting
        await asyncio.to_thread(poster.join)
        assert len(received) == subscribers and len(answered) == 2
        first = min(received)
        assert answered[1] < max(received), (
            f"B was answered {answered[1] - first:+.3f} s after the first subscriber got A's "
            f"event, the last got it at {max(received) - first:+.3f} s"
        )
    finally:
        await asyncio.gather(*(feed.close() for feed in feeds))


async def test_the_server_holds_at_most_so_many_feed_connections(tmp_path: Path) -> None:
    live = LiveServer(
        db=tmp_path / "cap.db",
        env={"PANOPTES_MAX_FEED": "3", "PANOPTES_MAX_FEED_PER_CLIENT": "0"},
    ).start()
    held = [await connect(ws(live, "/ws")) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws(live, "/ws"))
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"]
        assert b"PANOPTES_MAX_FEED" in refused.value.response.body
        await held.pop().close()
        for _ in range(100):  # the server notices the close a moment later
            try:
                held.append(await connect(ws(live, "/ws")))
                break
            except InvalidStatus:
                await asyncio.sleep(0.05)
        assert len(held) == 3
    finally:
        for connection in held:
            await connection.close()
        live.stop()


async def test_a_private_feed_needs_the_token_while_pages_and_api_stay_open(
    tmp_path: Path,
) -> None:
    live = LiveServer(
        db=tmp_path / "private.db",
        env={"PANOPTES_TOKEN": TOKEN, "PANOPTES_PRIVATE_FEED": "1"},
    ).start()
    try:
        async with httpx.AsyncClient(base_url=live.url) as http:
            assert (await http.get("/api/workflows")).status_code == 200
            page = await http.get("/")
            assert page.status_code == 200
            # The page says live updates need the token, rather than retrying for ever ...
            assert 'data-state="closed"' in page.text
            # ... unless this browser has it (the cookie from opening /t/<token>/ once).
            assert (await http.get(f"/t/{TOKEN}/")).status_code == 303
            page = await http.get("/")
            assert 'data-state="offline"' in page.text and "need the token" not in page.text
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws(live, "/ws"))
        assert refused.value.response.status_code == 401
        for path, headers in (
            (f"/t/{TOKEN}/ws", {}),
            ("/ws", {"Authorization": f"Bearer {TOKEN}"}),
        ):
            async with connect(ws(live, path), additional_headers=headers) as feed:
                assert json.loads(await feed.recv())["type"] == "hello"
    finally:
        live.stop()


def test_a_private_feed_without_a_token_stops_the_server_at_start(tmp_path: Path) -> None:
    live = LiveServer(db=tmp_path / "notoken.db", env={"PANOPTES_PRIVATE_FEED": "1"})
    with pytest.raises(RuntimeError) as failed:
        live.start()
    assert "PANOPTES_PRIVATE_FEED needs PANOPTES_TOKEN" in str(failed.value)
    live.stop()
