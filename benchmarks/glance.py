"""The run at a glance (issue 13) with 10,000 jobs: the workflow page and the endpoints it
draws from, on the server and in Chromium.

    .venv/bin/python benchmarks/glance.py                       # about a minute
    .venv/bin/python benchmarks/glance.py --compare /tmp/before # also a copy of panoptes/
    .venv/bin/python benchmarks/glance.py --samples 2500 --rules 4
    .venv/bin/python benchmarks/glance.py --keep /tmp/glance    # keep the database, reuse it

Starts a real `python -m panoptes` on a fresh SQLite file and sends it one run the way the
Snakemake 9 plugin (0.3.0) does, as JSON bodies: --samples samples through --rules rules (1,000
x 10 = 10,000 jobs) with three wildcards (sample, batch, lane), 32 samples at a time, each
through its rules in turn: job_started, job_info (with the files, so the rule graph has
edges), then job_finished. One job in 50 fails and succeeds on its retry; one sample in 200
fails its last rule twice; the last 30 samples are still running, their later jobs waiting.

Then, on that server (and with --compare on a second one serving the panoptes package found
under that directory, through PYTHONPATH, on the same file), in alternating rounds:

- server side: sequential GETs on one keep-alive connection of the workflow page and of its
  grid, timeline, dag and trace.tsv endpoints (--requests each, after 5 of warm-up), p50 and
  p90. panoptes has no metric for a read's duration, so this is the request's time measured
  by a client on the same machine (which adds well under a millisecond), and beside it the
  server process's CPU time per request (/proc), which other load on the machine moves less.
- the page: --loads cold loads of /workflow/<id> in headless Chromium (a new browser context
  each, so nothing cached), from navigation start until the grid has its first rows
  (`#dataset-grid tbody tr`) and the timeline has drawn its bars (`#timeline[data-bars]` > 0),
  the median, and how many rows and elements the page holds then.

Targets (issue 13): the workflow page and the grid endpoint p50 < 100 ms server side, the
page's first render (grid and timeline) < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, async_playwright
from server import Server

WARM_UP = 5
AT_ONCE = 32
RULES = ("trim", "align", "sort", "dedup", "index", "call", "filter", "annotate", "qc", "report")
TARGET_SERVER_MS = 100.0
TARGET_RENDER_MS = 1000.0
CHROMIUM = os.environ.get("PANOPTES_CHROMIUM", "/usr/bin/chromium")

# Notes, from the first script the page runs, when the grid and the timeline are first drawn.
WATCH = """
window.__glance = {};
(function watch() {
  const seen = window.__glance;
  if (seen.grid === undefined && document.querySelector("#dataset-grid tbody tr")) {
    seen.grid = performance.now();
  }
  const timeline = document.getElementById("timeline");
  if (seen.timeline === undefined && timeline && Number(timeline.dataset.bars) > 0) {
    seen.timeline = performance.now();
  }
  if (seen.grid === undefined || seen.timeline === undefined) requestAnimationFrame(watch);
})();
"""


class Run:
    """One workflow's messages, sent as the plugin sends them."""

    def __init__(self, http: httpx.AsyncClient, samples: int, rules: int) -> None:
        self.http = http
        self.samples = samples
        self.rules = RULES[:rules] if rules <= len(RULES) else [f"r{n}" for n in range(rules)]
        self.workflow_id = 0
        self.random = random.Random(13)
        self.finished = 0

    async def post(self, msg: dict[str, Any]) -> None:
        body = {"msg": msg, "timestamp": time.asctime(), "id": self.workflow_id}
        response = await self.http.post("/update_workflow_status", json=body)
        response.raise_for_status()

    async def send(self) -> int:
        self.workflow_id = (await self.http.get("/create_workflow")).json()["id"]
        await self.post({"level": "progress", "done": 0, "total": self.samples * len(self.rules)})
        queue: asyncio.Queue[int] = asyncio.Queue()
        for sample in range(self.samples):
            queue.put_nowait(sample)

        async def worker() -> None:
            while not queue.empty():
                await self.sample(queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(AT_ONCE)))
        return self.workflow_id

    def job_info(self, sample: int, number: int) -> dict[str, Any]:
        rule = self.rules[number]
        name = f"S{sample + 1}"
        previous = [f"{self.rules[number - 1]}/{name}.out"] if number else [f"raw/{name}.fq"]
        return {
            "level": "job_info",
            "jobid": sample * len(self.rules) + number + 1,
            "name": rule,
            "msg": None,
            "input": previous,
            "output": [f"{rule}/{name}.out"],
            "log": [f"logs/{rule}/{name}.log"],
            "wildcards": {"sample": name, "batch": f"B{sample % 10}", "lane": f"L{sample % 4}"},
            "is_checkpoint": False,
            "shellcmd": f"{rule} {' '.join(previous)} > {rule}/{name}.out",
            "threads": 1,
            "priority": 0,
            "reason": "Missing output files",
            "resources": {"tmpdir": "/tmp", "mem_mb": 1000},
        }

    async def sample(self, sample: int) -> None:
        running_from = self.samples - 30
        for number in range(len(self.rules)):
            info = self.job_info(sample, number)
            jobid = info["jobid"]
            if sample >= running_from and number > (sample - running_from) % len(self.rules):
                await self.post(info)  # not started yet: waiting
                continue
            await self.post({"level": "job_started", "jobs": [jobid]})
            await self.post(info)
            if sample >= running_from and number == (sample - running_from) % len(self.rules):
                continue  # still running
            last = number == len(self.rules) - 1
            if last and sample % 200 == 7:
                for retry in (True, False):  # fails, and fails its retry
                    await self.post({"level": "error", "msg": "RuleException"})
                    await self.post({"level": "job_error", "jobid": jobid, "name": info["name"]})
                    if retry:
                        await self.post({"level": "job_started", "jobs": [jobid]})
                        await self.post(info)
                continue
            if self.random.random() < 0.02:  # fails once, then its retry succeeds
                await self.post({"level": "error", "msg": "RuleException"})
                await self.post({"level": "job_error", "jobid": jobid, "name": info["name"]})
                await self.post({"level": "job_started", "jobs": [jobid]})
                await self.post(info)
            await self.post({"level": "job_finished", "jobid": jobid})
            self.finished += 1
            if self.finished % 100 == 0:
                total = self.samples * len(self.rules)
                await self.post({"level": "progress", "done": self.finished, "total": total})


