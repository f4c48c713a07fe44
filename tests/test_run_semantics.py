"""What a run says while it goes, replayed from real recordings one request at a time:
--keep-going with a failing and a flaky job (Snakemake 9 and 8), an interrupted 7/8 run, two
8.x runs of the same name at once, --wms-monitor-arg id=N, plugin 0.1.1's dry run.

The recordings are in tests/captures (NEW-CAPTURES.md says how each was made). In the
keep-going workflow (Snakefile.keepgoing) align of S2 (job 6) always fails, align of S4
(job 12) fails once and then succeeds on its retry, and the other samples go on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Any
from urllib.parse import parse_qs

import pytest
from quart.typing import TestClientProtocol as Client

from .conftest import CAPTURES, send_recorded

FAILING, FLAKY = 6, 12
PLAN = {"align": 6, "all": 1, "count": 6, "make": 6, "merge": 1}


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines()]


def message_of(request: dict[str, Any]) -> dict[str, Any] | None:
    """The client message an /update_workflow_status request carries."""
    if request["path"] != "/update_workflow_status":
        return None
    body = request["body"]
    if body.lstrip().startswith("{"):
        fields = json.loads(body)
    else:
        fields = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    message: dict[str, Any] = json.loads(fields["msg"])
    return message


async def replayed(client: Client, name: str) -> AsyncIterator[dict[str, Any]]:
    """Send the recorded requests one by one, each answered 2xx; yields each request after
    it was answered."""
    for request in recorded(name):
        await send_recorded(client, request)
        yield request


async def get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, path
    return await response.get_json()


async def state(client: Client, workflow_id: int = 1) -> tuple[dict[str, Any], dict[int, Any]]:
    workflow = (await get(client, f"/api/workflow/{workflow_id}"))["workflow"]
    listed = await get(client, f"/api/workflow/{workflow_id}/jobs?limit=1000")
    return workflow, {job["jobid"]: job for job in listed["jobs"]}


def ends_the_run(message: dict[str, Any] | None) -> bool:
    """The message with which the client says the run failed (9: WorkflowError; 7/8 first
    'Exiting because a job execution failed')."""
    if message is None or message.get("level") != "error":
        return False
    return str(message.get("msg")).startswith(("WorkflowError", "Exiting because"))


@pytest.mark.parametrize("name", ["sm9-keepgoing", "sm8-keepgoing"])
async def test_keep_going_runs_stay_running_with_failures_until_their_end(
    client: Client, name: str
) -> None:
    ended_at: str | None = None
    saw_failure_while_running = False
    async for request in replayed(client, name):
        if request["path"] != "/update_workflow_status":
            continue
        message = message_of(request)
        workflow, jobs = await state(client)
        failed = sorted(j for j, job in jobs.items() if job["status"] == "Error")
        # After every message: the count of failed jobs is the jobs whose latest attempt
        # failed, and the run is Running until it says it failed.
        assert workflow["jobs_failed"] == len(failed), request["seq"]
        if ended_at is None and ends_the_run(message):
            ended_at = workflow["finished_at"]
        if ended_at is None:
            assert (workflow["status"], workflow["finished_at"]) == ("Running", None)
            if failed:
                saw_failure_while_running = True
        else:
            # It ended at that message: later messages (7/8's Complete log, the second
            # error) change neither its status nor its finish.
            assert (workflow["status"], workflow["finished_at"]) == ("Error", ended_at)
        if FLAKY in jobs and jobs[FLAKY]["attempt"] == 2:
            assert FLAKY not in failed, "a retried job is not failed while it runs again"
    assert ended_at is not None and saw_failure_while_running
    workflow, jobs = await state(client)
    assert workflow["jobs_failed"] == 1
    listed = await get(client, "/api/workflow/1/jobs?status=Error")
    assert [job["jobid"] for job in listed["jobs"]] == [FAILING]
    assert [a["status"] for a in jobs[FLAKY]["attempts"]] == ["Error", "Done"]
    assert jobs[FLAKY]["status"] == "Done" and jobs[FLAKY]["wildcards"] == {"sample": "S4"}
    assert [a["status"] for a in jobs[FAILING]["attempts"]] == ["Error", "Error"]
    assert "RuleException" in jobs[FAILING]["error"]
    assert "RuleException" not in workflow["error"]
    # Jobs that finished after the first failure (the run went on) are Done.
    first_failure = min(a["finished_at"] for a in jobs[FAILING]["attempts"])
    later = [job for job in jobs.values() if job["finished_at"] and job["status"] == "Done"]
    assert any(job["finished_at"] > first_failure for job in later)
    assert all(job["finished_at"] <= workflow["finished_at"] for job in later)


async def test_snakemake_8s_plan_gives_every_rule_its_total_before_its_jobs_come(
    client: Client,
) -> None:
    plan_seen = False
    async for request in replayed(client, "sm8-keepgoing"):
        message = message_of(request)
        if message is None or plan_seen:
            continue
        if message.get("level") == "run_info":
            plan_seen = True
            workflow, jobs = await state(client)
            assert jobs == {} and workflow["jobs_total"] == 20
            rules = (await get(client, "/api/workflow/1/rules"))["rules"]
            assert {rule["rule"]: rule["planned"] for rule in rules} == PLAN
            assert all(rule["total"] == 0 for rule in rules)
    assert plan_seen
    rules = (await get(client, "/api/workflow/1/rules"))["rules"]
    # Pipeline order: the rules in the order their first jobs came (make first, all last).
    assert next(rule["rule"] for rule in rules) == "make"
    assert {rule["rule"]: rule["planned"] for rule in rules} == PLAN
    align = next(rule for rule in rules if rule["rule"] == "align")
    assert (align["done"], align["error"]) == (5, 1)


async def test_a_snakemake_8_run_is_named_after_its_directory(client: Client) -> None:
    workdir = None
    async for request in replayed(client, "sm8-keepgoing"):
        if request["path"] == "/create_workflow":
            workdir = request["form"]["workdir"]
    workflow, _ = await state(client)
    assert workdir is not None and workflow["name"] == PurePath(workdir).name
    assert workflow["workdir"] == workdir


@pytest.mark.parametrize("name", ["sm8-interrupted", "sm8-interrupted-midjob"])
async def test_an_interrupted_run_ends_error_at_the_interruption_with_its_plan(
    client: Client, name: str
) -> None:
    ended_at = None
    async for request in replayed(client, name):
        message = message_of(request)
        workflow, _ = await state(client) if request["path"] != "/api/service-info" else ({}, {})
        if message and str(message.get("msg")).startswith("Terminating processes"):
            assert workflow["status"] == "Error" and "interrupted" in workflow["error"]
            ended_at = ended_at or workflow["finished_at"]
        elif ended_at is not None:
            assert (workflow["status"], workflow["finished_at"]) == ("Error", ended_at)
    workflow, jobs = await state(client)
    assert ended_at is not None
    assert workflow["jobs_total"] == 20  # the plan, not the three jobs that ran
    assert not [job for job in jobs.values() if job["status"] == "Running"] or name.endswith(
        "midjob"
    )


async def test_two_8x_runs_of_one_name_at_once_both_go_on(client: Client) -> None:
    async for _ in replayed(client, "sm8-name-collision"):
        pass  # every request, the second run's PUT {"name": "nightly"} included, was 2xx
    first, first_jobs = await state(client, 1)
    second, second_jobs = await state(client, 2)
    assert (first["name"], first["status"]) == ("nightly", "Done")
    assert second["name"].startswith("nightly-") and second["status"] == "Done"
    assert len(first_jobs) == len(second_jobs) == 20


async def test_wms_monitor_arg_id_reports_into_the_finished_workflow(client: Client) -> None:
    registered = []
    async for request in replayed(client, "sm8-reuse-id"):
        if request["path"] == "/create_workflow":
            registered.append(request["query"])
    assert registered == [{}, {"id": "1"}]
    listed = await get(client, "/api/workflows")
    assert listed["count"] == 1
    workflow, jobs = await state(client)
    assert workflow["status"] == "Done" and len(jobs) == 8
    assert {(job["status"], job["attempt"]) for job in jobs.values()} == {("Done", 1)}


async def test_plugin_0_1_1_dry_run_plans_jobs_that_wait(client: Client) -> None:
    async for _ in replayed(client, "sm9-plugin011-dryrun"):
        pass
    workflow, jobs = await state(client)
    assert len(jobs) == 20 and workflow["jobs_total"] == 20
    assert {(job["status"], job["started_at"]) for job in jobs.values()} == {("Waiting", None)}
    assert workflow["status"] == "Running" and workflow["jobs_failed"] == 0
