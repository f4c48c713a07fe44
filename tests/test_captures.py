"""Replay real recorded Snakemake traffic through the app and check what it stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from .conftest import CAPTURES, send_recorded

RULE_COUNTS = {"make": 3, "process": 3, "merge": 1, "all": 1}


async def replay(client: Client, name: str) -> int:
    """Send every recorded request as it was; return the workflow id panoptes handed out."""
    workflow_id = None
    for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines():
        request = json.loads(line)
        response = await send_recorded(client, request)
        if request["path"] == "/create_workflow":
            workflow_id = (await response.get_json())["id"]
    # The recordings were made against a server that handed out id 1, and their bodies say so.
    assert workflow_id == 1
    return workflow_id


async def state(client: Client, workflow_id: int) -> tuple[dict[str, Any], dict]:
    workflow = (await (await client.get(f"/api/workflow/{workflow_id}")).get_json())["workflow"]
    jobs = (await (await client.get(f"/api/workflow/{workflow_id}/jobs")).get_json())["jobs"]
    return workflow, {job["jobid"]: job for job in jobs}


def rule_counts(jobs: dict[int, dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs.values():
        counts[job["rule"]] = counts.get(job["rule"], 0) + 1
    return counts


@pytest.mark.parametrize(
    "name", ["sm9-success", "sm9-printshellcmds", "sm8-success", "sm7-success", "sm731-success"]
)
async def test_successful_runs_end_done_with_every_job(client: Client, name: str):
    workflow_id = await replay(client, name)
    workflow, jobs = await state(client, workflow_id)
    assert workflow["status"] == "Done"
    assert (workflow["jobs_done"], workflow["jobs_total"]) == (8, 8)
    assert workflow["finished_at"] is not None
    assert workflow["error"] is None
    # Snakemake 8 sends every message twice: still exactly one job per jobid, one attempt.
    assert sorted(jobs) == list(range(8))
    assert rule_counts(jobs) == RULE_COUNTS
    for job in jobs.values():
        assert job["status"] == "Done"
        assert job["attempt"] == 1 and len(job["attempts"]) == 1
        assert job["started_at"] <= job["finished_at"]
    for job in jobs.values():
        if job["rule"] in ("make", "process"):
            sample = job["wildcards"]["sample"]
            assert sample in "abc"
            # The command belongs to this job (legacy clients send it without a jobid).
            assert f" {sample} " in job["shell_command"] or f"{sample}.txt" in job["shell_command"]
        if job["rule"] == "process":
            assert job["threads"] == 2
            assert job["input"] == [f"data/{sample}.txt"]
            assert job["output"] == [f"proc/{sample}.txt"]
            assert job["log"] == [f"logs/process_{sample}.log"]
    assert jobs[0]["shell_command"] is None  # rule all has no shell command
    assert jobs[5]["message"] in (None, "making sample b") or jobs[5]["rule"] != "make"


async def test_snakemake9_resources_are_named(client: Client):
    _, jobs = await state(client, await replay(client, "sm9-success"))
    process = next(job for job in jobs.values() if job["rule"] == "process")
    assert process["resources"]["mem_mb"] == 100
    assert process["reason"].startswith("Missing output files")
    make = next(job for job in jobs.values() if job["rule"] == "make")
    assert make["message"] == f"making sample {make['wildcards']['sample']}"


@pytest.mark.parametrize("name", ["sm9-fail", "sm8-fail"])
async def test_failed_runs_end_error_with_the_message(client: Client, name: str):
    workflow_id = await replay(client, name)
    workflow, jobs = await state(client, workflow_id)
    assert workflow["status"] == "Error"
    assert workflow["finished_at"] is not None
    # The run's error is the run's end; the job's is on the job.
    assert "WorkflowError" in workflow["error"]
    assert "RuleException" not in workflow["error"]
    assert workflow["jobs_failed"] == 1
    failed = [job for job in jobs.values() if job["status"] == "Error"]
    assert [job["jobid"] for job in failed] == [4]
    assert failed[0]["rule"] == "process"
    assert failed[0]["wildcards"] == {"sample": "b"}
    assert "RuleException" in failed[0]["error"]
    assert failed[0]["attempts"][-1]["error"] == failed[0]["error"]
    # Jobs that finished before the failure are Done; those never started do not exist.
    done = sorted(job["jobid"] for job in jobs.values() if job["status"] == "Done")
    assert done == sorted(set(jobs) - {4})
    assert workflow["jobs_done"] == len(done)
    assert workflow["jobs_total"] == 8
    rules = (await (await client.get(f"/api/workflow/{workflow_id}/rules")).get_json())["rules"]
    process = next(rule for rule in rules if rule["rule"] == "process")
    assert process["error"] == 1
    listed = await (await client.get(f"/api/workflow/{workflow_id}/jobs?status=Error")).get_json()
    assert [job["jobid"] for job in listed["jobs"]] == [4]


async def test_snakemake8_detail_of_the_failure_is_kept(client: Client):
    workflow, jobs = await state(client, await replay(client, "sm8-fail"))
    assert "CalledProcessError" in jobs[4]["error"] and "line 23" in jobs[4]["error"]
    assert "Exiting because a job execution failed" in workflow["error"]
    assert "exit 1" in jobs[4]["error"] or "non-zero exit status 1" in jobs[4]["error"]
