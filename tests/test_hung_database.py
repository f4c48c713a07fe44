"""A database that hangs (does not refuse, just does not answer) costs clients a 503 in
bounded time, never a wait without end, and the server recovers when it answers again
(issue 15.4). Snakemake 7/8 post without a timeout: a hang here would freeze their runs.

Through a real server process: PostgreSQL behind a proxy that stops moving bytes
(tests/faults.py), and an SQLite file another process holds the write lock of.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import LiveServer, form_body, throwaway_pg_database
from .faults import FreezableProxy

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TIMEOUT = 2.0  # PANOPTES_DB_TIMEOUT for these servers
# What "bounded" means here: the time limit, and room for a loaded CI machine.
BOUND = 4 * TIMEOUT


def post(http: httpx.Client, workflow_id: int, msg: dict[str, Any]) -> httpx.Response:
    return http.post("/update_workflow_status", content=form_body(workflow_id, msg), headers=FORM)


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    answer = call(*args, **kwargs)
    return answer, time.monotonic() - began


def until_ok(http: httpx.Client, workflow_id: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        answer = post(http, workflow_id, {"level": "progress", "done": 1, "total": 3})
        if answer.status_code == 200:
            return
        assert time.monotonic() < deadline, f"still {answer.status_code}: {answer.text}"
        time.sleep(0.5)


def assert_unavailable(answer: httpx.Response, took: float) -> None:
    assert answer.status_code == 503, answer.text
    assert took < BOUND, f"answered after {took:.1f} s"
    body = answer.json()
    assert body.get("error") == "database unavailable" or body["database"]["ok"] is False
    assert "detail" in body or body["database"]["detail"]


@pytest.fixture
def proxied_pg() -> Iterator[tuple[str, FreezableProxy]]:
    with throwaway_pg_database() as url:
        parts = urlsplit(url)
        proxy = FreezableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        try:
            yield parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl(), proxy
        finally:
            proxy.close()


def test_a_hung_postgresql_gets_503_in_bounded_time_and_then_recovers(
    tmp_path: Path, proxied_pg: tuple[str, FreezableProxy]
) -> None:
    url, proxy = proxied_pg
    server = LiveServer(
        db=tmp_path / "pg.db", db_url=url, env={"PANOPTES_DB_TIMEOUT": str(TIMEOUT)}
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            workflow_id = http.get("/create_workflow").json()["id"]
            assert post(http, workflow_id, {"level": "job_started", "jobs": [1]}).status_code == 200
            proxy.freeze()
            # An update, several at once as several runs send them, a registration, a read.
            assert_unavailable(
                *timed(post, http, workflow_id, {"level": "job_finished", "jobid": 1})
            )
            assert_unavailable(*timed(http.get, "/create_workflow"))
            assert_unavailable(*timed(http.get, "/api/workflows"))
            answer, took = timed(http.get, "/api/service-info")
            assert_unavailable(answer, took)
            assert answer.json()["database"]["ok"] is False
            assert answer.json()["status"] == "unavailable"
            proxy.thaw()
            until_ok(http, workflow_id)
            info = http.get("/api/service-info")
            assert info.status_code == 200 and info.json()["database"]["ok"] is True
            jobs = http.get(f"/api/workflow/{workflow_id}/jobs").json()["jobs"]
            assert [job["jobid"] for job in jobs] == [1]  # what was acknowledged is there
    finally:
        proxy.thaw()
        server.stop()


def test_an_sqlite_file_locked_by_another_process_gets_503_in_bounded_time(
    tmp_path: Path,
) -> None:
    db = tmp_path / "locked.db"
    server = LiveServer(db=db, env={"PANOPTES_DB_TIMEOUT": str(TIMEOUT)}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            workflow_id = http.get("/create_workflow").json()["id"]
            holder = sqlite3.connect(db, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")  # the write lock, held
                answer, took = timed(post, http, workflow_id, {"level": "job_started", "jobs": [1]})
                assert_unavailable(answer, took)
                answer, took = timed(http.get, "/api/service-info")
                assert_unavailable(answer, took)
                assert answer.json()["database"]["ok"] is False
                # Reads do not wait for the writer (WAL): the run is still there to see.
                assert http.get(f"/api/workflow/{workflow_id}").status_code == 200
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            until_ok(http, workflow_id)
            assert http.get("/api/service-info").status_code == 200
    finally:
        server.stop()