def timed(server: Server, path: str, requests: int) -> tuple[list[float], int, float]:
    """Each request's time (ms), the answer's size, and the server's CPU time (user and
    system, from /proc) per request: less moved by other load on the machine."""
    times: list[float] = []
    size = 0
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for number in range(requests + WARM_UP):
            if number == WARM_UP:
                cpu = server.cpu_seconds()
            started = time.perf_counter()
            response = http.get(path)
            times.append(1000 * (time.perf_counter() - started))
            response.raise_for_status()
            size = len(response.content)
    return times[WARM_UP:], size, 1000 * (server.cpu_seconds() - cpu) / requests


async def first_renders(url: str, loads: int) -> tuple[list[float], list[float], str]:
    """The first render of --loads cold page loads: (until both are drawn, grid alone) ms,
    and the DOM's size then."""
    both: list[float] = []
    grids: list[float] = []
    dom = ""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for _ in range(loads):
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                await page.add_init_script(WATCH)
                await page.goto(url, wait_until="commit")
                seen = await drawn(page)
                both.append(max(seen["grid"], seen["timeline"]))
                grids.append(seen["grid"])
                dom = await page.evaluate(
                    "document.querySelectorAll('#dataset-grid tbody tr').length + ' grid rows, '"
                    " + document.getElementsByTagName('*').length + ' elements'"
                )
                await context.close()
        finally:
            await browser.close()
    return both, grids, dom


