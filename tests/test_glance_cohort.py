"""The run at a glance on a cohort-sized recorded run (tests/captures/Snakefile.cohort300):
100 samples x make -> align -> count, then merge and all, 302 jobs, with count(C037)
failing once and succeeding on its retry, so the run ends Done. Recorded with Snakemake 9
and plugin 0.3.0 (sm9-cohort300) and with this repository's plugin 1.0.0 (sm9p-cohort300,
which also sends the plan and the rule graph). The same endpoints on a smaller run with a
failure for good: tests/test_glance.py."""

from __future__ import annotations

import csv
import io
from xml.etree import ElementTree

import pytest
from quart.typing import TestClientProtocol as Client

from panoptes.shapes import TRACE_FIELDS

from .test_glance import get, replay_capture

SAMPLES = [f"C{i:03d}" for i in range(1, 101)]
RULES = ["make", "align", "count"]
FLAKY = "C037"


async def replay(client: Client, name: str = "sm9-cohort300") -> int:
    return await replay_capture(client, name)


async def test_the_grid_has_a_row_per_sample_each_done_and_the_retry_marked(
    client: Client,
) -> None:
    workflow_id = await replay(client)
    grid = await (await get(client, f"/api/workflow/{workflow_id}/grid")).get_json()
    assert (grid["key"], grid["keys"]) == ("sample", {"sample": 100})
    assert grid["rules"] == RULES and grid["other_rules"] == ["merge", "all"]
    rows = {row["wildcards"]["sample"]: row for row in grid["rows"]}
    assert sorted(rows) == SAMPLES and len(grid["rows"]) == 100
    for sample, row in rows.items():
        assert (row["done"], row["failed"], row["total"]) == (3, 0, 3), sample
        assert {cell["status"] for cell in row["cells"].values()} == {"Done"}
    retried = [
        (sample, rule)
        for sample, row in rows.items()
        for rule, cell in row["cells"].items()
        if cell["attempt"] > 1
    ]
    assert retried == [(FLAKY, "count")]
    assert rows[FLAKY]["cells"]["count"]["attempt"] == 2


@pytest.mark.parametrize(
    ("name", "source"), [("sm9-cohort300", "jobs"), ("sm9p-cohort300", "client")]
)
async def test_the_rule_graph_is_make_align_count_merge_all(
    client: Client, name: str, source: str
) -> None:
    workflow_id = await replay(client, name)
    dag = await (await get(client, f"/api/workflow/{workflow_id}/dag")).get_json()
    assert dag["edges_from"] == source
    expected = [["make", "align"], ["align", "count"], ["count", "merge"], ["merge", "all"]]
    assert sorted(dag["edges"]) == sorted(expected)
    nodes = {node["rule"]: node for node in dag["nodes"]}
    assert list(nodes) == [*RULES, "merge", "all"]
    counts = {"make": 100, "align": 100, "count": 100, "merge": 1, "all": 1}
    for rule, jobs in counts.items():
        node = nodes[rule]
        assert (node["total"], node["done"], node["failed"], node["running"]) == (jobs, jobs, 0, 0)
        # Plugin 1.0.0 sends Snakemake's plan; 0.3.0 sends none.
        assert node["planned"] == (jobs if source == "client" else None)


async def test_the_trace_has_a_row_per_attempt_the_retry_included(client: Client) -> None:
    workflow_id = await replay(client)
    response = await get(client, f"/api/workflow/{workflow_id}/trace.tsv")
    table = list(csv.reader(io.StringIO(await response.get_data(as_text=True)), delimiter="\t"))
    assert tuple(table[0]) == TRACE_FIELDS
    rows = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    assert len(rows) == 302 + 1
    assert len({row["jobid"] for row in rows}) == 302
    flaky = [
        row for row in rows if row["wildcards"] == f"sample={FLAKY}" and row["rule"] == "count"
    ]
    assert [(row["attempt"], row["status"]) for row in flaky] == [("1", "Error"), ("2", "Done")]
    assert all(row["status"] == "Done" for row in rows if row not in flaky[:1])
    assert {row["threads"] for row in rows if row["rule"] == "align"} == {"2"}
    assert all("mem_mb=200" in row["resources"] for row in rows if row["rule"] == "align")
    assert all(float(row["duration_s"]) >= 0 for row in rows)


async def test_the_badge_says_done_and_every_job(client: Client) -> None:
    workflow_id = await replay(client)
    wf = (await (await get(client, f"/api/workflow/{workflow_id}")).get_json())["workflow"]
    assert (wf["status"], wf["jobs_done"], wf["jobs_total"], wf["jobs_failed"]) == (
        "Done",
        302,
        302,
        0,
    )
    response = await get(client, f"/badge/{workflow_id}.svg")
    svg = ElementTree.fromstring(await response.get_data(as_text=True))
    texts = [node.text for node in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == [wf["name"], "Done 302/302"]
    fills = [node.get("fill") for node in svg.iter("{http://www.w3.org/2000/svg}rect")]
    assert fills[1] == "#2f9e5b"  # green for Done
