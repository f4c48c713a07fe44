"""The state machine alone, on an in-memory store: each client message's effect on a
workflow and its jobs, from every state, as the tables in status.py say."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from panoptes.errors import UnknownWorkflow
from panoptes.ingest import machine, runs
from panoptes.ingest.wire import Registration, parse_message
from panoptes.models import WorkflowRow, utcnow
from panoptes.shapes import workflow_view
from panoptes.status import (
    FINISHED,
    JOB_MOVES,
    WORKFLOW_MOVES,
    EventKind,
    JobStatus,
    JobTrigger,
    Trigger,
    WorkflowStatus,
)

from .fakestore import FakeStore

W, J, K = WorkflowStatus, JobStatus, EventKind


def registered(store: FakeStore, name: str = "run", status: W = W.RUNNING) -> WorkflowRow:
    wf = runs.register_workflow(store, Registration(name=name), stale_hours=0)
    wf.status = status
    return wf


def send(store: FakeStore, wf: WorkflowRow, message: dict[str, Any]) -> bool:
    parsed = parse_message({"msg": json.dumps(message), "id": wf.id})
    return machine.apply_message(store, parsed)


PROGRESS_ALL = {"level": "progress", "done": 2, "total": 2}
ERROR = {"level": "error", "msg": "WorkflowError"}
SUCCESS = {"level": "workflow_success"}
NOTHING_TO_DO = {"level": "info", "msg": "Nothing to be done (all requested files are present)"}
DEBUG = {"level": "debug", "msg": "still here"}

# (status before, message, status after, refused (machine, state, trigger) or None)
WORKFLOW_CASES = [
    (W.RUNNING, PROGRESS_ALL, W.DONE, None),
    (W.RUNNING, ERROR, W.ERROR, None),
    (W.RUNNING, SUCCESS, W.DONE, None),
    (W.RUNNING, NOTHING_TO_DO, W.DONE, None),
    (W.RUNNING, DEBUG, W.RUNNING, None),
    (W.STALE, DEBUG, W.RUNNING, None),  # any message revives it
    (W.STALE, SUCCESS, W.DONE, None),  # revived, then finished
    (W.STALE, ERROR, W.ERROR, None),
    (W.ERROR, PROGRESS_ALL, W.ERROR, ("workflow", "Error", "all done")),
    (W.ERROR, ERROR, W.ERROR, None),  # a second failure is no refusal
    (W.ERROR, SUCCESS, W.ERROR, None),  # only a running run can succeed
    (W.DONE, ERROR, W.ERROR, None),  # 7/8: WorkflowError after "Complete log"
    (W.DONE, PROGRESS_ALL, W.DONE, None),
    (W.CANCELLED, ERROR, W.CANCELLED, ("workflow", "Cancelled", "failed")),
    (W.CANCELLED, PROGRESS_ALL, W.CANCELLED, ("workflow", "Cancelled", "all done")),
    (W.CANCELLED, SUCCESS, W.CANCELLED, None),
    (W.CANCELLED, DEBUG, W.CANCELLED, None),
]


@pytest.mark.parametrize(("before", "message", "after", "refusal"), WORKFLOW_CASES)
def test_a_message_moves_the_workflow_as_the_table_says(
    before: W, message: dict[str, Any], after: W, refusal: tuple[str, str, str] | None
) -> None:
    store = FakeStore()
    wf = registered(store, status=before)
    assert send(store, wf, message)
    assert wf.status == after
    assert store.refusals == ([refusal] if refusal else [])
    if after != before:  # a move sets the finish time, or clears it
        assert (wf.finished_at is not None) == (after in FINISHED)


def test_every_status_has_a_row_and_every_move_ends_in_a_status() -> None:
    assert set(WORKFLOW_MOVES) == set(WorkflowStatus)
    assert set(JOB_MOVES) == set(JobStatus)
    for row in WORKFLOW_MOVES.values():
        assert set(row) <= set(Trigger) and set(row.values()) <= set(WorkflowStatus)
    for job_row in JOB_MOVES.values():
        assert set(job_row) <= set(JobTrigger) and set(job_row.values()) <= set(JobStatus)
    # A message from the run never refuses: it can always be heard, whatever the state.
    assert all(Trigger.HEARD in row for row in WORKFLOW_MOVES.values())
    # Nothing but the user's cancel reaches Cancelled, and nothing leaves it.
    assert {t for row in WORKFLOW_MOVES.values() for t, s in row.items() if s == W.CANCELLED} == {
        Trigger.CANCELLED,
        Trigger.HEARD,
    }
    assert set(WORKFLOW_MOVES[W.CANCELLED].values()) == {W.CANCELLED}


def test_a_job_runs_finishes_fails_and_is_retried() -> None:
    store = FakeStore()
    wf = registered(store)
    send(store, wf, {"level": "job_started", "jobs": [1]})
    send(store, wf, {"level": "job_info", "jobid": 1, "name": "align", "wildcards": {"s": "A"}})
    job = store.job(wf.id, 1)
    assert job is not None and job.status == J.RUNNING and job.attempt == 1
    assert job.rule == "align" and job.wildcards == {"s": "A"}
    send(store, wf, {"level": "error", "msg": "RuleException: truncated FASTQ"})
    send(store, wf, {"level": "job_error", "jobid": 1})
    assert job.status == J.ERROR and job.error is not None and "truncated" in job.error
    assert job.attempts[-1]["status"] == "Error" and job.attempts[-1]["error"] == job.error
    # The job's error is not the run's: the run goes on, counting the failure.
    assert (wf.status, wf.jobs_failed, wf.error, wf.finished_at) == (W.RUNNING, 1, None, None)
    # --retries: the same job starts again; its latest attempt has not failed.
    send(store, wf, {"level": "job_started", "jobs": [1]})
    assert (job.status, job.attempt, job.error) == (J.RUNNING, 2, None)
    assert (wf.status, wf.jobs_failed) == (W.RUNNING, 0)
    send(store, wf, {"level": "job_finished", "jobid": 1})
    assert job.status == J.DONE and [a["status"] for a in job.attempts] == ["Error", "Done"]
    assert store.refusals == []


KEEP_GOING_ENDS = [
    # Snakemake 9 (plugin 0.3.0): WorkflowError. 7/8: "Exiting because ...", then WorkflowError.
    [{"level": "error", "msg": "WorkflowError"}],
    [
        {"level": "error", "msg": "Exiting because a job execution failed. Look above."},
        {"level": "info", "msg": "Complete log: .snakemake/log/x.log"},
        {"level": "error", "msg": "WorkflowError:\nAt least one job did not complete."},
    ],
]


@pytest.mark.parametrize("ending", KEEP_GOING_ENDS)
def test_keep_going_runs_stay_running_until_their_own_end(ending: list[dict[str, Any]]) -> None:
    store = FakeStore()
    wf = registered(store)
    send(store, wf, {"level": "job_started", "jobs": [1, 2]})
    send(store, wf, {"level": "error", "msg": "RuleException:\nCalledProcessError ..."})
    send(store, wf, {"level": "job_error", "jobid": 1})
    send(store, wf, {"level": "job_started", "jobs": [3]})  # --keep-going: more jobs start
    send(store, wf, {"level": "job_finished", "jobid": 2})
    send(store, wf, {"level": "job_finished", "jobid": 3})
    assert (wf.status, wf.jobs_failed) == (W.RUNNING, 1)
    for message in ending:
        send(store, wf, message)
    assert (wf.status, wf.jobs_failed) == (W.ERROR, 1)
    assert wf.finished_at is not None and wf.error is not None and "RuleException" not in wf.error
    assert store.refusals == []


def test_an_error_nobody_can_place_ends_the_run_only_when_no_job_runs() -> None:
    store = FakeStore()
    wf = registered(store)
    send(store, wf, {"level": "job_started", "jobs": [1]})
    send(store, wf, {"level": "error", "msg": "SomethingOdd: a job's trouble, maybe"})
    assert wf.status == W.RUNNING  # a job is running: it may be that job's (job_error follows)
    send(store, wf, {"level": "job_finished", "jobid": 1})
    send(store, wf, {"level": "error", "msg": "SyntaxError in file Snakefile, line 3"})
    assert wf.status == W.ERROR and wf.error == "SyntaxError in file Snakefile, line 3"


def test_the_plan_gives_totals_per_rule_and_in_all() -> None:
    store = FakeStore()
    wf = registered(store)
    stats = (
        "Job stats:\njob        count\n-------  -------\nalign          6\nall   1\ntotal    7\n"
    )
    send(store, wf, {"level": "run_info", "msg": stats, "timestamp": utcnow().timestamp()})
    assert wf.plan == {"align": 6, "all": 1} and wf.jobs_total == 7
    assert store.changed_rule_names == ["align", "all"]
    send(store, wf, {"level": "run_info", "msg": "Select jobs to execute..."})
    assert wf.plan == {"align": 6, "all": 1}  # not a plan: nothing changes


def test_a_job_described_but_not_started_waits() -> None:
    # Snakemake 9 says job_started when a job runs; plugin 0.1.1's dry run only describes.
    store = FakeStore()
    wf = registered(store)
    send(store, wf, {"level": "job_info", "jobid": 1, "name": "a"})
    job = store.job(wf.id, 1)
    assert job is not None and (job.status, job.started_at) == (J.WAITING, None)
    send(store, wf, {"level": "job_started", "jobs": [1]})
    assert job.status == J.RUNNING and job.started_at is not None
    # Snakemake 7/8 send no job_started: their job_info (stamped) is the job starting.
    stamped = {"level": "job_info", "jobid": 2, "name": "a", "timestamp": utcnow().timestamp()}
    send(store, wf, stamped)
    second = store.job(wf.id, 2)
    assert second is not None and second.status == J.RUNNING


def test_a_dry_run_plans_jobs_without_running_them() -> None:
    store = FakeStore()
    wf = runs.register_workflow(
        store, Registration(name="plan", command="snakemake -n"), stale_hours=0
    )
    assert wf.dry_run
    send(store, wf, {"level": "job_info", "jobid": 1, "name": "a"})
    send(store, wf, {"level": "job_started", "jobs": [1]})
    job = store.job(wf.id, 1)
    assert job is not None and job.status == J.WAITING and job.started_at is None
    send(store, wf, {"level": "info", "msg": "This was a dry-run (flag -n)."})
    assert wf.status == W.DONE and (wf.jobs_done, wf.jobs_total) == (0, 1)


def test_success_closes_every_job_still_running_and_counts_what_ran() -> None:
    store = FakeStore()
    wf = registered(store)
    send(store, wf, {"level": "job_started", "jobs": [1, 2, 3]})
    send(store, wf, {"level": "job_finished", "jobid": 1})
    send(store, wf, SUCCESS)
    assert {job.status for job in store.jobs.values()} == {J.DONE}
    assert (wf.jobs_done, wf.jobs_total, wf.status) == (3, 3, W.DONE)


def test_the_job_table_allows_every_move_clients_make() -> None:
    store = FakeStore()
    wf = registered(store)
    send(store, wf, {"level": "job_started", "jobs": [1]})
    send(store, wf, {"level": "job_finished", "jobid": 1})
    send(store, wf, {"level": "job_finished", "jobid": 1})  # twice: nothing changes
    send(store, wf, {"level": "job_error", "jobid": 1})  # failed after all (Done -> Error)
    job = store.job(wf.id, 1)
    assert job is not None and job.status == J.ERROR
    assert store.refusals == []


def test_a_duplicate_legacy_message_is_dropped() -> None:
    store = FakeStore()
    wf = registered(store)
    message = {"level": "progress", "done": 1, "total": 3, "timestamp": utcnow().timestamp()}
    assert send(store, wf, message) is True
    assert send(store, wf, message) is False  # Snakemake 8 sends every message twice


def test_an_unknown_workflow_is_refused() -> None:
    store = FakeStore()
    with pytest.raises(UnknownWorkflow):
        machine.apply_message(store, parse_message({"msg": json.dumps(DEBUG), "id": 99}))


def test_a_finished_name_is_reused_and_a_running_one_is_kept_safe() -> None:
    store = FakeStore()
    first = registered(store, "cohort")
    send(store, first, {"level": "job_started", "jobs": [1]})
    second = runs.register_workflow(store, Registration(name="cohort"), stale_hours=0)
    assert second is not first and second.name.startswith("cohort-")  # first is running
    first.status = W.DONE
    again = runs.register_workflow(store, Registration(name="cohort"), stale_hours=0)
    assert again is first and again.status == W.RUNNING and store.job(first.id, 1) is None
    assert store.announced[-1] == (K.WORKFLOW_RESET, first.id)


def test_silent_runs_turn_stale_and_cancel_follows_the_table() -> None:
    store = FakeStore()
    wf = registered(store)
    wf.updated_at = utcnow() - timedelta(hours=50)
    assert runs.sweep_stale(store, 48) == 1 and wf.status == W.STALE
    assert wf.finished_at is None
    runs.cancel_workflow(store, wf)
    assert wf.status == W.CANCELLED and store.announced[-1] == (K.WORKFLOW_CANCELLED, wf.id)
    assert not machine.can(wf, Trigger.FAILED)


def test_a_run_is_labelled_by_its_rules_in_the_order_they_came() -> None:
    store = FakeStore()
    wf = registered(store)
    assert workflow_view(wf)["label"] is None
    send(store, wf, {"level": "progress", "done": 0, "total": 20})
    for jobid, rule in enumerate(["make", "make", "align", "count", "merge", "all", "align"]):
        send(store, wf, {"level": "job_started", "jobs": [jobid]})
        send(store, wf, {"level": "job_info", "jobid": jobid, "name": rule})
    assert wf.rules_seen == ["make", "align", "count", "merge", "all"]
    assert workflow_view(wf)["label"] == "make → align → count → merge → … · 20 jobs"
