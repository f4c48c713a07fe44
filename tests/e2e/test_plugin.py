"""This repository's plugin (plugin/, snakemake-logger-plugin-panoptes 1.0.0) in real
Snakemake 9.27.1 runs: installed into Snakemake's venv with pip as a user does
(scripts/e2e-venvs sm9p), against a real panoptes, against a stopped one, and against
panoptes-ui 1.6.2 from PyPI."""

from __future__ import annotations

import getpass
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect

from ..conftest import LiveServer, free_port
from .conftest import (
    TIMEOUT_MS,
    Api,
    Run,
    explained,
    open_page,
    provided_venv,
    run_snakemake,
    screenshot,
)

pytestmark = pytest.mark.e2e

COHORT = Path(__file__).parent / "cohort" / "Snakefile"
MARKER = "ERROR: truncated FASTQ record at line 4021"
# The plugin waits this long at the end for what it could not send yet (its default).
FLUSH_SECONDS = 5.0
TOKEN = "s3cret-token-for-e2e-tests"


def cohort(tmp_path: Path, name: str) -> Path:
    """A fresh directory `name` holding the cohort workflow."""
    path = tmp_path / name
    path.mkdir()
    shutil.copy(COHORT, path / "Snakefile")
    return path


def run_cohort(
    binary: Path, workdir: Path, url: str, *args: str, env: dict[str, str] | None = None
) -> Run:
    """The cohort run with the plugin reporting to `url`."""
    plugin = ("--logger", "panoptes", "--logger-panoptes-address", url)
    return run_snakemake(binary, workdir, "--cores", "2", *plugin, *args, env=env, timeout=120)


def job_stats(run: Run) -> dict[str, int]:
    """Snakemake's own "Job stats" table, from its output: jobs per rule."""
    text = run.stderr + run.stdout
    table = text[text.index("Job stats:") :].splitlines()[3:]
    stats = {}
    for line in table:
        row = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if row is None:
            break
        if row.group(1) != "total":
            stats[row.group(1)] = int(row.group(2))
    return stats


