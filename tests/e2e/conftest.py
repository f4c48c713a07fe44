"""Real Snakemake installs (provided by scripts/e2e-venvs) and helpers to run and inspect them."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from ..conftest import CAPTURES, ROOT, LiveServer

PROVISION = ROOT / "scripts" / "e2e-venvs"
VENVS = Path(os.environ.get("PANOPTES_E2E_CACHE", ROOT / ".cache" / "e2e"))
SNAKEFILE = CAPTURES / "Snakefile"
# Settings from the calling shell that would change what Snakemake sends, or to whom.
SCRUBBED_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "WMS_MONITOR_TOKEN")


def _text(output: str | bytes | None) -> str:
    """A TimeoutExpired's output, which can be bytes even under text=True."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def provided_venv(name: str) -> Path:
    """A venv of scripts/e2e-venvs, provided on first use; a failed install fails the test."""
    try:
        done = subprocess.run(
            [str(PROVISION), name], capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{PROVISION} {name} timed out:\n{_text(exc.stdout)}\n{_text(exc.stderr)}",
            pytrace=False,
        )
    if done.returncode != 0:
        pytest.fail(
            f"{PROVISION} {name} failed (rc {done.returncode}):\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return VENVS / name


def _snakemake_bin(name: str) -> Path:
    """The venv's snakemake."""
    binary = provided_venv(name) / "bin" / "snakemake"
    if not binary.is_file():
        pytest.fail(f"{PROVISION} {name} succeeded but left no {binary}", pytrace=False)
    return binary


@pytest.fixture(scope="session")
def sm9_bin() -> Path:
    """Snakemake 9 with snakemake-logger-plugin-panoptes."""
    return _snakemake_bin("sm9")


@pytest.fixture(scope="session")
def sm9p_bin() -> Path:
    """Snakemake 9 with this repository's plugin (plugin/, 1.0.0), installed as a user does."""
    return _snakemake_bin("sm9p")


@pytest.fixture(scope="session")
def sm8_bin() -> Path:
    """Snakemake 8.30.0, the last release whose --wms-monitor works."""
    return _snakemake_bin("sm8")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh directory holding the capture workflow (8 jobs; --config fail=b fails one)."""
    path = tmp_path / "work"
    path.mkdir()
    shutil.copy(SNAKEFILE, path / "Snakefile")
    return path


@dataclass(frozen=True)
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.args)}\nrc {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def run_snakemake(
    binary: Path,
    workdir: Path,
    *args: str,
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> Run:
    command = [str(binary), "--cores", "1", *args]
    env = {
        **{
            key: value
            for key, value in os.environ.items()
            if key not in SCRUBBED_ENV and not key.startswith("SNAKEMAKE_")
        },
        **(env or {}),
    }
    try:
        done = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"snakemake ran longer than {timeout} s: {command}\n"
            f"--- stdout\n{_text(exc.stdout)}\n--- stderr\n{_text(exc.stderr)}"
        )
    return Run(command, done.returncode, done.stdout, done.stderr)


@contextmanager
def explained(server: LiveServer, *runs: Run) -> Iterator[None]:
    """A failing assertion inside also shows Snakemake's output and the server's log."""
    try:
        yield
    except AssertionError as exc:
        details = "\n\n".join(run.describe() for run in runs)
        exc.args = (f"{exc}\n\n{details}\n\n--- panoptes log\n{server.log()}",)
        raise


class Api:
    """The REST API, read the way a script would."""

    def __init__(self, server: LiveServer) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def workflows(self) -> list[dict[str, Any]]:
        workflows: list[dict[str, Any]] = self.get("/api/workflows")["workflows"]
        return workflows

    def only_workflow(self) -> dict[str, Any]:
        workflows = self.workflows()
        assert len(workflows) == 1, f"expected one workflow, got {workflows}"
        return workflows[0]

    def workflow(self, workflow_id: int) -> dict[str, Any]:
        workflow: dict[str, Any] = self.get(f"/api/workflow/{workflow_id}")["workflow"]
        return workflow

    def jobs(self, workflow_id: int) -> list[dict[str, Any]]:
        body = self.get(f"/api/workflow/{workflow_id}/jobs", limit=1000)
        assert body["count"] == len(body["jobs"]), body
        jobs: list[dict[str, Any]] = body["jobs"]
        return jobs

    def job(self, workflow_id: int, jobid: int) -> dict[str, Any]:
        job: dict[str, Any] = self.get(f"/api/workflow/{workflow_id}/job/{jobid}")["job"]
        return job

    def rules(self, workflow_id: int) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self.get(f"/api/workflow/{workflow_id}/rules")["rules"]
        return rules

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def panoptes_api(live_server: LiveServer) -> Iterator[Api]:
    client = Api(live_server)
    yield client
    client.close()


# ---- headless Chromium (Debian's chromium through Playwright)

CHROMIUM = os.environ.get("PANOPTES_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "pages"
TIMEOUT_MS = 5_000


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        await browser.close()


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(url)
    await expect(page.locator("#live-indicator")).to_have_text("live", timeout=TIMEOUT_MS)
    await page.evaluate("window.__loadedOnce = true")
    return page


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def screenshot_of(locator: Locator, name: str) -> None:
    """A picture of one part of a page (a graph, the timeline)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await locator.screenshot(path=str(ARTIFACTS / f"{name}.png"))
