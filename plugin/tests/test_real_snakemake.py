"""A real Snakemake run with the installed plugin, against the loopback receiver."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from receiver import Receiver
from snakemake_records import HAVE_SNAKEMAKE

pytestmark = pytest.mark.skipif(not HAVE_SNAKEMAKE, reason="needs Snakemake installed")

SNAKEFILE = """
rule all:
    input: "counted/a.txt", "counted/b.txt", "flaky.txt"

rule make:
    output: "data/{s}.txt"
    benchmark: "bench/make_{s}.tsv"
    shell: "echo {wildcards.s} > {output}"

rule count:
    input: "data/{s}.txt"
    output: "counted/{s}.txt"
    log: "logs/count_{s}.log"
    shell:
        "echo counting {wildcards.s} > {log}; "
        "if [ {wildcards.s} = b ]; then echo 'MARKER: truncated record' >> {log}; exit 3; fi; "
        "wc -c {input} > {output}"

rule flaky:
    output: "flaky.txt"
    benchmark: repeat("bench/flaky.tsv", 2)
    shell: "if [ ! -e once ]; then touch once; exit 1; fi; echo ok > {output}"
"""


def snakemake(workdir: Path, receiver: Receiver, *args: str) -> int:
    env = {**os.environ, "PANOPTES_TOKEN": "tok-real"}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--logger", "panoptes"]
    command += ["--logger-panoptes-address", receiver.url, *args]
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, timeout=120)
    return done.returncode


def messages_by_level(receiver: Receiver) -> dict[str, list[dict[str, Any]]]:
    by_level: dict[str, list[dict[str, Any]]] = {}
    for message in receiver.messages():
        by_level.setdefault(message["level"], []).append(message)
    return by_level


def test_a_real_failing_run(receiver: Receiver, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    assert snakemake(tmp_path, receiver, "--retries", "1", "--keep-going") == 1

    first = receiver.requests[0]
    assert (first.method, first.path) == ("GET", "/create_workflow")
    assert first.form["snakefile"] == [str(tmp_path / "Snakefile")]
    assert first.form["workdir"] == [str(tmp_path)]
    assert {r.headers.get("Authorization") for r in receiver.requests} == {"Bearer tok-real"}
    got = messages_by_level(receiver)
    assert got["rulegraph"][0]["edges"] == [["make", "count"], ["count", "all"], ["flaky", "all"]]
    assert got["run_info"][0]["stats"]["total"] == 6
    failed = [m for m in got["job_error"] if m["name"] == "count"]
    assert len(failed) == 2  # the first attempt and its retry
    assert failed[-1]["exit_code"] == 3
    assert "returned non-zero exit status 3" in failed[-1]["error"]
    (log,) = failed[-1]["logs"]
    assert log["path"] == "logs/count_b.log"
    assert log["tail"].endswith("MARKER: truncated record\n")
    benchmarks = [m["benchmark"] for m in got["job_finished"] if "benchmark" in m]
    assert len(benchmarks) == 3  # make a, make b, flaky
    assert sorted(b.get("repeats", 1) for b in benchmarks) == [1, 1, 2]
    assert receiver.messages()[-1] == {
        "level": "workflow_error",
        "msg": "WorkflowError:\nAt least one job did not complete successfully.",
    }


def test_a_real_dry_run_and_up_to_date_run(receiver: Receiver, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text('rule all:\n    output: "x"\n    shell: "touch x"\n')
    assert snakemake(tmp_path, receiver, "-n") == 0
    assert receiver.requests == []
    assert snakemake(tmp_path, receiver) == 0
    assert receiver.levels()[-1] == "workflow_success"
    count = len(receiver.requests)
    assert snakemake(tmp_path, receiver) == 0  # nothing to be done
    assert receiver.requests[count].path == "/create_workflow"
    assert [r.msg["level"] for r in receiver.requests[count:] if r.msg] == [
        "info",
        "rulegraph",
        "workflow_success",
    ]
