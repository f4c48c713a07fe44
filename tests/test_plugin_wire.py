"""What plugin 1.0.0 adds to the wire (docs/wire.md), through the real app and database:
the run's description, the plan and the rule graph, why a job failed, what it used, and
the end of a failed run. The plugin itself is tested in plugin/tests, and the two together
with real Snakemake in tests/e2e/test_plugin.py."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from quart.typing import TestClientProtocol as Client

from panoptes.ingest import facts

from .conftest import create_workflow, post_event

RUN = {
    "command": "snakemake --cores 4 --logger panoptes",
    "workdir": "/data/cohort-7",
    "snakefile": "/data/cohort-7/workflow/Snakefile",
    "host": "node17",
    "user": "ana",
    "snakemake_version": "9.27.1",
    "client": "snakemake-logger-plugin-panoptes/1.0.0",
}
STATS = {"trim": 3, "align": 3, "count": 3, "all": 1, "total": 10}
GRAPH = {
    "level": "rulegraph",
    "rules": ["trim", "align", "count", "all"],
    "edges": [["trim", "align"], ["align", "count"], ["count", "all"], ["trim", "align"]],
}
RULE_ERROR = (
    "RuleException:\nCalledProcessError in file /data/cohort-7/workflow/Snakefile, line 23:\n"
    "Command 'set -euo pipefail; align s2' returned non-zero exit status 3."
)
MARKER = "ERROR: truncated FASTQ record at line 4021"


async def get(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, (path, await response.get_data(as_text=True))
    return await response.get_json()


async def send(client: Client, workflow_id: int, msg: dict[str, Any]) -> None:
    response = await post_event(client, workflow_id, msg)
    assert response.status_code == 200, (msg, await response.get_data(as_text=True))


async def register(client: Client, **query: str) -> int:
    response = await client.get(
        "/create_workflow",
        query_string=query,
        data=urlencode(RUN),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    workflow_id: int = (await response.get_json())["id"]
    return workflow_id


async def job(client: Client, workflow_id: int, jobid: int) -> dict[str, Any]:
    found: dict[str, Any] = (await get(client, f"/api/workflow/{workflow_id}/job/{jobid}"))["job"]
    return found


async def start(client: Client, workflow_id: int, jobid: int, rule: str, sample: str) -> None:
    await send(client, workflow_id, {"level": "job_started", "jobs": [jobid]})
    info = {
        "level": "job_info",
        "jobid": jobid,
        "name": rule,
        "input": [f"{rule}-in/{sample}"],
        "output": [f"{rule}/{sample}"],
        "log": [f"logs/{rule}/{sample}.log"],
        "wildcards": {"sample": sample},
        "threads": 4,
        "resources": {"mem_mb": 2000, "runtime": 30},
    }
    await send(client, workflow_id, info)


async def test_the_run_is_described_and_named_after_its_directory(client: Client) -> None:
    workflow_id = await register(client)
    workflow = (await get(client, f"/api/workflow/{workflow_id}"))["workflow"]
    assert {name: workflow[name] for name in RUN} == RUN
    assert workflow["name"] == "cohort-7"
    # A second run there gets its own name and its own description.
    again = await register(client)
    second = (await get(client, f"/api/workflow/{again}"))["workflow"]
    assert again != workflow_id
    assert second["name"].startswith("cohort-7-") and second["host"] == "node17"
    # A stable id names the run instead; a reuse takes the new description.
    named = await register(client, workflow_id="my-cohort")
    assert (await get(client, f"/api/workflow/{named}"))["workflow"]["name"] == "my-cohort"
    await send(client, named, {"level": "workflow_success"})
    response = await client.get("/create_workflow", query_string={"workflow_id": "my-cohort"})
    reused = await response.get_json()
    assert reused["id"] == named and reused["host"] is None and reused["workdir"] is None
    # The pages show it.
    page = await (await client.get(f"/workflow/{workflow_id}")).get_data(as_text=True)
    assert "node17" in page and "9.27.1" in page and RUN["snakefile"] in page


async def test_the_plan_and_the_rule_graph_make_the_dag(client: Client) -> None:
    workflow_id = await register(client)
    await send(client, workflow_id, {"level": "progress", "done": 0, "total": 10})
    await send(client, workflow_id, {"level": "run_info", "msg": "Job stats: ...", "stats": STATS})
    await send(client, workflow_id, GRAPH)
    await start(client, workflow_id, 1, "trim", "s1")
    await send(client, workflow_id, {"level": "job_finished", "jobid": 1})
    await start(client, workflow_id, 2, "trim", "s2")
    rules = {
        rule["rule"]: rule
        for rule in (await get(client, f"/api/workflow/{workflow_id}/rules"))["rules"]
    }
    assert {name: rules[name]["planned"] for name in rules} == {
        "trim": 3,
        "align": 3,
        "count": 3,
        "all": 1,
    }
    dag = await get(client, f"/api/workflow/{workflow_id}/dag")
    assert dag["edges_from"] == "client"
    assert dag["edges"] == [["trim", "align"], ["align", "count"], ["count", "all"]]
    assert [node["rule"] for node in dag["nodes"]] == ["trim", "align", "count", "all"]
    trim = dag["nodes"][0]
    assert (trim["planned"], trim["done"], trim["running"], trim["failed"]) == (3, 1, 1, 0)
    assert dag["nodes"][3] == {
        "rule": "all",
        "planned": 1,
        "total": 0,
        "done": 0,
        "running": 0,
        "failed": 0,
        "waiting": 0,
    }


async def test_without_a_rule_graph_the_jobs_files_make_the_edges(client: Client) -> None:
    workflow_id = (await create_workflow(client))["id"]
    await send(client, workflow_id, {"level": "job_started", "jobs": [1, 2, 3]})
    for jobid, rule, inputs, outputs in (
        (1, "trim", ["raw/s1.fq"], ["trimmed/s1.fq"]),
        (2, "align", ["trimmed/s1.fq", "ref.fa"], ["bam/s1.bam"]),
        (3, "report", ["bam/s1.bam", "trimmed/s1.fq"], ["report.html"]),
    ):
        msg = {"level": "job_info", "jobid": jobid, "name": rule, "input": inputs}
        await send(client, workflow_id, {**msg, "output": outputs})
    dag = await get(client, f"/api/workflow/{workflow_id}/dag")
    assert dag["edges_from"] == "jobs"
    assert sorted(dag["edges"]) == [["align", "report"], ["trim", "align"], ["trim", "report"]]
    assert [node["rule"] for node in dag["nodes"]] == ["trim", "align", "report"]
    assert all(node["planned"] is None and node["running"] == 1 for node in dag["nodes"])


async def test_a_failed_job_keeps_its_log_tails_exit_code_and_error(client: Client) -> None:
    workflow_id = await register(client)
    await start(client, workflow_id, 4, "align", "s2")
    tail = "aligning s2\n" + MARKER + "\n"
    failure = {
        "level": "job_error",
        "jobid": 4,
        "name": "align",
        "error": RULE_ERROR,
        "exit_code": 3,
        "logs": [
            {"path": "logs/align/s2.log", "tail": tail, "truncated": False},
            {"path": "logs/align/s2.err", "error": "No such file or directory"},
        ],
    }
    await send(
        client, workflow_id, {"level": "error", "msg": RULE_ERROR, "exception": "RuleException"}
    )
    await send(client, workflow_id, failure)
    failed = await job(client, workflow_id, 4)
    assert failed["status"] == "Error"
    assert failed["error"] == RULE_ERROR and failed["exit_code"] == 3
    assert failed["logs"][0] == {"path": "logs/align/s2.log", "tail": tail, "truncated": False}
    assert failed["logs"][1] == {"path": "logs/align/s2.err", "error": "No such file or directory"}
    assert failed["error_line"] == MARKER
    # The job page shows the tail; the workflow page lists the job with its reason.
    page = await (await client.get(f"/workflow/{workflow_id}/job/4")).get_data(as_text=True)
    assert MARKER in page and "logs/align/s2.log" in page and "not read: No such file" in page
    assert "mem_mb" in page and "2000" in page
    overview = await (await client.get(f"/workflow/{workflow_id}")).get_data(as_text=True)
    failed_list = overview[overview.index('id="failed-jobs"') :]
    assert MARKER in failed_list[: failed_list.index("</section>")]
    # A retry starts clean: the logs and exit code were the failed attempt's.
    await send(client, workflow_id, {"level": "job_started", "jobs": [4]})
    retried = await job(client, workflow_id, 4)
    assert (retried["status"], retried["logs"], retried["exit_code"]) == ("Running", [], None)
    assert retried["attempts"][0]["error"] == RULE_ERROR


async def test_the_exit_code_is_read_from_the_error_when_not_sent(client: Client) -> None:
    """Snakemake 7/8 and plugin 0.3.0 send no exit_code; 7/8's error text says it."""
    workflow_id = (await create_workflow(client))["id"]
    await start(client, workflow_id, 2, "align", "s1")
    await send(client, workflow_id, {"level": "error", "msg": RULE_ERROR})
    await send(client, workflow_id, {"level": "job_error", "jobid": 2, "name": "align"})
    failed = await job(client, workflow_id, 2)
    assert (failed["exit_code"], failed["logs"], failed["error"]) == (3, [], RULE_ERROR)
    assert failed["error_line"].startswith("CalledProcessError in file")


