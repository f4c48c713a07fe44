"""Ingest under load: events/s and request latency of a real panoptes server, then a check
that every job arrived right.

    .venv/bin/python benchmarks/ingest.py                   # 32 and 256 connections
    .venv/bin/python benchmarks/ingest.py --concurrency 32 --rounds 10

Each round registers --workflows workflows of --jobs jobs and sends, for every job,
job_started, job_info and job_finished in order (the way Snakemake does), spread over
--concurrency keep-alive connections; when a workflow's jobs are all acknowledged its final
progress message ends it. Afterwards every workflow and job is read back through the REST API
and compared with what was sent: a lost or wrong job fails the run.

Each --servers HTTP server (uvicorn, what `panoptes` runs on; Hypercorn; granian) serves
panoptes in turn, and each row is paired with its ceiling, measured in the same run: that
server alone (bare_asgi.py: reads each body, stores nothing) with the same settings,
workers, connections and load. "N% of bare uvicorn" is the share of the HTTP stack's own
throughput that ingest reaches on this machine.

--connections: `keep-alive` sends every message of a connection over one TCP connection,
as the Snakemake 9 plugin does; `close` opens a new connection per message, as Snakemake 7
and 8 do (requests.post without a session).

The baseline, measured in the same run, is the same server with group commit turned off
(PANOPTES_WRITE_BATCH_SIZE=1: one transaction, one fsync-free WAL commit, per message).
The load generator runs on the same machine, so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from server import BARE_APP, Server, form_body

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / ".cache" / "loadgen" / "release" / "panoptes-loadgen"
RULES = ("align", "sort", "index", "call", "report")
INGEST = "/update_workflow_status"
SERVERS = ("uvicorn", "hypercorn", "granian")


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
    return form_body(workflow_id, msg).encode()


def job_messages(workflow_id: int, jobid: int) -> list[bytes]:
    return [message(workflow_id, body) for body in job_bodies(jobid)]


def job_bodies(jobid: int) -> list[dict[str, Any]]:
    """What Snakemake sends for one job, in order (writer.py sends the same)."""
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
        {"level": "job_started", "jobs": [jobid]},
        info,
        {"level": "job_finished", "jobid": jobid},
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
    server_cpu: float  # seconds, all server processes, during the load
    client_cpu: float  # seconds, the load generator (this process's, for --client python)
    checked: bool = True  # False for the bare-Hypercorn ceiling, which stores nothing

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def row(self) -> str:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))]

        return (
            f"{self.label:<40} {self.events:>7} {self.events / self.seconds:>9.0f} "
            f"{1000 * statistics.median(lat):>8.1f} {pct(0.99):>8.1f} {1000 * lat[-1]:>8.1f} "
            f"{self.failures:>6} {self.rss_mb:>7.0f} {1e6 * self.server_cpu / self.events:>7.0f} "
            f"{1e6 * self.client_cpu / self.events:>7.0f}  {self.verdict}"
        )

    @property
    def verdict(self) -> str:
        if not self.checked:
            return "-"
        return "ok" if not self.problems else "WRONG"


Unit = tuple[str, int, list[bytes]]  # ("first" | "job" | "last", workflow id, bodies)


def units(ids: list[int], jobs: int) -> list[Unit]:
    """What each workflow sends, in the order handed out: its opening progress message, one
    unit per job (the job's messages in order on one connection), and a closing progress
    message that goes out once every job of the workflow has been answered."""
    work: list[Unit] = []
    for workflow_id in ids:
        opening = message(workflow_id, {"level": "progress", "done": 0, "total": jobs})
        work.append(("first", workflow_id, [opening]))
        work += [("job", workflow_id, job_messages(workflow_id, jobid)) for jobid in range(jobs)]
        closing = message(workflow_id, {"level": "progress", "done": jobs, "total": jobs})
        work.append(("last", workflow_id, [closing]))
    return work


@dataclass
class Sent:
    seconds: float
    latencies: list[float]
    failures: int
    first_error: str


def send_with_loadgen(
    port: int, concurrency: int, work: list[Unit], folder: Path, mode: str = "keep-alive"
) -> Sent:
    """The Rust load generator (benchmarks/loadgen): one blocking thread per connection;
    `mode` close: a new TCP connection for every request."""
    work_file = folder / "work.txt"
    work_file.write_bytes(
        b"".join(f"{kind} {wf} ".encode() + b" ".join(bodies) + b"\n" for kind, wf, bodies in work)
    )
    done = subprocess.run(
        [str(LOADGEN), str(port), str(concurrency), str(work_file), INGEST, mode],
        check=True,
        capture_output=True,
    )
    result = json.loads(done.stdout)
    return Sent(
        result["seconds"],
        [us / 1e6 for us in result["latencies_us"]],
        result["errors"],
        result["first_error"],
    )


async def send_with_asyncio(port: int, concurrency: int, work: list[Unit]) -> Sent:
    """The same load from this Python process (--client python), for machines without Rust."""
    queue: asyncio.Queue[Unit] = asyncio.Queue()
    held = {wf: unit for unit in work if unit[0] == "last" for wf in [unit[1]]}
    jobs_left: dict[int, int] = {}
    for unit in work:
        if unit[0] != "last":
            queue.put_nowait(unit)
        if unit[0] == "job":
            jobs_left[unit[1]] = jobs_left.get(unit[1], 0) + 1
    sent = Sent(0.0, [], 0, "")

    async def worker() -> None:
        connection = Connection(port)
        try:
            while not queue.empty():
                kind, workflow_id, bodies = queue.get_nowait()
                for body in bodies:
                    started = time.perf_counter()
                    status, answer = await connection.post(body)
                    sent.latencies.append(time.perf_counter() - started)
                    if status != 200:
                        sent.failures += 1
                        sent.first_error = sent.first_error or f"{status}: {answer!r}"
                if kind == "job":
                    jobs_left[workflow_id] -= 1
                    if jobs_left[workflow_id] == 0:
                        queue.put_nowait(held.pop(workflow_id))
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    sent.seconds = time.perf_counter() - started
    return sent


async def register(server: Server, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        ids: list[int] = []
        for _ in range(count):
            response = await http.get("/create_workflow")
            response.raise_for_status()
            ids.append(response.json()["id"])
        return ids


def load(
    server: Server, args: argparse.Namespace, concurrency: int, folder: Path, mode: str
) -> Result:
    ids = asyncio.run(register(server, args.workflows * args.rounds))
    work = units(ids, args.jobs)
    server_cpu = server.cpu_seconds()
    if args.client == "rust":
        client_cpu = children_cpu_seconds()
        sent = send_with_loadgen(server.port, concurrency, work, folder, mode)
        client_cpu = children_cpu_seconds() - client_cpu
    else:
        client_cpu = time.process_time()
        sent = asyncio.run(send_with_asyncio(server.port, concurrency, work))
        client_cpu = time.process_time() - client_cpu
    server_cpu = server.cpu_seconds() - server_cpu
    if sent.first_error:
        print(f"first refused request: {sent.first_error[:300]}", file=sys.stderr)
    problems = asyncio.run(verify(server, ids, args.jobs))
    return Result(
        label(server, concurrency, mode),
        len(sent.latencies),
        sent.seconds,
        sent.latencies,
        sent.failures,
        server.rss_mib(),
        problems,
        server_cpu,
        client_cpu,
    )


def label(server: Server, concurrency: int, mode: str) -> str:
    batch = server.env.get("PANOPTES_WRITE_BATCH_SIZE")
    kind = "1 commit/msg" if batch == "1" else "panoptes"
    return f"{kind} {describe(server, concurrency, mode)}"


def describe(server: Server, concurrency: int, mode: str) -> str:
    workers = f" x{server.workers}" if server.workers > 1 else ""
    connect = ", conn/req" if mode == "close" else ""
    return f"{server.http}{workers} c={concurrency}{connect}"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


@dataclass(frozen=True)
class Shape:
    """What one run varies: the HTTP server, its processes, the connections and their mode."""

    http: str
    workers: int
    concurrency: int
    mode: str  # keep-alive | close


def run(args: argparse.Namespace, env: dict[str, str], shape: Shape, folder: Path) -> Result:
    db = folder / f"ingest-{len(list(folder.iterdir()))}.db"
    with database(args.postgres) as db_url:
        server = Server(
            db=db, env=env, workers=shape.workers, db_url=db_url, http=shape.http
        ).start()
        try:
            return load(server, args, shape.concurrency, folder, shape.mode)
        finally:
            server.stop()


def run_bare(args: argparse.Namespace, shape: Shape, folder: Path) -> Result:
    """The same load against bare_asgi.py: nothing is stored, so nothing is checked."""
    db = folder / f"bare-{len(list(folder.iterdir()))}.db"  # names only the log
    server = Server(db=db, workers=shape.workers, app=BARE_APP, http=shape.http).start()
    try:
        work = units(list(range(1, args.workflows * args.rounds + 1)), args.jobs)
        server_cpu = server.cpu_seconds()
        client_cpu = children_cpu_seconds()
        sent = send_with_loadgen(server.port, shape.concurrency, work, folder, shape.mode)
        client_cpu = children_cpu_seconds() - client_cpu
        server_cpu = server.cpu_seconds() - server_cpu
        return Result(
            f"bare {describe(server, shape.concurrency, shape.mode)}",
            len(sent.latencies),
            sent.seconds,
            sent.latencies,
            sent.failures,
            server.rss_mib(),
            [],
            server_cpu,
            client_cpu,
            checked=False,
        )
    finally:
        server.stop()


@contextmanager
def database(postgres: str | None) -> Iterator[str | None]:
    """None: a fresh SQLite file per run; with --postgres, a throwaway database there."""
    if postgres is None:
        yield None
        return
    name = f"panoptes_bench_{uuid.uuid4().hex[:12]}"
    admin(postgres, f"CREATE DATABASE {name}")
    try:
        yield f"{postgres.rstrip('/')}/{name}"
    finally:
        admin(postgres, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def admin(postgres: str, statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(f"{postgres.rstrip('/')}/postgres")
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def build_loadgen() -> None:
    """cargo build of benchmarks/loadgen (the standard library only: no downloads)."""
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--target-dir", str(LOADGEN.parent.parent)],
        cwd=ROOT / "benchmarks" / "loadgen",
        check=True,
    )


MODES = ("keep-alive", "close")
HEADER = (
    f"{'server':<40} {'events':>7} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'max ms':>8} {'errors':>6} {'RSS MB':>7} {'srv us':>7} {'cli us':>7}  check"
)


def add_load_arguments(
    parser: argparse.ArgumentParser, *, rounds: int, concurrency: str, connections: str
) -> None:
    """The load's options, as ingest.py and upstream.py take them."""
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=rounds, help="repeat the set this many times")
    parser.add_argument("--concurrency", default=concurrency, help="comma-separated")
    parser.add_argument(
        "--connections",
        default=connections,
        help="comma-separated: keep-alive (the Snakemake 9 plugin) and/or close (a new "
        "connection per message, as Snakemake 7/8)",
    )


