"""The websocket feed over a real server: order, resume with since=, lagging subscribers."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .conftest import LiveServer, form_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(
        db=tmp_path / "feed.db",
        env={"PANOPTES_SUBSCRIBER_QUEUE": "16", "PANOPTES_WS_PING_SECONDS": "0.5"},
    ).start()
    yield live
    live.stop()


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


def ws_url(server: LiveServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def create(http: httpx.AsyncClient, name: str | None = None) -> int:
    response = await http.get("/create_workflow", params={"workflow_id": name} if name else None)
    assert response.status_code == 200, response.text
    workflow_id: int = response.json()["id"]
    return workflow_id


async def send(http: httpx.AsyncClient, workflow_id: int, msg: dict[str, Any]) -> None:
    response = await http.post(
        "/update_workflow_status", content=form_body(workflow_id, msg), headers=FORM
    )
    assert response.status_code == 200, response.text


async def next_event(ws: ClientConnection, wait: float = 10) -> dict[str, Any]:
    """The next message that is not a keep-alive ping."""
    async with asyncio.timeout(wait):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] != "ping":
                return message


async def collect(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [await next_event(ws) for _ in range(count)]


def stored_events(server: LiveServer, workflow_id: int | None = None) -> list[tuple[int, str]]:
    with sqlite3.connect(server.db) as db:
        if workflow_id is None:
            rows = db.execute(
                "SELECT seq, type FROM events WHERE type LIKE 'workflow.%' ORDER BY seq"
            )
        else:
            rows = db.execute(
                "SELECT seq, type FROM events WHERE workflow_id = ? ORDER BY seq", (workflow_id,)
            )
        return [(seq, kind) for seq, kind in rows]


async def test_events_arrive_in_order_with_seq(server: LiveServer, http: httpx.AsyncClient):
    workflow_id = await create(http)
    async with (
        connect(ws_url(server, f"/ws/workflow/{workflow_id}")) as one,
        connect(ws_url(server, "/ws")) as everything,
    ):
        hello = await next_event(one)
        assert hello["type"] == "hello" and isinstance(hello["head"], int)
        assert (await next_event(everything))["type"] == "hello"
        await send(http, workflow_id, {"level": "progress", "done": 0, "total": 2})
        await send(http, workflow_id, {"level": "job_started", "jobs": [1]})
        await send(http, workflow_id, {"level": "job_info", "jobid": 1, "name": "map"})
        await send(http, workflow_id, {"level": "job_finished", "jobid": 1})
        received = await collect(one, len(stored_events(server, workflow_id)) - 1)
        seqs = [event["seq"] for event in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert all(event["workflow_id"] == workflow_id for event in received)
        jobs = [event["job"] for event in received if event["type"] == "job.updated"]
        assert [job["status"] for job in jobs][-1] == "Done"
        assert jobs[-1]["rule"] == "map"
        rules = [event["rule"] for event in received if event["type"] == "rule.updated"]
        assert rules[-1] == {
            "rule": "map",
            "planned": None,
            "total": 1,
            "done": 1,
            "running": 0,
            "error": 0,
            "waiting": 0,
        }
        workflows = [event for event in received if event["type"].startswith("workflow.")]
        assert workflows[-1]["workflow"]["jobs_total"] == 2
        # The everything-feed carries only workflow-level events, in the same order.
        overall = await collect(everything, len(workflows))
        assert [event["seq"] for event in overall] == [event["seq"] for event in workflows]
        # The page's own seq (everything stored) matches what was sent live.
        assert [(e["seq"], e["type"]) for e in received] == stored_events(server, workflow_id)[1:]


async def test_reconnect_with_since_gets_exactly_the_missed_events(
    server: LiveServer, http: httpx.AsyncClient
):
    workflow_id = await create(http)
    async with connect(ws_url(server, f"/ws/workflow/{workflow_id}")) as ws:
        await next_event(ws)  # hello
        await send(http, workflow_id, {"level": "job_info", "jobid": 1, "name": "a"})
        seen = await collect(ws, 2)  # job.updated, rule.updated
    last = seen[-1]["seq"]
    # Disconnected: these happen while nobody listens.
    await send(http, workflow_id, {"level": "job_finished", "jobid": 1})
    await send(http, workflow_id, {"level": "job_info", "jobid": 2, "name": "b"})
    await send(http, workflow_id, {"level": "progress", "done": 1, "total": 2})
    missed = [(seq, kind) for seq, kind in stored_events(server, workflow_id) if seq > last]
    assert missed, "the events after the disconnect were stored"
    async with connect(ws_url(server, f"/ws/workflow/{workflow_id}?since={last}")) as ws:
        assert (await next_event(ws))["type"] == "hello"
        replayed = await collect(ws, len(missed))
        assert [(e["seq"], e["type"]) for e in replayed] == missed
        # Then live, with nothing repeated.
        await send(http, workflow_id, {"level": "job_finished", "jobid": 2})
        live = await next_event(ws)
        assert live["seq"] > missed[-1][0]
        assert live["type"] == "job.updated" and live["job"]["status"] == "Done"


async def test_a_client_cut_off_during_a_replay_resumes_from_the_highest_seq_it_received(
    server: LiveServer, http: httpx.AsyncClient
):
    """docs/feed.md: "remember the highest seq you received". Only events carry a seq, so a
    client that takes the highest of every message it got, hello included, and is cut off
    in the middle of a replay still gets the rest: no gap, nothing twice."""
    workflow_id = await create(http)
    for jobid in range(1, 11):
        await send(http, workflow_id, {"level": "job_info", "jobid": jobid, "name": "a"})
    stored = stored_events(server, workflow_id)
    got: list[tuple[int, str]] = []
    highest = 0
    async with connect(ws_url(server, f"/ws/workflow/{workflow_id}?since=0")) as ws:
        for _ in range(1 + 5):  # hello, then the first five replayed events
            message = await next_event(ws)
            highest = max(highest, message.get("seq", 0))
            if message["type"] != "hello":
                got.append((message["seq"], message["type"]))
    assert highest < stored[-1][0], "cut off before the replay caught up"
    async with connect(ws_url(server, f"/ws/workflow/{workflow_id}?since={highest}")) as ws:
        assert "seq" not in await next_event(ws)  # hello
        rest = await collect(ws, len(stored) - len(got))
    got += [(e["seq"], e["type"]) for e in rest]
    assert got == stored


async def test_since_beyond_the_servers_log_goes_on_from_the_present(
    server: LiveServer, http: httpx.AsyncClient
):
    """A client that saw seq 1000 of a database since replaced (this one is at a handful):
    it is told by hello's lower seq, and gets every event from now on, none skipped."""
    workflow_id = await create(http)
    await send(http, workflow_id, {"level": "job_info", "jobid": 1, "name": "a"})
    head = max(seq for seq, _ in stored_events(server, workflow_id))
    async with connect(ws_url(server, f"/ws/workflow/{workflow_id}?since={head + 1000}")) as ws:
        hello = await next_event(ws)
        assert (hello["type"], hello["head"]) == ("hello", head)
        await send(http, workflow_id, {"level": "job_finished", "jobid": 1})
        live = await next_event(ws)
        assert live["seq"] == head + 1
        assert live["type"] == "job.updated" and live["job"]["status"] == "Done"


