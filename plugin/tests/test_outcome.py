"""The run's end: workflow_success or workflow_error, exactly once; nothing for a dry run."""

import logging
from typing import Any

import pytest
import snakemake_records as sm
from conftest import MakeRun
from receiver import Receiver
from snakemake_interface_logger_plugins.common import LogEvent


def last(receiver: Receiver) -> dict[str, Any]:
    return receiver.messages()[-1]


def finals(receiver: Receiver) -> list[dict[str, Any]]:
    return [m for m in receiver.messages() if m["level"].startswith("workflow_")]


def test_success(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_started(run.log, [1])
    sm.job_info(run.log, 1, "all")
    sm.job_finished(run.log, 1)
    sm.progress(run.log, 1, 1)
    run.stop()
    assert finals(receiver) == [{"level": "workflow_success"}]


def test_success_after_a_job_recovered_on_retry(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.job_started(run.log, [5])
    sm.job_info(run.log, 5, "flaky")
    sm.failing_job(run.log, 5, "flaky", 1, [])
    run.log.info("Trying to restart job 5.")
    sm.job_started(run.log, [5])
    sm.job_info(run.log, 5, "flaky")
    sm.job_finished(run.log, 5)
    run.stop()
    assert [m["level"] for m in receiver.messages()].count("job_error") == 1
    assert finals(receiver) == [{"level": "workflow_success"}]


def test_error_with_the_workflow_error_text(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.failing_job(run.log, 4, "align", 3, [])
    run.log.error("Exiting because a job execution failed. Look above for error messages")
    sm.error(run.log, sm.WORKFLOW_ERROR, "WorkflowError")
    run.stop()
    assert finals(receiver) == [{"level": "workflow_error", "msg": sm.WORKFLOW_ERROR}]


def test_failed_jobs_fail_the_run_even_without_an_error_after_them(
    make_run: MakeRun, receiver: Receiver
) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    for jobid, rule in ((9, "align"), (4, "align"), (2, "count")):
        sm.failing_job(run.log, jobid, rule, 1, [])
    sm.failing_job(run.log, 7, "trim", 1, [])
    sm.job_finished(run.log, 7)  # recovered
    run.stop()
    assert last(receiver) == {
        "level": "workflow_error",
        "msg": "3 jobs failed: count (job 2), align (jobs 4, 9)",
    }


def test_an_error_no_job_consumed_fails_the_run(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.error(run.log, "Cancelling snakemake on user request.", "KeyboardInterrupt")
    sm.job_finished(run.log, 1)
    run.stop()
    assert last(receiver) == {
        "level": "workflow_error",
        "msg": "Cancelling snakemake on user request.",
    }


def test_an_error_before_a_job_error_is_not_taken_for_it(
    make_run: MakeRun, receiver: Receiver
) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.error(run.log, "WorkflowError:\nstorage unreachable", "WorkflowError")
    sm.failing_job(run.log, 3, "fetch", 2, [])  # consumes its own RuleException
    sm.job_finished(run.log, 3)
    run.stop()
    job_error = next(m for m in receiver.messages() if m["level"] == "job_error")
    assert job_error["exit_code"] == 2
    assert last(receiver) == {
        "level": "workflow_error",
        "msg": "WorkflowError:\nstorage unreachable",
    }


def test_a_parse_error_before_the_start_is_reported(make_run: MakeRun, receiver: Receiver) -> None:
    text = 'SyntaxError in file "/w/Snakefile", line 3:\ninvalid syntax'
    run = make_run()
    sm.error(run.log, text, "SyntaxError")
    run.stop()
    assert receiver.levels() == ["error", "workflow_error"]
    assert last(receiver)["msg"] == text


def test_up_to_date_run_still_ends(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    run.log.info("Nothing to be done (all requested files are present and up to date).")
    run.stop()
    assert receiver.levels() == ["info", "workflow_success"]


def test_rulegraph_logged_before_the_start_waits_for_it(
    make_run: MakeRun, receiver: Receiver
) -> None:
    run = make_run()
    sm.rulegraph(run.log, {"nodes": [{"rule": "all"}], "links": []})
    sm.workflow_started(run.log, "/w/Snakefile")
    run.stop()
    assert receiver.levels() == ["rulegraph", "info", "workflow_success"]


def test_commands_that_run_nothing_send_nothing(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()  # e.g. snakemake --dag: the DAG is built, nothing is executed
    sm.rulegraph(run.log, {"nodes": [{"rule": "all"}], "links": []})
    run.log.info("Building DAG of jobs...")
    run.stop()
    assert receiver.requests == []


def test_dry_run_sends_nothing(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run(dryrun=True)
    sm.workflow_started(run.log, "/w/Snakefile")
    sm.rulegraph(run.log, {"nodes": [{"rule": "all"}], "links": []})
    sm.run_info(run.log, {"all": 1, "total": 1})
    sm.job_info(run.log, 0, "all")
    sm.error(run.log, sm.WORKFLOW_ERROR, "WorkflowError")
    run.stop()
    assert receiver.requests == []
    assert run.handler._sender.thread is None


def test_the_end_is_sent_once_and_nothing_after_it(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    run.stop()
    run.handler.close()  # logging.shutdown() closes every handler once more at exit
    sm.job_finished(run.log, 1)
    run.handler.handle(run.log.makeRecord("snakemake", 20, "x", 1, "late", (), None))
    assert finals(receiver) == [{"level": "workflow_success"}]
    assert receiver.levels() == ["info", "workflow_success"]


def test_a_broken_record_is_reported_not_raised(
    make_run: MakeRun, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    class BrokenRecord(logging.LogRecord):
        @property
        def stats(self) -> None:
            raise RuntimeError("stats cannot be read")

    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    run.drain()
    record = BrokenRecord("snakemake", logging.INFO, "x", 1, "Job stats", None, None)
    record.event = LogEvent.RUN_INFO
    run.handler.handle(record)  # must not raise into Snakemake
    assert "stats cannot be read" in capsys.readouterr().err  # logging's handleError
    sm.job_finished(run.log, 1)
    run.stop()
    assert receiver.levels() == ["info", "job_finished", "workflow_success"]
