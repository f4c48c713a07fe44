"""One huge message against everyone else: the latency of small posts while it is handled.

It starts a real `python -m panoptes` on a free port with a fresh SQLite file and registers
two workflows. A poster thread sends small Snakemake 9 messages (job_started, job_finished,
progress) to the second one, one at a time like the plugin, and records each answer's
latency. First alone (the baseline), then, for each size asked for, while another thread
posts one `job_started` listing that many job ids to the first workflow: the small posts
sent while the big one is in flight are what the row reports, with the big one's own answer
(status and time) and the server's peak resident memory.

    .venv/bin/python benchmarks/bigmessage.py                       # 10,000, 30,000, 300,000 ids
    .venv/bin/python benchmarks/bigmessage.py --ids 5000,10000 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from server import FORM, Server, form_body


@dataclass
class Row:
    label: str
    small: list[float] = field(default_factory=list)
    big_status: int | None = None
    big_seconds: float | None = None
    big_bytes: int = 0
    peak_rss_mib: float = 0.0

    def line(self) -> str:
        small = sorted(self.small)
        if small:
            p50 = statistics.median(small) * 1000
            p99 = small[min(len(small) - 1, int(len(small) * 0.99))] * 1000
            worst = small[-1] * 1000
            figures = f"{len(small):>6} {p50:>8.1f} {p99:>8.1f} {worst:>8.1f}"
        else:
            figures = f"{0:>6} {'-':>8} {'-':>8} {'-':>8}"
        big = "-"
        if self.big_status is not None and self.big_seconds is not None:
            big = f"{self.big_status} in {self.big_seconds:.2f} s ({self.big_bytes / 1e6:.1f} MB)"
        return f"{self.label:<16} {figures}   {big:<28} {self.peak_rss_mib:>7.0f}"


def register(client: httpx.Client) -> int:
    answer = client.get("/create_workflow")
    answer.raise_for_status()
    return int(answer.json()["id"])


def small_messages(first_job: int) -> list[dict[str, object]]:
    return [
        {"level": "job_started", "jobs": [first_job]},
        {"level": "job_finished", "jobid": first_job},
        {"level": "progress", "done": first_job + 1, "total": 10**6},
    ]


def poster(
    url: str, workflow_id: int, stop: threading.Event, row: Row, at_least: int, start_job: int
) -> None:
    """Small posts, one at a time, until `stop` is set and `at_least` have been sent."""
    job = start_job
    with httpx.Client(base_url=url, timeout=120) as client:
        while not stop.is_set() or len(row.small) < at_least:
            for msg in small_messages(job):
                body = form_body(workflow_id, msg)
                began = time.perf_counter()
                answer = client.post("/update_workflow_status", content=body, headers=FORM)
                row.small.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    sys.exit(f"a small post got {answer.status_code}: {answer.text}")
            job += 1


def watch_memory(server: Server, stop: threading.Event, row: Row) -> None:
    while not stop.is_set():
        row.peak_rss_mib = max(row.peak_rss_mib, server.rss_mib())
        time.sleep(0.05)


def measure(server: Server, big_id: int, small_id: int, ids: int, start_job: int) -> Row:
    row = Row(f"{ids:,} ids" if ids else "none (baseline)")
    stop = threading.Event()
    memory = threading.Thread(target=watch_memory, args=(server, stop, row))
    memory.start()
    if ids == 0:
        poster(server.url, small_id, stop_now(), row, 300, start_job)
    else:
        body = form_body(big_id, {"level": "job_started", "jobs": list(range(ids))})
        row.big_bytes = len(body)
        small = threading.Thread(
            target=poster, args=(server.url, small_id, stop, row, 3, start_job)
        )
        small.start()
        time.sleep(0.2)  # the poster is under way
        row.small.clear()
        with httpx.Client(base_url=server.url, timeout=600) as client:
            began = time.perf_counter()
            answer = client.post("/update_workflow_status", content=body, headers=FORM)
            row.big_seconds = time.perf_counter() - began
            row.big_status = answer.status_code
        stop.set()
        small.join()
    stop.set()
    memory.join()
    return row


def stop_now() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="10000,30000,300000", help="comma-separated sizes")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every size")
    parser.add_argument("--keep", action="store_true", help="keep the database and log")
    args = parser.parse_args()
    sizes = [int(size) for size in args.ids.split(",") if size]
    workdir = Path(tempfile.mkdtemp(prefix="panoptes-bigmessage-"))
    server = Server(workdir / "bench.db").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            small_id = register(client)
            bigs = [register(client) for _ in range(len(sizes) * args.repeat)]
        print(f"server pid {server.pid}, database {server.db}")
        print(
            f"{'big message':<16} {'posts':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}   "
            f"{'big message answered':<28} {'RSS MiB':>7}"
        )
        job = 0
        rows = [measure(server, 0, small_id, 0, job)]
        print(rows[-1].line(), flush=True)
        for round_ in range(args.repeat):
            for index, ids in enumerate(sizes):
                job += 100_000
                big_id = bigs[round_ * len(sizes) + index]
                rows.append(measure(server, big_id, small_id, ids, job))
                print(rows[-1].line(), flush=True)
        rows.append(measure(server, 0, small_id, 0, job + 100_000))
        rows[-1].label = "none (after)"
        print(rows[-1].line(), flush=True)
    finally:
        server.stop()
        if not args.keep:
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()


if __name__ == "__main__":
    main()
