"""The REST API and the client endpoints' error paths, through the Quart test client."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import func, select

from panoptes import __version__
from panoptes.config import Config
from panoptes.models import Event, Job, Workflow
from panoptes.routes import pages, wms
from panoptes.service import Service

from .conftest import create_workflow, form_body, post_event

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
UTC_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?\+00:00$")
WORKFLOW_TIMES = ("started_at", "updated_at", "finished_at", "completed_at")
JOB_TIMES = ("started_at", "finished_at", "completed_at")


# --------------------------------------------------------------------------- helpers


async def fetch(client: Client, path: str, status: int = 200, **kwargs: Any) -> Any:
    response = await client.get(path, **kwargs)
    text = await response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.content_type == "application/json", response.content_type
    return json.loads(text)


async def call(
    client: Client, method: str, path: str, status: int, body: Any = None, **kwargs: Any
) -> Any:
    """Send a request and check its status; returns the decoded JSON body (or None)."""
    if body is not None:
        kwargs.setdefault("data", json.dumps(body))
        kwargs.setdefault("headers", JSON)
    response = await client.open(path, method=method, **kwargs)
    text = await response.get_data(as_text=True)
    assert response.status_code == status, (method, path, response.status_code, text)
    return json.loads(text) if text else None


async def send(client: Client, workflow_id: int, msg: dict[str, Any]) -> None:
    response = await post_event(client, workflow_id, msg)
    assert response.status_code == 200, await response.get_data(as_text=True)


async def snapshot(client: Client, workflow_id: int) -> tuple[dict[str, Any], list[Any]]:
    workflow = (await fetch(client, f"/api/workflow/{workflow_id}"))["workflow"]
    # The estimate of the time left moves with the clock, and only reads carry it (test_eta).
    workflow.pop("eta_seconds")
    jobs = (await fetch(client, f"/api/workflow/{workflow_id}/jobs"))["jobs"]
    return workflow, jobs


def assert_error(body: dict[str, Any], error: str | None = None, *words: str) -> None:
    """The JSON error shape every 4xx uses: {"error": ..., "detail": ...}."""
    assert isinstance(body, dict) and set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    for word in words:
        assert word in body["detail"], (word, body)


def assert_utc(value: Any) -> None:
    assert isinstance(value, str) and UTC_ISO.match(value), value


def service(app: Quart) -> Service:
    panoptes: Service = app.extensions["panoptes"]
    return panoptes


async def count_rows(app: Quart, model: type[Any], *where: Any) -> int:
    async with service(app).sessions() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


MAKE_A = {
    "level": "job_info",
    "jobid": 1,
    "name": "make",
    "msg": "making sample a",
    "input": ["raw/a.txt", "ref.fa"],
    "output": ["data/a.txt"],
    "log": ["logs/make_a.log"],
    "wildcards": {"sample": "a"},
    "is_checkpoint": False,
    "shellcmd": "cp raw/a.txt data/a.txt",
    "threads": 2,
    "priority": 3,
    "reason": "Missing output files: data/a.txt",
    "resources": {"tmpdir": "/tmp", "mem_mb": 100, "runtime": 1},
}


async def sample_run(client: Client, name: str = "sample-run") -> int:
    """A Snakemake 9 run caught midway: make(a) done, make(b) and merge running, process failed."""
    workflow_id: int = (await create_workflow(client, workflow_id=name))["id"]
    await send(client, workflow_id, {"level": "progress", "done": 0, "total": 5})
    await send(client, workflow_id, {"level": "job_started", "jobs": [1, 2, 3]})
    await send(client, workflow_id, MAKE_A)
    await send(
        client,
        workflow_id,
        {**MAKE_A, "jobid": 2, "msg": "making sample b", "wildcards": {"sample": "b"}},
    )
    await send(
        client,
        workflow_id,
        {"level": "job_info", "jobid": 3, "name": "process", "wildcards": {"sample": "a"}},
    )
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    await send(client, workflow_id, {"level": "progress", "done": 1, "total": 5})
    await send(client, workflow_id, {"level": "error", "msg": "RuleException"})
    await send(client, workflow_id, {"level": "job_error", "jobid": 3, "name": "process"})
    await send(client, workflow_id, {"level": "job_started", "jobs": [4]})
    await send(client, workflow_id, {"level": "job_info", "jobid": 4, "name": "merge"})
    return workflow_id


async def finished_run(client: Client, name: str | None = None) -> int:
    query = {"workflow_id": name} if name else {}
    workflow_id: int = (await create_workflow(client, **query))["id"]
    await send(client, workflow_id, {"level": "job_info", "jobid": 0, "name": "all"})
    await send(client, workflow_id, {"level": "job_finished", "jobid": 0})
    await send(client, workflow_id, {"level": "workflow_success"})
    return workflow_id


# --------------------------------------------------------------------------- service-info


async def test_service_info_says_running_with_the_version(client: Client):
    body = await fetch(client, "/api/service-info")
    # Snakemake 7/8 refuse to start unless status is exactly "running".
    assert body["status"] == "running"
    assert body["version"] == __version__


# --------------------------------------------------------------------------- list workflows


async def test_list_workflows_empty(client: Client):
    body = await fetch(client, "/api/workflows")
    assert body["workflows"] == []
    assert body["count"] == 0
    assert body["next_cursor"] is None


async def test_list_workflows_newest_first_with_full_objects(client: Client):
    ids = [(await create_workflow(client, workflow_id=f"run-{i}"))["id"] for i in range(4)]
    assert ids == sorted(ids) and len(set(ids)) == 4
    body = await fetch(client, "/api/workflows")
    assert [wf["id"] for wf in body["workflows"]] == ids[::-1]
    assert [wf["name"] for wf in body["workflows"]] == [f"run-{i}" for i in (3, 2, 1, 0)]
    assert body["count"] == 4
    for wf in body["workflows"]:
        assert wf["status"] == "Running"
        assert (wf["jobs_done"], wf["jobs_total"]) == (0, 0)
        assert_utc(wf["started_at"])
        assert_utc(wf["updated_at"])
        assert wf["finished_at"] is None and wf["completed_at"] is None
        assert wf["error"] is None
    # The same order every time (no ties left to the database).
    again = await fetch(client, "/api/workflows")
    assert again["workflows"] == body["workflows"]


async def test_list_workflows_filters_by_status(client: Client):
    done = await finished_run(client, "finished")
    running = (await create_workflow(client, workflow_id="live"))["id"]
    cancelled = (await create_workflow(client, workflow_id="stopped"))["id"]
    await call(client, "POST", f"/api/workflow/{cancelled}/cancel", 200)

    async def ids(query: str) -> list[int]:
        body = await fetch(client, f"/api/workflows?{query}")
        assert body["count"] == len(body["workflows"])
        return [wf["id"] for wf in body["workflows"]]

    assert await ids("status=Running") == [running]
    assert await ids("status=done") == [done]  # case does not matter
    assert await ids("status=Cancelled,Done") == [cancelled, done]
    assert await ids("status=Cancelled&status=Running") == [cancelled, running]
    assert await ids("status=Error") == []
    assert await ids("status=") == [cancelled, running, done]


async def test_list_workflows_refuses_an_unknown_status(client: Client):
    await create_workflow(client)
    body = await fetch(client, "/api/workflows?status=Running,Finished", status=400)
    assert_error(body, "bad request", "Finished", "Running")


async def test_list_workflows_searches_names(client: Client):
    await create_workflow(client, workflow_id="RNA-seq batch 1")
    rna2 = (await create_workflow(client, workflow_id="rna-seq batch 2"))["id"]
    underscore = (await create_workflow(client, workflow_id="chip_seq"))["id"]
    await create_workflow(client, workflow_id="chipXseq")
    body = await fetch(client, "/api/workflows?q=rna-SEQ")
    assert [wf["name"] for wf in body["workflows"]] == ["rna-seq batch 2", "RNA-seq batch 1"]
    assert body["count"] == 2
    # ?name= is an alias, and "_" / "%" are literal characters, not wildcards.
    body = await fetch(client, "/api/workflows?name=batch%202")
    assert [wf["id"] for wf in body["workflows"]] == [rna2]
    body = await fetch(client, "/api/workflows?q=chip_seq")
    assert [wf["id"] for wf in body["workflows"]] == [underscore]
    assert (await fetch(client, "/api/workflows?q=%25"))["count"] == 0
    # Search and status filter combine.
    assert (await fetch(client, "/api/workflows?q=seq&status=Running"))["count"] == 4
    body = await fetch(client, "/api/workflows?q=seq&status=Done")
    assert (body["workflows"], body["count"]) == ([], 0)


async def test_list_workflows_limit_and_offset(client: Client):
    ids = [(await create_workflow(client))["id"] for _ in range(5)]
    newest_first = ids[::-1]
    body = await fetch(client, "/api/workflows?limit=2")
    assert [wf["id"] for wf in body["workflows"]] == newest_first[:2]
    assert (body["count"], body["limit"], body["offset"]) == (5, 2, 0)
    body = await fetch(client, "/api/workflows?limit=2&offset=2")
    assert [wf["id"] for wf in body["workflows"]] == newest_first[2:4]
    body = await fetch(client, "/api/workflows?limit=2&offset=4")
    assert [wf["id"] for wf in body["workflows"]] == newest_first[4:]
    assert body["next_cursor"] is None  # a short page is the last one
    body = await fetch(client, "/api/workflows?offset=10")
    assert body["workflows"] == [] and body["count"] == 5


async def test_list_workflows_cursor_pagination_walks_every_workflow_once(client: Client):
    ids = [(await create_workflow(client))["id"] for _ in range(7)]
    seen: list[int] = []
    body = await fetch(client, "/api/workflows?limit=3")
    while True:
        seen.extend(wf["id"] for wf in body["workflows"])
        if body["next_cursor"] is None:
            break
        assert body["next_cursor"] == body["workflows"][-1]["id"]
        body = await fetch(client, f"/api/workflows?limit=3&cursor={body['next_cursor']}")
    assert seen == ids[::-1]
    # A workflow created while paging does not shift the pages after the cursor.
    first = await fetch(client, "/api/workflows?limit=3")
    await create_workflow(client)
    second = await fetch(client, f"/api/workflows?limit=3&cursor={first['next_cursor']}")
    assert [wf["id"] for wf in second["workflows"]] == ids[::-1][3:6]


async def test_list_workflows_empty_cursor_means_first_page(client: Client):
    ids = [(await create_workflow(client))["id"] for _ in range(3)]
    body = await fetch(client, "/api/workflows?cursor=")
    assert [wf["id"] for wf in body["workflows"]] == ids[::-1]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=abc", "limit=-1", "offset=-1", "offset=x", "cursor=-5"],
)
async def test_list_workflows_refuses_bad_paging(client: Client, query: str):
    body = await fetch(client, f"/api/workflows?{query}", status=400)
    assert_error(body, "bad request", query.split("=")[0])


async def test_workflow_stats_counts_each_status(client: Client):
    assert await fetch(client, "/api/workflows/stats") == {"counts": {}, "total": 0}
    await finished_run(client)
    await finished_run(client)
    await create_workflow(client)
    body = await fetch(client, "/api/workflows/stats")
    assert body == {"counts": {"Done": 2, "Running": 1}, "total": 3}


# --------------------------------------------------------------------------- one workflow


async def test_get_workflow(client: Client):
    workflow_id = await sample_run(client)
    body = await fetch(client, f"/api/workflow/{workflow_id}")
    wf = body["workflow"]
    assert wf["id"] == workflow_id
    assert wf["name"] == "sample-run"
    # A job failed and others still run: Running, with one failed job.
    assert (wf["status"], wf["jobs_failed"], wf["error"]) == ("Running", 1, None)
    assert (wf["jobs_done"], wf["jobs_total"]) == (1, 5)
    assert wf["finished_at"] is None and wf["completed_at"] is None
    await send(client, workflow_id, {"level": "error", "msg": "WorkflowError"})
    wf = (await fetch(client, f"/api/workflow/{workflow_id}"))["workflow"]
    assert (wf["status"], wf["error"]) == ("Error", "WorkflowError")
    for key in WORKFLOW_TIMES:
        assert_utc(wf[key])
    assert wf["finished_at"] == wf["completed_at"]
    assert wf["started_at"] <= wf["updated_at"]


@pytest.mark.parametrize("path", ["/api/workflow/999", "/api/workflow/999/jobs"])
async def test_unknown_workflow_is_404_json(client: Client, path: str):
    await create_workflow(client)
    body = await fetch(client, path, status=404)
    assert_error(body, "not found", "999")


@pytest.mark.parametrize("path", ["/api/workflow/abc", "/api/workflow/1.5", "/api/workflow/-1"])
async def test_non_integer_workflow_id_is_404_json(client: Client, path: str):
    await create_workflow(client)
    assert_error(await fetch(client, path, status=404), "not found")


# --------------------------------------------------------------------------- jobs


async def test_jobs_carry_every_field_as_json(client: Client):
    workflow_id = await sample_run(client)
    body = await fetch(client, f"/api/workflow/{workflow_id}/jobs")
    assert body["count"] == 4
    jobs = {job["jobid"]: job for job in body["jobs"]}
    # In the order Snakemake started them.
    assert [job["jobid"] for job in body["jobs"]] == [1, 2, 3, 4]
    job = jobs[1]
    assert job["workflow_id"] == workflow_id
    assert job["rule"] == job["name"] == "make"
    assert job["status"] == "Done"
    assert job["message"] == "making sample a"
    assert job["wildcards"] == {"sample": "a"}
    assert job["input"] == ["raw/a.txt", "ref.fa"]
    assert job["output"] == ["data/a.txt"]
    assert job["log"] == ["logs/make_a.log"]
    assert job["shell_command"] == "cp raw/a.txt data/a.txt"
    assert job["threads"] == 2
    assert job["priority"] == 3
    assert job["resources"] == {"tmpdir": "/tmp", "mem_mb": 100, "runtime": 1}
    assert job["reason"] == "Missing output files: data/a.txt"
    assert job["is_checkpoint"] is False
    assert job["error"] is None
    assert job["attempt"] == 1
    for key in JOB_TIMES:
        assert_utc(job[key])
    assert job["started_at"] <= job["finished_at"]
    [attempt] = job["attempts"]
    assert attempt["attempt"] == 1 and attempt["status"] == "Done" and attempt["error"] is None
    assert_utc(attempt["started_at"])
    assert_utc(attempt["finished_at"])
    # Running jobs have no end; the failed one has its error.
    assert jobs[2]["status"] == "Running" and jobs[2]["finished_at"] is None
    assert_utc(jobs[2]["started_at"])
    assert jobs[3]["status"] == "Error"
    assert jobs[3]["error"] == "RuleException"
    assert jobs[3]["attempts"][0]["error"] == "RuleException"
    assert_utc(jobs[3]["finished_at"])
    # Lists and objects are real JSON, never a Python repr in a string.
    raw = await (await client.get(f"/api/workflow/{workflow_id}/jobs")).get_data(as_text=True)
    assert "['" not in raw and "{'" not in raw


async def test_jobs_filter_by_status_and_rule(client: Client):
    workflow_id = await sample_run(client)

    async def jobids(query: str) -> list[int]:
        body = await fetch(client, f"/api/workflow/{workflow_id}/jobs?{query}")
        assert body["count"] == len(body["jobs"])
        return [job["jobid"] for job in body["jobs"]]

    assert await jobids("status=Running") == [2, 4]
    assert await jobids("status=error") == [3]
    assert await jobids("status=Done,Error") == [1, 3]
    assert await jobids("status=Waiting") == []
    assert await jobids("rule=make") == [1, 2]
    assert await jobids("rule=make&rule=merge") == [1, 2, 4]
    assert await jobids("rule=make&status=Running") == [2]
    assert await jobids("rule=nosuchrule") == []
    body = await fetch(client, f"/api/workflow/{workflow_id}/jobs?status=Cancelled", status=400)
    assert_error(body, "bad request", "Cancelled")


async def test_jobs_pagination(client: Client):
    workflow_id = (await create_workflow(client))["id"]
    for jobid in range(7):
        await send(client, workflow_id, {"level": "job_info", "jobid": jobid, "name": "r"})
    body = await fetch(client, f"/api/workflow/{workflow_id}/jobs?limit=3&offset=3")
    assert [job["jobid"] for job in body["jobs"]] == [3, 4, 5]
    assert body["count"] == 7
    seen: list[int] = []
    body = await fetch(client, f"/api/workflow/{workflow_id}/jobs?limit=3")
    while True:
        seen.extend(job["jobid"] for job in body["jobs"])
        if body["next_cursor"] is None:
            break
        body = await fetch(
            client, f"/api/workflow/{workflow_id}/jobs?limit=3&cursor={body['next_cursor']}"
        )
    assert seen == list(range(7))
    body = await fetch(client, f"/api/workflow/{workflow_id}/jobs?limit=0", status=400)
    assert_error(body, "bad request", "limit")


async def test_get_one_job(client: Client):
    workflow_id = await sample_run(client)
    body = await fetch(client, f"/api/workflow/{workflow_id}/job/1")
    listed = (await fetch(client, f"/api/workflow/{workflow_id}/jobs?rule=make"))["jobs"][0]
    assert body["job"] == listed
    # The earlier panoptes server answered with the one job under "jobs".
    assert body["jobs"] == body["job"]


async def test_unknown_job_is_404(client: Client):
    workflow_id = await sample_run(client)
    other = await sample_run(client, "other-run")
    await send(client, other, {"level": "error", "msg": "WorkflowError"})
    body = await fetch(client, f"/api/workflow/{workflow_id}/job/99", status=404)
    assert_error(body, "not found", "99")
    await call(client, "DELETE", f"/api/workflow/{other}", 204)
    # Job 1 exists in the first workflow but not under an unknown one.
    body = await fetch(client, f"/api/workflow/{other}/job/1", status=404)
    assert_error(body, "not found")
    assert_error(await fetch(client, f"/api/workflow/{workflow_id}/job/x", status=404))


async def test_rules_count_jobs_per_rule(client: Client):
    workflow_id = await sample_run(client)
    body = await fetch(client, f"/api/workflow/{workflow_id}/rules")
    zero = {"planned": None, "done": 0, "running": 0, "error": 0, "waiting": 0}
    # In pipeline order (of their first jobs); no plan was sent, so nothing is planned.
    assert body["rules"] == [
        {**zero, "rule": "make", "total": 2, "done": 1, "running": 1},
        {**zero, "rule": "process", "total": 1, "error": 1},
        {**zero, "rule": "merge", "total": 1, "running": 1},
    ]
    empty = (await create_workflow(client))["id"]
    assert await fetch(client, f"/api/workflow/{empty}/rules") == {"rules": []}
    assert_error(await fetch(client, "/api/workflow/999/rules", status=404), "not found")


# --------------------------------------------------------------------------- rename


async def test_rename(client: Client):
    workflow_id = await sample_run(client)
    before, jobs = await snapshot(client, workflow_id)
    body = await call(client, "PUT", f"/api/workflow/{workflow_id}", 200, {"name": "  nice name "})
    assert body["workflow"]["name"] == "nice name"
    after, jobs_after = await snapshot(client, workflow_id)
    assert after == {**before, "name": "nice name"}
    assert jobs_after == jobs
    # Renaming to the name it already has is fine.
    await call(client, "PUT", f"/api/workflow/{workflow_id}", 200, {"name": "nice name"})
    listed = await fetch(client, "/api/workflows?q=nice")
    assert [wf["id"] for wf in listed["workflows"]] == [workflow_id]


async def test_rename_with_an_empty_object_changes_nothing(client: Client):
    # Snakemake 8 sends PUT {} right after registering and aborts the run on a 404/500.
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)
    body = await call(client, "PUT", f"/api/workflow/{workflow_id}", 200, {})
    assert body["workflow"] == before[0]
    # Other --wms-monitor-arg pairs are ignored as well.
    await call(client, "PUT", f"/api/workflow/{workflow_id}", 200, {"team": "x"})
    # Without a Content-Type (sniffed as JSON) and with no body at all.
    await call(client, "PUT", f"/api/workflow/{workflow_id}", 200, data=b"{}", headers={})
    await call(client, "PUT", f"/api/workflow/{workflow_id}", 200)
    assert await snapshot(client, workflow_id) == before


async def test_snakemake8_rename_to_its_registered_name(client: Client):
    # --wms-monitor-arg name=x: GET /create_workflow?name=x, then PUT {"name": "x"}.
    workflow_id = (await create_workflow(client, name="my-pipeline"))["id"]
    body = await call(client, "PUT", f"/api/workflow/{workflow_id}", 200, {"name": "my-pipeline"})
    assert body["workflow"]["name"] == "my-pipeline"


async def test_rename_to_a_taken_name_is_409(client: Client):
    first = await sample_run(client, "first")
    second = await sample_run(client, "second")
    before = [await snapshot(client, first), await snapshot(client, second)]
    body = await call(client, "PUT", f"/api/workflow/{second}", 409, {"name": "first"})
    assert_error(body, "conflict", "first")
    assert [await snapshot(client, first), await snapshot(client, second)] == before


BAD_NAMES: list[tuple[dict[str, Any], str]] = [
    ({"name": 5}, "string"),
    ({"name": None}, "string"),
    ({"name": ["x"]}, "string"),
    ({"name": {"first": "x"}}, "string"),
    ({"name": ""}, "empty"),
    ({"name": "   "}, "empty"),
    ({"name": "x" * 201}, "200"),
]


async def test_rename_refuses_bad_names(client: Client):
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)
    for payload, word in BAD_NAMES:
        body = await call(client, "PUT", f"/api/workflow/{workflow_id}", 400, payload)
        assert_error(body, "bad request", word)
        assert await snapshot(client, workflow_id) == before, payload


async def test_rename_refuses_a_body_that_is_not_a_json_object(client: Client):
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)
    for data in [b"not json", b'{"name": ', b'["name"]', b'"name"', b"null"]:
        path = f"/api/workflow/{workflow_id}"
        body = await call(client, "PUT", path, 400, data=data, headers=JSON)
        assert_error(body, "bad request", "JSON")
        assert await snapshot(client, workflow_id) == before, data


async def test_rename_unknown_workflow_is_404(client: Client):
    body = await call(client, "PUT", "/api/workflow/999", 404, {"name": "x"})
    assert_error(body, "not found", "999")


# --------------------------------------------------------------------------- cancel


async def test_cancel_a_running_workflow(client: Client):
    workflow_id = (await create_workflow(client))["id"]
    await send(client, workflow_id, {"level": "job_info", "jobid": 1, "name": "a"})
    body = await call(client, "POST", f"/api/workflow/{workflow_id}/cancel", 200)
    assert body["workflow"]["status"] == "Cancelled"
    assert_utc(body["workflow"]["finished_at"])
    workflow, _ = await snapshot(client, workflow_id)
    assert workflow == body["workflow"]
    # Cancelling again changes nothing.
    again = await call(client, "POST", f"/api/workflow/{workflow_id}/cancel", 200)
    assert again["workflow"] == workflow


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([{"level": "workflow_success"}], "Done"),
        ([{"level": "error", "msg": "WorkflowError"}], "Error"),
    ],
)
async def test_cancel_a_finished_workflow_is_409(
    client: Client, events: list[dict[str, Any]], status: str
):
    workflow_id = (await create_workflow(client))["id"]
    for event in events:
        await send(client, workflow_id, event)
    before = await snapshot(client, workflow_id)
    assert before[0]["status"] == status
    body = await call(client, "POST", f"/api/workflow/{workflow_id}/cancel", 409)
    assert_error(body, "conflict", status)
    assert await snapshot(client, workflow_id) == before


async def test_cancel_unknown_workflow_is_404(client: Client):
    assert_error(await call(client, "POST", "/api/workflow/999/cancel", 404), "not found", "999")


# --------------------------------------------------------------------------- delete


async def test_delete_a_running_workflow_is_409(client: Client, app: Quart):
    workflow_id = await sample_run(client)
    await send(client, workflow_id, {"level": "job_started", "jobs": [3]})  # the retry
    before = await snapshot(client, workflow_id)
    assert before[0]["status"] == "Running"
    body = await call(client, "DELETE", f"/api/workflow/{workflow_id}", 409)
    assert_error(body, "workflow is running", "cancel")
    assert f"/api/workflow/{workflow_id}/cancel" in body["detail"]
    assert await snapshot(client, workflow_id) == before


async def test_delete_after_cancel_removes_the_workflow_and_its_jobs(client: Client, app: Quart):
    keep = await sample_run(client, "keep")
    workflow_id = (await create_workflow(client))["id"]
    for jobid in range(3):
        await send(client, workflow_id, {"level": "job_info", "jobid": jobid, "name": "r"})
    await call(client, "POST", f"/api/workflow/{workflow_id}/cancel", 200)
    response = await client.delete(f"/api/workflow/{workflow_id}")
    assert response.status_code == 204
    assert await response.get_data(as_text=True) == ""
    assert_error(await fetch(client, f"/api/workflow/{workflow_id}", status=404), "not found")
    assert await count_rows(app, Job, Job.workflow_id == workflow_id) == 0
    assert await count_rows(app, Job, Job.workflow_id == keep) == 4
    assert [wf["id"] for wf in (await fetch(client, "/api/workflows"))["workflows"]] == [keep]
    # Its id is never handed out again: a late event cannot land in a new run.
    assert (await create_workflow(client))["id"] > workflow_id
    response = await post_event(client, workflow_id, {"level": "job_finished", "jobid": 1})
    assert response.status_code == 422


async def test_delete_finished_and_unknown(client: Client):
    workflow_id = await finished_run(client)
    await call(client, "DELETE", f"/api/workflow/{workflow_id}", 204)
    body = await call(client, "DELETE", f"/api/workflow/{workflow_id}", 404)
    assert_error(body, "not found", str(workflow_id))


async def test_delete_all(client: Client, app: Quart):
    await sample_run(client)
    await finished_run(client)
    await create_workflow(client)  # a Running one goes too
    body = await call(client, "DELETE", "/api/workflows/all", 200)
    assert body["deleted"] == 3
    assert (await fetch(client, "/api/workflows"))["count"] == 0
    assert await count_rows(app, Job) == 0
    assert await count_rows(app, Workflow) == 0
    assert (await call(client, "DELETE", "/api/workflows/all", 200))["deleted"] == 0


# --------------------------------------------------------------------------- pages


async def test_workflow_page_shows_one_page_of_the_filtered_jobs(
    client: Client, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(pages, "JOBS_PER_PAGE", 4)
    workflow_id = (await create_workflow(client))["id"]
    await send(client, workflow_id, {"level": "job_started", "jobs": list(range(10))})
    for jobid in range(10):
        await send(client, workflow_id, {"level": "job_info", "jobid": jobid, "name": "r"})
    await send(client, workflow_id, {"level": "job_finished", "jobid": 5})

    async def rows(query: str) -> list[str]:
        response = await client.get(f"/workflow/{workflow_id}?{query}")
        assert response.status_code == 200
        return re.findall(r'<tr data-jobid="(\d+)"', await response.get_data(as_text=True))

    assert await rows("") == ["0", "1", "2", "3"]
    assert await rows("offset=8") == ["8", "9"]
    assert await rows("status=Running&offset=4") == ["4", "6", "7", "8"]
    assert await rows("status=Done") == ["5"]
    assert await rows("rule=other") == []
    for query in ("status=Finished", "offset=-1", "offset=x", "rule=a%00b"):
        response = await client.get(f"/workflow/{workflow_id}?{query}")
        assert response.status_code == 400, query


# --------------------------------------------------------------------------- routing errors


@pytest.mark.parametrize("path", ["/api/nope", "/api/workflows/1/jobs", "/api/workflow/1/foo"])
async def test_unknown_api_url_is_404_json(client: Client, path: str):
    await create_workflow(client)
    response = await client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert_error(await response.get_json(), "not found")


async def test_unknown_page_is_404(client: Client):
    response = await client.get("/no/such/page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.content_type.startswith("text/html")
    assert "404" in await response.get_data(as_text=True)
    # Scripts that do not ask for HTML get the JSON error.
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert_error(await response.get_json(), "not found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/workflows"),
        ("DELETE", "/api/workflows"),
        ("GET", "/api/workflow/1/cancel"),
        ("POST", "/api/workflow/1"),
        ("GET", "/api/workflows/all"),
        ("POST", "/api/service-info"),
        ("GET", "/update_workflow_status"),
        ("POST", "/create_workflow"),
    ],
)
async def test_wrong_method_is_405(client: Client, method: str, path: str):
    await create_workflow(client)
    response = await client.open(path, method=method)
    assert response.status_code == 405
    assert_error(await response.get_json(), "method not allowed")


# --------------------------------------------------------------------------- ingest: shapes


async def test_update_accepts_the_three_body_shapes(client: Client):
    workflow_id = (await create_workflow(client))["id"]
    # Form (Snakemake 9, 8, 7.0-7.31), with a charset parameter too.
    response = await client.post(
        "/update_workflow_status",
        data=form_body(workflow_id, {"level": "progress", "done": 1, "total": 9}),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert response.status_code == 200
    assert (await snapshot(client, workflow_id))[0]["jobs_done"] == 1
    # JSON text with no Content-Type at all (Snakemake 7.32), id as a number.
    legacy = {
        "msg": json.dumps({"level": "progress", "done": 2, "total": 9}),
        "timestamp": time.asctime(),
        "id": workflow_id,
    }
    response = await client.post(
        "/update_workflow_status", data=json.dumps(legacy).encode(), headers={}
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await snapshot(client, workflow_id))[0]["jobs_done"] == 2
    # application/json, with msg as an object rather than a string.
    nested = {"msg": {"level": "progress", "done": 3, "total": 9}, "timestamp": "x"}
    nested["id"] = workflow_id
    response = await client.post("/update_workflow_status", data=json.dumps(nested), headers=JSON)
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}
    assert (await snapshot(client, workflow_id))[0]["jobs_done"] == 3


IGNORED = ["debug", "dag_debug", "resources_info", "run_info", "host", "rulegraph", "frobnicate"]


async def test_unknown_levels_are_accepted_and_ignored(client: Client, app: Quart):
    workflow_id = await sample_run(client)
    before_wf, before_jobs = await snapshot(client, workflow_id)
    events = await count_rows(app, Event)
    for level in IGNORED:
        msg = {"level": level, "msg": "Provided cores: 2", "jobid": 1, "done": 5, "total": 5}
        response = await post_event(client, workflow_id, msg)
        assert 200 <= response.status_code < 300, level
        after_wf, after_jobs = await snapshot(client, workflow_id)
        assert after_jobs == before_jobs, level
        assert {**after_wf, "updated_at": None} == {**before_wf, "updated_at": None}, level
    # A message with no level at all is ignored too.
    response = await post_event(client, workflow_id, {"msg": "no level"})
    assert response.status_code == 200
    assert (await snapshot(client, workflow_id))[1] == before_jobs
    # Snakemake 8 sends about 90 debug messages a run: none of them reach the feed.
    assert await count_rows(app, Event) == events


# --------------------------------------------------------------------------- ingest: refusals


def envelope(workflow_id: Any, msg: Any) -> dict[str, Any]:
    return {"msg": msg, "timestamp": time.asctime(), "id": workflow_id}


BAD_FORM_BODIES: list[tuple[bytes, str]] = [
    (b"", "no body"),
    (b"%%%&&&===", "'msg' is missing"),
    (b"timestamp=x&id=1", "'msg' is missing"),
    (urlencode({"msg": "{not json", "id": "1"}).encode(), "not valid JSON"),
    (urlencode({"msg": "[1, 2]", "id": "1"}).encode(), "object"),
    (urlencode({"msg": '"progress"', "id": "1"}).encode(), "object"),
    (urlencode({"msg": "null", "id": "1"}).encode(), "'msg'"),
    (urlencode({"msg": '{"level": "info"}'}).encode(), "'id' is missing"),
    (urlencode({"msg": '{"level": "info"}', "id": ""}).encode(), "'id' is missing"),
    (urlencode({"msg": '{"level": "info"}', "id": "abc"}).encode(), "'id'"),
    (b"\xff\xfe=\xff", "UTF-8"),
]


async def test_malformed_form_updates_are_400(client: Client, app: Quart):
    workflow_id = await sample_run(client)
    assert workflow_id == 1  # the bodies above name workflow 1
    before = await snapshot(client, workflow_id)
    events = await count_rows(app, Event)
    for data, word in BAD_FORM_BODIES:
        response = await client.post("/update_workflow_status", data=data, headers=FORM)
        assert response.status_code == 400, data
        assert_error(await response.get_json(), None, word)
        assert await snapshot(client, workflow_id) == before, data
    assert await count_rows(app, Event) == events


BAD_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"level": "job_finished", "jobid": "abc"}, "jobid"),
    ({"level": "job_finished"}, "jobid"),
    ({"level": "job_finished", "jobid": 1.5}, "jobid"),
    ({"level": "job_finished", "jobid": True}, "jobid"),
    ({"level": "job_error", "jobid": [3]}, "jobid"),
    ({"level": "job_info", "jobid": None, "name": "x"}, "jobid"),
    ({"level": "job_info", "jobid": 9, "input": 5}, "input"),
    ({"level": "job_info", "jobid": 9, "output": {"a": 1}}, "output"),
    ({"level": "job_info", "jobid": 9, "name": 7}, "name"),
    ({"level": "job_info", "jobid": 9, "wildcards": "sample=a"}, "wildcards"),
    ({"level": "job_info", "jobid": 9, "threads": "many"}, "threads"),
    ({"level": "job_started", "jobs": ["a"]}, "jobs"),
    ({"level": "job_started"}, "jobs"),
    ({"level": "progress", "done": "x", "total": 5}, "done"),
    ({"level": "progress", "done": 5}, "total"),
    ({"level": "progress", "done": -1, "total": 5}, "negative"),
    ({"level": "shellcmd", "jobid": "x", "msg": "ls"}, "jobid"),
    ({"level": 5}, "level"),
]


async def test_messages_with_wrongly_typed_fields_are_400(client: Client, app: Quart):
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)
    events = await count_rows(app, Event)
    for msg, word in BAD_MESSAGES:
        response = await post_event(client, workflow_id, msg)
        assert response.status_code == 400, msg
        assert_error(await response.get_json(), "invalid message", word)
        assert await snapshot(client, workflow_id) == before, msg
    assert await count_rows(app, Event) == events


BAD_JSON_BODIES: list[tuple[bytes, str]] = [
    (b"{not json", "JSON"),
    (b"[1, 2]", "object"),
    (json.dumps(envelope(1, [1, 2])).encode(), "'msg'"),
    (json.dumps(envelope(1, 42)).encode(), "'msg'"),
    (json.dumps(envelope(1, '{"level": "job_finished", "jobid": "x"}')).encode(), "jobid"),
    (json.dumps(envelope(True, {"level": "info"})).encode(), "'id'"),
    (json.dumps(envelope(None, {"level": "info"})).encode(), "'id'"),
    (json.dumps(envelope([1], {"level": "info"})).encode(), "'id'"),
    (json.dumps(envelope("one", {"level": "info"})).encode(), "'id'"),
]


async def test_malformed_json_updates_are_400(client: Client):
    workflow_id = await sample_run(client)
    assert workflow_id == 1  # the bodies above name workflow 1
    before = await snapshot(client, workflow_id)
    for body, word in BAD_JSON_BODIES:
        for headers in (JSON, {}):  # application/json, and sniffed without a Content-Type
            response = await client.post("/update_workflow_status", data=body, headers=headers)
            assert response.status_code == 400, (body, headers)
            assert_error(await response.get_json(), None, word)
        assert await snapshot(client, workflow_id) == before, body


async def test_update_for_an_unknown_workflow_is_refused_without_touching_others(
    client: Client, app: Quart
):
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)
    events = await count_rows(app, Event)
    for level in ("job_info", "info"):
        response = await post_event(client, 999, {"level": level, "jobid": 1, "name": "x"})
        # Not 404: Snakemake 7/8 abort the user's run on a 404 from this path.
        assert response.status_code == 422
        assert_error(await response.get_json(), "unknown workflow", "999")
    assert await snapshot(client, workflow_id) == before
    assert await count_rows(app, Event) == events
    assert await count_rows(app, Job, Job.workflow_id == 999) == 0


async def asgi_post(app: Quart, receive: Any) -> tuple[int, dict[str, Any]]:
    """POST /update_workflow_status straight through the app's ASGI stack."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/update_workflow_status",
        "raw_path": b"/update_workflow_status",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5555),
    }
    await app.asgi_app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_an_update_whose_body_stops_arriving_is_408(
    app: Quart, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(wms, "BODY_TIMEOUT_SECONDS", 0.2)
    parts = [{"type": "http.request", "body": b"id=1&msg=", "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop()
        await asyncio.Event().wait()  # the rest never comes
        raise AssertionError("unreachable")

    status, body = await asgi_post(app, receive)
    assert status == 408
    assert_error(body, "request timeout")


async def test_an_update_whose_client_goes_away_stores_nothing(app: Quart, client: Client):
    workflow_id = (await create_workflow(client))["id"]
    before = await count_rows(app, Event)
    # A whole message has arrived, but the client said more was coming, then went away.
    whole = form_body(workflow_id, {"level": "job_info", "jobid": 1, "name": "a"}).encode()
    parts = [
        {"type": "http.disconnect"},
        {"type": "http.request", "body": whole, "more_body": True},
    ]

    async def receive() -> dict[str, Any]:
        return parts.pop()

    status, _ = await asgi_post(app, receive)
    assert status == 400
    assert await count_rows(app, Event) == before


async def test_oversized_update_is_413(client: Client, config: Config):
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)

    def info_body(size: int) -> bytes:
        start = form_body(workflow_id, {"level": "info", "msg": ""})
        return form_body(workflow_id, {"level": "info", "msg": "x" * (size - len(start))}).encode()

    too_big = info_body(config.max_body_bytes + 1)
    assert len(too_big) == config.max_body_bytes + 1
    response = await client.post("/update_workflow_status", data=too_big, headers=FORM)
    assert response.status_code == 413
    assert_error(await response.get_json(), "request entity too large", "bytes")
    assert await snapshot(client, workflow_id) == before
    # Right at the limit is still fine.
    at_limit = info_body(config.max_body_bytes)
    assert len(at_limit) == config.max_body_bytes
    response = await client.post("/update_workflow_status", data=at_limit, headers=FORM)
    assert response.status_code == 200


async def test_unsupported_content_type_is_415(client: Client):
    workflow_id = await sample_run(client)
    before = await snapshot(client, workflow_id)
    data = form_body(workflow_id, {"level": "workflow_success"})
    for content_type in ["application/xml", "multipart/form-data; boundary=x", "image/png"]:
        response = await client.post(
            "/update_workflow_status", data=data, headers={"Content-Type": content_type}
        )
        assert response.status_code == 415, content_type
        mimetype = content_type.split(";")[0]
        assert_error(await response.get_json(), "unsupported media type", mimetype)
        assert await snapshot(client, workflow_id) == before, content_type


async def test_create_workflow_ignores_a_body_it_cannot_read(client: Client):
    # The body only describes the run: a run is never refused over it.
    for data, headers in [
        (b"<xml/>", {"Content-Type": "application/xml"}),
        (b"{broken", JSON),
        (b"\xff\xfe", FORM),
    ]:
        response = await client.get("/create_workflow", data=data, headers=headers)
        assert response.status_code == 200
        body = await response.get_json()
        assert isinstance(body["id"], int) and body["status"] == "Running"


async def test_create_workflow_keeps_the_legacy_description(client: Client):
    body = urlencode(
        {"command": "snakemake --cores 2 --wms-monitor http://x", "workdir": "/tmp/w"}
    ).encode()
    response = await client.get("/create_workflow", data=body, headers=FORM)
    created = await response.get_json()
    assert created["command"] == "snakemake --cores 2 --wms-monitor http://x"
    assert created["workdir"] == "/tmp/w"
    assert created["dry_run"] is False
    # Snakemake 7.32 sends JSON without a Content-Type.
    body = json.dumps({"snakefile": "S", "command": "snakemake -n -s S", "workdir": "/w"}).encode()
    response = await client.get("/create_workflow", data=body, headers={})
    created = await response.get_json()
    assert (created["workdir"], created["dry_run"]) == ("/w", True)
    listed = await fetch(client, f"/api/workflow/{created['id']}")
    assert listed["workflow"].pop("eta_seconds") is None and listed["workflow"] == created


async def test_every_timestamp_is_utc_iso(client: Client, app: Quart):
    workflow_id = await sample_run(client)
    await send(client, workflow_id, {"level": "job_started", "jobs": [3]})
    await send(client, workflow_id, {"level": "job_finished", "jobid": 3})
    workflow, jobs = await snapshot(client, workflow_id)
    for key in ("started_at", "updated_at"):
        assert_utc(workflow[key])
    for job in jobs:
        assert_utc(job["started_at"])
        for attempt in job["attempts"]:
            assert_utc(attempt["started_at"])
            if attempt["finished_at"] is not None:
                assert_utc(attempt["finished_at"])
    retried = next(job for job in jobs if job["jobid"] == 3)
    assert len(retried["attempts"]) == 2
    async with service(app).sessions() as session:
        stored = await session.get(Workflow, workflow_id)
    assert stored is not None and stored.updated_at.utcoffset() == timedelta(0)
