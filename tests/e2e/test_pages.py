"""The pages in a real headless Chromium against a real server, updating while events arrive.

Every test loads a page once, then posts recorded Snakemake traffic (or hand-made events) to the
server and waits for the page to change by itself. A marker set on `window` after the load and
the navigation count prove the page was never reloaded. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from ..conftest import CAPTURES, ROOT, LiveServer, form_body, free_port
from .conftest import TIMEOUT_MS, open_page, screenshot

pytestmark = pytest.mark.e2e

NO_VALUE = "\N{EN DASH}"  # what the pages show for a missing time


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(db=tmp_path_factory.mktemp("pages") / "pages.db").start()
    yield live
    live.stop()


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
async def clean(api: httpx.AsyncClient) -> None:
    """Each test starts from an empty server, so its workflow gets a known place."""
    for workflow in (await api.get("/api/workflows", params={"limit": 1000})).json()["workflows"]:
        if workflow["status"] == "Running":
            await api.post(f"/api/workflow/{workflow['id']}/cancel")
    assert (await api.delete("/api/workflows/all")).status_code == 200


async def assert_never_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__loadedOnce === true"), "the page was reloaded"
    navigations = await page.evaluate("performance.getEntriesByType('navigation').length")
    assert navigations == 1


def capture(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / f"{name}.jsonl").read_text().splitlines()]


class Replay:
    """Sends a recorded run to the server request by request, rewriting the workflow id."""

    def __init__(self, api: httpx.AsyncClient, name: str) -> None:
        self.api = api
        self.requests = capture(name)
        self.position = 0
        self.workflow_id = 0

    async def start(self) -> int:
        first = self.requests[0]
        assert first["path"] == "/create_workflow"
        response = await self.api.get("/create_workflow")
        assert response.status_code == 200, response.text
        self.workflow_id = response.json()["id"]
        self.position = 1
        return self.workflow_id

    async def until(self, predicate: Any) -> None:
        """Send requests up to and including the first whose message satisfies predicate."""
        while self.position < len(self.requests):
            request = self.requests[self.position]
            self.position += 1
            msg = await self._send(request)
            if msg is not None and predicate(msg):
                return
        raise AssertionError("the capture has no such message")

    async def rest(self) -> None:
        while self.position < len(self.requests):
            await self._send(self.requests[self.position])
            self.position += 1

    async def _send(self, request: dict[str, Any]) -> dict[str, Any] | None:
        if request["path"] != "/update_workflow_status":
            response = await self.api.request(request["method"], request["path"])
            assert response.status_code < 300
            return None
        msg: dict[str, Any] = request["msg_json"]
        await post_message(self.api, self.workflow_id, msg)
        return msg


async def post_message(api: httpx.AsyncClient, workflow_id: int, msg: dict[str, Any]) -> None:
    response = await api.post(
        "/update_workflow_status",
        content=form_body(workflow_id, msg),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def first_job_done(msg: dict[str, Any]) -> bool:
    return msg.get("level") == "progress" and msg.get("done") == 1


async def test_workflow_page_follows_a_run_without_reloading(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    replay = Replay(api, "sm9-success")
    workflow_id = await replay.start()
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    header = page.locator("#workflow")
    await expect(header.locator("[data-status]")).to_have_text("Running")
    await expect(page.locator("#rules-empty")).to_be_visible()

    # The first progress message says how many jobs there are: the counter picks it up.
    await replay.until(first_job_done)
    await expect(header.locator('[data-field="progress"]')).to_have_text("1 / 8")
    rows = page.locator("#jobs tbody tr")
    await expect(rows).not_to_have_count(0)
    await expect(page.locator('#rules tr[data-rule="make"]')).to_be_visible()
    await expect(page.locator("#rules-empty")).to_be_hidden()
    await screenshot(page, "workflow-running")

    await replay.rest()
    await expect(header.locator("[data-status]")).to_have_text("Done", timeout=TIMEOUT_MS)
    await expect(header.locator('[data-field="progress"]')).to_have_text("8 / 8")
    await expect(rows).to_have_count(8)
    for status in await rows.locator("[data-status]").all_text_contents():
        assert status == "Done"
    # Jobs are announced before their rule is known; no rule-less row may stay behind.
    await expect(page.locator("#rules tbody tr")).to_have_count(4)
    make = page.locator('#rules tr[data-rule="make"]')
    await expect(make.locator('[data-field="done"]')).to_have_text("3")
    await expect(make.locator('[data-field="whole"]')).to_have_text("3")
    await expect(make.locator('[data-field="error"]')).to_have_text("0")
    done_width = await header.locator('[data-bar="done"]').get_attribute("width")
    assert done_width is not None and float(done_width) == pytest.approx(100)
    # The timeline drew every attempt, in a band per rule.
    await expect(page.locator("#timeline")).to_have_attribute("data-bars", "8")
    await expect(page.locator("#timeline")).to_have_attribute("data-rules", "4")
    await assert_never_reloaded(page)
    await screenshot(page, "workflow-done")
    assert errors == []


async def test_dashboard_shows_new_workflows_and_moves_their_bars(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    errors: list[str] = []
    page = await open_page(browser, server.url + "/", errors)
    await expect(page.locator("#empty-state")).to_be_visible()
    await expect(page.locator("#empty-state")).to_contain_text("--logger panoptes")
    await screenshot(page, "dashboard-empty")

    replay = Replay(api, "sm9-success")
    workflow_id = await replay.start()
    row = page.locator(f'#workflows tr[data-workflow-id="{workflow_id}"]')
    await expect(row).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator("#empty-state")).to_be_hidden()
    await expect(page.locator('[data-count="Running"]')).to_have_text("1")

    await replay.until(first_job_done)
    await expect(row.locator('[data-field="progress"]')).to_have_text("1 / 8")
    half = float(await row.locator('[data-bar="done"]').get_attribute("width") or "nan")
    assert half == pytest.approx(12.5)

    await replay.rest()
    await expect(row.locator("[data-status]")).to_have_text("Done", timeout=TIMEOUT_MS)
    await expect(row.locator('[data-field="progress"]')).to_have_text("8 / 8")
    await expect(page.locator('[data-count="Done"]')).to_have_text("1")
    await expect(page.locator('[data-count="Running"]')).to_have_text("0")
    await assert_never_reloaded(page)
    await screenshot(page, "dashboard")
    assert errors == []


async def test_failed_run_shows_its_error_live(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    replay = Replay(api, "sm9-fail")
    workflow_id = await replay.start()
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    error_box = page.locator('#workflow [data-field="error"]')
    await expect(error_box).to_be_hidden()

    await replay.rest()
    await expect(page.locator("#workflow [data-status]")).to_have_text("Error", timeout=TIMEOUT_MS)
    await expect(error_box).to_be_visible()
    stored = (await api.get(f"/api/workflow/{workflow_id}")).json()["workflow"]["error"]
    assert stored
    await expect(error_box).to_have_text(stored)
    await expect(page.locator('#jobs tbody tr[data-status="Error"]')).to_have_count(1)
    await expect(page.locator("#announcer")).to_contain_text("is now Error")
    await assert_never_reloaded(page)
    await screenshot(page, "workflow-error")
    # The user's dark preference, at phone width: dark, and nothing wider than the screen.
    await page.emulate_media(color_scheme="dark")
    await page.set_viewport_size({"width": 390, "height": 844})
    background = await page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert background == "rgb(18, 22, 28)", background
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "workflow-error-dark-phone")
    assert errors == []


async def test_job_page_follows_its_job(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    replay = Replay(api, "sm9-success")
    workflow_id = await replay.start()
    await replay.until(lambda msg: msg.get("level") == "job_info" and msg.get("name") == "make")
    jobs = (await api.get(f"/api/workflow/{workflow_id}/jobs")).json()["jobs"]
    job = next(j for j in jobs if j["rule"] == "make")
    errors: list[str] = []
    page = await open_page(
        browser, f"{server.url}/workflow/{workflow_id}/job/{job['jobid']}", errors
    )
    section = page.locator("#job")
    await expect(section.locator('[data-field="rule"]')).to_have_text("make")
    await expect(page.locator('[data-list="output"]')).to_contain_text(job["output"][0])
    await expect(section.locator("[data-status]")).not_to_have_text("Done")

    await replay.rest()
    await expect(section.locator("[data-status]")).to_have_text("Done", timeout=TIMEOUT_MS)
    await expect(section.locator('[data-time="finished_at"] time')).not_to_have_text(NO_VALUE)
    await expect(page.locator("#attempts tbody tr")).to_have_count(1)
    await assert_never_reloaded(page)
    await screenshot(page, "job")
    assert errors == []


async def test_job_page_shows_why_it_failed_and_what_it_used_as_they_come(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """What plugin 1.0.0 adds (docs/wire.md) reaches an open job page by itself: the log's
    end and exit code of a failed attempt, then, after the retry, what the job used."""
    workflow_id = (await api.get("/create_workflow", params={"workflow_id": "live-facts"})).json()[
        "id"
    ]
    await post_message(api, workflow_id, {"level": "job_started", "jobs": [3]})
    info = {"level": "job_info", "jobid": 3, "name": "align", "wildcards": {"sample": "s2"}}
    await post_message(api, workflow_id, {**info, "threads": 4, "resources": {"mem_mb": 900}})
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}/job/3", errors)
    await expect(page.locator("#log-tails")).to_be_hidden()
    await expect(page.locator("#resources")).to_contain_text("mem_mb")

    tail = "aligning s2\nERROR: truncated FASTQ record at line 4021\n"
    logs = [{"path": "logs/align/s2.log", "tail": tail, "truncated": True}]
    failure = {"level": "job_error", "jobid": 3, "exit_code": 3, "logs": logs}
    await post_message(api, workflow_id, {**failure, "error": "RuleException: exit status 3"})
    shown = page.locator("#log-tails .log-text")
    await expect(shown).to_contain_text("truncated FASTQ record", timeout=TIMEOUT_MS)
    await expect(page.locator("#log-tails")).to_contain_text("logs/align/s2.log")
    await expect(page.locator("#log-tails")).to_contain_text("(its last part)")
    await expect(page.locator('[data-field="exit_code"]')).to_have_text("3")
    await screenshot(page, "job-failed-live")

    await post_message(api, workflow_id, {"level": "job_started", "jobs": [3]})
    await expect(page.locator("#log-tails")).to_be_hidden(timeout=TIMEOUT_MS)
    bench = {"s": 61.5, "max_rss": 812.4, "io_out": 120.0}
    await post_message(api, workflow_id, {"level": "job_finished", "jobid": 3, "benchmark": bench})
    resources = page.locator("#resources")
    await expect(resources).to_contain_text("max RSS", timeout=TIMEOUT_MS)
    await expect(resources).to_contain_text("812.4 MB")
    await expect(resources).to_contain_text("61.5 s")
    await expect(resources).to_contain_text("mem_mb")
    await assert_never_reloaded(page)
    await screenshot(page, "job-benchmark-live")
    assert errors == []


async def test_the_samples_grid_fills_in_as_the_run_goes(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """sm9-keepgoing (6 samples x make, align, count; align(S2) fails, align(S4) fails once):
    the grid is drawn from the run so far, then follows it cell by cell without a reload."""
    replay = Replay(api, "sm9-keepgoing")
    workflow_id = await replay.start()
    await replay.until(lambda msg: msg.get("level") == "job_finished")
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    grid = page.locator("#dataset-grid")
    await expect(grid).to_be_visible(timeout=TIMEOUT_MS)
    await expect(grid.locator("thead th").first).to_have_text("sample")
    await expect(grid.locator("tbody td.status-done").first).to_be_visible()

    await replay.rest()
    row = grid.locator('tbody tr[data-key="S2"]')
    await expect(row.locator('td[data-rule="align"]')).to_have_class(
        "cell status-error", timeout=TIMEOUT_MS
    )
    await expect(row.locator('td[data-rule="count"] a')).to_have_count(0)  # never ran
    flaky = grid.locator('tbody tr[data-key="S4"] td[data-rule="align"] a')
    await expect(flaky).to_have_class("retried", timeout=TIMEOUT_MS)
    await expect(flaky).to_have_attribute("title", "Done (attempt 2)")
    await expect(grid.locator("tbody tr")).to_have_count(6)
    await expect(grid.locator('tbody tr[data-key="S1"] td').last).to_have_text("3/3")
    href = await row.locator('td[data-rule="align"] a').get_attribute("href")
    assert href is not None and href.startswith(f"/workflow/{workflow_id}/job/")
    await assert_never_reloaded(page)
    await screenshot(page, "grid")
    assert errors == []


async def test_rename_cancel_and_delete_from_the_workflow_page(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    workflow_id = (await api.get("/create_workflow")).json()["id"]
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    answers = iter(["renamed by the UI"])

    async def answer(dialog: Any) -> None:
        if dialog.type == "prompt":
            await dialog.accept(next(answers))
        else:
            await dialog.accept()

    page.on("dialog", answer)
    await page.click('#workflow [data-action="rename"]')
    await expect(page.locator('#workflow [data-field="name"]')).to_have_text("renamed by the UI")
    assert (await api.get(f"/api/workflow/{workflow_id}")).json()["workflow"]["name"] == (
        "renamed by the UI"
    )

    # A running workflow can be cancelled, not deleted; an ended one the other way round.
    await expect(page.locator('#workflow [data-action="delete"]')).to_be_hidden()
    await page.click('#workflow [data-action="cancel"]')
    await expect(page.locator("#workflow [data-status]")).to_have_text("Cancelled")
    await expect(page.locator('#workflow [data-action="cancel"]')).to_be_hidden()
    await expect(page.locator("#announcer")).to_have_text("renamed by the UI is now Cancelled")
    await screenshot(page, "workflow-cancelled")

    await page.click('#workflow [data-action="delete"]')
    await page.wait_for_url(server.url + "/")
    assert (await api.get(f"/api/workflow/{workflow_id}")).status_code == 404
    assert errors == []


HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


async def test_user_supplied_text_is_shown_as_text_never_run(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    workflow_id = (await api.get("/create_workflow")).json()["id"]
    assert (
        await api.put(f"/api/workflow/{workflow_id}", json={"name": "wf " + HOSTILE})
    ).is_success

    def post(msg: dict[str, Any]) -> Awaitable[None]:
        return post_message(api, workflow_id, msg)

    hostile_job = {
        "level": "job_info",
        "jobid": 1,
        "name": "rule" + HOSTILE,
        "input": ["in/" + HOSTILE],
        "output": ["out/" + HOSTILE],
        "log": [],
        "wildcards": {"sample": HOSTILE},
        "shellcmd": "echo " + HOSTILE,
    }
    # Rendered by the server: the job exists before the pages load.
    await post({"level": "progress", "done": 0, "total": 2})
    await post(hostile_job)
    errors: list[str] = []
    pages = {
        "dashboard": await open_page(browser, server.url + "/", errors),
        "workflow": await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors),
        "job": await open_page(browser, f"{server.url}/workflow/{workflow_id}/job/1", errors),
    }
    # Rendered by the page's script: the same text arriving over the feed.
    await post({**hostile_job, "jobid": 2})
    # Snakemake sends the error text first, then the job_error that it belongs to.
    await post({"level": "error", "msg": "error " + HOSTILE})
    await post({"level": "job_error", "jobid": 1})

    workflow = pages["workflow"]
    await expect(
        workflow.locator('#jobs tbody tr[data-jobid="2"] [data-field="rule"]')
    ).to_have_text("rule" + HOSTILE, timeout=TIMEOUT_MS)
    await expect(workflow.locator("#workflow [data-status]")).to_have_text("Error")
    await expect(workflow.locator('#workflow [data-field="name"]')).to_have_text("wf " + HOSTILE)
    await expect(
        workflow.locator('#jobs tbody tr[data-jobid="1"] [data-field="rule"]')
    ).to_have_text("rule" + HOSTILE)
    job = pages["job"]
    await expect(job.locator("#job [data-status]")).to_have_text("Error", timeout=TIMEOUT_MS)
    await expect(job.locator('[data-field="shell_command"]')).to_have_text("echo " + HOSTILE)
    await expect(job.locator('[data-list="input"]')).to_contain_text("in/" + HOSTILE)
    await expect(job.locator('#job [data-field="error"]')).to_contain_text("error " + HOSTILE)
    dashboard = pages["dashboard"]
    await expect(dashboard.locator('#workflows [data-field="name"]').first).to_have_text(
        "wf " + HOSTILE
    )
    for name, page in pages.items():
        assert await page.evaluate("window.__xss") is None, f"script ran on the {name} page"
        assert (
            await page.locator(
                "main script:not(#initial-jobs):not(#initial-rules), main img"
            ).count()
            == 0
        ), name
        await screenshot(page, f"xss-{name}")
    assert errors == []


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[str]:
    """docs/ served by a plain static server on another origin, as another lab app would."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=ROOT / "docs",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/embed-example.html", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait()