def levels_and_modes(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[int], list[str]]:
    """--concurrency and --connections as lists (an unknown mode stops the run)."""
    levels = [int(level) for level in args.concurrency.split(",")]
    modes = [mode.strip() for mode in args.connections.split(",") if mode.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    return levels, modes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, rounds=5, concurrency="32,256", connections="keep-alive,close")
    parser.add_argument(
        "--workers",
        default="1",
        help="comma-separated server process counts; above 1 runs the server's own "
        "--workers N, sharing live events through --broadcast",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated HTTP servers among {', '.join(SERVERS)} (the first is the "
        "baseline's)",
    )
    parser.add_argument(
        "--broadcast",
        default="redis://127.0.0.1:6379/0",
        help="PANOPTES_BROADCAST_URL for runs with several workers",
    )
    parser.add_argument(
        "--client",
        choices=("rust", "python"),
        default="rust" if shutil.which("cargo") else "python",
        help="the load generator: benchmarks/loadgen (default when cargo is here) or asyncio",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on PostgreSQL instead of SQLite: a server URL such as "
        "postgresql://postgres@127.0.0.1:5432 (a database is made and dropped per run)",
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--no-ceiling",
        action="store_true",
        help="skip the runs of bare_asgi.py (each server alone, storing nothing)",
    )
    args = parser.parse_args()
    levels, modes = levels_and_modes(parser, args)
    worker_counts = [int(count) for count in args.workers.split(",")]
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if unknown := set(servers) - set(SERVERS):
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    if args.client == "rust":
        build_loadgen()
    elif modes != ["keep-alive"]:
        parser.error("--connections close needs the Rust load generator")
    # The ceiling needs the Rust client: the Python one would be the bottleneck.
    ceiling_wanted = args.client == "rust" and not args.no_ceiling
    print(
        f"panoptes ingest benchmark: {args.workflows} workflows x {args.jobs} jobs x "
        f"{args.rounds} rounds, 3 messages per job; {os.cpu_count()} CPUs; "
        f"client: {args.client}; database: {'PostgreSQL' if args.postgres else 'SQLite'}"
    )
    print(HEADER)
    results: list[Result] = []
    pairs: list[tuple[Result, Result]] = []  # (panoptes, the bare server) in the same shape
    with tempfile.TemporaryDirectory(prefix="panoptes-bench-") as tmp:
        folder = Path(tmp)
        if not args.no_baseline:
            first = Shape(servers[0], 1, levels[0], modes[0])
            results.append(run(args, {"PANOPTES_WRITE_BATCH_SIZE": "1"}, first, folder))
            print(results[-1].row(), flush=True)
        for http in servers:
            for workers in worker_counts:
                env = {"PANOPTES_BROADCAST_URL": args.broadcast} if workers > 1 else {}
                for mode in modes:
                    for level in levels:
                        shape = Shape(http, workers, level, mode)
                        results.append(run(args, env, shape, folder))
                        print(results[-1].row(), flush=True)
                        if ceiling_wanted:
                            pairs.append((results[-1], run_bare(args, shape, folder)))
                            print(pairs[-1][1].row(), flush=True)
    print("srv us / cli us: CPU time per event of the server processes / of the load generator")
    for ours, bare in pairs:
        print(f"{ours.label}: {ours.rate / bare.rate:.0%} of {bare.label}'s {bare.rate:.0f}/s")
    if not args.no_baseline:
        base, grouped = results[0], results[1]
        print(
            f"group commit vs one commit per message ({base.label}): "
            f"{grouped.rate / base.rate:.2f}x events/s"
        )
    wrong = [p for result in results for p in result.problems]
    for problem in wrong[:20]:
        print("WRONG:", problem)
    return 1 if wrong or any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
