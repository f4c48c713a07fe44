"""The workflow page's samples x rules grid in a real Chromium (issue 13): grouped by the
wildcard the user picks, failed rows first as failures come, filtered, a thousand samples
drawn a screenful at a time and kept live, one rule's column focused. Screenshots go to
test-artifacts/pages/."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from ..conftest import LiveServer
from .conftest import TIMEOUT_MS, open_page, screenshot_of
from .test_pages import (
    HOSTILE,
    Replay,
    api,
    assert_never_reloaded,
    clean,
    post_message,
    server,
)

pytestmark = pytest.mark.e2e
__all__ = ["api", "clean", "server"]  # the fixtures, shared with test_pages


class Run:
    """Hand-made jobs for one workflow, posted as the Snakemake 9 plugin posts them."""

    def __init__(self, api: httpx.AsyncClient) -> None:
        self.api = api
        self.workflow_id = 0

    async def create(self) -> Run:
        self.workflow_id = (await self.api.get("/create_workflow")).json()["id"]
        return self

    async def post(self, msg: dict[str, Any]) -> None:
        await post_message(self.api, self.workflow_id, msg)

    async def start(self, jobs: list[tuple[int, str, dict[str, Any]]], at_once: int = 1) -> None:
        """Jobs started (one message), then described, `at_once` at a time."""
        await self.post({"level": "job_started", "jobs": [jobid for jobid, _, _ in jobs]})
        slots = asyncio.Semaphore(at_once)

        async def describe(jobid: int, rule: str, wildcards: dict[str, Any]) -> None:
            async with slots:
                msg = {"level": "job_info", "jobid": jobid, "name": rule, "wildcards": wildcards}
                await self.post(msg)

        await asyncio.gather(*(describe(*job) for job in jobs))

    async def finish(self, *jobids: int) -> None:
        for jobid in jobids:
            await self.post({"level": "job_finished", "jobid": jobid})

    async def fail(self, jobid: int, rule: str) -> None:
        await self.post({"level": "job_error", "jobid": jobid, "name": rule})


def grid_of(page: Page) -> Locator:
    return page.locator("#dataset-grid")


def row_keys(page: Page) -> Locator:
    """The drawn rows (not the spacers standing in for the others)."""
    return grid_of(page).locator("tbody tr[data-key]")


def names(page: Page) -> Locator:
    """The drawn rows' names (their wildcard values), top to bottom."""
    return row_keys(page).locator("th")


async def show(page: Page, rows: str) -> None:
    """Picks the row filter: all, failed (with a failure) or pending (not done yet)."""
    await page.locator(f'#grid-section input[name="grid-filter"][value="{rows}"]').check()


def count(page: Page, name: str) -> Locator:
    return page.locator(f'#grid-section [data-count="{name}"]')


