"""Notifications from real `panoptes` processes: a hanging receiver costs ingest nothing, a
kill -9 loses no notification that was due, and two replicas deliver each one once."""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import CAPTURES, LiveServer, form_body, throwaway_pg_database
from .receivers import HANG, Receiver, receiving


def replay(servers: list[str], capture: str) -> list[float]:
    """Send a capture's requests, each to the next server in turn; each one's seconds."""
    took = []
    with httpx.Client(timeout=10) as client:
        for n, line in enumerate((CAPTURES / f"{capture}.jsonl").read_text().splitlines()):
            request = json.loads(line)
            headers = {"Content-Type": request["content_type"]} if request["content_type"] else {}
            started = time.perf_counter()
            response = client.request(
                request["method"],
                servers[n % len(servers)] + request["path"],
                params=request["query"] or None,
                content=request["body"].encode(),
                headers=headers,
            )
            took.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return took


def notify_env(receiver: Receiver, **more: str) -> dict[str, str]:
    return {"PANOPTES_WEBHOOK_URL": receiver.url, "PANOPTES_NOTIFY_RETRY_SECONDS": "0.1", **more}


def deliveries(server: LiveServer) -> list[dict[str, object]]:
    listing = httpx.get(f"{server.url}/api/notifications", timeout=5).json()
    notes: list[dict[str, object]] = listing["notifications"]
    return notes


def test_a_hanging_receiver_does_not_slow_ingest(tmp_path: Path):
    with receiving(Receiver(answers=[HANG])) as receiver:
        env = notify_env(receiver, PANOPTES_NOTIFY_TIMEOUT="60")
        server = LiveServer(db=tmp_path / "hang.db", env=env).start()
        try:
            replay([server.url], "sm9-fail")
            receiver.wait_for(2)
            assert len(receiver.requests) == 2  # both in flight, neither answered
            workflow = httpx.get(f"{server.url}/create_workflow", timeout=5).json()
            took = []
            with httpx.Client(timeout=10) as client:
                for done in range(200):
                    body = form_body(
                        workflow["id"], {"level": "progress", "done": done, "total": 300}
                    )
                    started = time.perf_counter()
                    response = client.post(
                        f"{server.url}/update_workflow_status",
                        content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                    )
                    took.append(time.perf_counter() - started)
                    assert response.status_code == 200
            notes = deliveries(server)
        finally:
            server.stop()
    assert statistics.median(took) < 0.05 and max(took) < 1.0, (statistics.median(took), max(took))
    assert {n["status"] for n in notes} == {"pending"}  # still waiting for the receiver


def test_a_notification_pending_at_kill_9_is_delivered_after_restart(tmp_path: Path):
    with receiving(Receiver(answers=[HANG, 200])) as receiver:
        env = notify_env(
            receiver, PANOPTES_NOTIFY_TIMEOUT="0.5", PANOPTES_NOTIFY_EVENTS="workflow.done"
        )
        server = LiveServer(db=tmp_path / "kill.db", env=env).start()
        replay([server.url], "sm9-success")
        receiver.wait_for(1)
        assert len(receiver.requests) == 1  # being sent: the receiver hangs
        server.stop(signal.SIGKILL)
        restarted = LiveServer(db=tmp_path / "kill.db", env=env, port=server.port).start()
        try:
            received = receiver.wait_for(2, timeout=20)
            time.sleep(0.5)
            notes = deliveries(restarted)
        finally:
            restarted.stop()
    assert len(received) == 2 and len(receiver.requests) == 2
    assert received[0].body == received[1].body  # the same message, sent again
    (note,) = notes
    assert note["status"] == "delivered" and note["event"] == "workflow.done"


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    with throwaway_pg_database() as url:
        yield url


def test_two_replicas_deliver_each_notification_once(tmp_path: Path, shared_database: str):
    with receiving(Receiver(answers=[500, 200])) as receiver:
        env = notify_env(receiver)
        servers = [
            LiveServer(db=tmp_path / f"replica{n}.db", env=env, db_url=shared_database).start()
            for n in (1, 2)
        ]
        try:
            replay([s.url for s in servers], "sm9-fail")
            receiver.wait_for(3, timeout=10)  # one refused, then both delivered
            time.sleep(3)  # time for any duplicate to arrive
            notes = deliveries(servers[0])
        finally:
            for server in servers:
                server.stop()
    # Three requests: the first one refused and sent again, the other once.
    assert len(receiver.requests) == 3
    assert sorted(set(receiver.events())) == ["job.failed", "workflow.error"]
    assert sorted(n["event"] for n in notes) == ["job.failed", "workflow.error"]
    assert {n["status"] for n in notes} == {"delivered"}
    assert sum(int(str(n["attempts"])) for n in notes) == 3
