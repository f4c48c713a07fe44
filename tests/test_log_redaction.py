"""The token never reaches a log (issue 15.6): not from the Snakemake 9 plugin's /t/<token>/
paths, a Bearer header or the cookie, in the access log or the server's own log, whether
`panoptes --access-log` or Hypercorn with README's settings serves the app."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import LiveServer, form_body, free_port

TOKEN = "redact-me-0123456789abcdef"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def traffic(url: str) -> None:
    """What the clients send, each way of giving the token, and a wrong token too."""
    with httpx.Client(base_url=url, timeout=30) as http:
        plugin = f"/t/{TOKEN}"
        workflow_id = http.get(f"{plugin}/create_workflow").json()["id"]
        body = form_body(workflow_id, {"level": "progress", "done": 0, "total": 1})
        answer = http.post(f"{plugin}/update_workflow_status", content=body, headers=FORM)
        assert answer.status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http.post(f"/api/workflow/{workflow_id}/cancel", headers=bearer).status_code == 200
        assert http.get(f"/t/{TOKEN}/workflow/{workflow_id}").status_code == 303  # the cookie
        cookie = {"Cookie": f"panoptes_token={TOKEN}", "X-Requested-With": "panoptes"}
        assert http.get("/api/workflows", headers=cookie).status_code == 200
        assert http.get("/t/not-the-token-but-secret-too/api/workflows").status_code in (200, 401)


def assert_redacted(*logs: Path) -> None:
    text = "\n".join(log.read_text() for log in logs)
    assert "/t/<token>/update_workflow_status" in text, text[-2000:]
    assert TOKEN not in text
    assert "not-the-token-but-secret-too" not in text


def test_panoptes_access_log_has_no_token(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    server = LiveServer(
        db=tmp_path / "redact.db",
        env={"PANOPTES_TOKEN": TOKEN, "PANOPTES_PUBLIC_READ": "0"},
        args=["--access-log", str(access)],
    ).start()
    try:
        traffic(server.url)
    finally:
        server.stop()
    assert server.log_path is not None
    assert_redacted(access, server.log_path)


def test_hypercorn_with_the_readme_settings_logs_no_token(tmp_path: Path) -> None:
    port = free_port()
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    env = {
        **os.environ,
        "PANOPTES_TOKEN": TOKEN,
        "PANOPTES_PUBLIC_READ": "0",
        "PANOPTES_DB_URL": str(tmp_path / "hypercorn.db"),
    }
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        "python:panoptes.serving.HypercornSettings",
    ]
    command += ["--bind", f"127.0.0.1:{port}", "--access-logfile", str(access)]
    command += ["--error-logfile", str(errors), "panoptes.app:create_app()"]
    with (tmp_path / "out.log").open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/service-info", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "out.log"
            ).read_text()
            time.sleep(0.1)
        traffic(url)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert_redacted(access, errors, tmp_path / "out.log")