async def test_the_key_picker_regroups_the_grid_and_keeps_it_live(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    run = await Run(api).create()
    calls = [
        (n, "call", {"sample": s, "chrom": c})
        for n, (s, c) in enumerate([(s, c) for s in "ABC" for c in "12"], start=1)
    ]
    await run.start([*calls, (7, "plot", {"sample": "A"}), (8, "merge", {})])
    await run.finish(1, 2)
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{run.workflow_id}", errors)
    grid = grid_of(page)
    picker = page.locator("#grid-key")
    # By sample (3 values against chrom's 2), with the user's choice of the other.
    await expect(grid.locator("thead th").first).to_have_text("sample", timeout=TIMEOUT_MS)
    await expect(picker.locator("option")).to_have_text(["sample (3)", "chrom (2)"])
    await expect(row_keys(page)).to_have_count(3)
    await expect(page.locator("#grid-foot")).to_have_text(
        "Not in the grid (their jobs have no sample wildcard): merge"
    )

    await picker.select_option("chrom")
    await expect(grid.locator("thead th").first).to_have_text("chrom")
    await expect(names(page)).to_have_text(["1", "2"])
    await expect(grid.locator("thead th")).to_have_text(["chrom", "call", "done"])
    await expect(page.locator("#grid-foot")).to_contain_text("no chrom wildcard): plot, merge")
    cell = grid.locator('tbody tr[data-key="1"] td[data-rule="call"] a')
    await expect(cell).to_have_attribute("title", "Running, 3 jobs")  # A1 done, B1 C1 running

    # Still live, by chrom: a new chromosome is a new row; a failure moves its row first.
    await run.start([(9, "call", {"sample": "D", "chrom": "3"})])
    await expect(row_keys(page)).to_have_count(3, timeout=TIMEOUT_MS)
    await expect(picker.locator("option:checked")).to_have_text("chrom (3)")
    await run.fail(4, "call")  # B, chrom 2
    await expect(row_keys(page).first).to_have_attribute("data-key", "2", timeout=TIMEOUT_MS)
    await expect(grid.locator('tbody tr[data-key="2"] td[data-rule="call"]')).to_have_class(
        "cell status-error"
    )
    await expect(count(page, "failed")).to_have_text("1")
    await assert_never_reloaded(page)
    await screenshot_of(page.locator("#grid-section"), "grid-key-picker")

    await picker.select_option("sample")
    await expect(grid.locator("thead th")).to_have_text(["sample", "call", "plot", "done"])
    await expect(names(page)).to_have_text(["B", "A", "C", "D"])
    assert errors == []


async def test_a_failure_moves_its_row_first_as_it_happens_and_the_filter_finds_it(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """sm9-keepgoing: align(S4) fails, then succeeds on its retry; align(S2) fails twice."""
    replay = Replay(api, "sm9-keepgoing")
    workflow_id = await replay.start()
    await replay.until(lambda msg: msg.get("level") == "job_finished")
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    rows = row_keys(page)
    await expect(rows.first).to_be_visible(timeout=TIMEOUT_MS)
    first = await rows.first.get_attribute("data-key")

    await replay.until(lambda msg: msg.get("level") == "job_error")  # align(S4)
    await expect(rows.first).to_have_attribute("data-key", "S4", timeout=TIMEOUT_MS)
    await expect(count(page, "failed")).to_have_text("1")
    # Its retry runs: no failure in it any more, and it goes back to its place.
    await replay.until(lambda msg: msg.get("level") == "job_started" and 12 in msg["jobs"])
    await expect(rows.first).not_to_have_attribute("data-key", "S4", timeout=TIMEOUT_MS)
    assert first is not None and first != "S4"
    await expect(count(page, "failed")).to_have_text("0")

    await replay.rest()
    await expect(rows.first).to_have_attribute("data-key", "S2", timeout=TIMEOUT_MS)
    await expect(count(page, "all")).to_have_text("6")
    await expect(count(page, "failed")).to_have_text("1")
    await expect(count(page, "pending")).to_have_text("1")  # S2: align failed, count never ran

    await show(page, "failed")
    await expect(names(page)).to_have_text(["S2"])
    await show(page, "pending")
    await expect(names(page)).to_have_text(["S2"])
    await show(page, "all")
    await expect(rows).to_have_count(6)
    await page.locator("#grid-find").fill("s5")
    await expect(names(page)).to_have_text(["S5"])
    await page.locator("#grid-find").fill("")
    await expect(rows).to_have_count(6)
    await assert_never_reloaded(page)
    assert errors == []


SAMPLES = 1000


async def test_a_thousand_samples_are_drawn_a_screenful_at_a_time_and_kept_live(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """1,000 samples x trim, align: the DOM holds the rows in view of the grid's box (and a
    few more), spacers stand in for the rest; a live change to a row out of view is there
    when it is scrolled to, and the header and each row's done count stay."""
    run = await Run(api).create()
    jobs = [
        (2 * n + step, rule, {"sample": f"S{n + 1}"})
        for n in range(SAMPLES)
        for step, rule in ((1, "trim"), (2, "align"))
    ]
    await run.start(jobs, at_once=16)
    await run.finish(*range(1, 41, 2))  # trim of S1..S20
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{run.workflow_id}", errors)
    rows = row_keys(page)
    await expect(count(page, "all")).to_have_text(str(SAMPLES), timeout=TIMEOUT_MS)
    await expect(rows.first).to_have_attribute("data-key", "S1")
    drawn = await rows.count()
    assert 10 < drawn < 100, f"{drawn} rows in the DOM for {SAMPLES} samples"
    assert await grid_of(page).locator("tbody td").count() < 100 * 4
    await expect(grid_of(page).locator('tbody tr[data-key="S1"] td').last).to_have_text("1/2")
    await screenshot_of(page.locator("#grid-section"), "grid-1000-samples")

    # S1000 is far out of view: its jobs finish, then it is scrolled to.
    await run.finish(2 * SAMPLES - 1, 2 * SAMPLES)
    await expect(count(page, "pending")).to_have_text(str(SAMPLES - 1), timeout=TIMEOUT_MS)
    assert await grid_of(page).locator('tbody tr[data-key="S1000"]').count() == 0
    scroller = page.locator("#grid-section .grid-scroll")
    await scroller.evaluate("box => { box.scrollTop = box.scrollHeight; }")
    bottom = grid_of(page).locator('tbody tr[data-key="S1000"]')
    await expect(bottom.locator('td[data-rule="trim"]')).to_have_class("cell status-done")
    await expect(bottom.locator('td[data-rule="align"]')).to_have_class("cell status-done")
    await expect(bottom.locator("td").last).to_have_text("2/2")
    assert 10 < await rows.count() < 100
    # In the box, under its header, which stays at the top of the box.
    box = await scroller.bounding_box()
    head = await grid_of(page).locator("thead th").first.bounding_box()
    row = await bottom.bounding_box()
    assert box is not None and head is not None and row is not None
    assert abs(head["y"] - box["y"]) < 3
    assert (
        box["y"] + head["height"] <= row["y"]
        and row["y"] + row["height"] <= box["y"] + box["height"] + 1
    )
    await screenshot_of(page.locator("#grid-section"), "grid-1000-samples-bottom")

    # A failure far down moves its row to the top, where the user is taken back to.
    await run.fail(2 * 499 + 2, "align")  # align of S500
    await expect(count(page, "failed")).to_have_text("1", timeout=TIMEOUT_MS)
    await scroller.evaluate("box => { box.scrollTop = 0; }")
    await expect(rows.first).to_have_attribute("data-key", "S500")
    await expect(rows.nth(1)).to_have_attribute("data-key", "S1")
    await assert_never_reloaded(page)
    assert errors == []


async def test_a_focused_rule_is_highlighted_and_the_filters_ask_about_its_cells(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """The page filtered to a rule (?rule=, as the rule graph links) focuses the grid on it
    (datasetGrid's focusRule): sm9-keepgoing's count never ran for S2, align failed."""
    replay = Replay(api, "sm9-keepgoing")
    workflow_id = await replay.start()
    await replay.rest()
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}?rule=count", errors)
    grid = grid_of(page)
    await expect(grid.locator("thead th.focused")).to_have_text("count", timeout=TIMEOUT_MS)
    await expect(grid.locator("tbody td.focused")).to_have_count(6)
    assert await grid.locator('tbody td.focused:not([data-rule="count"])').count() == 0
    await expect(page.locator("#grid-focus")).to_contain_text("count")
    await expect(count(page, "failed")).to_have_text("0")  # no count job failed
    await expect(count(page, "pending")).to_have_text("1")  # S2's count never ran
    await show(page, "pending")
    await expect(names(page)).to_have_text(["S2"])
    await screenshot_of(page.locator("#grid-section"), "grid-focused-rule")
    await show(page, "failed")
    await expect(row_keys(page)).to_have_count(0)
    await expect(grid.locator("tbody tr.grid-none")).to_have_text("No dataset failed in count.")

    # The grid's own button ends the focus: the filter asks about whole rows again.
    await page.locator("#grid-focus button").click()
    await expect(grid.locator(".focused")).to_have_count(0)
    await expect(page.locator("#grid-focus")).to_be_hidden()
    await expect(names(page)).to_have_text(["S2"])
    await expect(count(page, "failed")).to_have_text("1")
    assert errors == []


async def test_names_in_the_grid_are_text_whatever_they_say(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """Sample, rule and wildcard names are the user's: shown as text, never run or used as
    a selector, and names an object has by itself (__proto__, constructor) are names too."""
    run = await Run(api).create()
    odd = {"sample": HOSTILE, "__proto__": "p", "constructor": "c"}
    await run.start([(1, "rule" + HOSTILE, odd), (2, "constructor", {"sample": "__proto__"})])
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{run.workflow_id}", errors)
    grid = grid_of(page)
    await expect(grid.locator("thead th")).to_have_text(
        ["sample", "rule" + HOSTILE, "constructor", "done"], timeout=TIMEOUT_MS
    )
    await expect(grid.locator("tbody th")).to_have_text([HOSTILE, "__proto__"])
    await expect(page.locator("#grid-key option")).to_have_text(
        ["sample (2)", "__proto__ (1)", "constructor (1)"]
    )
    # Live, the same names again.
    await run.start([(3, "rule" + HOSTILE, {"sample": HOSTILE + "2", "constructor": "x"})])
    await expect(grid.locator("tbody th")).to_have_count(3, timeout=TIMEOUT_MS)
    await page.locator("#grid-key").select_option("constructor")
    await expect(grid.locator("tbody th")).to_have_text(["c", "x"])
    assert await page.evaluate("window.__xss") is None
    assert await page.locator("#grid-section img, #grid-section script").count() == 0
    assert errors == []
