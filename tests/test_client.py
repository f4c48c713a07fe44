"""The terminal client (`panoptes list|show|watch`) as a user runs it: the real command against
a real server process, fed recorded Snakemake runs; `watch` followed to the run's end, also
across a server restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from .conftest import CAPTURES, LiveServer, form_body

TOKEN = "client-token-for-tests-0123456789"


def panoptes(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PANOPTES_")}
    return subprocess.run(
        [sys.executable, "-m", "panoptes", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, "NO_COLOR": "1", **(env or {})},
    )


def start_watch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PANOPTES_")}
    return subprocess.Popen(
        [sys.executable, "-m", "panoptes", "watch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**environment, "NO_COLOR": "1", **(env or {})},
    )


class Replay:
    """A recorded run, sent to a live server message by message."""

    def __init__(self, server: LiveServer, name: str, headers: dict[str, str] | None = None):
        lines = (CAPTURES / f"{name}.jsonl").read_text().splitlines()
        self.messages = [
            json.loads(line)["msg_json"]
            for line in lines
            if json.loads(line)["path"] == "/update_workflow_status"
        ]
        self.server = server
        self.headers = headers or {}
        answer = httpx.get(f"{server.url}/create_workflow", headers=self.headers, timeout=10)
        self.workflow_id = int(answer.json()["id"])

    def send(self, count: int | None = None, pause: float = 0.0) -> None:
        todo, self.messages = self.messages[:count], self.messages[len(self.messages[:count]) :]
        for msg in todo:
            answer = httpx.post(
                f"{self.server.url}/update_workflow_status",
                content=form_body(self.workflow_id, msg),
                headers={"Content-Type": "application/x-www-form-urlencoded", **self.headers},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            time.sleep(pause)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(db=tmp_path / "client.db").start()
    yield live
    live.stop()


def rules_of(server: LiveServer, workflow_id: int) -> dict[str, dict[str, Any]]:
    rules = httpx.get(f"{server.url}/api/workflow/{workflow_id}/rules").json()["rules"]
    return {rule["rule"]: rule for rule in rules if rule["rule"]}


def test_list_and_show_say_what_the_api_says(server: LiveServer) -> None:
    replay = Replay(server, "sm9-keepgoing")
    replay.send()
    workflow = httpx.get(f"{server.url}/api/workflow/{replay.workflow_id}").json()["workflow"]

    listed = panoptes("list", "--url", server.url)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "JOBS", "FAILED", "STARTED", "LAST", "EVENT", "NAME"]
    assert row.split()[:4] == [
        str(replay.workflow_id),
        "Error",
        f"{workflow['jobs_done']}/{workflow['jobs_total']}",
        str(workflow["jobs_failed"]),
    ]
    assert row.endswith(workflow["name"])
    as_json = json.loads(panoptes("list", "--json", "--url", server.url).stdout)
    assert [wf["id"] for wf in as_json] == [replay.workflow_id]
    assert panoptes("list", "--status", "Running", "--url", server.url).stdout == "no workflows\n"

    shown = panoptes("show", str(replay.workflow_id), "--url", server.url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"{workflow['name']} #{replay.workflow_id}  Error")
    for name, rule in rules_of(server, replay.workflow_id).items():
        line = next(line for line in lines if line.split()[0] == name)
        assert f"{rule['done']}/{rule['planned'] or rule['total']}" in line
        assert (f"{rule['error']} failed" in line) == bool(rule["error"])
    failed = httpx.get(
        f"{server.url}/api/workflow/{replay.workflow_id}/jobs", params={"status": "Error"}
    ).json()["jobs"]
    for job in failed:
        assert any(
            line.startswith(f"  failed {job['jobid']} {job['rule']}") and job["error_line"] in line
            for line in lines
        ), job
    summary = json.loads(
        panoptes("show", str(replay.workflow_id), "--json", "--url", server.url).stdout
    )
    assert summary["workflow"]["status"] == "Error"
    assert {job["jobid"] for job in summary["failed_jobs"]} == {job["jobid"] for job in failed}


def test_watch_follows_a_run_to_its_end(server: LiveServer) -> None:
    replay = Replay(server, "sm9-success")
    replay.send(3)
    watching = start_watch(str(replay.workflow_id), "--url", server.url)
    time.sleep(1.5)  # it connected and drew the run so far
    replay.send(pause=0.02)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err  # Done
    rules = rules_of(server, replay.workflow_id)
    final = out.split("\n\n")[-1] if "\n\n" in out else out
    for name, rule in rules.items():
        assert f"{rule['done']}/{rule['planned'] or rule['total']}" in next(
            line for line in final.splitlines()[::-1] if line.split()[0] == name
        )
    # Between the first and the last, a line per change, time-stamped.
    changes = [line for line in out.splitlines() if line[:2].isdigit() and line[2] == ":"]
    assert any("Running" in line for line in changes)
    assert len(changes) > len(rules)


def test_watch_exits_1_for_a_failed_run_and_prints_json_events(server: LiveServer) -> None:
    replay = Replay(server, "sm9-fail")
    watching = start_watch(str(replay.workflow_id), "--json", "--url", server.url)
    time.sleep(1.5)
    replay.send(pause=0.02)
    out, err = watching.communicate(timeout=30)
    assert watching.returncode == 1, err
    events = [json.loads(line) for line in out.splitlines()]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)) and seqs  # in order, none twice
    assert events[-1]["type"].startswith("workflow.")
    assert events[-1]["workflow"]["status"] == "Error"


def test_watch_resumes_after_the_server_restarts(tmp_path: Path) -> None:
    server = LiveServer(db=tmp_path / "restart.db").start()
    try:
        replay = Replay(server, "sm9-success")
        replay.send(4)
        watching = start_watch(str(replay.workflow_id), "--json", "--url", server.url)
        time.sleep(1.5)
        replay.send(6, pause=0.02)
        time.sleep(0.5)
        server.stop()  # the feed closes (1001); watch retries until the server is back
        time.sleep(1.0)
        server.start()
        replay.send(pause=0.02)
        out, err = watching.communicate(timeout=40)
        logged = asyncio.run(feed_history(server, replay.workflow_id))
    finally:
        server.stop()
    assert watching.returncode == 0, err
    assert "reconnecting" in err
    events = [json.loads(line) for line in out.splitlines()]
    seqs = [event["seq"] for event in events]
    # Nothing missed across the restart, nothing twice: from its first event on, watch saw
    # exactly the server's log of the run (read back from a `?since=0` replay).
    assert seqs and seqs == [seq for seq in logged if seq >= seqs[0]]
    assert events[-1]["workflow"]["status"] == "Done"


async def feed_history(server: LiveServer, workflow_id: int) -> list[int]:
    """Every event seq of a workflow, from a `?since=0` replay of the feed."""
    seqs: list[int] = []
    url = f"ws://127.0.0.1:{server.port}/ws/workflow/{workflow_id}?since=0"
    async with connect(url) as socket:
        while True:
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), 1.0))
            except TimeoutError:
                return seqs
            if "seq" in message:
                seqs.append(message["seq"])


def test_the_client_says_why_it_cannot_answer(server: LiveServer, tmp_path: Path) -> None:
    unknown = panoptes("show", "999", "--url", server.url)
    assert unknown.returncode == 2 and "no workflow with id 999" in unknown.stderr
    assert "404" in panoptes("watch", "999", "--url", server.url).stderr
    down = panoptes("list", "--url", "http://127.0.0.1:1")
    assert down.returncode == 2 and "cannot reach http://127.0.0.1:1" in down.stderr
    wrong = panoptes("list", "--url", "ftp://example")
    assert wrong.returncode == 2 and "http://" in wrong.stderr
    # PANOPTES_URL when there is no --url.
    by_env = panoptes("list", "--json", env={"PANOPTES_URL": server.url})
    assert by_env.returncode == 0 and json.loads(by_env.stdout) == []


def test_the_token_comes_from_panoptes_token(tmp_path: Path) -> None:
    locked = LiveServer(
        db=tmp_path / "locked.db", env={"PANOPTES_TOKEN": TOKEN, "PANOPTES_PUBLIC_READ": "0"}
    ).start()
    try:
        replay = Replay(locked, "sm9-success", headers={"Authorization": f"Bearer {TOKEN}"})
        without = panoptes("list", "--url", locked.url)
        assert without.returncode == 2 and "401" in without.stderr
        assert TOKEN not in without.stderr
        with_token = panoptes("list", "--json", "--url", locked.url, env={"PANOPTES_TOKEN": TOKEN})
        assert with_token.returncode == 0, with_token.stderr
        assert [wf["id"] for wf in json.loads(with_token.stdout)] == [replay.workflow_id]
        # The feed takes it too: watch follows the locked server's run to its end.
        watching = start_watch(
            str(replay.workflow_id), "--url", locked.url, env={"PANOPTES_TOKEN": TOKEN}
        )
        time.sleep(1.0)
        threading.Thread(target=replay.send, kwargs={"pause": 0.01}).start()
        _, err = watching.communicate(timeout=30)
        assert watching.returncode == 0, err
    finally:
        locked.stop()


def test_on_a_terminal_watch_redraws_its_block_in_place(server: LiveServer) -> None:
    replay = Replay(server, "sm9-success")
    replay.send(3)
    leader, follower = os.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PANOPTES_")}
    environment.pop("NO_COLOR", None)
    watching = subprocess.Popen(
        [sys.executable, "-m", "panoptes", "watch", str(replay.workflow_id), "--url", server.url],
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    os.close(follower)
    screen = bytearray()

    def read_terminal() -> None:  # as a terminal would, so that its writes never block
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    time.sleep(1.5)
    replay.send(pause=0.02)
    _, err = watching.communicate(timeout=30)
    assert watching.returncode == 0, err
    reader.join(timeout=10)
    os.close(leader)
    text = bytes(screen).decode()
    assert "\x1b[J" in text  # the block was rubbed out and drawn again, not appended
    assert "\x1b[32mDone\x1b[0m" in text  # and coloured: a terminal, NO_COLOR unset
    last = text.rsplit("\x1b[J", 1)[1]
    rules = rules_of(server, replay.workflow_id)
    assert all(name in last for name in rules)
