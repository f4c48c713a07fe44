"""An SQLite file deleted or replaced under the running server (issue 15.7): ingest answers
503 and says why, instead of 200 for events that a restart would find gone, and
service-info reports it. Through a real server process."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from .conftest import LiveServer, form_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post(http: httpx.Client, workflow_id: int, jobid: int) -> httpx.Response:
    body = form_body(workflow_id, {"level": "job_started", "jobs": [jobid]})
    return http.post("/update_workflow_status", content=body, headers=FORM)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_gone_from_under_the_server_gets_503(tmp_path: Path, how: str) -> None:
    db = tmp_path / "gone.db"
    server = LiveServer(db=db).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            workflow_id = http.get("/create_workflow").json()["id"]
            assert post(http, workflow_id, 1).status_code == 200
            if how == "replaced":  # a copy put in its place: another inode
                shutil.copy(db, tmp_path / "copy.db")
            for path in tmp_path.glob("gone.db*"):
                if path.suffix != ".log":
                    path.unlink()
            if how == "replaced":
                (tmp_path / "copy.db").rename(db)
            answer = post(http, workflow_id, 2)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "database unavailable"
            assert f"was {how} while the server ran" in answer.json()["detail"]
            assert http.get("/create_workflow").status_code == 503
            info = http.get("/api/service-info")
            assert info.status_code == 503
            assert info.json()["database"]["ok"] is False
            assert how in info.json()["database"]["detail"]
    finally:
        server.stop()
