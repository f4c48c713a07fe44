"""The ingest state machine, one rule per test, driven through the HTTP app."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from panoptes import ingest
from panoptes.models import Event, Job, Workflow, utcnow
from panoptes.service import Service

from .conftest import create_workflow, post_event

# --------------------------------------------------------------------------- helpers


async def send(client: Client, workflow_id: int, msg: dict[str, Any]) -> str:
    """Post one message; returns what the server said about it ("ok" or "duplicate")."""
    response = await post_event(client, workflow_id, msg)
    text = await response.get_data(as_text=True)
    assert response.status_code == 200, (msg, text)
    status: str = json.loads(text)["status"]
    return status


async def new_run(client: Client, **query: str) -> int:
    workflow_id: int = (await create_workflow(client, **query))["id"]
    return workflow_id


async def workflow(client: Client, workflow_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/workflow/{workflow_id}")
    assert response.status_code == 200
    body: dict[str, Any] = (await response.get_json())["workflow"]
    return body


async def jobs(client: Client, workflow_id: int) -> dict[int, dict[str, Any]]:
    response = await client.get(f"/api/workflow/{workflow_id}/jobs")
    assert response.status_code == 200
    return {job["jobid"]: job for job in (await response.get_json())["jobs"]}


def service(app: Quart) -> Service:
    panoptes: Service = app.extensions["panoptes"]
    return panoptes


async def job_rows(app: Quart, workflow_id: int) -> int:
    async with service(app).sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Job).where(Job.workflow_id == workflow_id)
        )
    return count or 0


async def stored_events(app: Quart) -> list[Event]:
    async with service(app).sessions() as session:
        return list(await session.scalars(select(Event).order_by(Event.seq)))


async def set_updated_at(app: Quart, workflow_id: int, when: datetime) -> None:
    async with service(app).sessions() as session, session.begin():
        await session.execute(
            update(Workflow).where(Workflow.id == workflow_id).values(updated_at=when)
        )


async def sweep(app: Quart, stale_hours: float, now: datetime) -> int:
    count: int = await service(app).writer.submit(
        lambda tx: ingest.sweep_stale(tx, stale_hours, now)
    )
    return count


def job_info(jobid: int, rule: str, **fields: Any) -> dict[str, Any]:
    return {"level": "job_info", "jobid": jobid, "name": rule, **fields}


# --------------------------------------------------------------------------- job lifecycle


async def test_job_started_before_job_info_creates_the_jobs(client: Client):
    # Snakemake 9 announces a scheduling round before describing its jobs.
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "job_started", "jobs": [5, 3]})
    early = await jobs(client, workflow_id)
    assert sorted(early) == [3, 5]
    for job in early.values():
        assert job["status"] == "Running"
        assert job["rule"] is None
        assert job["started_at"] is not None
        assert job["attempt"] == 1 and len(job["attempts"]) == 1
    await send(client, workflow_id, job_info(5, "make", wildcards={"sample": "b"}))
    await send(client, workflow_id, job_info(3, "make", wildcards={"sample": "c"}))
    described = await jobs(client, workflow_id)
    assert sorted(described) == [3, 5]
    assert described[5]["rule"] == "make" and described[5]["wildcards"] == {"sample": "b"}
    assert described[3]["wildcards"] == {"sample": "c"}
    for jobid in (3, 5):
        # job_info describes the job; it is the same attempt, started when job_started came.
        assert described[jobid]["status"] == "Running"
        assert described[jobid]["started_at"] == early[jobid]["started_at"]
        assert described[jobid]["attempts"] == early[jobid]["attempts"]
    # A lone job id (not in a list) is accepted too.
    await send(client, workflow_id, {"level": "job_started", "jobs": 7})
    assert sorted(await jobs(client, workflow_id)) == [3, 5, 7]
    assert (await workflow(client, workflow_id))["status"] == "Running"


async def test_job_finished_marks_the_job_done(client: Client):
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "job_started", "jobs": [1, 2]})
    await send(client, workflow_id, job_info(1, "make"))
    await send(client, workflow_id, job_info(2, "make"))
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    found = await jobs(client, workflow_id)
    assert found[1]["status"] == "Done"
    assert found[1]["started_at"] <= found[1]["finished_at"]
    assert found[1]["attempts"][-1]["status"] == "Done"
    assert found[1]["attempts"][-1]["finished_at"] == found[1]["finished_at"]
    assert found[2]["status"] == "Running" and found[2]["finished_at"] is None
    # A second job_finished changes nothing; a finished job does not finish the run.
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    assert (await jobs(client, workflow_id))[1] == found[1]
    assert (await workflow(client, workflow_id))["status"] == "Running"


async def test_job_error_fails_the_job_and_the_run_ends_with_its_own_error(client: Client):
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "job_started", "jobs": [4]})
    await send(client, workflow_id, job_info(4, "process"))
    await send(
        client,
        workflow_id,
        {"level": "error", "msg": "RuleException", "rule": "process", "location": "line 23"},
    )
    await send(client, workflow_id, {"level": "job_error", "jobid": 4, "name": "process"})
    job = (await jobs(client, workflow_id))[4]
    assert job["status"] == "Error"
    assert "RuleException" in job["error"]
    assert job["finished_at"] is not None
    assert job["attempts"][-1]["status"] == "Error"
    assert job["attempts"][-1]["error"] == job["error"]
    assert "line 23" in job["error"]
    # --keep-going: other jobs may still run. The run goes on, counting the failure.
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_failed"], wf["finished_at"], wf["error"]) == (
        "Running",
        1,
        None,
        None,
    )
    # The run's own end says it failed; that moment is its finish.
    await send(client, workflow_id, {"level": "error", "msg": "WorkflowError"})
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_failed"]) == ("Error", 1)
    assert wf["finished_at"] is not None and wf["error"] == "WorkflowError"


async def test_job_error_without_an_error_message_still_fails(client: Client):
    workflow_id = await new_run(client)
    await send(client, workflow_id, job_info(2, "map"))
    await send(client, workflow_id, {"level": "job_error", "jobid": 2, "name": "map"})
    assert (await jobs(client, workflow_id))[2]["error"] == "job failed"
    assert (await workflow(client, workflow_id))["jobs_failed"] == 1
    # Snakemake 7 says no more than this about the end of a failed run.
    exiting = "Exiting because a job execution failed. Look above for error message"
    await send(client, workflow_id, {"level": "error", "msg": exiting})
    assert (await workflow(client, workflow_id))["status"] == "Error"


# --------------------------------------------------------------------------- run endings


async def test_progress_reaching_the_total_finishes_the_run(client: Client):
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "progress", "done": 0, "total": 2})
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_done"], wf["jobs_total"]) == ("Running", 0, 2)
    await send(client, workflow_id, {"level": "progress", "done": 1, "total": 2})
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_done"], wf["finished_at"]) == ("Running", 1, None)
    await send(client, workflow_id, {"level": "progress", "done": 2, "total": 2})
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_done"], wf["jobs_total"]) == ("Done", 2, 2)
    assert wf["finished_at"] is not None
    # A late, smaller progress does not rewind a finished run.
    await send(client, workflow_id, {"level": "progress", "done": 1, "total": 2})
    late = await workflow(client, workflow_id)
    assert {**late, "updated_at": None} == {**wf, "updated_at": None}


@pytest.mark.parametrize("ending", ["error", "job_error", "cancel"])
async def test_progress_and_success_never_resurrect_a_failed_or_cancelled_run(
    client: Client, ending: str
):
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "progress", "done": 0, "total": 2})
    await send(client, workflow_id, job_info(1, "a"))
    if ending == "cancel":
        assert (await client.post(f"/api/workflow/{workflow_id}/cancel")).status_code == 200
        expected = "Cancelled"
    else:
        if ending == "error":
            await send(client, workflow_id, {"level": "error", "msg": "WorkflowError"})
        else:
            await send(client, workflow_id, {"level": "job_error", "jobid": 1, "name": "a"})
            await send(client, workflow_id, {"level": "error", "msg": "WorkflowError"})
        expected = "Error"
    ended = await workflow(client, workflow_id)
    assert ended["status"] == expected
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    await send(client, workflow_id, {"level": "progress", "done": 2, "total": 2})
    await send(client, workflow_id, {"level": "workflow_success"})
    await send(client, workflow_id, {"level": "info", "msg": "Complete log: x.log"})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == expected
    assert wf["finished_at"] == ended["finished_at"]


async def test_until_run_ends_done_on_workflow_success(client: Client):
    # --until: the first progress counts 6 jobs, later ones the whole DAG of 8; done stops at 6.
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "progress", "done": 0, "total": 6})
    for jobid in range(6):
        await send(client, workflow_id, {"level": "job_started", "jobs": [jobid]})
        await send(client, workflow_id, job_info(jobid, "make" if jobid < 3 else "process"))
        if jobid != 5:  # snakemake -q may leave out a job_finished
            await send(client, workflow_id, {"level": "job_finished", "jobid": jobid})
        await send(client, workflow_id, {"level": "progress", "done": jobid + 1, "total": 8})
    assert (await workflow(client, workflow_id))["status"] == "Running"
    await send(client, workflow_id, {"level": "workflow_success"})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Done"
    assert wf["finished_at"] is not None
    # The counts are what really ran.
    assert (wf["jobs_done"], wf["jobs_total"]) == (6, 6)
    assert {job["status"] for job in (await jobs(client, workflow_id)).values()} == {"Done"}


async def test_up_to_date_rerun_ends_done_with_no_jobs(client: Client):
    # Snakemake 9 sends only info and workflow_success, no progress at all.
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "info", "msg": "Workflow started: workflow.py"})
    assert (await workflow(client, workflow_id))["status"] == "Running"
    await send(client, workflow_id, {"level": "workflow_success"})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Done"
    assert (wf["jobs_done"], wf["jobs_total"]) == (0, 0)
    assert wf["finished_at"] is not None
    assert await jobs(client, workflow_id) == {}


async def test_legacy_nothing_to_be_done_ends_done(client: Client):
    workflow_id = await new_run(client)
    text = "Nothing to be done (all requested files are present and up to date)."
    await send(client, workflow_id, {"level": "info", "msg": text, "timestamp": time.time()})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Done" and (wf["jobs_done"], wf["jobs_total"]) == (0, 0)


async def test_legacy_complete_log_ends_done_and_a_later_error_fails(client: Client):
    # Snakemake 7/8 have no workflow_success; "Complete log" closes every real run, and a
    # failed run's WorkflowError may come after it.
    workflow_id = await new_run(client)
    await send(client, workflow_id, job_info(1, "a"))
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    await send(client, workflow_id, {"level": "progress", "done": 1, "total": 3})
    await send(client, workflow_id, {"level": "info", "msg": "Complete log: .snakemake/log/x"})
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_done"], wf["jobs_total"]) == ("Done", 1, 1)
    await send(client, workflow_id, {"level": "error", "msg": "WorkflowError: failed"})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Error" and "WorkflowError" in wf["error"]


async def test_legacy_dry_run_keeps_jobs_waiting(client: Client):
    response = await client.get(
        "/create_workflow",
        data="command=snakemake+-n+--wms-monitor+http%3A%2F%2Fx&workdir=%2Fw",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    workflow_id = (await response.get_json())["id"]
    await send(client, workflow_id, job_info(1, "a"))
    await send(client, workflow_id, job_info(0, "all"))
    found = await jobs(client, workflow_id)
    assert {job["status"] for job in found.values()} == {"Waiting"}
    assert all(job["started_at"] is None for job in found.values())
    await send(client, workflow_id, {"level": "info", "msg": "This was a dry-run (flag -n)."})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Done" and wf["dry_run"] is True


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("client_kind", ["snakemake9", "legacy"])
async def test_retried_job_is_one_job_with_two_attempts(client: Client, client_kind: str):
    workflow_id = await new_run(client)

    async def start(jobid: int) -> None:
        info = job_info(jobid, "process", wildcards={"s": "b"})
        if client_kind == "snakemake9":
            await send(client, workflow_id, {"level": "job_started", "jobs": [jobid]})
        else:  # Snakemake 7/8 stamp every message and send no job_started
            info["timestamp"] = time.time()
        await send(client, workflow_id, info)

    await send(client, workflow_id, {"level": "progress", "done": 0, "total": 1})
    await start(4)
    await send(client, workflow_id, {"level": "error", "msg": "RuleException: exit 1"})
    await send(client, workflow_id, {"level": "job_error", "jobid": 4, "name": "process"})
    failed = (await jobs(client, workflow_id))[4]
    assert (await workflow(client, workflow_id))["jobs_failed"] == 1
    await start(4)  # Snakemake --retries runs it again under the same jobid
    found = await jobs(client, workflow_id)
    assert list(found) == [4]
    job = found[4]
    assert job["status"] == "Running"
    assert job["attempt"] == 2
    assert job["error"] is None and job["finished_at"] is None
    first, second = job["attempts"]
    assert first == failed["attempts"][0]
    assert (first["attempt"], first["status"]) == (1, "Error")
    assert "RuleException" in first["error"]
    assert first["started_at"] <= first["finished_at"] <= second["started_at"]
    assert (second["attempt"], second["status"], second["finished_at"]) == (2, "Running", None)
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Running" and wf["finished_at"] is None and wf["error"] is None
    assert wf["jobs_failed"] == 0  # its latest attempt has not failed
    await send(client, workflow_id, {"level": "job_finished", "jobid": 4})
    await send(client, workflow_id, {"level": "progress", "done": 1, "total": 1})
    job = (await jobs(client, workflow_id))[4]
    assert job["status"] == "Done"
    assert [a["status"] for a in job["attempts"]] == ["Error", "Done"]
    assert job["attempts"][1]["finished_at"] == job["finished_at"]
    assert job["attempts"][0]["error"] == first["error"]
    assert (await workflow(client, workflow_id))["status"] == "Done"


async def test_retry_of_one_job_leaves_the_other_failure_counted(client: Client):
    workflow_id = await new_run(client)
    for jobid in (1, 2):
        await send(client, workflow_id, {"level": "job_started", "jobs": [jobid]})
        await send(client, workflow_id, job_info(jobid, "p"))
        await send(client, workflow_id, {"level": "job_error", "jobid": jobid, "name": "p"})
    assert (await workflow(client, workflow_id))["jobs_failed"] == 2
    await send(client, workflow_id, {"level": "job_started", "jobs": [1]})  # job 1 is retried
    assert (await jobs(client, workflow_id))[1]["attempt"] == 2
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_failed"]) == ("Running", 1)
    failed = await (await client.get(f"/api/workflow/{workflow_id}/jobs?status=Error")).get_json()
    assert [job["jobid"] for job in failed["jobs"]] == [2]


# --------------------------------------------------------------------------- shellcmd


async def test_shellcmd_without_jobid_belongs_to_the_last_job_info(client: Client):
    workflow_id = await new_run(client)
    # Before any job_info there is nothing to attach to: accepted and dropped.
    await send(client, workflow_id, {"level": "shellcmd", "jobid": None, "msg": "orphan"})
    await send(client, workflow_id, job_info(1, "make"))
    await send(client, workflow_id, job_info(2, "make"))
    await send(client, workflow_id, {"level": "shellcmd", "jobid": None, "msg": "echo two"})
    await send(client, workflow_id, job_info(3, "make"))
    await send(client, workflow_id, {"level": "shellcmd", "msg": "echo three"})  # no jobid key
    await send(client, workflow_id, {"level": "shellcmd", "jobid": 1, "msg": "echo one"})
    # A command sent with job_info is not replaced by the -p echo of it.
    await send(client, workflow_id, job_info(4, "make", shellcmd="echo four"))
    await send(client, workflow_id, {"level": "shellcmd", "jobid": None, "msg": "other"})
    commands = {
        jobid: job["shell_command"] for jobid, job in (await jobs(client, workflow_id)).items()
    }
    assert commands == {1: "echo one", 2: "echo two", 3: "echo three", 4: "echo four"}


# --------------------------------------------------------------------------- Snakemake 8


async def test_snakemake8_duplicate_messages_are_dropped(client: Client, app: Quart):
    workflow_id = await new_run(client)
    now = time.time() - 60  # the client's own event times, a little in the past
    resources = [2, 1, "/tmp", 100, 96, 1]
    stream: list[dict[str, Any]] = [
        {"level": "info", "msg": "Select jobs to execute..."},
        {"level": "progress", "done": 0, "total": 2},
        {"jobid": 1, "name": "make", "input": [], "output": ["a"], "resources": resources},
        {"level": "shellcmd", "msg": "touch a"},
        {"jobid": 1},
        {"level": "progress", "done": 1, "total": 2},
        {"jobid": 2, "name": "process", "input": ["a"], "output": ["b"]},
        {"level": "error", "msg": "RuleException:\nCalledProcessError"},
        {"jobid": 2, "name": "process"},
        {"jobid": 2, "name": "process", "input": ["a"], "output": ["b"]},  # --retries
        {"jobid": 2},
        {"level": "progress", "done": 2, "total": 2},
    ]
    levels = ["job_info", "job_finished", "job_info", "job_error", "job_info", "job_finished"]
    for step, msg in enumerate(stream):
        if "level" not in msg:
            msg = {**msg, "level": levels.pop(0)}  # Snakemake 8 puts level last
        msg = {**msg, "timestamp": now + step}
        assert await send(client, workflow_id, msg) == "ok", msg
        recorded = len(await stored_events(app))
        assert await send(client, workflow_id, msg) == "duplicate", msg
        assert len(await stored_events(app)) == recorded, msg
    found = await jobs(client, workflow_id)
    assert sorted(found) == [1, 2]
    assert found[1]["attempt"] == 1 and len(found[1]["attempts"]) == 1
    assert found[1]["shell_command"] == "touch a"
    assert found[1]["resources"] == {"values": resources}
    assert found[2]["attempt"] == 2
    assert [a["status"] for a in found[2]["attempts"]] == ["Error", "Done"]
    assert "CalledProcessError" in found[2]["attempts"][0]["error"]
    wf = await workflow(client, workflow_id)
    assert (wf["status"], wf["jobs_done"], wf["jobs_total"]) == ("Done", 2, 2)
    # Legacy messages carry their own event time, which the job times use.
    started = datetime.fromisoformat(found[1]["started_at"]).timestamp()
    assert started == pytest.approx(now + 2, abs=0.001)
    finished = datetime.fromisoformat(found[1]["finished_at"]).timestamp()
    assert finished == pytest.approx(now + 4, abs=0.001)
    # Only an immediate repeat is a duplicate: the same text later is a new message.
    assert await send(client, workflow_id, {**stream[0], "timestamp": now}) == "ok"


# --------------------------------------------------------------------------- registration


async def test_workflow_id_reuses_a_finished_run(client: Client):
    workflow_id = await new_run(client, workflow_id="nightly")
    await send(client, workflow_id, job_info(1, "a"))
    await send(client, workflow_id, {"level": "job_error", "jobid": 1, "name": "a"})
    await send(client, workflow_id, {"level": "error", "msg": "WorkflowError"})
    old = await workflow(client, workflow_id)
    assert old["status"] == "Error"
    again = await create_workflow(client, workflow_id="nightly")
    assert again["id"] == workflow_id
    assert again["name"] == "nightly"
    assert again["status"] == "Running"
    assert (again["jobs_done"], again["jobs_total"]) == (0, 0)
    assert again["finished_at"] is None and again["error"] is None
    assert again["started_at"] > old["started_at"]
    assert await jobs(client, workflow_id) == {}
    # The reset run works like a new one: job 1 is a fresh job, not a retry.
    await send(client, workflow_id, job_info(1, "a"))
    await send(client, workflow_id, {"level": "workflow_success"})
    job = (await jobs(client, workflow_id))[1]
    assert (job["attempt"], job["status"]) == (1, "Done")
    assert (await create_workflow(client, workflow_id="nightly"))["id"] == workflow_id
    listed = await (await client.get("/api/workflows?q=nightly")).get_json()
    assert listed["count"] == 1


async def test_workflow_id_of_a_running_run_gets_a_suffixed_new_run(client: Client):
    workflow_id = await new_run(client, workflow_id="live")
    await send(client, workflow_id, job_info(1, "a"))
    before_wf, before_jobs = await workflow(client, workflow_id), await jobs(client, workflow_id)
    second = await create_workflow(client, workflow_id="live")
    third = await create_workflow(client, workflow_id="live")
    for other in (second, third):
        assert other["id"] != workflow_id
        assert re.fullmatch(r"live-[0-9a-f]{8}", other["name"]), other["name"]
        assert other["status"] == "Running"
    assert second["id"] != third["id"] and second["name"] != third["name"]
    # The live run is untouched.
    assert await workflow(client, workflow_id) == before_wf
    assert await jobs(client, workflow_id) == before_jobs


async def test_a_silent_running_run_is_reused_once_it_is_stale(client: Client, app: Quart):
    workflow_id = await new_run(client, workflow_id="killed")
    await send(client, workflow_id, job_info(1, "a"))
    await set_updated_at(app, workflow_id, utcnow() - timedelta(hours=49))
    again = await create_workflow(client, workflow_id="killed")
    assert (again["id"], again["name"], again["status"]) == (workflow_id, "killed", "Running")
    assert await jobs(client, workflow_id) == {}


async def test_legacy_name_parameter(client: Client):
    legacy = await create_workflow(client, name="old-style")
    assert legacy["name"] == "old-style"
    await send(client, legacy["id"], {"level": "workflow_success"})
    assert (await create_workflow(client, name="old-style"))["id"] == legacy["id"]
    # workflow_id wins over name; an empty workflow_id falls back to name.
    both = await create_workflow(client, workflow_id="new-style", name="old-style")
    assert both["name"] == "new-style"
    fallback = await create_workflow(client, workflow_id="", name="other")
    assert fallback["name"] == "other"
    blank = await create_workflow(client, workflow_id="  ")
    assert re.fullmatch(r"[0-9a-f-]{36}", blank["name"]), blank["name"]


# --------------------------------------------------------------------------- stale


async def test_silent_run_turns_stale_and_the_next_event_revives_it(client: Client, app: Quart):
    hours = 48.0
    workflow_id = await new_run(client)
    finished = await new_run(client)
    await send(client, finished, {"level": "workflow_success"})
    updated = datetime.fromisoformat((await workflow(client, workflow_id))["updated_at"])
    assert await sweep(app, hours, updated + timedelta(hours=hours, minutes=-1)) == 0
    assert (await workflow(client, workflow_id))["status"] == "Running"
    assert await sweep(app, hours, updated + timedelta(hours=hours, minutes=1)) == 1
    assert (await workflow(client, workflow_id))["status"] == "Stale"
    assert (await workflow(client, finished))["status"] == "Done"  # only Running runs
    # Any message, even one that is otherwise ignored, shows the run is alive.
    await send(client, workflow_id, {"level": "debug", "msg": "still here"})
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Running" and wf["finished_at"] is None
    assert datetime.fromisoformat(wf["updated_at"]) > updated
    # stale_hours 0 turns the check off.
    assert await sweep(app, 0, updated + timedelta(days=365)) == 0


async def test_reads_notice_a_stale_run_and_stale_runs_can_be_cancelled(client: Client, app: Quart):
    workflow_id = await new_run(client)
    await set_updated_at(app, workflow_id, utcnow() - timedelta(hours=49))
    assert (await workflow(client, workflow_id))["status"] == "Stale"
    listed = await (await client.get("/api/workflows?status=Stale")).get_json()
    assert [wf["id"] for wf in listed["workflows"]] == [workflow_id]
    response = await client.post(f"/api/workflow/{workflow_id}/cancel")
    assert (await response.get_json())["workflow"]["status"] == "Cancelled"
    assert (await client.delete(f"/api/workflow/{workflow_id}")).status_code == 204


async def test_reads_filter_and_count_a_silent_run_as_stale_before_the_sweep(
    client: Client, app: Quart
):
    silent, fresh, done = await new_run(client), await new_run(client), await new_run(client)
    await send(client, done, {"level": "workflow_success"})
    await set_updated_at(app, silent, utcnow() - timedelta(hours=49))
    await set_updated_at(app, done, utcnow() - timedelta(hours=49))  # only Running goes Stale

    async def listed(query: str) -> list[int]:
        body = await (await client.get(f"/api/workflows?{query}")).get_json()
        return sorted(wf["id"] for wf in body["workflows"])

    assert await listed("status=Running") == [fresh]
    assert await listed("status=Stale") == [silent]
    assert await listed("status=Running,Stale") == sorted([silent, fresh])
    assert await listed("status=Done,Stale") == sorted([silent, done])
    assert await listed("status=Done") == [done]
    stats = await (await client.get("/api/workflows/stats")).get_json()
    assert stats == {"counts": {"Running": 1, "Stale": 1, "Done": 1}, "total": 3}
    # Nothing was written: the sweeper records it later.
    async with service(app).sessions() as session:
        stored = await session.get(Workflow, silent)
        assert stored is not None and stored.status == "Running"


async def test_a_stale_run_can_be_deleted_without_cancelling(client: Client, app: Quart):
    workflow_id = await new_run(client)
    await set_updated_at(app, workflow_id, utcnow() - timedelta(hours=49))
    assert (await client.delete(f"/api/workflow/{workflow_id}")).status_code == 204


# --------------------------------------------------------------------------- storage


async def test_every_stored_event_has_a_strictly_increasing_seq(client: Client, app: Quart):
    workflow_id = await new_run(client)
    await send(client, workflow_id, {"level": "job_started", "jobs": [1, 2]})
    await send(client, workflow_id, job_info(1, "a"))
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    await send(client, workflow_id, {"level": "progress", "done": 1, "total": 2})
    events = await stored_events(app)
    seqs = [event.seq for event in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    times = [event.created_at for event in events]
    assert times == sorted(times)
    assert events[0].type == "workflow.created" and events[0].workflow_id == workflow_id
    # The seq order is the order things happened in.
    job1 = [
        e.payload["job"]["status"] for e in events if e.payload.get("job", {}).get("jobid") == 1
    ]
    assert job1[0] == "Running" and job1[-1] == "Done"
    assert "Done" not in job1[:-1]
    # Numbers are never handed out twice, even after everything is deleted.
    assert (await client.delete("/api/workflows/all")).status_code == 200
    later = await new_run(client)
    await send(client, later, job_info(1, "a"))
    newer = [event.seq for event in await stored_events(app) if event.seq > seqs[-1]]
    assert len(newer) >= 3  # the deletions, the new workflow, its job


async def test_jobs_are_unique_per_workflow_and_jobid(client: Client, app: Quart):
    first = await new_run(client)
    second = await new_run(client)
    for workflow_id in (first, second):
        await send(client, workflow_id, {"level": "job_started", "jobs": [1]})
        await send(client, workflow_id, job_info(1, f"rule-{workflow_id}"))
        await send(client, workflow_id, job_info(1, f"rule-{workflow_id}"))
        await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    assert await job_rows(app, first) == 1
    assert await job_rows(app, second) == 1
    assert (await jobs(client, first))[1]["rule"] == f"rule-{first}"
    assert (await jobs(client, second))[1]["rule"] == f"rule-{second}"
    # The database itself refuses a second row for the same (workflow, jobid).
    async with service(app).sessions() as session:
        session.add(Job(workflow_id=first, jobid=1, status="Running"))
        with pytest.raises(IntegrityError):
            await session.commit()