def rulegraph(binary: Path, workdir: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """The rules and edges of `snakemake --rulegraph` (dot: `dep -> job`)."""
    done = subprocess.run(
        [str(binary), "--rulegraph", "--cores", "1"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    labels = dict(re.findall(r'(\d+)\[label = "([^"]+)"', done.stdout))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"(\d+) -> (\d+)", done.stdout)}
    assert labels and edges, done.stdout
    return set(labels.values()), edges


def plugin_warnings(run: Run) -> list[str]:
    """What the plugin said: its warnings start with "panoptes:"."""
    return [line for line in run.stderr.splitlines() if line.startswith("panoptes:")]


def by_sample(jobs: list[dict[str, Any]], rule: str, sample: str) -> dict[str, Any]:
    found = [j for j in jobs if j["rule"] == rule and j["wildcards"].get("sample") == sample]
    assert len(found) == 1, (rule, sample, jobs)
    return found[0]


# --------------------------------------------------------------------------- panoptes


async def test_a_failed_run_says_why_what_ran_and_what_was_planned(
    sm9p_bin: Path, live_server: LiveServer, tmp_path: Path, browser: Browser
) -> None:
    work = cohort(tmp_path, "cohort-fail")
    run = run_cohort(sm9p_bin, work, live_server.url, "--keep-going", "--config", "fail=s2")
    api = Api(live_server)
    with explained(live_server, run):
        assert run.returncode != 0
        listed = api.only_workflow()
        # The run is named after its directory and says where and how it ran.
        assert listed["name"] == "cohort-fail"
        workflow = api.workflow(listed["id"])
        assert workflow["status"] == "Error"
        assert "At least one job did not complete successfully" in workflow["error"]
        assert workflow["workdir"] == str(work)
        assert workflow["snakefile"] == str(work / "Snakefile")
        assert (workflow["host"], workflow["user"]) == (platform.node(), getpass.getuser())
        assert workflow["snakemake_version"] == "9.27.1"
        assert "--logger panoptes" in workflow["command"]
        assert workflow["client"] == "snakemake-logger-plugin-panoptes/1.0.0"
        # Why the job failed: its log's last lines, its exit status, Snakemake's text.
        jobs = api.jobs(listed["id"])
        failed = by_sample(jobs, "align", "s2")
        assert failed["status"] == "Error"
        assert failed["logs"][0]["path"] == "logs/align/s2.log"
        assert MARKER in failed["logs"][0]["tail"]
        assert failed["exit_code"] == 3
        assert "exit status 3" in failed["error"]
        assert failed["error_line"] == MARKER
        # What a benchmarked job used.
        aligned = by_sample(jobs, "align", "s1")
        assert aligned["status"] == "Done"
        assert aligned["benchmark"]["s"] >= 1.0
        assert aligned["benchmark"]["max_rss"] > 0
        assert aligned["resources"]["mem_mb"] == 100
        # The plan is Snakemake's own Job stats, rule by rule, with the rules never run.
        planned = {rule["rule"]: rule["planned"] for rule in api.rules(listed["id"])}
        assert planned == job_stats(run) == {"all": 1, "summary": 1, "align": 3, "trim": 3}
        # The rule graph is Snakemake's.
        dag = api.get(f"/api/workflow/{listed['id']}/dag")
        rules, edges = rulegraph(sm9p_bin, work)
        assert dag["edges_from"] == "client"
        assert {node["rule"] for node in dag["nodes"]} == rules
        assert {tuple(edge) for edge in dag["edges"]} == edges
        align = next(node for node in dag["nodes"] if node["rule"] == "align")
        assert (align["planned"], align["done"], align["failed"]) == (3, 2, 1)
    # The job page shows the log's end; the workflow page lists the job with its reason.
    errors: list[str] = []
    page = await open_page(browser, f"{live_server.url}/workflow/{listed['id']}", errors)
    await expect(page.locator("#failed-jobs")).to_contain_text(MARKER, timeout=TIMEOUT_MS)
    await screenshot(page, "plugin-failed-run")
    page = await open_page(
        browser, f"{live_server.url}/workflow/{listed['id']}/job/{failed['jobid']}", errors
    )
    tail = page.locator("#log-tails .log-text").first
    await expect(tail).to_be_visible(timeout=TIMEOUT_MS)
    await expect(tail).to_contain_text(MARKER)
    await expect(page.locator('[data-field="exit_code"]')).to_have_text("3")
    await screenshot(page, "plugin-failed-job")
    assert errors == []
    api.close()


def test_a_run_whose_retry_recovers_ends_done(
    sm9p_bin: Path, live_server: LiveServer, tmp_path: Path
) -> None:
    work = cohort(tmp_path, "cohort-retry")
    run = run_cohort(sm9p_bin, work, live_server.url, "--retries", "1", "--config", "flaky=s1")
    api = Api(live_server)
    with explained(live_server, run):
        assert run.returncode == 0
        workflow = api.only_workflow()
        assert (workflow["status"], workflow["jobs_failed"], workflow["error"]) == ("Done", 0, None)
        assert (workflow["jobs_done"], workflow["jobs_total"]) == (8, 8)
        flaky = by_sample(api.jobs(workflow["id"]), "align", "s1")
        assert (flaky["status"], flaky["attempt"], flaky["logs"]) == ("Done", 2, [])
        assert [a["status"] for a in flaky["attempts"]] == ["Error", "Done"]
        assert "exit status 1" in flaky["attempts"][0]["error"]
    api.close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(db=tmp_path / "token.db", env={"PANOPTES_TOKEN": TOKEN})
    yield server.start()
    server.stop()


def test_the_token_goes_in_a_header_not_in_the_address(
    sm9p_bin: Path, token_server: LiveServer, tmp_path: Path
) -> None:
    work = cohort(tmp_path, "cohort-token")
    run = run_cohort(sm9p_bin, work, token_server.url, env={"PANOPTES_TOKEN": TOKEN})
    with explained(token_server, run):
        assert run.returncode == 0
        answer = httpx.get(
            f"{token_server.url}/api/workflows",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).json()
        [workflow] = answer["workflows"]
        assert (workflow["name"], workflow["status"]) == ("cohort-token", "Done")
        # Nothing Snakemake writes down holds the token.
        logs = list((work / ".snakemake" / "log").glob("*.log"))
        assert logs and all("s3cret" not in log.read_text() for log in logs)
        assert "s3cret" not in (workflow["command"] or "")


def test_a_stopped_server_does_not_hold_up_the_run(sm9p_bin: Path, tmp_path: Path) -> None:
    """Nothing listens on the port: the run finishes as it would without the plugin, plus
    at most the plugin's bounded wait at the end, and says so once rather than per event."""
    alone = cohort(tmp_path, "alone")
    started = time.monotonic()
    baseline = run_snakemake(sm9p_bin, alone, "--cores", "2", timeout=120)
    plain = time.monotonic() - started
    assert baseline.returncode == 0, baseline.describe()
    work = cohort(tmp_path, "cohort-down")
    started = time.monotonic()
    run = run_cohort(sm9p_bin, work, f"http://127.0.0.1:{free_port()}")
    took = time.monotonic() - started
    assert run.returncode == 0, run.describe()
    assert (work / "results" / "summary.txt").exists()
    assert took < plain + FLUSH_SECONDS + 3, (took, plain, run.describe())
    warnings = plugin_warnings(run)
    assert 1 <= len(warnings) <= 4, warnings


# --------------------------------------------------------------------------- panoptes-ui 1.6.2


@dataclass
class PanoptesUI:
    """panoptes-ui 1.6.2, the earlier server from PyPI, under gunicorn."""

    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PanoptesUI:
        venv = provided_venv("upstream")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PANOPTES_DB_URL"] = f"sqlite:///{self.folder / 'ui.db'}?check_same_thread=False"
        bind = f"127.0.0.1:{self.port}"
        with (self.folder / "gunicorn.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(venv / "bin" / "gunicorn"), "-w", "1", "--bind", bind, "panoptes.app:app"],
                env=env,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/api/service-info", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"panoptes-ui did not start:\n{self.log()}")

    def workflows(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.url}/api/workflows", timeout=10).json()[
            "workflows"
        ]
        return found

    def log(self) -> str:
        path = self.folder / "gunicorn.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def panoptes_ui(tmp_path: Path) -> Iterator[PanoptesUI]:
    folder = tmp_path / "panoptes-ui"
    folder.mkdir()
    server = PanoptesUI(folder).start()
    yield server
    server.stop()


def test_the_earlier_server_still_follows_the_runs(
    sm9p_bin: Path, panoptes_ui: PanoptesUI, tmp_path: Path
) -> None:
    """panoptes-ui 1.6.2 knows none of the additions: every run still appears and ends in
    the right state, and it refused or choked on nothing."""
    good = run_cohort(sm9p_bin, cohort(tmp_path, "good"), panoptes_ui.url)
    bad = run_cohort(
        sm9p_bin, cohort(tmp_path, "bad"), panoptes_ui.url, "--keep-going", "--config", "fail=s2"
    )
    details = f"{good.describe()}\n{bad.describe()}\n--- panoptes-ui\n{panoptes_ui.log()}"
    assert (good.returncode, bad.returncode != 0) == (0, True), details
    first, second = sorted(panoptes_ui.workflows(), key=lambda wf: wf["id"])
    assert (first["status"], first["jobs_done"], first["jobs_total"]) == ("Done", 8, 8), details
    assert second["status"] == "Error", details
    assert "Traceback" not in panoptes_ui.log(), details
    assert plugin_warnings(good) == [], details  # no message was refused