async def test_log_tails_are_bounded(client: Client) -> None:
    workflow_id = await register(client)
    await start(client, workflow_id, 1, "align", "s1")
    long_tail = "x" * 100 + "\n" + "y" * facts.MAX_TAIL_CHARS
    logs = [{"path": "big.log", "tail": long_tail, "truncated": False}]
    logs += [{"path": f"{n}.log", "tail": "fine\n"} for n in range(30)]
    await send(client, workflow_id, {"level": "job_error", "jobid": 1, "logs": logs})
    kept = (await job(client, workflow_id, 1))["logs"]
    assert len(kept) == facts.MAX_LOGS_PER_JOB
    assert kept[0]["tail"] == "y" * facts.MAX_TAIL_CHARS and kept[0]["truncated"] is True
    assert kept[1] == {"path": "0.log", "tail": "fine\n", "truncated": False}


async def test_a_finished_job_keeps_its_benchmark(client: Client) -> None:
    workflow_id = await register(client)
    await start(client, workflow_id, 1, "align", "s1")
    measured = {"s": 12.5, "max_rss": 812.4, "io_out": 120, "mean_load": 98.7, "cpu_time": 12.1}
    noise = {"h:m:s": "0:00:12", "max_vms": "NA", "flag": True, "other": 5}
    await send(
        client,
        workflow_id,
        {"level": "job_finished", "jobid": 1, "benchmark": {**measured, **noise}},
    )
    done = await job(client, workflow_id, 1)
    assert done["status"] == "Done"
    assert done["benchmark"] == {**measured, "io_out": 120.0}
    page = await (await client.get(f"/workflow/{workflow_id}/job/1")).get_data(as_text=True)
    assert "max RSS" in page and "812.4 MB" in page and "12.5 s" in page
    # A job_finished without one (every other client) leaves a job without one.
    await start(client, workflow_id, 2, "align", "s2")
    await send(client, workflow_id, {"level": "job_finished", "jobid": 2})
    assert (await job(client, workflow_id, 2))["benchmark"] is None


