"""The workflow page's rule graph and timeline in a real Chromium (issue 13): drawn for a
replayed real run, kept live from the feed without a reload, zoomed, and a rule clicked to
filter the page to it. Screenshots go to test-artifacts/pages/."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from ..conftest import LiveServer
from .conftest import TIMEOUT_MS, open_page, screenshot, screenshot_of
from .test_pages import Replay, api, assert_never_reloaded, clean, post_message, server

pytestmark = pytest.mark.e2e
__all__ = ["api", "clean", "server"]  # the fixtures, shared with test_pages


async def attempts(api: httpx.AsyncClient, workflow_id: int) -> int:
    jobs = (await api.get(f"/api/workflow/{workflow_id}/jobs")).json()["jobs"]
    return sum(1 for job in jobs for attempt in job["attempts"] if attempt["started_at"])


def node(page: Page, rule: str) -> Any:
    return page.locator("#rulegraph g.rule-node").filter(
        has=page.locator("text.rule-name", has_text=rule)
    )


async def test_the_rule_graph_and_timeline_follow_a_run(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """sm9-keepgoing (plugin 0.3.0, so no rule graph from the client: it is made of the jobs'
    files): 6 samples x make -> align -> count; align(S2) fails, align(S4) fails once."""
    replay = Replay(api, "sm9-keepgoing")
    workflow_id = await replay.start()
    await replay.until(lambda msg: msg.get("level") == "job_finished")
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    graph = page.locator("#rulegraph-section")
    await expect(graph).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator("#rulegraph-source")).to_contain_text("jobs so far")
    timeline = page.locator("#timeline")
    await expect(timeline).to_have_attribute("data-bars", str(await attempts(api, workflow_id)))
    before = int(await timeline.get_attribute("data-bars") or 0)

    await replay.rest()
    await expect(node(page, "align")).to_have_class("rule-node rule-error", timeout=TIMEOUT_MS)
    await expect(node(page, "align").locator("text.rule-count")).to_contain_text("1 failed")
    # Plugin 0.3.0 sends no plan per rule: count(S2), blocked behind the failure, was never
    # announced, so all the count jobs known are done.
    await expect(node(page, "count")).to_have_class("rule-node rule-done")
    await expect(node(page, "count").locator("text.rule-count")).to_have_text("5 / 5 done")
    # Its edges come from the files the jobs read and wrote (merge never ran: no edge to it).
    dag = (await api.get(f"/api/workflow/{workflow_id}/dag")).json()
    assert dag["edges"] == [["make", "align"], ["align", "count"]]
    await expect(graph).to_have_attribute("data-edges", "2", timeout=TIMEOUT_MS)
    await expect(page.locator("#rulegraph path.rule-edge")).to_have_count(2)
    total = await attempts(api, workflow_id)
    assert total > before
    await expect(timeline).to_have_attribute("data-bars", str(total), timeout=TIMEOUT_MS)
    await expect(timeline).to_have_attribute("data-rules", "3")
    summary = page.locator("#timeline-summary")
    await expect(summary).to_contain_text(f"{total} attempts of ")
    await expect(summary).to_contain_text("in 3 rules")

    # A bar tells what it is when pointed at; the first band's first bar is a make job.
    await timeline.scroll_into_view_if_needed()
    point = await page.evaluate(
        """() => {
          const box = document.getElementById("timeline");
          const g = box.geometry, rect = box.querySelector("canvas").getBoundingClientRect();
          const span = g.span, x = g.x(span.from) + 2;
          return {x: rect.left + x, y: rect.top + 24 + g.lane / 2};
        }"""
    )
    await page.mouse.move(point["x"], point["y"])
    tip = page.locator(".timeline-tip")
    await expect(tip).to_be_visible()
    await expect(tip).to_contain_text("make")
    await expect(tip).to_contain_text("attempt 1")

    await page.locator('[data-zoom="in"]').click()
    await expect(summary).to_contain_text("zoomed in")
    await page.locator('[data-zoom="reset"]').click()
    await expect(summary).not_to_contain_text("zoomed in")
    await assert_never_reloaded(page)
    await screenshot_of(graph, "rulegraph")
    await screenshot_of(page.locator("#timeline-section"), "timeline")

    # A rule clicked: the page shows its jobs only, and the rule stands out in the graph.
    await node(page, "align").click()
    await expect(page).to_have_url(
        f"{server.url}/workflow/{workflow_id}?rule=align#rulegraph-section"
    )
    await expect(node(page, "align")).to_have_class("rule-node rule-error focused")
    rules = await page.locator("#jobs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.rule)"
    )
    assert rules and set(rules) == {"align"}
    await screenshot(page, "workflow-focused-on-a-rule")
    assert errors == []


async def test_a_rule_graph_the_client_sent_is_drawn_before_any_job(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """Plugin 1.0.0 sends the rule graph at the start: the page draws it with no jobs yet,
    then colours each rule as its jobs come."""
    workflow_id = (await api.get("/create_workflow")).json()["id"]
    graph_msg = {
        "level": "rulegraph",
        "rules": ["all", "merge", "call", "align", "index"],
        "edges": [["align", "call"], ["index", "call"], ["call", "merge"], ["merge", "all"]],
    }
    await post_message(api, workflow_id, graph_msg)
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    section = page.locator("#rulegraph-section")
    await expect(section).to_have_attribute("data-rules", "5", timeout=TIMEOUT_MS)
    await expect(section).to_have_attribute("data-edges", "4")
    await expect(page.locator("#rulegraph-source")).to_have_text("as Snakemake planned it")
    await expect(node(page, "align")).to_have_class("rule-node rule-waiting")
    await post_message(api, workflow_id, {"level": "job_info", "jobid": 1, "name": "align"})
    await post_message(api, workflow_id, {"level": "job_started", "jobs": [1]})
    await expect(node(page, "align")).to_have_class("rule-node rule-running", timeout=TIMEOUT_MS)
    await post_message(api, workflow_id, {"level": "job_finished", "jobid": 1})
    await expect(node(page, "align")).to_have_class("rule-node rule-done", timeout=TIMEOUT_MS)
    await expect(page.locator("#timeline")).to_have_attribute("data-bars", "1")
    await assert_never_reloaded(page)
    await screenshot_of(section, "rulegraph-from-the-client")
    assert errors == []


async def test_times_are_relative_and_a_retried_job_shows_its_first_start(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    workflow_id = (await api.get("/create_workflow")).json()["id"]
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    await post_message(api, workflow_id, {"level": "job_info", "jobid": 1, "name": "align"})
    await post_message(api, workflow_id, {"level": "job_started", "jobs": [1]})
    failure = {
        "level": "job_error",
        "jobid": 1,
        "name": "align",
        "error": "RuleException:\nCommand 'bwa mem' returned non-zero exit status 3.",
        "exit_code": 3,
        "logs": [{"path": "logs/align.log", "tail": "reading\ntruncated FASTQ record\n"}],
    }
    await post_message(api, workflow_id, failure)
    failed = page.locator("#failed-jobs li")
    await expect(failed.locator('[data-field="error_line"]')).to_have_text(
        "truncated FASTQ record", timeout=TIMEOUT_MS
    )
    log = failed.locator('[data-field="log_tail"]')
    await log.locator("summary").click()
    await expect(log.locator("pre")).to_have_text("reading\ntruncated FASTQ record\n")
    await post_message(api, workflow_id, {"level": "job_started", "jobs": [1]})  # the retry
    await expect(page.locator("#failed-jobs")).to_be_hidden(timeout=TIMEOUT_MS)
    job = (await api.get(f"/api/workflow/{workflow_id}/job/1")).json()["job"]
    assert job["attempt"] == 2 and job["first_started_at"] == job["attempts"][0]["started_at"]
    assert job["first_started_at"] != job["started_at"]
    row = page.locator('#jobs tbody tr[data-jobid="1"]')
    await expect(row.locator('[data-field="attempt"]')).to_have_text("2")
    started = row.locator('[data-time="first_started_at"] time')
    await expect(started).to_have_attribute("datetime", job["first_started_at"])
    await expect(started).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
    title = await started.get_attribute("title")
    assert title and str(datetime.fromisoformat(job["first_started_at"]).year) in title
    # A reload shows the same: the server renders the first start too.
    await page.reload()
    await expect(started).to_have_attribute("datetime", job["first_started_at"])
    await expect(page.locator('[data-time="updated_at"] time')).to_have_text(
        re.compile(r"ago|just now")
    )
    assert errors == []


async def test_time_left_shows_on_the_dashboard_and_the_workflow_page(
    browser: Browser, server: LiveServer, api: httpx.AsyncClient, clean: None
) -> None:
    """eta_seconds from the API, asked again as the run moves; gone once it ends."""
    replay = Replay(api, "sm9-keepgoing")
    workflow_id = await replay.start()
    finished = 0

    def third_finished(msg: dict[str, Any]) -> bool:
        nonlocal finished
        finished += msg.get("level") == "job_finished"
        return finished == 3

    await replay.until(third_finished)
    estimate = (await api.get(f"/api/workflow/{workflow_id}")).json()["workflow"]["eta_seconds"]
    assert estimate is not None and estimate >= 0
    errors: list[str] = []
    page = await open_page(browser, f"{server.url}/workflow/{workflow_id}", errors)
    left = page.locator("#workflow dd[data-eta]")
    await expect(left).to_have_text(re.compile(r" left$"), timeout=TIMEOUT_MS)
    await expect(left).to_be_visible()
    dashboard = await open_page(browser, f"{server.url}/", errors)
    row_left = dashboard.locator(f'tr[data-workflow-id="{workflow_id}"] [data-eta]')
    await expect(row_left).to_have_text(re.compile(r" left$"), timeout=TIMEOUT_MS)

    await replay.rest()  # it ends Error: no time left to tell
    await expect(page.locator("#workflow")).to_have_attribute("data-status", "Error")
    await expect(left).to_be_hidden()
    await expect(row_left).to_be_hidden(timeout=TIMEOUT_MS)
    assert (await api.get(f"/api/workflow/{workflow_id}")).json()["workflow"]["eta_seconds"] is None
    await assert_never_reloaded(page)
    assert errors == []
