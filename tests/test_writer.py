"""Batches: operations committed together end exactly as if each had run alone, and the
batch announces each object it changed once, with its final state."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import delete, func, select

from panoptes import ingest
from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.errors import DatabaseUnavailable, InvalidMessage
from panoptes.models import Event
from panoptes.service import Service
from panoptes.store import Changes, Tx
from panoptes.store.writer import MAX_BATCH_WEIGHT

from .conftest import CAPTURES, create_workflow, subscribed
from .test_captures import state

Operation = Callable[[Tx], Any]


def service(app: Quart) -> Service:
    panoptes: Service = app.extensions["panoptes"]
    return panoptes


async def in_one_batch(
    app: Quart, operations: list[Operation], *, retried: bool = False
) -> list[Any]:
    """Run the operations in one transaction, in order; their results or exceptions."""
    batches: list[Changes] = []  # held, so that no two can have the same id()

    def noting_the_batch(operation: Operation) -> Operation:
        def run(tx: Tx) -> Any:
            batches.append(tx.batch)
            return operation(tx)

        return run

    writer = service(app).writer
    # All are queued before the writer task runs again, so it takes them as one batch.
    results = await asyncio.gather(
        *(writer.submit(noting_the_batch(op)) for op in operations), return_exceptions=True
    )
    ran_together = [batch for batch in batches if batch is batches[0]]
    if retried:  # the batch stopped at the failure, then each ran alone
        assert len(ran_together) > 1 and len(batches) == len(ran_together) + len(operations)
    else:
        assert len(ran_together) == len(batches) == len(operations), "not in one batch"
    return results


def applying(message: dict[str, Any], workflow_id: int) -> Operation:
    parsed = ingest.parse_message({"msg": json.dumps(message), "id": workflow_id})
    return lambda tx: ingest.apply_message(tx, parsed)


async def events_of(app: Quart, workflow_id: int, after: int = 0) -> list[Event]:
    async with service(app).sessions() as session:
        query = select(Event).where(Event.workflow_id == workflow_id, Event.seq > after)
        return list(await session.scalars(query.order_by(Event.seq)))


async def last_seq(app: Quart) -> int:
    async with service(app).sessions() as session:
        return await session.scalar(select(func.max(Event.seq))) or 0


async def api(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, path
    return await response.get_json()


# ---- equivalence with one operation per transaction


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines()]


async def register_as_recorded(client: Client, name: str) -> int:
    [request] = [r for r in recorded(name) if r["path"] == "/create_workflow"]
    response = await client.open(
        "/create_workflow",
        method=request["method"],
        query_string=request["query"] or None,
        data=request["body"].encode(),
        headers={"Content-Type": request["content_type"]} if request["content_type"] else {},
    )
    workflow_id: int = (await response.get_json())["id"]
    return workflow_id


def recorded_updates(name: str) -> list[ingest.Message]:
    """The /update_workflow_status bodies of a capture, parsed as the server does, as if
    received when they were recorded: Snakemake 7/8 stamp their events, and panoptes
    believes a stamp only within a day of receipt, so receiving them now would depend on
    the capture's age."""
    messages = []
    for request in recorded(name):
        if request["path"] != "/update_workflow_status":
            continue
        body = request["body"]
        if body.lstrip().startswith("{"):
            fields = json.loads(body)
        else:
            fields = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
        received = datetime.fromtimestamp(request["t"], UTC)
        messages.append(ingest.parse_message(fields, received=received))
    return messages