def _tiny_receive_buffer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_stalled_subscriber_gets_resync_and_others_keep_receiving(
    server: LiveServer, http: httpx.AsyncClient
):
    workflow_id = await create(http)
    url = ws_url(server, f"/ws/workflow/{workflow_id}")
    stalled_sock = _tiny_receive_buffer()
    stalled_sock.connect(("127.0.0.1", server.port))
    async with (
        connect(url, sock=stalled_sock, max_queue=1, compression=None) as stalled,
        connect(url) as healthy,
    ):
        assert (await next_event(stalled))["type"] == "hello"
        assert (await next_event(healthy))["type"] == "hello"
        received: list[dict[str, Any]] = []

        async def read_healthy() -> None:
            while True:
                received.append(await next_event(healthy, wait=30))

        reader = asyncio.create_task(read_healthy())
        shell = "x" * 20000  # big (uncompressed) events fill the stalled socket quickly
        for jobid in range(300):
            await send(
                http,
                workflow_id,
                {"level": "job_info", "jobid": jobid, "name": "r", "shellcmd": shell},
            )
        expected = stored_events(server, workflow_id)[1:]
        for _ in range(100):
            if len(received) >= len(expected):
                break
            await asyncio.sleep(0.1)
        reader.cancel()
        # The healthy subscriber got everything, in order, without a resync.
        assert [(e["seq"], e["type"]) for e in received] == expected
        # The stalled one was told it lagged, then caught up from the database:
        # after the resync it still ends up with every event, none twice.
        stalled_events = []
        resyncs = 0
        while len(stalled_events) < len(expected):
            event = await next_event(stalled, wait=30)
            if event["type"] == "resync":
                resyncs += 1
                continue
            stalled_events.append(event)
        assert resyncs >= 1
        seqs = [event["seq"] for event in stalled_events]
        assert seqs == sorted(set(seqs))
        assert seqs == [seq for seq, _ in expected]


async def test_keepalive_pings_arrive(server: LiveServer):
    async with connect(ws_url(server, "/ws")) as ws:
        hello = json.loads(await ws.recv())
        ping = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "hello" and ping == {"type": "ping"}


async def test_foreign_origin_is_refused_unless_allowed(tmp_path: Path):
    live = LiveServer(
        db=tmp_path / "origin.db", env={"PANOPTES_ALLOWED_ORIGINS": "https://lab.example.org"}
    ).start()
    try:
        url = ws_url(live, "/ws")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin="https://evil.example.com"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        async with connect(url, origin="https://lab.example.org") as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "hello"
        own = f"http://127.0.0.1:{live.port}"
        async with connect(url, origin=own) as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "hello"
        async with connect(url) as ws:  # no Origin: a script, not a browser
            assert json.loads(await ws.recv())["type"] == "hello"
    finally:
        live.stop()


async def test_bad_since_and_unknown_workflow_are_refused(server: LiveServer):
    with pytest.raises(InvalidStatus) as bad:
        async with connect(ws_url(server, "/ws?since=abc")):
            pass
    assert bad.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as missing:
        async with connect(ws_url(server, "/ws/workflow/999")):
            pass
    assert missing.value.response.status_code == 404


async def test_deleting_a_workflow_is_announced(server: LiveServer, http: httpx.AsyncClient):
    workflow_id = await create(http)
    await send(http, workflow_id, {"level": "progress", "done": 1, "total": 1})
    async with connect(ws_url(server, "/ws")) as ws:
        await next_event(ws)
        response = await http.delete(f"/api/workflow/{workflow_id}")
        assert response.status_code == 204
        event = await next_event(ws)
        assert event["type"] == "workflow.deleted"
        assert event["workflow"] == {"id": workflow_id}


async def test_workflow_ids_beyond_any_database_get_404(server: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(server, f"/ws/workflow/{2**63}"))
    assert refused.value.response.status_code == 404
