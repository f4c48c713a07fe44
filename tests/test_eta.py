"""Time left (`eta_seconds`, panoptes/eta.py) through the real app and database, on recorded
runs replayed up to half-way on their own clock: the 300-job cohort (Snakemake 9 + plugin
0.3.0, no plan; and plugin 1.0.0, with one) and sm9-keepgoing (retries and a failure). The
arithmetic on its own: tests/unit/test_eta.py. How far off it is: docs/eta.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from quart.typing import TestClientProtocol as Client

import panoptes.ingest.runs
import panoptes.routes.api

from .conftest import CAPTURES, create_workflow, post_event, send_recorded


class Clock:
    """The recording's clock, shifted to end a minute ago: what the server takes for now
    (registering a run, estimating), and the time each message says it was sent."""

    def __init__(self, requests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
        self.shift = datetime.now(UTC).timestamp() - requests[-1]["t"] - 60
        self.t = requests[0]["t"]
        for module in (panoptes.routes.api, panoptes.ingest.runs):
            monkeypatch.setattr(module, "utcnow", self.now)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t + self.shift, UTC)

    def stamped(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request with its message's timestamp on this clock (Snakemake 7/8 send one,
        and the server takes it; Snakemake 9's plugin does not, so the server's clock would
        time its jobs at replay speed)."""
        fields = request.get("form") or request.get("json")
        if not isinstance(fields, dict) or not isinstance(fields.get("msg"), str):
            return request
        msg = json.loads(fields["msg"])
        msg["timestamp"] = msg.get("timestamp", request["t"]) + self.shift
        fields = {**fields, "msg": json.dumps(msg)}
        body = urlencode(fields) if "form" in request else json.dumps(fields)
        return {**request, "body": body}


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines()]


def finished(request: dict[str, Any]) -> int | None:
    msg = request.get("msg_json") or {}
    return msg.get("jobid") if msg.get("level") == "job_finished" else None


def half_way(requests: list[dict[str, Any]]) -> int:
    """The index of the request after which half of the run's finished jobs had finished."""
    jobs = {finished(r) for r in requests} - {None}
    seen: set[int] = set()
    for index, request in enumerate(requests):
        jobid = finished(request)
        if jobid is not None:
            seen.add(jobid)
            if len(seen) == len(jobs) // 2:
                return index
    raise AssertionError("no job finished")


async def replay(client: Client, clock: Clock, requests: list[dict[str, Any]]) -> int:
    workflow_id = None
    for request in requests:
        clock.t = request["t"]
        response = await send_recorded(client, clock.stamped(request))
        if request["path"] == "/create_workflow":
            workflow_id = (await response.get_json())["id"]
    assert workflow_id is not None
    return int(workflow_id)


async def workflow(client: Client, workflow_id: int) -> dict[str, Any]:
    response = await client.get(f"/api/workflow/{workflow_id}")
    assert response.status_code == 200
    found: dict[str, Any] = (await response.get_json())["workflow"]
    return found


def durations(jobs: list[dict[str, Any]]) -> list[float]:
    return [
        (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()
        for job in jobs
        if job["status"] == "Done"
    ]


@pytest.mark.parametrize("name", ["sm9-cohort300", "sm9p-cohort300", "sm9-keepgoing"])
async def test_half_way_the_estimate_is_near_the_time_the_run_still_took(
    client: Client, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    requests = recorded(name)
    clock = Clock(requests, monkeypatch)
    middle = half_way(requests)
    workflow_id = await replay(client, clock, requests[: middle + 1])
    wf = await workflow(client, workflow_id)
    assert wf["status"] == "Running" and wf["jobs_done"] < wf["jobs_total"]
    eta = wf["eta_seconds"]
    still_took = requests[-1]["t"] - requests[middle]["t"]
    # Within a factor of two of what the run really took from there (it is within 10% on
    # these three at half-way; docs/eta.md has the figures over the whole of each run).
    assert eta is not None and still_took / 2 <= eta <= still_took * 2, (eta, still_took)
    # And below what the jobs left would take one after the other at the longest duration.
    jobs = (await (await client.get(f"/api/workflow/{workflow_id}/jobs?limit=1000")).get_json())[
        "jobs"
    ]
    left = wf["jobs_total"] - wf["jobs_done"]
    assert eta <= left * max(durations(jobs))
    # The list says the same of it.
    listed = (await (await client.get("/api/workflows")).get_json())["workflows"]
    assert [w["eta_seconds"] for w in listed if w["id"] == workflow_id] == [eta]


@pytest.mark.parametrize(("name", "status"), [("sm9-success", "Done"), ("sm9-keepgoing", "Error")])
async def test_a_finished_run_has_no_estimate(
    client: Client, monkeypatch: pytest.MonkeyPatch, name: str, status: str
) -> None:
    requests = recorded(name)
    workflow_id = await replay(client, Clock(requests, monkeypatch), requests)
    wf = await workflow(client, workflow_id)
    assert wf["status"] == status and wf["eta_seconds"] is None
    listed = (await (await client.get("/api/workflows")).get_json())["workflows"]
    assert [w["eta_seconds"] for w in listed] == [None]


async def test_no_estimate_while_nothing_is_known(client: Client) -> None:
    workflow_id = (await create_workflow(client))["id"]
    assert (await workflow(client, workflow_id))["eta_seconds"] is None  # no job yet
    await post_event(client, workflow_id, {"level": "progress", "done": 0, "total": 3})
    await post_event(client, workflow_id, {"level": "job_started", "jobs": [1]})
    await post_event(client, workflow_id, {"level": "job_info", "jobid": 1, "name": "a"})
    # A job runs, but no job has finished, here or in any earlier run: no duration known.
    assert (await workflow(client, workflow_id))["eta_seconds"] is None


async def test_a_new_run_is_estimated_from_earlier_runs_of_its_rules(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sm9-keepgoing ran before (it ended Error, but its Done jobs have their durations).
    requests = recorded("sm9-keepgoing")
    await replay(client, Clock(requests, monkeypatch), requests)
    monkeypatch.undo()
    workflow_id = (await create_workflow(client))["id"]
    await post_event(client, workflow_id, {"level": "progress", "done": 0, "total": 3})
    await post_event(client, workflow_id, {"level": "job_started", "jobs": [1]})
    await post_event(client, workflow_id, {"level": "job_info", "jobid": 1, "name": "align"})
    eta = (await workflow(client, workflow_id))["eta_seconds"]
    earlier = (await (await client.get("/api/workflow/1/jobs?rule=align")).get_json())["jobs"]
    align = sum(durations(earlier)) / len(durations(earlier))
    # The running align's rest (the earlier mean, less the moment it has run) and the two
    # jobs of no known rule to come, like the earlier aligns: 3 means at most, 1 at least.
    assert eta is not None and align * 0.9 <= eta <= align * 3 + 0.1, (eta, align)
