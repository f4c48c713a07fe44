"""What one write batch hands on to the next (store/sql.py, Carried): the workflows and
jobs it holds and the per-rule counts it knows must always be what the database holds,
whatever came between: rules a job moves between, a reset, a deletion, another process's
commit, a batch that failed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.models import JOB_COLUMNS, JobRow
from panoptes.service import Service
from panoptes.store import Tx
from panoptes.store.sql import Carried, Loaded, _count_moves

from .conftest import CAPTURES, create_workflow, send_recorded


@pytest.fixture
async def app(db_path: Path) -> AsyncIterator[Quart]:
    app = create_app(Config(db_url=database_url(str(db_path)), stale_check_seconds=0))
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


def service(app: Quart) -> Service:
    panoptes: Service = app.extensions["panoptes"]
    return panoptes


def carried(app: Quart) -> Loaded:
    held = service(app).writer._carried
    assert held is not None  # an SQLite file
    return held.loaded


def stored_jobs(db_path: Path) -> dict[tuple[int, int], tuple[Any, ...]]:
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT workflow_id, jobid, rule, status, message, attempt FROM jobs")
        return {(row[0], row[1]): row[2:] for row in rows}


def stored_counts(db_path: Path) -> dict[tuple[int, str | None], dict[str, int]]:
    counts: dict[tuple[int, str | None], dict[str, int]] = {}
    with sqlite3.connect(db_path) as db:
        query = "SELECT workflow_id, rule, status, count(*) FROM jobs GROUP BY 1, 2, 3"
        for workflow_id, rule, status, count in db.execute(query):
            counts.setdefault((workflow_id, rule), {})[status] = count
    return counts


def assert_carried_is_stored(app: Quart, db_path: Path) -> None:
    """Every job and count the writer holds between batches is as the file has it."""
    held = carried(app)
    jobs = stored_jobs(db_path)
    for key, job in held.jobs.items():
        assert not job.changed and not job.new
        assert (job.rule, job.status, job.message, job.attempt) == jobs[key], key
    counts = stored_counts(db_path)
    for key, tally in held.counts.items():
        assert {s: n for s, n in tally.items() if n} == counts.get(key, {}), key


def requests(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["sm9-keepgoing", "sm8-keepgoing", "sm8-reuse-id"])
async def test_between_any_two_messages_what_is_carried_is_what_is_stored(
    client: Client, app: Quart, db_path: Path, name: str
):
    # Snakemake 9 announces a job before naming its rule (it moves from no rule to its
    # rule); sm8-reuse-id runs twice under one id, and the second run resets the first.
    compared = 0
    for request in requests(name):
        await send_recorded(client, request)
        assert_carried_is_stored(app, db_path)
        compared += bool(carried(app).counts)
    assert compared > 10  # the counts were carried, and checked, along the way
    # And the last rule.updated event of each rule, counted from what was carried, says
    # what a count of the stored jobs gives.
    announced: dict[str, dict[str, Any]] = {}
    with sqlite3.connect(db_path) as db:
        query = "SELECT payload FROM events WHERE type = 'rule.updated' ORDER BY seq"
        for (payload,) in db.execute(query):
            rule = json.loads(payload)["rule"]
            announced[rule["rule"]] = rule
    counts = stored_counts(db_path)
    assert announced
    for rule in announced.values():
        tally = counts.get((1, rule["rule"] or None), {})
        shown = {key: rule[key.lower()] for key in ("Done", "Running", "Error", "Waiting")}
        assert {key: n for key, n in shown.items() if n} == tally, rule


async def job_message(
    client: Client, workflow_id: int, jobid: int, level: str = "job_info"
) -> None:
    """job_info (rule align), job_started or job_finished, as Snakemake sends them."""
    msg: dict[str, Any] = {"level": level, "jobid": jobid}
    if level == "job_info":
        msg.update(name="align", msg="aligning")
    elif level == "job_started":
        msg = {"level": level, "jobs": [jobid]}
    response = await client.post(
        "/update_workflow_status", form={"msg": json.dumps(msg), "id": str(workflow_id)}
    )
    assert response.status_code == 200, await response.get_data(as_text=True)


async def test_a_commit_by_another_connection_is_read_not_overwritten(
    client: Client, app: Quart, db_path: Path
):
    workflow_id = (await create_workflow(client))["id"]
    await job_message(client, workflow_id, 1)
    assert (workflow_id, 1) in carried(app).jobs
    # Another process (a second server on the file, a command) changes the job.
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE jobs SET message = 'changed elsewhere', rule = 'sort'")
    await job_message(client, workflow_id, 1, level="job_started")
    rule, status, message, _ = stored_jobs(db_path)[(workflow_id, 1)]
    assert (rule, status, message) == ("sort", "Running", "changed elsewhere")
    with sqlite3.connect(db_path) as db:
        query = "SELECT payload FROM events WHERE type = 'rule.updated' ORDER BY seq DESC"
        last = json.loads(db.execute(query).fetchone()[0])["rule"]
    assert (last["rule"], last["running"], last["total"]) == ("sort", 1, 1)
    assert_carried_is_stored(app, db_path)


async def test_a_batch_that_did_not_commit_leaves_nothing_carried(
    client: Client, app: Quart, db_path: Path
):
    workflow_id = (await create_workflow(client))["id"]
    await job_message(client, workflow_id, 1)

    def change_then_fail(tx: Tx) -> None:
        job = tx.job(workflow_id, 1)
        assert job is not None
        job.message = "never committed"
        raise RuntimeError("an unexpected failure after the change")

    with pytest.raises(RuntimeError):
        await service(app).writer.submit(change_then_fail)
    assert (workflow_id, 1) not in carried(app).jobs
    await job_message(client, workflow_id, 1, level="job_started")
    assert stored_jobs(db_path)[(workflow_id, 1)][2] == "aligning"
    assert_carried_is_stored(app, db_path)


async def test_a_deleted_workflow_is_not_carried(client: Client, app: Quart, db_path: Path):
    workflow_id = (await create_workflow(client))["id"]
    await job_message(client, workflow_id, 1)
    assert (await client.post(f"/api/workflow/{workflow_id}/cancel")).status_code == 200
    assert (await client.delete(f"/api/workflow/{workflow_id}")).status_code == 204
    held = carried(app)
    assert workflow_id not in held.workflows
    assert not [key for key in [*held.jobs, *held.counts] if key[0] == workflow_id]


async def test_past_its_limits_the_oldest_are_let_go(
    client: Client, app: Quart, db_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(Carried, "MAX_JOBS", 8)
    workflow_id = (await create_workflow(client))["id"]
    for jobid in range(1, 21):
        await job_message(client, workflow_id, jobid)
        assert len(carried(app).jobs) <= 8
    # The newest are kept, and the jobs let go are read again when named.
    assert (workflow_id, 20) in carried(app).jobs and (workflow_id, 1) not in carried(app).jobs
    await job_message(client, workflow_id, 1, level="job_finished")
    assert stored_jobs(db_path)[(workflow_id, 1)][:3] == ("align", "Done", "aligning")
    assert_carried_is_stored(app, db_path)


def test_a_copy_handed_out_is_not_the_row_the_writer_goes_on_changing():
    job = JobRow({"workflow_id": 1, "jobid": 2, "status": "RUNNING"}, new=True)
    copy = job.snapshot()
    job.status = "DONE"
    assert copy.status == "RUNNING" and copy is not job


def test_a_job_stored_with_what_is_not_known_has_its_workflow_counted_again():
    known = JobRow({"workflow_id": 1, "jobid": 1, "rule": "a", "status": "Running"}, new=False)
    known.status = "Done"  # read from the file: it knows what it was stored with
    was = {"workflow_id": 1, "jobid": 1, "rule": "a", "status": "Running"}
    object.__setattr__(known, "encoded", (tuple(was.get(c) for c in JOB_COLUMNS), ()))
    unknown = JobRow({"workflow_id": 2, "jobid": 1, "rule": "a", "status": "Done"}, new=False)
    fresh = JobRow({"workflow_id": 1, "jobid": 2, "rule": "a", "status": "Waiting"}, new=True)
    counts = {(1, "a"): {"Running": 1}, (2, "a"): {"Running": 1}, (2, "b"): {}}
    _count_moves(counts, [fresh], [known, unknown])
    assert counts == {(1, "a"): {"Running": 0, "Done": 1, "Waiting": 1}}
