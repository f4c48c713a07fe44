"""Real Snakemake clients against a panoptes that needs a token.

Snakemake 9's plugin cannot send headers: it reaches the token through the address prefix
/t/<token>. Snakemake 8 sends `Authorization: Bearer $WMS_MONITOR_TOKEN` itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import LiveServer
from .conftest import explained, run_snakemake

pytestmark = pytest.mark.e2e

TOKEN = "e2e-token-0123456789abcdef"


@pytest.fixture
def locked_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(db=tmp_path / "locked.db", env={"PANOPTES_TOKEN": TOKEN}).start()
    yield server
    server.stop()


def only_workflow(server: LiveServer) -> dict:
    workflows = httpx.get(f"{server.url}/api/workflows", timeout=10).json()["workflows"]
    assert len(workflows) == 1, workflows
    workflow: dict = workflows[0]
    return workflow


def test_sm9_plugin_reaches_a_locked_server_through_the_token_prefix(
    sm9_bin: Path, workdir: Path, locked_server: LiveServer
) -> None:
    address = f"{locked_server.url}/t/{TOKEN}"
    run = run_snakemake(
        sm9_bin, workdir, "--logger", "panoptes", "--logger-panoptes-address", address
    )
    with explained(locked_server, run):
        assert run.returncode == 0
        assert "panoptes:" not in run.stderr  # the plugin's own warnings
        workflow = only_workflow(locked_server)
        assert workflow["status"] == "Done"
        assert workflow["jobs_done"] == workflow["jobs_total"] == 8


def test_sm9_plugin_with_a_wrong_token_stores_nothing(
    sm9_bin: Path, workdir: Path, locked_server: LiveServer
) -> None:
    address = f"{locked_server.url}/t/wrong-token-0123456789"
    run = run_snakemake(
        sm9_bin, workdir, "--logger", "panoptes", "--logger-panoptes-address", address
    )
    with explained(locked_server, run):
        # The plugin warns and lets the workflow run; panoptes refused and kept nothing.
        assert run.returncode == 0
        assert "could not register workflow" in run.stderr
        assert httpx.get(f"{locked_server.url}/api/workflows").json()["workflows"] == []


def test_sm8_sends_its_bearer_token(
    sm8_bin: Path, workdir: Path, locked_server: LiveServer
) -> None:
    run = run_snakemake(
        sm8_bin, workdir, "--wms-monitor", locked_server.url, env={"WMS_MONITOR_TOKEN": TOKEN}
    )
    with explained(locked_server, run):
        assert run.returncode == 0
        workflow = only_workflow(locked_server)
        assert workflow["status"] == "Done"
        assert workflow["jobs_done"] == workflow["jobs_total"] == 8