def without_times(value: Any) -> Any:
    """Times depend on when a message was received, which differs between two replays."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not str(k).endswith("_at")}
    if isinstance(value, list | tuple):
        return [without_times(item) for item in value]
    return value


@pytest.mark.parametrize(
    "name", ["sm9-success", "sm9-fail", "sm8-success", "sm8-fail", "sm7-success", "sm731-success"]
)
async def test_a_whole_run_in_one_batch_ends_as_it_does_message_by_message(
    client: Client, app: Quart, tmp_path: Path, name: str
):
    # The reference: the same recording sent one request at a time to another server.
    alone = create_app(Config(db_url=database_url(str(tmp_path / "alone.db"))))
    async with alone.test_app():
        one_by_one = alone.test_client()
        alone_id = await register_as_recorded(one_by_one, name)
        for message in recorded_updates(name):  # each awaited: a batch of its own
            await service(alone).ingest(message)
        expected = await state(one_by_one, alone_id)

    workflow_id = await register_as_recorded(client, name)
    assert workflow_id == 1  # the recorded bodies name workflow 1
    messages = recorded_updates(name)
    subscription = subscribed(service(app).hub, workflow_id)
    results = await in_one_batch(
        app, [lambda tx, message=message: ingest.apply_message(tx, message) for message in messages]
    )
    assert all(isinstance(result, bool) for result in results), results
    workflow, jobs = await state(client, workflow_id)
    unnamed = {"name": None}  # runs registered without a name get a random one
    assert without_times({**workflow, **unnamed}) == without_times({**expected[0], **unnamed})
    if name.startswith("sm9"):  # times of receipt
        assert without_times(jobs) == without_times(expected[1])
    else:  # Snakemake 7/8 send the time of each event: the jobs' times are theirs
        assert jobs == expected[1]

    # One event per changed object, carrying its final state; the rules' counts are right.
    events = await events_of(app, workflow_id)
    job_events = [event.payload["job"] for event in events if event.type == "job.updated"]
    assert sorted(job["jobid"] for job in job_events) == sorted(jobs)
    assert all(job == jobs[job["jobid"]] for job in job_events)
    workflow_events = [event for event in events if event.type.startswith("workflow.")]
    assert len(workflow_events) == 2  # created (its own batch), then this batch's update
    # The feed's workflow is the API's without the time left (eta_seconds: asked for, not sent).
    feed_shape = {key: value for key, value in workflow.items() if key != "eta_seconds"}
    assert without_times(workflow_events[-1].payload["workflow"]) == without_times(feed_shape)
    rules = {
        e.payload["rule"]["rule"]: e.payload["rule"] for e in events if e.type == "rule.updated"
    }
    progress = (await api(client, f"/api/workflow/{workflow_id}/rules"))["rules"]
    assert [rules[rule["rule"]] for rule in progress] == progress
    assert all(rule["total"] == 0 for name, rule in rules.items() if name not in jobs_rules(jobs))
    # What the subscribers got is what was stored, in seq order.
    published = [json.loads((await subscription.get()).text) for _ in events[1:]]
    assert [(m["seq"], m["type"]) for m in published] == [(e.seq, e.type) for e in events[1:]]
    assert [m["job"] for m in published if m["type"] == "job.updated"] == job_events


def jobs_rules(jobs: dict[int, dict[str, Any]]) -> set[str]:
    return {job["rule"] or "" for job in jobs.values()}


# ---- coalescing


async def test_a_job_changed_three_times_in_a_batch_is_announced_once(client: Client, app: Quart):
    workflow_id = (await create_workflow(client))["id"]
    before = await last_seq(app)
    await in_one_batch(
        app,
        [
            applying({"level": "job_started", "jobs": [1, 2]}, workflow_id),
            applying({"level": "job_info", "jobid": 1, "name": "map"}, workflow_id),
            applying({"level": "job_finished", "jobid": 1}, workflow_id),
        ],
    )
    events = await events_of(app, workflow_id, before)
    assert [event.type for event in events] == ["job.updated"] * 2 + ["rule.updated"] * 2
    assert [(e.payload["job"]["jobid"], e.payload["job"]["status"]) for e in events[:2]] == [
        (1, "Done"),
        (2, "Running"),
    ]
    assert events[0].payload["job"]["rule"] == "map"
    # Job 1 left the rule-less jobs for "map": both counts were sent, as they are now.
    counts = [event.payload["rule"] for event in events[2:]]
    assert [(c["rule"], c["total"], c["running"], c["done"]) for c in counts] == [
        ("", 1, 1, 0),
        ("map", 1, 0, 1),
    ]
    assert len({event.created_at for event in events}) == 1


async def test_a_new_workflow_changed_in_its_batch_is_announced_as_created(
    client: Client, app: Quart
):
    registered: list[int] = []

    def register(tx: Tx) -> None:
        wf = ingest.register_workflow(tx, ingest.Registration(name="fresh"), 0)
        tx.flush()
        registered.append(wf.id)

    def progress(tx: Tx) -> None:
        [workflow_id] = registered
        applying({"level": "progress", "done": 0, "total": 5}, workflow_id)(tx)

    await in_one_batch(app, [register, progress])
    [workflow_id] = registered
    events = await events_of(app, workflow_id)
    assert [event.type for event in events] == ["workflow.created"]
    assert events[0].payload["workflow"]["jobs_total"] == 5


async def test_a_reset_is_not_hidden_by_a_rename_in_the_same_batch(client: Client, app: Quart):
    old = (await create_workflow(client, workflow_id="old"))["id"]
    await service(app).cancel(old)

    def rename(tx: Tx) -> None:
        wf = tx.workflow(old)
        assert wf is not None
        wf.name = "new"
        tx.changed_workflow(wf, "workflow.renamed")

    def register_again(tx: Tx) -> int:
        wf = ingest.register_workflow(tx, ingest.Registration(name="new"), 0)
        return wf.id

    before = await last_seq(app)
    _, reused = await in_one_batch(app, [rename, register_again])
    assert reused == old  # the finished run of that name is reused
    events = await events_of(app, old, before)
    assert [event.type for event in events] == ["workflow.reset"]
    assert events[0].payload["workflow"]["name"] == "new"


async def test_the_same_name_twice_in_one_batch_gives_two_runs(client: Client, app: Quart):
    def register(tx: Tx) -> str:
        wf = ingest.register_workflow(tx, ingest.Registration(name="twice"), 0)
        tx.flush()
        return wf.name

    first, second = await in_one_batch(app, [register, register])
    assert first == "twice" and second.startswith("twice-")


async def test_a_reset_drops_what_the_batch_did_to_the_old_run(client: Client, app: Quart):
    workflow_id = (await create_workflow(client, workflow_id="again"))["id"]
    for message in (
        {"level": "job_info", "jobid": 1, "name": "old"},
        {"level": "job_finished", "jobid": 1},
        {"level": "progress", "done": 1, "total": 1},
    ):
        await service(app).writer.submit(applying(message, workflow_id))
    before = await last_seq(app)

    def register_again(tx: Tx) -> int:
        wf = ingest.register_workflow(tx, ingest.Registration(name="again"), 0)
        return wf.id

    _, reused, _ = await in_one_batch(
        app,
        [
            applying({"level": "job_info", "jobid": 1, "name": "old", "msg": "late"}, workflow_id),
            register_again,
            applying({"level": "job_started", "jobs": [7]}, workflow_id),
        ],
    )
    assert reused == workflow_id
    jobs = (await api(client, f"/api/workflow/{workflow_id}/jobs"))["jobs"]
    assert [job["jobid"] for job in jobs] == [7]
    events = await events_of(app, workflow_id, before)
    assert [event.type for event in events] == ["workflow.reset", "job.updated", "rule.updated"]
    assert events[1].payload["job"]["jobid"] == 7
    assert events[2].payload["rule"]["total"] == 1


async def test_a_workflow_deleted_in_a_batch_is_only_announced_deleted(client: Client, app: Quart):
    workflow_id = (await create_workflow(client))["id"]
    other = (await create_workflow(client))["id"]
    panoptes = service(app)
    await panoptes.cancel(workflow_id)
    before = await last_seq(app)

    def delete_it(tx: Tx) -> None:
        wf = panoptes._existing(tx, workflow_id)
        tx.remove_workflows([wf])

    results = await in_one_batch(
        app,
        [
            applying({"level": "job_info", "jobid": 1, "name": "a"}, workflow_id),
            applying({"level": "job_info", "jobid": 1, "name": "b"}, other),
            delete_it,
            applying({"level": "job_info", "jobid": 2, "name": "a"}, workflow_id),
        ],
    )
    assert isinstance(results[3], InvalidMessage) and results[3].status == 422
    events = await events_of(app, workflow_id, before)
    assert [event.type for event in events] == ["workflow.deleted"]
    kept = await events_of(app, other, before)
    assert [event.type for event in kept] == ["job.updated", "rule.updated"]
    assert events[0].seq < kept[0].seq < kept[1].seq


# ---- one operation's failure


async def test_a_refused_operation_costs_the_batch_nothing(client: Client, app: Quart):
    workflow_id = (await create_workflow(client))["id"]
    before = await last_seq(app)
    results = await in_one_batch(
        app,
        [
            applying({"level": "job_info", "jobid": 1, "name": "a"}, workflow_id),
            applying({"level": "job_info", "jobid": 1, "name": "a"}, workflow_id + 100),
            applying({"level": "job_finished", "jobid": 1}, workflow_id),
        ],
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], InvalidMessage)
    events = await events_of(app, workflow_id, before)
    assert [event.type for event in events] == ["job.updated", "rule.updated"]
    assert events[0].payload["job"]["status"] == "Done"


async def test_an_unexpected_failure_costs_only_its_own_operation(client: Client, app: Quart):
    workflow_id = (await create_workflow(client))["id"]

    def broken(tx: Tx) -> None:
        raise RuntimeError("disk on fire")

    results = await in_one_batch(
        app,
        [
            applying({"level": "job_info", "jobid": 1, "name": "a"}, workflow_id),
            broken,
            applying({"level": "job_info", "jobid": 2, "name": "a"}, workflow_id),
        ],
        retried=True,
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], RuntimeError)
    jobs = (await api(client, f"/api/workflow/{workflow_id}/jobs"))["jobs"]
    assert [job["jobid"] for job in jobs] == [1, 2]
    rules = (await api(client, f"/api/workflow/{workflow_id}/rules"))["rules"]
    assert [(rule["rule"], rule["total"]) for rule in rules] == [("a", 2)]


# ---- numbers


async def test_numbers_continue_above_every_number_ever_handed_out(client: Client, app: Quart):
    workflow_id = (await create_workflow(client))["id"]
    await in_one_batch(
        app,
        [
            applying({"level": "job_started", "jobs": [jobid]}, workflow_id)
            for jobid in (30, 10, 20)
        ],
    )
    # Jobs are listed in the order they were announced, whatever their numbers.
    jobs = (await api(client, f"/api/workflow/{workflow_id}/jobs"))["jobs"]
    assert [job["jobid"] for job in jobs] == [30, 10, 20]
    # The newest events go (as retention removes old runs' events): their seqs are not
    # handed out again.
    highest = await last_seq(app)
    async with service(app).sessions() as session, session.begin():
        await session.execute(delete(Event).where(Event.seq > highest - 3))
    await in_one_batch(app, [applying({"level": "job_finished", "jobid": 10}, workflow_id)])
    newer = await events_of(app, workflow_id, highest - 3)
    assert newer and all(event.seq > highest for event in newer)
    seqs = [event.seq for event in newer]
    assert seqs == sorted(set(seqs))


async def test_a_run_that_succeeds_in_the_batch_that_ran_its_jobs(client: Client, app: Quart):
    """The batch's own changes count when the run ends: a job it finished keeps its end, a
    job it started and nobody finished (snakemake -q) ends with the run."""
    workflow_id = (await create_workflow(client))["id"]
    await service(app).writer.submit(applying({"level": "job_started", "jobs": [1]}, workflow_id))
    now = time.time()
    await in_one_batch(
        app,
        [
            applying({"level": "job_finished", "jobid": 1, "timestamp": now - 100}, workflow_id),
            applying({"level": "job_started", "jobs": [2], "timestamp": now - 90}, workflow_id),
            applying(
                {"level": "info", "msg": "Complete log: x", "timestamp": now - 50}, workflow_id
            ),
        ],
    )
    jobs = {
        job["jobid"]: job
        for job in (await api(client, f"/api/workflow/{workflow_id}/jobs"))["jobs"]
    }
    assert {jobid: job["status"] for jobid, job in jobs.items()} == {1: "Done", 2: "Done"}
    ended = {
        jobid: datetime.fromisoformat(job["finished_at"]).timestamp() for jobid, job in jobs.items()
    }
    assert ended == pytest.approx({1: now - 100, 2: now - 50}, abs=0.01)
    assert all(len(job["attempts"]) == 1 for job in jobs.values())
    workflow = (await api(client, f"/api/workflow/{workflow_id}"))["workflow"]
    assert (workflow["status"], workflow["jobs_done"], workflow["jobs_total"]) == ("Done", 2, 2)


# ---- writers of several processes on one SQLite file


async def test_a_writer_waits_for_the_file_turn_and_takes_it_when_released(
    tmp_path: Path,
) -> None:
    """Another process holding the turn (an flock beside the database) holds this writer's
    commit back, without blocking the event loop; releasing it lets the commit through."""
    db = tmp_path / "turns.db"
    panoptes = Service(Config(db_url=database_url(str(db))))
    await panoptes.start()
    other = os.open(f"{db}-writer.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        registering = asyncio.create_task(panoptes.register(ingest.Registration(name="held")))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the writer waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks == 20 and not registering.done()
        fcntl.flock(other, fcntl.LOCK_UN)
        workflow = await asyncio.wait_for(registering, 5)
        assert workflow["name"] == "held"
        # The writer gave the turn back after its commit: another process can take it.
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
        await panoptes.stop()


async def test_a_batch_holds_at_most_so_much_work(app: Quart) -> None:
    """Operations queued together are batched only up to MAX_BATCH_WEIGHT rows of work, so
    no batch, and no wait behind one, grows with what the queue holds."""
    batches: list[Changes] = []

    def note(tx: Tx) -> None:
        batches.append(tx.batch)

    writer = service(app).writer
    weight = MAX_BATCH_WEIGHT // 4
    await asyncio.gather(*(writer.submit(note, weight=weight) for _ in range(12)))
    sizes = [
        sum(1 for b in batches if b is batch) for batch in {id(b): b for b in batches}.values()
    ]
    assert sum(sizes) == 12
    assert max(sizes) == 4  # 4 x weight reaches the bound: the fifth waits for the next


async def test_a_write_past_its_time_gets_503_unless_it_was_allowed_longer(
    tmp_path: Path,
) -> None:
    """The watchdog (issue 15.4): a submitter waits PANOPTES_DB_TIMEOUT for its commit at
    most, unless the write was submitted as one that may take long (delete all, prune). On
    an SQLite file, where a batch runs in the writer's thread: a slow operation elsewhere
    would hold the event loop the timer runs on."""
    app = create_app(Config(db_url=database_url(str(tmp_path / "watchdog.db")), db_timeout=0.2))
    async with app.test_app():
        writer = service(app).writer

        def slow(tx: Tx) -> str:
            time.sleep(0.6)
            return "done"

        with pytest.raises(DatabaseUnavailable) as refused:
            await writer.submit(slow)
        assert refused.value.status == 503 and "0.2 s" in refused.value.detail
        # While that batch still runs, past its time, new writes are refused at once.
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await writer.submit(lambda tx: None)
        assert time.monotonic() - began < 0.1
        await asyncio.sleep(0.6)  # the slow one ends
        assert await writer.submit(slow, allowed_seconds=5) == "done"


async def test_a_cancelled_submitter_takes_its_operation_with_it_unless_it_began(
    tmp_path: Path,
) -> None:
    """Hypercorn cancels a request whose client went away. Its operation, still queued,
    never runs; one already in the batch being written commits, unanswered; the writer
    goes on with the rest."""
    app = create_app(Config(db_url=database_url(str(tmp_path / "cancel.db"))))
    async with app.test_app():
        writer = service(app).writer
        began, gate = threading.Event(), threading.Event()
        ran: list[str] = []

        def held(tx: Tx) -> str:
            ran.append("held")
            began.set()
            gate.wait(5)
            return "held"

        def noting(name: str) -> Operation:
            def run(tx: Tx) -> str:
                ran.append(name)
                return name

            return run

        first = asyncio.create_task(writer.submit(held))
        assert await asyncio.to_thread(began.wait, 5)  # the batch holding it is being written
        queued = asyncio.create_task(writer.submit(noting("queued")))
        await asyncio.sleep(0.05)
        queued.cancel()
        first.cancel()  # its operation has begun
        gate.set()
        for task in (first, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await writer.submit(noting("after")) == "after"
        assert ran == ["held", "after"]
