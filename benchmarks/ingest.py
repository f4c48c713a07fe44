"""Ingest under load: events/s and request latency of a real panoptes server, then a check
that every job arrived right.

    .venv/bin/python benchmarks/ingest.py                   # 32 and 256 connections
    .venv/bin/python benchmarks/ingest.py --concurrency 32 --rounds 10

Each round registers --workflows workflows of --jobs jobs and sends, for every job,
job_started, job_info and job_finished in order (the way Snakemake does), spread over
--concurrency keep-alive connections; when a workflow's jobs are all acknowledged its final
progress message ends it. Afterwards every workflow and job is read back through the REST API
and compared with what was sent: a lost or wrong job fails the run.

The baseline, measured in the same run, is the same server with group commit turned off
(PANOPTES_WRITE_BATCH_SIZE=1: one transaction, one fsync-free WAL commit, per message).
The client runs in this process on the same machine, so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from server import Server

ROOT = Path(__file__).resolve().parent.parent
RULES = ("align", "sort", "index", "call", "report")


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost little CPU."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            "POST /update_workflow_status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def message(workflow_id: int, msg: dict[str, Any]) -> bytes:
    fields = {"msg": json.dumps(msg), "timestamp": time.asctime(), "id": str(workflow_id)}
    return urlencode(fields).encode()


def job_messages(workflow_id: int, jobid: int) -> list[bytes]:
    rule = RULES[jobid % len(RULES)]
    sample = f"s{jobid:04d}"
    info = {
        "level": "job_info",
        "jobid": jobid,
        "name": rule,
        "msg": f"{rule} {sample}",
        "input": [f"data/{sample}.fq"],
        "output": [f"out/{rule}/{sample}.bam"],
        "log": [f"logs/{rule}/{sample}.log"],
        "wildcards": {"sample": sample},
        "shellcmd": f"tool {rule} data/{sample}.fq > out/{rule}/{sample}.bam",
        "threads": 1,
        "resources": {"mem_mb": 100},
    }
    return [
        message(workflow_id, {"level": "job_started", "jobs": [jobid]}),
        message(workflow_id, info),
        message(workflow_id, {"level": "job_finished", "jobid": jobid}),
    ]


@dataclass
class Result:
    label: str
    events: int
    seconds: float
    latencies: list[float]
    failures: int
    rss_mb: float
    problems: list[str]

    def row(self) -> str:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]

        return (
            f"{self.label:<34} {self.events:>7} {self.events / self.seconds:>9.0f} "
            f"{1000 * statistics.median(lat):>8.1f} {pct(0.99):>8.1f} {1000 * lat[-1]:>8.1f} "
            f"{self.failures:>6} {self.rss_mb:>7.0f}  {'ok' if not self.problems else 'WRONG'}"
        )


async def load(server: Server, workflows: int, jobs: int, concurrency: int, rounds: int) -> Result:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        ids: list[int] = []
        for _ in range(workflows * rounds):
            response = await http.get("/create_workflow")
            response.raise_for_status()
            ids.append(response.json()["id"])
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for workflow_id in ids:
        queue.put_nowait((workflow_id, -1))  # the first progress message: the total
        for jobid in range(jobs):
            queue.put_nowait((workflow_id, jobid))
    remaining = dict.fromkeys(ids, jobs)
    latencies: list[float] = []
    failures = 0
    sent = 0

    async def worker() -> None:
        nonlocal failures, sent
        connection = Connection(server.port)
        try:
            while not queue.empty():
                workflow_id, jobid = queue.get_nowait()
                if jobid == -1:
                    bodies = [message(workflow_id, {"level": "progress", "done": 0, "total": jobs})]
                elif jobid == -2:
                    bodies = [
                        message(workflow_id, {"level": "progress", "done": jobs, "total": jobs})
                    ]
                else:
                    bodies = job_messages(workflow_id, jobid)
                for body in bodies:
                    started = time.perf_counter()
                    status, _ = await connection.post(body)
                    latencies.append(time.perf_counter() - started)
                    sent += 1
                    if status != 200:
                        failures += 1
                if jobid >= 0:
                    remaining[workflow_id] -= 1
                    if remaining[workflow_id] == 0:
                        queue.put_nowait((workflow_id, -2))
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    problems = await verify(server, ids, jobs)
    label = f"{server.env.get('PANOPTES_WRITE_BATCH_SIZE', 'group commit')} c={concurrency}"
    return Result(label, sent, seconds, latencies, failures, server.rss_mib(), problems)


async def verify(server: Server, ids: list[int], jobs: int) -> list[str]:
    """Every workflow Done with every job Done and exactly as sent."""
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for workflow_id in ids:
            wf = (await http.get(f"/api/workflow/{workflow_id}")).json()["workflow"]
            if (wf["status"], wf["jobs_done"], wf["jobs_total"]) != ("Done", jobs, jobs):
                problems.append(f"workflow {workflow_id}: {wf['status']} {wf['jobs_done']}")
            got = (
                await http.get(f"/api/workflow/{workflow_id}/jobs", params={"limit": 1000})
            ).json()["jobs"]
            by_id = {job["jobid"]: job for job in got}
            for jobid in range(jobs):
                job = by_id.get(jobid)
                rule = RULES[jobid % len(RULES)]
                expected = (rule, "Done", {"sample": f"s{jobid:04d}"}, 1)
                actual = job and (job["rule"], job["status"], job["wildcards"], job["attempt"])
                if actual != expected:
                    problems.append(f"workflow {workflow_id} job {jobid}: {actual}")
            if len(by_id) != jobs:
                problems.append(f"workflow {workflow_id}: {len(by_id)} jobs stored")
    return problems


def run(args: argparse.Namespace, env: dict[str, str], concurrency: int, folder: Path) -> Result:
    db = folder / f"ingest-{len(list(folder.iterdir()))}.db"
    server = Server(db=db, env=env).start()
    try:
        return asyncio.run(load(server, args.workflows, args.jobs, concurrency, args.rounds))
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="repeat the set this many times")
    parser.add_argument("--concurrency", default="32,256", help="comma-separated")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    print(
        f"panoptes ingest benchmark: {args.workflows} workflows x {args.jobs} jobs x "
        f"{args.rounds} rounds, 3 messages per job; {os.cpu_count()} CPUs"
    )
    header = f"{'server':<34} {'events':>7} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    print(header + f"{'max ms':>8} {'errors':>6} {'RSS MB':>7}  check")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="panoptes-bench-") as tmp:
        folder = Path(tmp)
        if not args.no_baseline:
            results.append(run(args, {"PANOPTES_WRITE_BATCH_SIZE": "1"}, levels[0], folder))
            print(results[-1].row(), flush=True)
        for level in levels:
            results.append(run(args, {}, level, folder))
            print(results[-1].row(), flush=True)
    if not args.no_baseline:
        base, grouped = results[0], results[1]
        print(
            f"group commit vs one commit per message at c={levels[0]}: "
            f"{(grouped.events / grouped.seconds) / (base.events / base.seconds):.2f}x events/s"
        )
    wrong = [p for result in results for p in result.problems]
    for problem in wrong[:20]:
        print("WRONG:", problem)
    return 1 if wrong or any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
