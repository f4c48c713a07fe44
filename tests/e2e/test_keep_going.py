"""--keep-going with --retries, with real Snakemake 9 (plugin 0.3.0) and 8.30 against a live
server: while the run goes on after a job failed for good, the API and the workflow page say
Running with one failed job; at the end Error, with Snakemake's own duration.

The workflow is tests/captures/Snakefile.keepgoing: six samples; align of S2 always fails,
align of S4 fails once and succeeds on its retry, the other samples go on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import CAPTURES, LiveServer
from .conftest import SCRUBBED_ENV, Api

pytestmark = pytest.mark.e2e

FAILED_TAG = re.compile(r'<span class="tag failed" data-field="jobs_failed">(\d+) failed</span>')


def start_snakemake(binary: Path, workdir: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SCRUBBED_ENV and not key.startswith("SNAKEMAKE_")
    }
    command = [str(binary), "--cores", "2", "--keep-going", "--retries", "1", *args]
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def watch(api: Api, server: LiveServer, process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """What the API and the page said, polled until Snakemake exits (at most 90 s)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90
    while process.poll() is None and time.monotonic() < deadline:
        workflows = api.workflows()
        if workflows:
            wf = workflows[0]
            page = httpx.get(f"{server.url}/workflow/{wf['id']}", timeout=10).text
            tag = FAILED_TAG.search(page)
            seen.append({**wf, "page_failed": int(tag.group(1)) if tag else None})
        time.sleep(0.1)
    return seen


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@pytest.mark.parametrize("client", ["sm9", "sm8"])
def test_keep_going_run_is_running_with_a_failure_then_error_at_its_end(
    client: str,
    sm9_bin: Path,
    sm8_bin: Path,
    tmp_path: Path,
    live_server: LiveServer,
    panoptes_api: Api,
) -> None:
    workdir = tmp_path / "cohort"
    workdir.mkdir()
    shutil.copy(CAPTURES / "Snakefile.keepgoing", workdir / "Snakefile")
    if client == "sm9":
        reporting = ("--logger", "panoptes", "--logger-panoptes-address", live_server.url)
        process = start_snakemake(sm9_bin, workdir, *reporting)
    else:
        process = start_snakemake(sm8_bin, workdir, "--wms-monitor", live_server.url)
    started = time.monotonic()
    seen = watch(panoptes_api, live_server, process)
    stdout, stderr = process.communicate(timeout=30)
    wall = time.monotonic() - started
    assert process.returncode == 1, stdout + stderr  # S2 failed for good

    # While it went on after S2 failed, it said so: Running, one failed, on the page too.
    going = [wf for wf in seen if wf["status"] == "Running" and wf["jobs_failed"] == 1]
    assert going, [(wf["status"], wf["jobs_failed"]) for wf in seen]
    assert any(wf["page_failed"] == 1 for wf in going), "the page said '1 failed'"
    assert "Error" not in {wf["status"] for wf in seen[: seen.index(going[0])]}

    wf = panoptes_api.only_workflow()
    assert (wf["status"], wf["jobs_failed"]) == ("Error", 1), wf
    # Its duration is Snakemake's own, within a few seconds (start-up before registering,
    # the last messages after the end).
    duration = seconds(wf["started_at"], wf["finished_at"])
    assert 0 < duration <= wall and wall - duration < 5, (duration, wall)
    jobs = {
        (job["rule"], job["wildcards"].get("sample")): job for job in panoptes_api.jobs(wf["id"])
    }
    assert jobs["align", "S2"]["status"] == "Error"
    assert [a["status"] for a in jobs["align", "S4"]["attempts"]] == ["Error", "Done"]
    failed = panoptes_api.get(f"/api/workflow/{wf['id']}/jobs", status="Error")["jobs"]
    assert [(job["rule"], job["wildcards"]) for job in failed] == [("align", {"sample": "S2"})]
    # Jobs of the other samples went on after S2 failed.
    s2_failed = jobs["align", "S2"]["finished_at"]
    assert any(job["finished_at"] > s2_failed for job in jobs.values() if job["status"] == "Done")
    if client == "sm8":  # 7/8 send the plan: totals per rule before their jobs run
        rules = {rule["rule"]: rule for rule in panoptes_api.rules(wf["id"])}
        planned = {name: rule["planned"] for name, rule in rules.items()}
        assert planned == {"align": 6, "all": 1, "count": 6, "make": 6, "merge": 1}
        assert wf["jobs_total"] == 20 and wf["name"] == "cohort"