async def drawn(page: Page) -> dict[str, float]:
    """When the page drew its grid and timeline (WATCH's notes; read by polling, as the
    page's CSP allows no wait_for_function)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen: dict[str, float] = await page.evaluate("window.__glance || {}")
        if "grid" in seen and "timeline" in seen:
            return seen
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the page drew no grid and timeline in 60 s: {seen}")


def p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", type=Path, help="a directory holding another panoptes/")
    parser.add_argument("--keep", type=Path, help="a directory to keep the database in, reused")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="panoptes-glance-") as tmp:
        db = (args.keep or Path(tmp)) / f"glance-{args.samples}x{args.rules}.db"
        reused = db.exists()
        servers = {"this": Server(db=db).start()}
        try:
            workflow_id = reuse(servers["this"]) if reused else fill(servers["this"], args)
            if args.compare:
                env = {"PYTHONPATH": str(args.compare.resolve())}
                servers["before"] = Server(db=db, env=env).start()
            report(servers, workflow_id, args)
        finally:
            for server in servers.values():
                server.stop()
    return 0


def fill(server: Server, args: argparse.Namespace) -> int:
    started = time.perf_counter()

    async def send() -> int:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            return await Run(http, args.samples, args.rules).send()

    workflow_id = asyncio.run(send())
    workflow = httpx.get(f"{server.url}/api/workflow/{workflow_id}").json()["workflow"]
    print(
        f"{workflow['jobs_total']} jobs ({args.samples} samples x {args.rules} rules)"
        f" sent in {time.perf_counter() - started:.0f} s\n"
    )
    return workflow_id


def reuse(server: Server) -> int:
    """The workflow of a kept database."""
    workflow = httpx.get(f"{server.url}/api/workflows").json()["workflows"][0]
    print(f"{workflow['jobs_total']} jobs, kept from an earlier run\n")
    workflow_id: int = workflow["id"]
    return workflow_id


def report(servers: dict[str, Server], workflow_id: int, args: argparse.Namespace) -> None:
    paths = [
        f"/workflow/{workflow_id}",
        f"/api/workflow/{workflow_id}/grid",
        f"/api/workflow/{workflow_id}/timeline",
        f"/api/workflow/{workflow_id}/dag",
        f"/api/workflow/{workflow_id}/trace.tsv",
    ]
    times: dict[tuple[str, str], list[float]] = {}
    sizes: dict[tuple[str, str], int] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    renders: dict[str, tuple[list[float], list[float], str]] = {}
    for _ in range(args.rounds):
        for name, server in servers.items():
            for path in paths:
                counted, size, cpu = timed(server, path, args.requests)
                times.setdefault((name, path), []).extend(counted)
                cpus.setdefault((name, path), []).append(cpu)
                sizes[(name, path)] = size
            both, grids, dom = asyncio.run(
                first_renders(f"{server.url}/workflow/{workflow_id}", args.loads)
            )
            kept = renders.setdefault(name, ([], [], ""))
            renders[name] = (kept[0] + both, kept[1] + grids, dom)
    print(
        f"{'':8} {'server side':<34} {'p50':>9} {'p90':>9} {'CPU/req':>9} {'size':>9}   target p50"
    )
    for name in servers:
        for path in paths:
            values = times[(name, path)]
            shown = path.replace(str(workflow_id), "<id>")
            median = statistics.median(values)
            target = "(none)"  # the target is for the page and the grid
            if path in paths[:2]:
                target = (
                    f"< {TARGET_SERVER_MS:.0f} ms{'' if median < TARGET_SERVER_MS else '  MISSED'}"
                )
            print(
                f"{name:8} GET {shown:<30} {median:6.1f} ms"
                f" {p(values, 0.9):6.1f} ms {statistics.mean(cpus[(name, path)]):6.1f} ms"
                f" {sizes[(name, path)] / 1024:6.0f} KiB   {target}"
            )
    print(f"\n{'':8} {'first render in Chromium':<34} {'median':>9} {'max':>9}   target")
    for name, (both, grids, dom) in renders.items():
        median = statistics.median(both)
        print(
            f"{name:8} {'grid and timeline drawn':<34} {median:6.0f} ms {max(both):6.0f} ms"
            f"   < {TARGET_RENDER_MS:.0f} ms{'' if median < TARGET_RENDER_MS else '  MISSED'}"
        )
        print(
            f"{name:8} {'grid drawn':<34} {statistics.median(grids):6.0f} ms"
            f" {max(grids):6.0f} ms   ({dom})"
        )


if __name__ == "__main__":
    sys.exit(main())
