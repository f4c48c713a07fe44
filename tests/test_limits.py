"""Limits answer with clear refusals, never a crash: feed connections per client address,
the size of what a feed client may send, and the size of a request body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import LiveServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(
        db=tmp_path / "limits.db",
        env={"PANOPTES_MAX_FEED_PER_CLIENT": "3", "PANOPTES_MAX_BODY_BYTES": "2048"},
    ).start()
    yield live
    live.stop()


def ws(server: LiveServer, path: str = "/ws") -> str:
    return server.url.replace("http://", "ws://") + path


async def test_one_client_may_hold_only_so_many_feed_connections(server: LiveServer) -> None:
    held = [await connect(ws(server)) for _ in range(3)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws(server))
        assert refused.value.response.status_code == 429
        assert b"PANOPTES_MAX_FEED_PER_CLIENT" in refused.value.response.body
        await held.pop().close()
        for _ in range(50):  # the server notices the close a moment later
            try:
                held.append(await connect(ws(server)))
                break
            except InvalidStatus:
                await asyncio.sleep(0.05)
        assert len(held) == 3
        assert json.loads(await held[-1].recv())["type"] == "hello"
    finally:
        for connection in held:
            await connection.close()
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(50):  # every connection is released once its client has gone
            info = (await http.get("/api/service-info")).json()
            if info["hub"]["subscribers"] == 0:
                break
            await asyncio.sleep(0.05)
    assert info["hub"]["subscribers"] == 0


async def test_a_feed_client_that_sends_too_much_is_closed_with_1009(server: LiveServer) -> None:
    async with connect(ws(server), max_size=None) as connection:
        assert json.loads(await connection.recv())["type"] == "hello"
        await connection.send("x" * (65 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10):
                await asyncio.wait_for(connection.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # The server is fine afterwards.
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/api/service-info")).status_code == 200


def test_request_bodies_over_the_limit_get_413(server: LiveServer) -> None:
    response = httpx.post(
        server.url + "/update_workflow_status",
        content=b"msg=" + b"x" * 4096,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]


def test_a_streamed_body_over_the_limit_gets_413_and_nothing_is_stored(server: LiveServer) -> None:
    """Chunked, so without a Content-Length: the endpoint counts as the body arrives."""
    workflow_id = httpx.get(server.url + "/create_workflow").json()["id"]
    message = json.dumps({"level": "job_info", "jobid": 1, "name": "x" * 3000})

    def chunks() -> Iterator[bytes]:
        body = f"id={workflow_id}&msg={message}".encode()
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    response = httpx.post(
        server.url + "/update_workflow_status",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request entity too large"
    jobs = httpx.get(f"{server.url}/api/workflow/{workflow_id}/jobs").json()["jobs"]
    assert jobs == []
