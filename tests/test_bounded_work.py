"""One message cannot stall everyone else's: the work a message may cause is bounded, and a
large one is stored in turns, with other clients' messages stored in between (issue 15.3).

All through a real server process; benchmarks/bigmessage.py measures the latencies.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from panoptes.ingest.wire import JOBS_PER_TURN, MAX_JOBS_PER_MESSAGE, MAX_PLANNED_RULES

from .conftest import LiveServer, form_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(db=tmp_path / "bounded.db").start()
    yield live
    live.stop()


def register(http: httpx.Client) -> int:
    return int(http.get("/create_workflow").json()["id"])


def post(http: httpx.Client, workflow_id: int, msg: dict[str, Any]) -> httpx.Response:
    return http.post("/update_workflow_status", content=form_body(workflow_id, msg), headers=FORM)


def job_event_seqs(db: Path, workflow_id: int) -> list[int]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT seq FROM events WHERE workflow_id = ? AND type = 'job.updated' ORDER BY seq",
            (workflow_id,),
        )
        return [seq for (seq,) in rows]


def test_a_job_started_listing_too_many_jobs_gets_413_and_changes_nothing(
    server: LiveServer,
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        workflow_id = register(http)
        answer = post(
            http,
            workflow_id,
            {"level": "job_started", "jobs": list(range(MAX_JOBS_PER_MESSAGE + 1))},
        )
        assert answer.status_code == 413
        assert answer.json()["error"] == "message too large"
        assert f"{MAX_JOBS_PER_MESSAGE:,}" in answer.json()["detail"]
        assert http.get(f"/api/workflow/{workflow_id}/jobs").json()["jobs"] == []
        # The limit itself is taken.
        answer = post(
            http, workflow_id, {"level": "job_started", "jobs": list(range(MAX_JOBS_PER_MESSAGE))}
        )
        assert answer.status_code == 200, answer.text
        listed = http.get(f"/api/workflow/{workflow_id}/jobs", params={"limit": 1}).json()
        assert listed["count"] == MAX_JOBS_PER_MESSAGE


def test_other_clients_messages_are_stored_between_the_turns_of_a_large_one(
    server: LiveServer,
) -> None:
    """Without turns, the large message's jobs are written in one transaction: their events
    are numbered one after another, with no other workflow's in between."""
    jobs = 8 * JOBS_PER_TURN
    with httpx.Client(base_url=server.url, timeout=60) as http:
        big, small = register(http), register(http)
        done = threading.Event()
        answers: list[int] = []

        def small_posts() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                job = 0
                while not done.is_set():
                    answers.append(
                        post(client, small, {"level": "job_started", "jobs": [job]}).status_code
                    )
                    job += 1

        poster = threading.Thread(target=small_posts)
        poster.start()
        try:
            answer = post(http, big, {"level": "job_started", "jobs": list(range(jobs))})
        finally:
            done.set()
            poster.join()
        assert answer.status_code == 200, answer.text
        assert answers and set(answers) == {200}
        listed = http.get(f"/api/workflow/{big}/jobs", params={"status": "Running", "limit": 1})
        assert listed.json()["count"] == jobs  # every share was stored
    big_seqs = job_event_seqs(server.db, big)
    assert len(big_seqs) == jobs
    between = [seq for seq in job_event_seqs(server.db, small) if big_seqs[0] < seq < big_seqs[-1]]
    assert between, "no other message was stored while the large one was"


def test_a_plan_too_long_to_plan_by_is_kept_as_the_total_only(server: LiveServer) -> None:
    """Snakemake 7/8 abort the run on a refusal: the message is taken, its rules are not."""
    rules = MAX_PLANNED_RULES + 1
    table = "Job stats:\njob count\n------- -----\n"
    table += "".join(f"rule{n} 2\n" for n in range(rules)) + f"total {2 * rules}\n"
    with httpx.Client(base_url=server.url, timeout=60) as http:
        workflow_id = register(http)
        msg = {"level": "run_info", "msg": table, "timestamp": 1.0}
        answer = http.post(
            "/update_workflow_status",
            content=json.dumps({"msg": json.dumps(msg), "id": workflow_id}),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        workflow = http.get(f"/api/workflow/{workflow_id}").json()["workflow"]
        assert workflow["jobs_total"] == 2 * rules
        assert http.get(f"/api/workflow/{workflow_id}/rules").json()["rules"] == []
