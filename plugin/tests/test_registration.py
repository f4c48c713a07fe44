"""GET /create_workflow: what describes the run, and the token."""

import getpass
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import snakemake_records as sm
from conftest import MakeRun
from receiver import Receiver

from snakemake_logger_plugin_panoptes.registration import redact_command, snakefile_argument


def registration(receiver: Receiver) -> dict[str, str]:
    first = receiver.requests[0]
    assert (first.method, first.path) == ("GET", "/create_workflow")
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    return {name: values[0] for name, values in first.form.items()}


def test_registration_describes_the_run(
    make_run: MakeRun, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch, workdir = tmp_path / "launch", tmp_path / "work"
    launch.mkdir()
    workdir.mkdir()
    (launch / "Snakefile").write_text("rule all:\n    output: 'x'\n")
    argv = [
        "/venv/bin/snakemake",
        "--cores",
        "4",
        "--logger",
        "panoptes",
        "--logger-panoptes-address",
        "http://mon:5000/t/s3cr3t-in-path",
        "--logger-panoptes-token",
        "tok-argv-1",
        "--logger-panoptes-token=tok-argv-2",
        "--directory",
        str(workdir),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("PANOPTES_TOKEN", "tok-env")
    monkeypatch.chdir(launch)
    run = make_run(workflow_id="cohort")
    monkeypatch.chdir(workdir)  # Snakemake changes to --directory after setting up loggers
    sm.error(run.log, "SyntaxError in file Snakefile, line 3", "SyntaxError")
    run.stop()

    form = registration(receiver)
    assert receiver.requests[0].query == {"workflow_id": ["cohort"]}
    assert form["command"] == (
        "/venv/bin/snakemake --cores 4 --logger panoptes "
        "--logger-panoptes-address http://mon:5000/t/*** "
        "--logger-panoptes-token *** --logger-panoptes-token=*** "
        f"--directory {workdir}"
    )
    assert form["workdir"] == str(workdir)
    assert form["snakefile"] == str(launch / "Snakefile")
    assert form["host"] == platform.node()
    assert form["user"] == getpass.getuser()
    assert form["client"] == "snakemake-logger-plugin-panoptes/1.0.0"
    if sm.HAVE_SNAKEMAKE:
        import snakemake

        assert form["snakemake_version"] == snakemake.__version__
    for request in receiver.requests:
        assert request.headers["Authorization"] == "Bearer tok-env"
        for secret in ("s3cr3t", "tok-argv", "tok-env"):
            assert secret not in str(request.form) + str(request.query)


def test_snakefile_from_the_command_line_is_relative_to_the_launch_dir(
    make_run: MakeRun, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["snakemake", "-s", "wf/main.smk", "-c1"])
    monkeypatch.chdir(tmp_path)
    run = make_run()
    monkeypatch.chdir("/")
    sm.error(run.log, "boom", "WorkflowError")
    run.stop()
    assert registration(receiver)["snakefile"] == str(tmp_path / "wf" / "main.smk")


def test_snakefile_main_is_used_once_the_workflow_started(
    make_run: MakeRun, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["snakemake", "-s", "other.smk"])
    run = make_run()
    sm.workflow_started(run.log, "/data/cohort/workflow/Snakefile")
    run.stop()
    assert registration(receiver)["snakefile"] == "/data/cohort/workflow/Snakefile"


def test_token_setting_wins_over_the_environment_and_never_shows(
    make_run: MakeRun,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    warnings_seen: Callable[[], list[str]],
) -> None:
    monkeypatch.setenv("PANOPTES_TOKEN", "tok-env")
    # The receiver answers 404 under /t/...: the warning about it names the address.
    run = make_run(address=f"{receiver.url}/t/addr-token/", token="tok-setting")
    sm.workflow_started(run.log, "/w/Snakefile")
    run.stop()
    assert receiver.requests
    assert {r.headers["Authorization"] for r in receiver.requests} == {"Bearer tok-setting"}
    assert receiver.requests[0].path == "/t/addr-token/create_workflow"  # trailing / stripped
    assert warnings_seen()
    for text in warnings_seen():
        assert "tok-setting" not in text and "addr-token" not in text
        assert "/t/***" in text


def test_no_token_no_header(
    make_run: MakeRun, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PANOPTES_TOKEN", raising=False)
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    run.stop()
    assert receiver.requests
    assert all("Authorization" not in r.headers for r in receiver.requests)


def test_workflow_id_absent_means_no_query(make_run: MakeRun, receiver: Receiver) -> None:
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    run.stop()
    assert receiver.requests[0].query == {}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["snakemake", "-s", "a.smk"], "a.smk"),
        (["snakemake", "--snakefile", "b.smk"], "b.smk"),
        (["snakemake", "--snakefile=c.smk"], "c.smk"),
        (["snakemake", "-sd.smk"], "d.smk"),
        (["snakemake", "--cores", "1"], None),
    ],
)
def test_snakefile_argument(argv: list[str], expected: str | None) -> None:
    assert snakefile_argument(argv) == expected


def test_redact_command_hides_the_token_value_anywhere() -> None:
    argv = ["snakemake", "--config", "note=abc-token-xyz", "--logger-panoptes-token", "x"]
    assert redact_command(argv, "abc-token-xyz") == (
        "snakemake --config note=*** --logger-panoptes-token ***"
    )