async def test_the_end_of_a_failed_run_and_of_a_recovered_one(client: Client) -> None:
    failed_id = await register(client)
    await start(client, failed_id, 1, "align", "s1")
    end = "WorkflowError:\nAt least one job did not complete successfully."
    # Interrupted, say: no error message came before the end.
    await send(client, failed_id, {"level": "workflow_error", "msg": end})
    workflow = (await get(client, f"/api/workflow/{failed_id}"))["workflow"]
    assert workflow["status"] == "Error" and workflow["error"] == end
    assert workflow["finished_at"] is not None
    # Its `error` first, then the end with the same text: the run says it once.
    twice_id = await register(client)
    await send(client, twice_id, {"level": "error", "msg": end, "exception": "WorkflowError"})
    await send(client, twice_id, {"level": "workflow_error", "msg": end})
    twice = (await get(client, f"/api/workflow/{twice_id}"))["workflow"]
    assert (twice["status"], twice["error"]) == ("Error", end)
    # --retries: the job failed once, then finished; the plugin ends the run with success.
    recovered_id = await register(client)
    await start(client, recovered_id, 1, "flaky", "s1")
    await send(client, recovered_id, {"level": "error", "msg": RULE_ERROR})
    await send(client, recovered_id, {"level": "job_error", "jobid": 1, "error": RULE_ERROR})
    await send(client, recovered_id, {"level": "job_started", "jobs": [1]})
    await send(client, recovered_id, {"level": "job_finished", "jobid": 1})
    await send(client, recovered_id, {"level": "workflow_success"})
    recovered = (await get(client, f"/api/workflow/{recovered_id}"))["workflow"]
    assert (recovered["status"], recovered["jobs_failed"]) == ("Done", 0)


async def refused(client: Client, workflow_id: int, msg: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(
        "/update_workflow_status",
        data=urlencode({"msg": json.dumps(msg), "timestamp": time.asctime(), "id": workflow_id}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return response.status_code, await response.get_json()


async def test_malformed_additions_are_refused_and_change_nothing(client: Client) -> None:
    workflow_id = await register(client)
    await start(client, workflow_id, 1, "align", "s1")
    before = await job(client, workflow_id, 1)
    for msg, words in (
        ({"level": "job_error", "jobid": 1, "logs": "tail"}, "'logs'"),
        ({"level": "job_error", "jobid": 1, "logs": [{"tail": "x"}]}, "'path'"),
        ({"level": "job_error", "jobid": 1, "exit_code": "3"}, "'exit_code'"),
        ({"level": "job_error", "jobid": 1, "error": ["x"]}, "'error'"),
        ({"level": "job_finished", "jobid": 1, "benchmark": [1, 2]}, "'benchmark'"),
        ({"level": "run_info", "stats": {"align": -1}}, "'stats'"),
        ({"level": "rulegraph", "rules": ["a"], "edges": [["a"]]}, "'edges'"),
    ):
        status, body = await refused(client, workflow_id, msg)
        assert status == 400 and words in body["detail"], (msg, body)
    huge = {"level": "rulegraph", "rules": [f"r{n}" for n in range(facts.MAX_GRAPH_RULES + 1)]}
    status, body = await refused(client, workflow_id, huge)
    assert status == 413 and "2,000 rules" in body["detail"], body
    assert await job(client, workflow_id, 1) == before
    assert (await get(client, f"/api/workflow/{workflow_id}/dag"))["edges_from"] == "jobs"
    assert (await get(client, f"/api/workflow/{workflow_id}/rules"))["rules"][0]["planned"] is None
