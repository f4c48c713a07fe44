"""The run at a glance, through the real app and database (issue 13, its first endpoints):
datasets x rules (`/grid`), every attempt as a trace (`/trace.tsv`), and a status badge
(`/badge/<id>.svg`), on a recorded Snakemake 9 run with a failure and a retry."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any
from xml.etree import ElementTree

from quart.typing import TestClientProtocol as Client

from panoptes.shapes import TRACE_FIELDS

from .conftest import CAPTURES, create_workflow, post_event, send_recorded


async def replay_keepgoing(client: Client) -> int:
    """sm9-keepgoing: 6 samples x make -> align -> count; align(S2) fails, align(S4) fails once
    and succeeds on its retry; the run ends Error (see tests/captures/Snakefile.keepgoing)."""
    return await replay_capture(client, "sm9-keepgoing")


async def replay_capture(client: Client, name: str) -> int:
    """Send a recorded run as it was; the id of the workflow it made."""
    workflow_id = None
    for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines():
        request = json.loads(line)
        response = await send_recorded(client, request)
        if request["path"] == "/create_workflow":
            workflow_id = (await response.get_json())["id"]
    assert workflow_id is not None
    return int(workflow_id)


async def get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, (path, await response.get_data(as_text=True))
    return response


async def test_the_grid_shows_each_sample_per_rule_failures_first(client: Client) -> None:
    workflow_id = await replay_keepgoing(client)
    grid = await (await get(client, f"/api/workflow/{workflow_id}/grid")).get_json()
    assert grid["key"] == "sample" and grid["keys"] == {"sample": 6}
    assert grid["rules"] == ["make", "align", "count"]
    rows = {row["wildcards"]["sample"]: row for row in grid["rows"]}
    assert list(rows) == ["S2", "S1", "S3", "S4", "S5", "S6"]  # the failed one first
    failed = rows["S2"]
    assert failed["cells"]["align"]["status"] == "Error"
    assert "count" not in failed["cells"]  # blocked behind the failure: it never ran
    assert (failed["done"], failed["failed"], failed["total"]) == (1, 1, 3)
    retried = rows["S4"]["cells"]["align"]
    assert (retried["status"], retried["attempt"], retried["jobs"]) == ("Done", 2, 1)
    assert all(row["done"] == 3 for name, row in rows.items() if name != "S2")
    # Each cell links to its job.
    job = await (
        await get(client, f"/api/workflow/{workflow_id}/job/{failed['cells']['align']['jobid']}")
    ).get_json()
    assert job["job"]["wildcards"] == {"sample": "S2"} and job["job"]["rule"] == "align"


async def test_the_grid_groups_by_the_wildcard_asked_for(client: Client) -> None:
    workflow_id = (await create_workflow(client))["id"]
    jobs = [
        (1, "call", {"sample": "A", "chrom": "1"}),
        (2, "call", {"sample": "A", "chrom": "2"}),
        (3, "call", {"sample": "B", "chrom": "1"}),
        (4, "call", {"sample": "B", "chrom": "2"}),
        (5, "call", {"sample": "C", "chrom": "1"}),
        (6, "merge", {}),
    ]
    await post_event(client, workflow_id, {"level": "job_started", "jobs": [1, 2, 3, 4, 5, 6]})
    for jobid, rule, wildcards in jobs:
        msg = {"level": "job_info", "jobid": jobid, "name": rule, "wildcards": wildcards}
        assert (await post_event(client, workflow_id, msg)).status_code == 200
    await post_event(client, workflow_id, {"level": "job_finished", "jobid": 1})
    await post_event(client, workflow_id, {"level": "job_error", "jobid": 4})
    grid = await (await get(client, f"/api/workflow/{workflow_id}/grid")).get_json()
    assert (grid["key"], grid["keys"]) == ("sample", {"sample": 3, "chrom": 2})
    assert (grid["rules"], grid["other_rules"]) == (["call"], ["merge"])
    by_sample = {row["wildcards"]["sample"]: row["cells"]["call"] for row in grid["rows"]}
    # A cell over several jobs shows the most telling one: B's failure, A's running chrom 2.
    assert by_sample["B"] == {"jobid": 4, "status": "Error", "attempt": 1, "jobs": 2}
    assert by_sample["A"] == {"jobid": 2, "status": "Running", "attempt": 1, "jobs": 2}
    by_chrom = await (await get(client, f"/api/workflow/{workflow_id}/grid?key=chrom")).get_json()
    assert [row["wildcards"] for row in by_chrom["rows"]] == [{"chrom": "2"}, {"chrom": "1"}]
    assert by_chrom["rows"][1]["cells"]["call"]["jobs"] == 3


async def test_the_trace_has_a_row_per_attempt(client: Client) -> None:
    workflow_id = await replay_keepgoing(client)
    response = await get(client, f"/api/workflow/{workflow_id}/trace.tsv")
    assert response.content_type.startswith("text/tab-separated-values")
    table = list(csv.reader(io.StringIO(await response.get_data(as_text=True)), delimiter="\t"))
    assert tuple(table[0]) == TRACE_FIELDS
    rows = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    jobs = (await (await get(client, f"/api/workflow/{workflow_id}/jobs")).get_json())["jobs"]
    # --retries 1: align(S2) failed twice, align(S4) failed then succeeded.
    assert len(rows) == sum(len(job["attempts"]) for job in jobs) == len(jobs) + 2
    flaky = [row for row in rows if row["rule"] == "align" and row["wildcards"] == "sample=S4"]
    assert [(row["attempt"], row["status"]) for row in flaky] == [("1", "Error"), ("2", "Done")]
    assert all(float(row["duration_s"]) >= 0 for row in flaky)
    failed = [row for row in rows if row["wildcards"] == "sample=S2" and row["rule"] == "align"]
    assert [(row["attempt"], row["status"]) for row in failed] == [("1", "Error"), ("2", "Error")]
    assert all(row["error"] for row in failed)


async def test_the_badge_says_name_status_and_progress(client: Client) -> None:
    workflow_id = await replay_keepgoing(client)
    response = await get(client, f"/badge/{workflow_id}.svg")
    assert response.content_type == "image/svg+xml"
    svg = ElementTree.fromstring(await response.get_data(as_text=True))
    texts = [node.text for node in svg.iter("{http://www.w3.org/2000/svg}text")]
    workflow = (await (await get(client, f"/api/workflow/{workflow_id}")).get_json())["workflow"]
    expected = f"Error {workflow['jobs_done']}/{workflow['jobs_total']}"
    assert texts == [workflow["name"], expected]
    fills = [node.get("fill") for node in svg.iter("{http://www.w3.org/2000/svg}rect")]
    assert fills[1] == "#c9372c"  # red for Error
    assert (await client.get("/badge/99999.svg")).status_code == 404


async def test_the_timeline_has_every_attempt_on_one_clock(client: Client) -> None:
    workflow_id = await replay_keepgoing(client)
    timeline = await (await get(client, f"/api/workflow/{workflow_id}/timeline")).get_json()
    jobs = (await (await get(client, f"/api/workflow/{workflow_id}/jobs")).get_json())["jobs"]
    assert timeline["rules"][:3] == ["make", "align", "count"]
    bars = [dict(zip(BAR_FIELDS, bar, strict=True)) for bar in timeline["bars"]]
    assert len(bars) == sum(len(job["attempts"]) for job in jobs)
    origin = datetime.fromisoformat(timeline["origin"])
    for bar, (job, attempt) in zip(bars, attempts_in_order(jobs), strict=True):
        assert bar["jobid"] == job["jobid"] and bar["attempt"] == attempt["attempt"]
        assert timeline["rules"][bar["rule"]] == job["rule"]
        assert timeline["statuses"][bar["status"]] == attempt["status"]
        start = origin + timedelta(milliseconds=bar["start"])
        assert abs(start - datetime.fromisoformat(attempt["started_at"])) < timedelta(seconds=0.01)
        assert bar["end"] is not None and bar["end"] >= bar["start"] >= 0
    assert min(bar["start"] for bar in bars) == 0
    assert timeline["wildcards"][0] == "" and len(set(timeline["wildcards"])) == len(
        timeline["wildcards"]
    )  # each set once
    for bar, (job, _attempt) in zip(bars, attempts_in_order(jobs), strict=True):
        pairs = ",".join(f"{name}={value}" for name, value in (job["wildcards"] or {}).items())
        assert timeline["wildcards"][bar["wildcards"]] == pairs
    flaky = [
        bar
        for bar in bars
        if timeline["wildcards"][bar["wildcards"]] == "sample=S4" and bar["rule"] == 1
    ]
    statuses = [timeline["statuses"][bar["status"]] for bar in flaky]
    assert [bar["attempt"] for bar in flaky] == [1, 2] and statuses == ["Error", "Done"]


async def test_an_empty_timeline_has_no_origin(client: Client) -> None:
    workflow_id = (await create_workflow(client))["id"]
    timeline = await (await get(client, f"/api/workflow/{workflow_id}/timeline")).get_json()
    assert timeline["origin"] is None and timeline["bars"] == []
    assert (await client.get("/api/workflow/99999/timeline")).status_code == 404


BAR_FIELDS = ("jobid", "rule", "attempt", "status", "start", "end", "wildcards")


def attempts_in_order(jobs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (job, attempt)
        for job in sorted(jobs, key=lambda job: job["jobid"])
        for attempt in job["attempts"]
        if attempt["started_at"]
    ]
