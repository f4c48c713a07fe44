"""What reaches the server for each kind of record (docs/wire.md), through a real run."""

from pathlib import Path
from typing import Any

import snakemake_records as sm
from conftest import MakeRun
from receiver import Receiver

GRAPH = {
    # As Workflow.log_rulegraph builds it: a link's source is the producer.
    "nodes": [{"rule": "trim"}, {"rule": "align"}, {"rule": "count"}, {"rule": "all"}],
    "links": [
        {"source": 0, "target": 1, "sourcerule": "trim", "targetrule": "align"},
        {"source": 1, "target": 2, "sourcerule": "align", "targetrule": "count"},
        {"source": 1, "target": 2, "sourcerule": "align", "targetrule": "count"},
        {"source": 2, "target": 3, "sourcerule": "count", "targetrule": "all"},
    ],
}
STATS = {"trim": 2, "align": 2, "count": 1, "all": 1, "total": 6}


def by_level(receiver: Receiver, level: str) -> list[dict[str, Any]]:
    return [m for m in receiver.messages() if m["level"] == level]


def test_a_whole_run_arrives_in_order(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.rulegraph(run.log, GRAPH)
    sm.run_info(run.log, STATS)
    sm.job_started(run.log, [5, 3])
    sm.job_info(run.log, 5, "trim")
    sm.job_info(run.log, 3, "trim")
    for done in range(1, 301):  # enough messages to be queued behind each other
        sm.progress(run.log, done, 300)
    sm.job_finished(run.log, 5)
    run.stop()
    levels = receiver.levels()
    assert levels == [
        "info",
        "rulegraph",
        "progress",
        "run_info",
        "job_started",
        "job_info",
        "job_info",
        *["progress"] * 300,
        "job_finished",
        "workflow_success",
    ]
    assert [m["done"] for m in by_level(receiver, "progress")] == list(range(301))
    assert receiver.messages()[0] == {"level": "info", "msg": "Workflow started: /w/Snakefile"}
    form = receiver.requests[1].form
    assert form["id"] == ["7"] and form["timestamp"][0].count(":") == 2


def test_run_info_carries_the_plan(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.run_info(run.log, STATS)
    run.stop()
    progress, run_info = receiver.messages()[1:3]
    assert progress == {"level": "progress", "done": 0, "total": 6}
    assert run_info["level"] == "run_info"
    assert run_info["stats"] == STATS
    assert run_info["msg"].startswith("Job stats:\njob      count\n")
    assert "\nalign       2\n" in run_info["msg"]


def test_rulegraph_edges_go_from_producer_to_consumer(
    make_run: MakeRun, receiver: Receiver
) -> None:
    run = make_run()
    assert run.handler.needs_rulegraph
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.rulegraph(run.log, GRAPH)
    run.stop()
    assert by_level(receiver, "rulegraph") == [
        {
            "level": "rulegraph",
            "rules": ["trim", "align", "count", "all"],
            "edges": [["trim", "align"], ["align", "count"], ["count", "all"]],
        }
    ]


def test_job_info_as_0_3_0_sent_it(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_info(run.log, 4, "align", log_files=["logs/a.log"], wildcards={"sample": "b"})
    run.stop()
    assert by_level(receiver, "job_info") == [
        {
            "level": "job_info",
            "jobid": 4,
            "name": "align",
            "msg": None,
            "input": ["in/align.txt"],
            "output": ["out/align.txt"],
            "log": ["logs/a.log"],
            "wildcards": {"sample": "b"},
            "is_checkpoint": False,
            "shellcmd": "true",
            "threads": 1,
            "priority": 0,
            "reason": "Missing output files",
            "resources": {"tmpdir": "/tmp", "mem_mb": 100},
        }
    ]
    assert by_level(receiver, "shellcmd") == []  # as 0.3.0: only with --printshellcmds


def test_shellcmd_with_printshellcmds_names_its_job(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run(printshellcmds=True)
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_info(run.log, 4, "align", shellcmd="bwa mem x")
    run.stop()
    assert by_level(receiver, "shellcmd") == [{"level": "shellcmd", "jobid": 4, "msg": "bwa mem x"}]


def test_error_carries_the_whole_text(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.error(run.log, sm.WORKFLOW_ERROR, "WorkflowError")
    run.stop()
    assert by_level(receiver, "error") == [
        {
            "level": "error",
            "msg": sm.WORKFLOW_ERROR,
            "exception": "WorkflowError",
            "rule": None,
            "location": None,
            "traceback": None,
        }
    ]


def test_job_error_has_error_exit_code_and_log_tail(
    make_run: MakeRun, receiver: Receiver, tmp_path: Path
) -> None:
    log = tmp_path / "align_s07.log"
    log.write_text("reading s07\nMARKER: truncated FASTQ record at line 4021\n")
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_info(run.log, 4, "align", log_files=[str(log)])
    sm.failing_job(run.log, 4, "align", 3, [str(log)])
    run.stop()
    (job_error,) = by_level(receiver, "job_error")
    assert job_error == {
        "level": "job_error",
        "jobid": 4,
        "name": "align",
        "error": sm.rule_exception("run align", 3),
        "exit_code": 3,
        "logs": [
            {
                "path": str(log),
                "tail": "reading s07\nMARKER: truncated FASTQ record at line 4021\n",
                "truncated": False,
            }
        ],
    }


def test_job_error_logs_are_bounded_and_fall_back_to_job_info(
    make_run: MakeRun, receiver: Receiver, tmp_path: Path
) -> None:
    big = tmp_path / "big.log"
    with open(big, "w") as out:
        for i in range(20_000):
            out.write(f"progress line {i}\n")
        out.write("MARKER: out of memory\n")
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_info(run.log, 2, "count", log_files=[str(big), str(tmp_path / "gone.log")])
    sm.failing_job(run.log, 2, "count", 137, [])  # JOB_ERROR without its log list
    run.stop()
    (job_error,) = by_level(receiver, "job_error")
    assert job_error["exit_code"] == 137
    tail, missing = job_error["logs"]
    assert tail["truncated"] is True
    assert tail["tail"].endswith("MARKER: out of memory\n")
    assert tail["tail"].startswith("progress line ")
    assert len(tail["tail"].encode()) <= 64 * 1024
    assert missing == {"path": str(tmp_path / "gone.log"), "error": "file not found"}


def test_job_error_without_an_error_before_it(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_error(run.log, 9, "call")
    run.stop()
    (job_error,) = by_level(receiver, "job_error")
    assert job_error["error"] is None and job_error["exit_code"] is None


def test_no_logs_setting_sends_no_log_contents(
    make_run: MakeRun, receiver: Receiver, tmp_path: Path
) -> None:
    log = tmp_path / "secret.log"
    log.write_text("MARKER: patient id 1234\n")
    run = make_run(no_logs=True)
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.failing_job(run.log, 4, "align", 1, [str(log)])
    run.stop()
    (job_error,) = by_level(receiver, "job_error")
    assert "logs" not in job_error
    assert job_error["exit_code"] == 1
    assert all("MARKER" not in str(r.form) for r in receiver.requests)


def test_job_finished_carries_the_benchmark(
    make_run: MakeRun, receiver: Receiver, tmp_path: Path
) -> None:
    from test_files import REAL_REPEAT, REAL_SINGLE, REAL_SINGLE_READ

    single, repeat = tmp_path / "single.tsv", tmp_path / "repeat.tsv"
    single.write_text(REAL_SINGLE)
    repeat.write_text(REAL_REPEAT)
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_info(run.log, 1, "make", benchmark=str(single))
    sm.job_info(run.log, 2, "flaky", benchmark=str(repeat))
    sm.job_info(run.log, 3, "plain")
    sm.job_info(run.log, 4, "lost", benchmark=str(tmp_path / "never-written.tsv"))
    for jobid in (1, 2, 3, 4):
        sm.job_finished(run.log, jobid)
    run.stop()
    finished = {m["jobid"]: m for m in by_level(receiver, "job_finished")}
    assert finished[1]["benchmark"] == REAL_SINGLE_READ
    assert finished[2]["benchmark"]["repeats"] == 2
    assert finished[2]["benchmark"]["s"] == 0.005
    assert finished[3] == {"level": "job_finished", "jobid": 3}
    assert finished[4] == {"level": "job_finished", "jobid": 4}


def test_job_started_is_split_for_the_server(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_started(run.log, list(range(12_000)))
    run.stop()
    started = by_level(receiver, "job_started")
    assert [len(m["jobs"]) for m in started] == [10_000, 2_000]
    assert started[1]["jobs"][0] == 10_000