async def test_embed_example_follows_workflows_from_another_origin(
    browser: Browser, other_site: str, tmp_path: Path
) -> None:
    panoptes = LiveServer(
        db=tmp_path / "embed.db", env={"PANOPTES_ALLOWED_ORIGINS": other_site}
    ).start()
    try:
        async with httpx.AsyncClient(base_url=panoptes.url) as api:
            first = (await api.get("/create_workflow", params={"workflow_id": "before"})).json()
            errors: list[str] = []
            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{other_site}/embed-example.html?server={panoptes.url}")
            await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
            # History replayed from since=0, then live changes.
            row = page.locator(f'tr[data-workflow-id="{first["id"]}"]')
            await expect(row.locator(".name")).to_have_text("before")
            second = (await api.get("/create_workflow", params={"workflow_id": HOSTILE})).json()
            msg = {"level": "progress", "done": 2, "total": 2}
            done = await api.post(
                "/update_workflow_status",
                content=form_body(second["id"], msg),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert done.status_code == 200
            live = page.locator(f'tr[data-workflow-id="{second["id"]}"]')
            await expect(live.locator(".name")).to_have_text(HOSTILE, timeout=TIMEOUT_MS)
            await expect(live.locator(".status")).to_have_text("Done")
            assert await page.evaluate("window.__xss") is None
            await screenshot(page, "embed-example")
            assert errors == []
    finally:
        panoptes.stop()


# ---- a real Snakemake run, watched in the browser

SLOW_SNAKEFILE = """
SAMPLES = ["a", "b", "c"]

rule all:
    input: expand("out/{s}.txt", s=SAMPLES)

rule work:
    output: "out/{s}.txt"
    shell: "sleep 1 && echo {wildcards.s} > {output}"
"""


async def test_pages_follow_a_real_snakemake_run(
    browser: Browser,
    server: LiveServer,
    api: httpx.AsyncClient,
    clean: None,
    sm9_bin: Path,
    tmp_path: Path,
) -> None:
    """Snakemake 9 with the panoptes plugin, three one-second jobs: the dashboard, opened
    before the run, and the workflow page, opened while it runs, follow it to Done."""
    (tmp_path / "Snakefile").write_text(SLOW_SNAKEFILE)
    errors: list[str] = []
    dashboard = await open_page(browser, server.url + "/", errors)
    await expect(dashboard.locator("#empty-state")).to_be_visible()
    snakemake = await asyncio.create_subprocess_exec(
        str(sm9_bin),
        "--cores",
        "1",
        "--logger",
        "panoptes",
        "--logger-panoptes-address",
        server.url,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        row = dashboard.locator("#workflows tbody tr").first
        await expect(row.locator("[data-status]")).to_have_text("Running", timeout=30_000)
        workflow_id = await row.get_attribute("data-workflow-id")
        workflow = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
        header = workflow.locator("#workflow")
        await expect(header.locator("[data-status]")).to_have_text("Running")
        await screenshot(workflow, "real-run-running")

        await expect(header.locator("[data-status]")).to_have_text("Done", timeout=30_000)
        await expect(header.locator('[data-field="progress"]')).to_have_text("4 / 4")
        jobs = workflow.locator("#jobs tbody tr")
        await expect(jobs).to_have_count(4)
        for status in await jobs.locator("[data-status]").all_text_contents():
            assert status == "Done"
        await expect(
            workflow.locator('#rules tr[data-rule="work"] [data-field="done"]')
        ).to_have_text("3")
        await expect(row.locator("[data-status]")).to_have_text("Done")
        await expect(row.locator('[data-field="progress"]')).to_have_text("4 / 4")
        await expect(workflow.locator("#timeline")).to_have_attribute("data-bars", "4")
        for page in (dashboard, workflow):
            await assert_never_reloaded(page)
        await screenshot(workflow, "real-run-done")
    finally:
        output, _ = await snakemake.communicate()
    assert snakemake.returncode == 0, output.decode(errors="replace")
    assert errors == []


# ---- a workflow with more jobs than one page holds


async def live_marked(page: Page) -> None:
    """After a navigation the user asked for: live again, and marked against reloads."""
    await expect(page.locator("#live-indicator")).to_have_text("live", timeout=TIMEOUT_MS)
    await page.evaluate("window.__loadedOnce = true")


async def test_many_jobs_are_paged_filtered_on_the_server_and_stay_live(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    workflow_id = (await api.get("/create_workflow")).json()["id"]

    def post(msg: dict[str, Any]) -> Awaitable[None]:
        return post_message(api, workflow_id, msg)

    def info(jobid: int) -> dict[str, Any]:
        rule = "even" if jobid % 2 == 0 else "odd"
        return {"level": "job_info", "jobid": jobid, "name": rule, "wildcards": {"n": jobid}}

    async def start(jobid: int) -> None:  # as the Snakemake 9 plugin does: started, described
        await post({"level": "job_started", "jobs": [jobid]})
        await post(info(jobid))

    for jobid in range(150):
        await start(jobid)
    for jobid in range(10):
        await post({"level": "job_finished", "jobid": jobid})

    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    rows = page.locator("#jobs tbody tr")
    pager = page.locator("#job-pager")
    await expect(rows).to_have_count(100)  # pages.JOBS_PER_PAGE
    await expect(page.locator("#job-count")).to_have_text("150")
    await expect(pager.locator('[data-pager="range"]')).to_have_text("1\u2013100 of 150")
    await expect(pager.locator('[data-pager="previous"]')).to_be_hidden()
    # The timeline draws every job, not only this page's.
    await expect(page.locator("#timeline")).to_have_attribute("data-bars", "150")

    # A new job belongs on the last page: here only the count and the pager move.
    await start(150)
    await expect(page.locator("#job-count")).to_have_text("151")
    await expect(pager.locator('[data-pager="range"]')).to_have_text("1\u2013100 of 151")
    await expect(rows).to_have_count(100)
    await assert_never_reloaded(page)

    await pager.locator('[data-pager="next"]').click()
    await page.wait_for_url("**offset=100**")
    await live_marked(page)
    await expect(rows).to_have_count(51)
    await expect(pager.locator('[data-pager="next"]')).to_be_hidden()
    # On the last page a new job is added live, and changes show in place.
    await start(151)
    await expect(rows).to_have_count(52)
    await expect(pager.locator('[data-pager="range"]')).to_have_text("101\u2013152 of 152")
    await post({"level": "job_finished", "jobid": 151})
    await expect(page.locator('#jobs tr[data-jobid="151"] [data-status]')).to_have_text("Done")
    await assert_never_reloaded(page)
    await screenshot(page, "workflow-paged")

    # Filtering goes to the server: Running jobs only, then one of them finishes.
    await page.select_option('#job-filters select[name="status"]', "Running")
    await page.wait_for_url("**status=Running**")
    await live_marked(page)
    await expect(page.locator("#job-count")).to_have_text("141")  # 152 - 11 finished
    await expect(rows).to_have_count(100)
    for status in set(await rows.locator("[data-status]").all_text_contents()):
        assert status == "Running"
    await expect(page.locator('#jobs tr[data-jobid="20"]')).to_have_count(1)
    await post({"level": "job_finished", "jobid": 20})
    await expect(page.locator('#jobs tr[data-jobid="20"]')).to_have_count(0)
    await expect(page.locator("#job-count")).to_have_text("140")
    await assert_never_reloaded(page)

    await page.goto(f"{server.url}/workflow/{workflow_id}?rule=odd&status=Running")
    await live_marked(page)
    await expect(page.locator("#job-count")).to_have_text("70")  # odd 11..149
    await expect(rows).to_have_count(70)
    for rule in set(await rows.locator('[data-field="rule"]').all_text_contents()):
        assert rule == "odd"
    assert errors == []


async def test_a_page_starts_over_when_the_server_comes_back_with_another_database(
    browser: Browser, tmp_path: Path
) -> None:
    """The scientist deletes .panoptes.db and restarts panoptes while a tab is open: the tab
    reconnects with a seq the new database has not reached, and reloads instead of showing
    the old state and missing what comes next."""
    port = free_port()
    errors: list[str] = []
    first = LiveServer(db=tmp_path / "first.db", port=port).start()
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
            for name in ("old-1", "old-2", "old-3"):
                await http.get("/create_workflow", params={"workflow_id": name})
        page = await open_page(browser, first.url + "/", errors)
        await expect(page.locator("#workflows tbody tr")).to_have_count(3)
    finally:
        first.stop()
    second = LiveServer(db=tmp_path / "second.db", port=port).start()
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
            await http.get("/create_workflow", params={"workflow_id": "new"})
        rows = page.locator("#workflows tbody tr")
        await expect(rows).to_have_count(1, timeout=30_000)
        await expect(rows.locator('[data-field="name"]')).to_have_text("new")
        assert await page.evaluate("window.__loadedOnce") is None, "the page did not reload"
        await expect(page.locator("#live-indicator")).to_have_text("live")
    finally:
        second.stop()
    assert [e for e in errors if "WebSocket" not in e] == []
