"""Real Snakemake runs against a real panoptes server, checked through the REST API.

Snakemake 9 reports through snakemake-logger-plugin-panoptes; Snakemake 8.30 through
--wms-monitor, which sends every message twice and aborts the user's run on a 401/403/404/500.
Each test runs the capture workflow (make x3 -> process x3 -> merge -> all) in its own
directory against its own server, with --cores 1 so the runs are short and ordered.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..conftest import LiveServer
from .conftest import Api, Run, explained, run_snakemake

pytestmark = pytest.mark.e2e

SAMPLES = ("a", "b", "c")
JobKey = tuple[str, str]  # (rule, sample wildcard or "")

# What Snakemake 8 prints when panoptes answers one of its requests with anything but 200.
WMS_COMPLAINTS = (
    "is not recognized",
    "Problem with server",
    "not in 'running' mode",
    "endpoint was not found",
    "Authorization is required",
    "There was a server error",
    "Permission is denied",
)
# What the Snakemake 9 plugin logs when panoptes refused or dropped it.
PLUGIN_COMPLAINTS = ("panoptes: could not register workflow", "panoptes: failed to deliver")
SERVER_TROUBLE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def expected_jobs(fail: str = "none") -> dict[JobKey, dict[str, Any]]:
    """Every job of the capture Snakefile, as the API should show it."""
    jobs: dict[JobKey, dict[str, Any]] = {}
    for s in SAMPLES:
        jobs["make", s] = {
            "input": [],
            "output": [f"data/{s}.txt"],
            "log": [],
            "message": f"making sample {s}",
            "wildcards": {"sample": s},
            "shell_command": f"sleep 0.2; echo {s} > data/{s}.txt",
        }
        jobs["process", s] = {
            "input": [f"data/{s}.txt"],
            "output": [f"proc/{s}.txt"],
            "log": [f"logs/process_{s}.log"],
            "message": None,
            "wildcards": {"sample": s},
            "shell_command": (
                f"sleep 0.2; echo processing {s} > logs/process_{s}.log; "
                f"if [ {s} = {fail} ]; then echo failing >> logs/process_{s}.log; exit 1; fi; "
                f"(cat data/{s}.txt; echo x3) > proc/{s}.txt"
            ),
        }
    jobs["merge", ""] = {
        "input": [f"proc/{s}.txt" for s in SAMPLES],
        "output": ["results/merged.txt"],
        "log": [],
        "message": None,
        "wildcards": {},
        "shell_command": "sleep 0.2; cat proc/a.txt proc/b.txt proc/c.txt > results/merged.txt",
    }
    jobs["all", ""] = {
        "input": ["results/merged.txt"],
        "output": [],
        "log": [],
        "message": None,
        "wildcards": {},
        "shell_command": None,
    }
    return jobs


PLAN = {"all": 1, "make": 3, "merge": 1, "process": 3}  # Snakemake 7/8's Job stats


def rule_row(
    rule: str, done: int = 0, error: int = 0, planned: int | None = None
) -> dict[str, Any]:
    return {
        "rule": rule,
        "planned": planned,
        "total": done + error,
        "done": done,
        "running": 0,
        "error": error,
        "waiting": 0,
    }


def by_key(jobs: list[dict[str, Any]]) -> dict[JobKey, dict[str, Any]]:
    keyed = {(job["rule"], job["wildcards"].get("sample", "")): job for job in jobs}
    assert len(keyed) == len(jobs), f"two jobs share a rule and sample: {jobs}"
    return keyed


def check_job(job: dict[str, Any], expected: dict[str, Any], status: str) -> None:
    shown = {name: job[name] for name in expected}
    assert shown == expected, f"job {job['jobid']} ({job['rule']})"
    assert job["status"] == status, job
    assert job["started_at"] and job["finished_at"], job
    # One attempt each: a repeated message (Snakemake 8 sends all twice) is not a retry.
    assert job["attempt"] == 1 and len(job["attempts"]) == 1, job
    assert job["attempts"][0]["status"] == status, job


def check_jobs_endpoints(api: Api, workflow_id: int, jobs: list[dict[str, Any]]) -> None:
    """The per-job endpoint shows exactly what the job list shows."""
    for job in jobs:
        assert api.job(workflow_id, job["jobid"]) == job


def check_rules(
    api: Api,
    workflow_id: int,
    counts: dict[str, tuple[int, int]],
    plan: dict[str, int] | None = None,
) -> None:
    """The rules API: (done, failed) per rule, `planned` from the plan when the client sent
    one, in pipeline order (the rules in the order their first jobs came, then the planned
    rules of which no job came)."""
    seen: list[str] = []
    for job in api.jobs(workflow_id):  # in the order they came
        if job["rule"] not in seen:
            seen.append(job["rule"])
    order = seen + [rule for rule in plan or {} if rule not in seen]
    assert api.rules(workflow_id) == [
        rule_row(rule, *counts.get(rule, (0, 0)), planned=(plan or {}).get(rule) if plan else None)
        for rule in order
    ]


def check_whole_run_done(
    api: Api, workflow_id: int, plan: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """Every job of the Snakefile is there, Done and exactly as expected; so are the rules."""
    jobs = api.jobs(workflow_id)
    expected = expected_jobs()
    assert sorted(by_key(jobs)) == sorted(expected)
    for key, job in by_key(jobs).items():
        check_job(job, expected[key], "Done")
    check_jobs_endpoints(api, workflow_id, jobs)
    check_rules(
        api, workflow_id, {"all": (1, 0), "make": (3, 0), "merge": (1, 0), "process": (3, 0)}, plan
    )
    return jobs


def check_quiet_server(server: LiveServer) -> None:
    """panoptes logs every message it refused and every request that crashed."""
    trouble = [line for line in server.log().splitlines() if SERVER_TROUBLE.search(line)]
    assert not trouble, "the server refused or failed a request:\n" + "\n".join(trouble)


def check_no_complaints(run: Run, complaints: tuple[str, ...]) -> None:
    output = run.stdout + run.stderr
    found = [text for text in complaints if text in output]
    assert not found, f"snakemake complained about panoptes: {found}"


# --------------------------------------------------------------------------- Snakemake 9


def sm9(binary: Path, workdir: Path, server: LiveServer, *args: str, name: str = "") -> Run:
    flags = ["--logger", "panoptes", "--logger-panoptes-address", server.url]
    if name:
        flags += ["--logger-panoptes-workflow-id", name]
    return run_snakemake(binary, workdir, *flags, *args)


def test_sm9_success(
    sm9_bin: Path, workdir: Path, live_server: LiveServer, panoptes_api: Api
) -> None:
    run = sm9(sm9_bin, workdir, live_server)
    with explained(live_server, run):
        assert run.returncode == 0
        check_no_complaints(run, PLUGIN_COMPLAINTS)
        wf = panoptes_api.only_workflow()
        uuid.UUID(wf["name"])  # no --logger-panoptes-workflow-id: panoptes names it
        assert wf["status"] == "Done"
        assert wf["jobs_done"] == wf["jobs_total"] == 8
        assert wf["finished_at"] is not None
        assert wf["error"] is None
        assert wf["dry_run"] is False

        for job in check_whole_run_done(panoptes_api, wf["id"]):
            assert job["error"] is None
            if job["rule"] == "process":
                assert job["resources"]["mem_mb"] == 100, job  # sm9 sends them by name
        check_quiet_server(live_server)


def test_sm9_failure(
    sm9_bin: Path, workdir: Path, live_server: LiveServer, panoptes_api: Api
) -> None:
    run = sm9(sm9_bin, workdir, live_server, "--config", "fail=b")
    with explained(live_server, run):
        assert run.returncode == 1
        check_no_complaints(run, PLUGIN_COMPLAINTS)
        wf = panoptes_api.only_workflow()
        assert wf["status"] == "Error"
        assert wf["finished_at"] is not None
        # The run's error is its end; the job's (sm9 sends only the class name) is the job's.
        assert wf["error"] == "WorkflowError", wf
        assert wf["jobs_failed"] == 1, wf

        jobs = by_key(panoptes_api.jobs(wf["id"]))
        expected = expected_jobs(fail="b")
        failed = jobs.pop(("process", "b"))
        check_job(failed, expected["process", "b"], "Error")
        assert "RuleException" in failed["error"], failed
        assert failed["attempts"][0]["error"] == failed["error"]
        # Snakemake stops at the first failure: merge and all never start, and what did
        # start before it finished.
        assert ("merge", "") not in jobs and ("all", "") not in jobs, sorted(jobs)
        for key, job in jobs.items():
            check_job(job, expected[key], "Done")
        assert wf["jobs_done"] == len(jobs)
        assert wf["jobs_total"] == 8
        process_done = sum(1 for rule, _ in jobs if rule == "process")
        done = {"make": (len(jobs) - process_done, 0), "process": (process_done, 1)}
        check_rules(panoptes_api, wf["id"], done)
        check_quiet_server(live_server)


def test_sm9_until_finishes_short_of_the_whole_dag(
    sm9_bin: Path, workdir: Path, live_server: LiveServer, panoptes_api: Api
) -> None:
    # Progress ends at 6 of 8 here; only workflow_success says the run is over.
    run = sm9(sm9_bin, workdir, live_server, "--until", "process")
    with explained(live_server, run):
        assert run.returncode == 0
        check_no_complaints(run, PLUGIN_COMPLAINTS)
        wf = panoptes_api.only_workflow()
        assert wf["status"] == "Done"
        assert wf["jobs_done"] == wf["jobs_total"] == 6
        assert wf["error"] is None

        jobs = by_key(panoptes_api.jobs(wf["id"]))
        expected = expected_jobs()
        assert sorted(jobs) == sorted(k for k in expected if k[0] in ("make", "process"))
        for key, job in jobs.items():
            check_job(job, expected[key], "Done")
        check_rules(panoptes_api, wf["id"], {"make": (3, 0), "process": (3, 0)})
        check_quiet_server(live_server)


def test_sm9_up_to_date_rerun_resets_the_named_workflow(
    sm9_bin: Path, workdir: Path, live_server: LiveServer, panoptes_api: Api
) -> None:
    first = sm9(sm9_bin, workdir, live_server, name="e2e-rerun")
    with explained(live_server, first):
        assert first.returncode == 0
        before = panoptes_api.only_workflow()
        assert before["name"] == "e2e-rerun"
        assert (before["status"], before["jobs_done"], before["jobs_total"]) == ("Done", 8, 8)

    second = sm9(sm9_bin, workdir, live_server, name="e2e-rerun")
    with explained(live_server, first, second):
        assert second.returncode == 0
        assert "Nothing to be done" in second.stdout + second.stderr
        check_no_complaints(second, PLUGIN_COMPLAINTS)
        # The same name re-registers the same workflow, emptied, and the rerun did nothing.
        wf = panoptes_api.only_workflow()
        assert (wf["id"], wf["name"]) == (before["id"], "e2e-rerun")
        assert wf["status"] == "Done"
        assert wf["jobs_done"] == wf["jobs_total"] == 0
        assert wf["started_at"] > before["started_at"]
        assert wf["finished_at"] is not None
        assert wf["error"] is None
        assert panoptes_api.jobs(wf["id"]) == []
        assert panoptes_api.rules(wf["id"]) == []
        check_quiet_server(live_server)


# --------------------------------------------------------------------------- Snakemake 8


def sm8(binary: Path, workdir: Path, server: LiveServer, *args: str) -> Run:
    return run_snakemake(binary, workdir, "--wms-monitor", server.url, *args)


def test_sm8_success_counts_each_duplicated_message_once(
    sm8_bin: Path, workdir: Path, live_server: LiveServer, panoptes_api: Api
) -> None:
    run = sm8(sm8_bin, workdir, live_server)
    with explained(live_server, run):
        assert run.returncode == 0
        check_no_complaints(run, WMS_COMPLAINTS)
        wf = panoptes_api.only_workflow()
        assert wf["status"] == "Done"
        assert wf["jobs_done"] == wf["jobs_total"] == 8
        assert wf["finished_at"] is not None
        assert wf["error"] is None
        assert wf["workdir"] == str(workdir)
        assert "--wms-monitor" in wf["command"], wf

        # Named after its directory, as no name was asked for.
        assert wf["name"] == workdir.name, wf
        # The shell command comes in its own message, paired with the job_info before it.
        check_whole_run_done(panoptes_api, wf["id"], PLAN)
        check_quiet_server(live_server)


def test_sm8_failure_is_recorded_without_aborting_snakemake(
    sm8_bin: Path, workdir: Path, live_server: LiveServer, panoptes_api: Api
) -> None:
    run = sm8(sm8_bin, workdir, live_server, "--config", "fail=b")
    with explained(live_server, run):
        # 1 is the job failure; a 401/403/404/500 from panoptes would make it exit(-1), 255.
        assert run.returncode == 1
        check_no_complaints(run, WMS_COMPLAINTS)
        assert "At least one job did not complete successfully" in run.stderr
        wf = panoptes_api.only_workflow()
        assert wf["status"] == "Error"
        assert wf["finished_at"] is not None
        assert "At least one job did not complete successfully" in wf["error"], wf
        assert "Exiting because a job execution failed" in wf["error"], wf
        assert wf["jobs_failed"] == 1, wf

        jobs = by_key(panoptes_api.jobs(wf["id"]))
        expected = expected_jobs(fail="b")
        failed = jobs.pop(("process", "b"))
        check_job(failed, expected["process", "b"], "Error")
        # sm8 sends the whole exception text.
        assert "CalledProcessError" in failed["error"], failed
        assert "returned non-zero exit status 1" in failed["error"], failed
        assert ("merge", "") not in jobs and ("all", "") not in jobs, sorted(jobs)
        for key, job in jobs.items():
            check_job(job, expected[key], "Done")
        assert wf["jobs_done"] == len(jobs)
        assert wf["jobs_total"] == 8
        process_done = sum(1 for rule, _ in jobs if rule == "process")
        done = {"make": (len(jobs) - process_done, 0), "process": (process_done, 1)}
        check_rules(panoptes_api, wf["id"], done, PLAN)
        check_quiet_server(live_server)
