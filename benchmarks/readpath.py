"""Read paths and memory at scale: latency of the API and pages with 5,000 workflows x 100
jobs stored, against the same requests on a small database, and server memory with 1,000
websocket subscribers.

    .venv/bin/python benchmarks/readpath.py                      # about 2 minutes
    .venv/bin/python benchmarks/readpath.py --requests 400 --rounds 8
    .venv/bin/python benchmarks/readpath.py --keep /tmp/readpath # keep the files, reuse them

For each size (--small workflows, the baseline, and --workflows) it starts a real
`python -m panoptes` once on a fresh SQLite file, so that the migrations make the schema,
stops it, and fills the file with Python's sqlite3 in one transaction: workflows of --jobs
jobs each (rule names, wildcards, inputs, outputs, logs, shell commands, resources, times,
attempts; workflows mostly Done, some Running, Error, Cancelled, Stale) and two events per
workflow. Then it starts one server on each file, reads a few rows back through the API to
check they come out as the server itself would have written them, and times sequential
requests on one keep-alive connection per server (httpx.Client): a warm-up, then --requests
per endpoint and size, spread over --rounds rounds. Each round takes the small server, then
the big one, and in each every endpoint in turn, so that load from elsewhere on the machine
falls on both sizes and every endpoint alike; the spread of the rounds' p50s shows the noise.

On the big database it then opens --subscribers websockets (half on /ws, half on
/ws/workflow/<id> of the running workflows; they offer permessage-deflate, as browsers do,
which the server declines unless --ws-compression sets PANOPTES_WS_COMPRESSION=1), posts a
few jobs to those workflows so every subscriber gets live messages, and reads the server's
VmRSS from /proc/<pid>/status before, with the subscribers connected, and after the events.
The server runs with PANOPTES_MAX_FEED_PER_CLIENT=0: every subscriber comes from 127.0.0.1.

Targets (the performance issue): /api/workflows (paginated), a workflow page and its jobs API
answer in < 20 ms p50 with 5,000 x 100 stored; < 150 MB RSS with 1,000 subscribers.
The client runs on the same machine, so the figures include its own time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from server import FORM, Server, form_body, raise_fd_limit
from websockets.asyncio.client import ClientConnection, connect

PIPELINES = ("rnaseq", "atacseq", "chipseq", "wgs", "wes", "methylseq", "scrnaseq", "hic")
SEARCH = "atacseq"  # ?q=: one workflow in eight has it in its name
RULES = ("fastqc", "trim_reads", "align", "sort_bam", "mark_duplicates", "call_variants", "multiqc")
SEED = 20240517
TARGET_MS = 20.0
DASHBOARD_ROWS = 200  # routes/pages.py PAGE_SIZE
TARGET_RSS_MB = 150.0  # the "150 MB": 143.1 MiB


# --------------------------------------------------------------------------- the server


# --------------------------------------------------------------------------- the data


def stamp(at: datetime) -> str:
    """As models.UTCDateTime stores it: naive UTC in SQLAlchemy's SQLite DATETIME text."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def dumps(value: Any) -> str:
    """A JSON column's text. panoptes reads any JSON spacing back the same."""
    return orjson.dumps(value).decode()


@dataclass
class Run:
    """One stored workflow, as the generator made it."""

    id: int
    name: str
    status: str
    started: datetime
    updated: datetime
    finished: datetime | None
    jobs_done: int = 0
    job_statuses: list[str] = field(default_factory=list)


def workflow_status(i: int, count: int, rng: random.Random) -> str:
    # The newest 2% (at least one) still run; older ones ended one way or another.
    if i >= count - max(1, count // 50):
        return "Running"
    roll = rng.random()
    if roll < 0.06:
        return "Error"
    if roll < 0.08:
        return "Cancelled"
    if roll < 0.09:
        return "Stale"
    return "Done"


def job_statuses(status: str, jobs: int, rng: random.Random) -> list[str]:
    if status == "Done":
        return ["Done"] * jobs
    if status == "Running":
        done = rng.randint(jobs // 3, jobs * 2 // 3)
        running = min(jobs - done, rng.randint(2, 8))
        return ["Done"] * done + ["Running"] * running + ["Waiting"] * (jobs - done - running)
    # Error, Cancelled, Stale: most jobs done, then the ones that failed or were cut short.
    done = rng.randint(jobs * 3 // 4, jobs - 3)
    failed = 2 if status == "Error" else 0
    return ["Done"] * done + ["Error"] * failed + ["Running"] * (jobs - done - failed)


def plan_runs(count: int, jobs: int, now: datetime, rng: random.Random) -> list[Run]:
    """`count` workflows over the last 180 days, one every 52 minutes at 5,000 workflows."""
    spacing = timedelta(days=180) / max(count, 1)
    runs = []
    for i in range(count):
        status = workflow_status(i, count, rng)
        if status == "Running":
            started = now - timedelta(minutes=rng.randint(5, 90))
            # Recent, so the server's stale check (48 h of silence) leaves them Running.
            updated, finished = now - timedelta(seconds=rng.randint(1, 120)), None
        else:
            started = now - timedelta(days=180) + i * spacing
            updated = started + timedelta(minutes=rng.randint(10, 360))
            finished = None if status == "Stale" else updated
        name = f"{PIPELINES[i % len(PIPELINES)]}-{started:%Y%m%d}-{i + 1:05d}"
        statuses = job_statuses(status, jobs, rng)
        runs.append(
            Run(i + 1, name, status, started, updated, finished, statuses.count("Done"), statuses)
        )
    return runs


def workdir(run: Run) -> str:
    return f"/data/projects/{run.name.split('-')[0]}/run-{run.id:05d}"


def command(run: Run) -> str:
    return f"snakemake --cores 32 --use-conda --logger panoptes --directory {workdir(run)}"


def error_text(run: Run, status: str) -> str | None:
    if status != "Error":
        return None
    return "Error in rule call_variants:\n    jobid: 97\n    exit status 1"


def workflow_row(run: Run, jobs: int) -> tuple[Any, ...]:
    error = error_text(run, run.status)
    return (
        *(run.id, run.name, run.status, run.jobs_done, jobs),
        *(stamp(run.started), stamp(run.updated)),
        stamp(run.finished) if run.finished else None,
        *(error, command(run), workdir(run), "workflow/Snakefile"),
        *(0, None, None, error),  # dry_run, last_job_info, last_digest, last_error
    )


def attempt(
    number: int, status: str, started: datetime, finished: datetime | None
) -> dict[str, Any]:
    return {
        "attempt": number,
        "status": status,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat() if finished else None,
        "error": "exit status 1" if status == "Error" else None,
    }


@functools.cache
def job_text(sample_set: int, jobid: int, jobs: int) -> tuple[Any, ...]:
    """What a job says about itself, from rule to reason. Runs of a pipeline on the same
    sample set share it, which keeps the build fast."""
    rule = RULES[(jobid - 1) * len(RULES) // jobs]
    sample = f"S{sample_set:03d}_{jobid:03d}"
    lane = f"L00{jobid % 4 + 1}"
    inputs = [f"data/raw/{sample}_{lane}_R1.fastq.gz", f"data/raw/{sample}_{lane}_R2.fastq.gz"]
    outputs = [f"results/{rule}/{sample}_{lane}.bam", f"results/{rule}/{sample}_{lane}.bam.bai"]
    log = [f"logs/{rule}/{sample}_{lane}.log"]
    shell = (
        f"{rule.replace('_', '-')} --threads 8 --sample {sample} --lane {lane} "
        f"{' '.join(inputs)} 2> {log[0]} | samtools view -b -o {outputs[0]} - "
        f"&& samtools index {outputs[0]}"
    )
    return (
        *(rule, f"{rule} on {sample} {lane}", dumps({"sample": sample, "lane": lane})),
        *(dumps(inputs), dumps(outputs), dumps(log), shell, 8),
        dumps({"mem_mb": 16000, "disk_mb": 50000, "runtime": 120, "tmpdir": "/tmp"}),
        0,  # priority
        f"Missing output files: {outputs[0]}",
        0,  # is_checkpoint
    )


def job_row(run: Run, jobid: int, status: str, jobs: int, rng: random.Random) -> tuple[Any, ...]:
    rule, message, *described = job_text(run.id % 97, jobid, jobs)
    span = (run.updated - run.started) / (jobs + 1)
    started: datetime | None = run.started + span * jobid
    finished: datetime | None = None
    if status == "Waiting":
        started = None
    elif status in {"Done", "Error"}:
        assert started is not None
        finished = started + span * rng.uniform(0.5, 3.0)
    number = 2 if status == "Error" else 1
    history = []
    if started is not None:
        if number == 2:
            history.append(attempt(1, "Error", started, started + span / 2))
        history.append(attempt(number, status, started, finished))
    return (
        *(run.id, jobid, rule, status, message, *described),
        stamp(started) if started else None,
        stamp(finished) if finished else None,
        "exit status 1" if status == "Error" else None,
        number,
        dumps(history),
    )


def workflow_payload(run: Run, jobs: int, status: str, done: int) -> dict[str, Any]:
    """The shape views.workflow_view gives (the feed replays these payloads as they are)."""
    finished = run.finished.isoformat() if run.finished and status == run.status else None
    updated = run.started if status == "Running" else run.updated
    return {
        "workflow": {
            **{"id": run.id, "name": run.name, "status": status},
            **{"jobs_done": done, "jobs_total": jobs},
            **{"started_at": run.started.isoformat(), "updated_at": updated.isoformat()},
            **{"finished_at": finished, "completed_at": finished},
            **{"error": error_text(run, status), "dry_run": False},
            **{"command": command(run), "workdir": workdir(run)},
        }
    }


def event_rows(runs: list[Run], jobs: int) -> list[tuple[Any, ...]]:
    """workflow.created and the last workflow.updated of every run, in time order."""
    events: list[tuple[datetime, int, str, str]] = []
    for run in runs:
        created = workflow_payload(run, jobs, "Running", 0)
        events.append((run.started, run.id, "workflow.created", dumps(created)))
        last = workflow_payload(run, jobs, run.status, run.jobs_done)
        events.append((run.updated, run.id, "workflow.updated", dumps(last)))
    events.sort()
    return [(wf, kind, payload, stamp(at)) for at, wf, kind, payload in events]


WORKFLOW_COLUMNS = (
    "id, name, status, jobs_done, jobs_total, started_at, updated_at, finished_at, error, "
    "command, workdir, snakefile, dry_run, last_job_info, last_digest, last_error"
)
JOB_COLUMNS = (
    "workflow_id, jobid, rule, status, message, wildcards, input, output, log, shellcmd, "
    "threads, resources, priority, reason, is_checkpoint, started_at, finished_at, error, "
    "attempt, attempts"
)


def placeholders(columns: str) -> str:
    return ", ".join("?" * len(columns.split(",")))


def fill(db: Path, runs: list[Run], jobs: int, rng: random.Random) -> int:
    """Bulk-insert the workflows, jobs and events in one transaction; how many events."""

    def all_jobs() -> Iterator[tuple[Any, ...]]:
        for run in runs:
            for jobid, status in enumerate(run.job_statuses, start=1):
                yield job_row(run, jobid, status, jobs, rng)

    events = event_rows(runs, jobs)
    with sqlite3.connect(db, isolation_level=None) as conn:
        # No journal while filling (a failed build is thrown away); the server puts the file
        # back in WAL mode when it opens it.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes stay in memory
        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO workflows ({WORKFLOW_COLUMNS}) VALUES ({placeholders(WORKFLOW_COLUMNS)})",
            (workflow_row(run, jobs) for run in runs),
        )
        conn.executemany(
            f"INSERT INTO jobs ({JOB_COLUMNS}) VALUES ({placeholders(JOB_COLUMNS)})", all_jobs()
        )
        conn.executemany(
            "INSERT INTO events (workflow_id, type, payload, created_at) VALUES (?, ?, ?, ?)",
            events,
        )
        conn.execute("COMMIT")
    conn.close()
    return len(events)


@dataclass
class Dataset:
    label: str
    db: Path
    runs: list[Run]
    jobs: int

    @property
    def running(self) -> list[Run]:
        return [run for run in self.runs if run.status == "Running"]


def build(folder: Path, label: str, count: int, jobs: int, reuse: bool) -> Dataset:
    """A file at the newest schema (made by the server itself), then filled; with `reuse`,
    a copy of the one an earlier run built (the server migrates it if it is older)."""
    db = folder / f"{label}.db"
    for old in folder.glob(f"{label}.*"):
        old.unlink()
    built = folder / f"{label}-{count}x{jobs}.built.db"
    made = built.with_suffix(".time")  # when it was built: the rows' times follow from it
    rng = random.Random(SEED)
    if reuse and built.exists() and made.exists():
        runs = plan_runs(count, jobs, datetime.fromisoformat(made.read_text().strip()), rng)
        shutil.copyfile(built, db)
        print(f"  reused {label}: {count} workflows x {jobs} jobs from {built}", flush=True)
        return Dataset(label, db, runs, jobs)
    now = datetime.now(UTC)
    runs = plan_runs(count, jobs, now, rng)
    started = time.monotonic()
    Server(db, {}).start(timeout=300.0).stop()
    schema = time.monotonic() - started
    events = fill(db, runs, jobs, rng)
    seconds = time.monotonic() - started
    size = db.stat().st_size / 2**20
    print(
        f"  built {label}: {count} workflows x {jobs} jobs = {count * jobs} jobs, "
        f"{events} events in {seconds:.1f} s (schema {schema:.1f} s, rows "
        f"{seconds - schema:.1f} s); {size:.0f} MiB",
        flush=True,
    )
    if reuse:
        shutil.copyfile(db, built)
        made.write_text(now.isoformat())
    return Dataset(label, db, runs, jobs)


def verify(server: Server, data: Dataset) -> None:
    """The stored rows come back through the API as the server would have written them."""
    middle = data.runs[len(data.runs) // 2]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        stats = http.get("/api/workflows/stats").json()
        assert stats["total"] == len(data.runs), stats
        running = stats["counts"].get("Running", 0)
        assert running == len(data.running), f"stale check changed them: {stats}"
        wf = http.get(f"/api/workflow/{middle.id}").json()["workflow"]
        assert (wf["name"], wf["status"]) == (middle.name, middle.status), wf
        assert wf["started_at"] == middle.started.isoformat(), wf
        jobid = data.jobs // 2
        job = http.get(f"/api/workflow/{middle.id}/job/{jobid}").json()["job"]
        rule, _, wildcards, inputs, *_ = job_text(middle.id % 97, jobid, data.jobs)
        assert job["rule"] == rule and job["wildcards"] == orjson.loads(wildcards), job
        assert isinstance(job["wildcards"], dict) and job["input"] == orjson.loads(inputs), job
        assert isinstance(job["resources"], dict) and isinstance(job["attempts"], list), job
        started = middle.started + (middle.updated - middle.started) / (data.jobs + 1) * jobid
        assert job["started_at"] == started.isoformat(), (job["started_at"], started)
        assert job["started_at"].endswith("+00:00") and job["is_checkpoint"] is False, job
        page = http.get(f"/api/workflow/{middle.id}/jobs", params={"limit": 1000}).json()
        assert page["count"] == data.jobs == len(page["jobs"]), page["count"]
        rules = http.get(f"/api/workflow/{middle.id}/rules").json()["rules"]
        assert sum(rule["total"] for rule in rules) == data.jobs, rules
        assert http.get(f"/workflow/{middle.id}").status_code == 200
    print(
        f"  checked {data.label}: {len(data.runs)} workflows ({len(data.running)} Running), "
        f"job {middle.id}/{jobid} reads back with wildcards {job['wildcards']}",
        flush=True,
    )


# --------------------------------------------------------------------------- latency


def endpoints(data: Dataset) -> list[tuple[str, str]]:
    """(label, path): the same requests for every size, scaled where a size is involved."""
    count = len(data.runs)
    deep = count * 4 // 5  # offset 4000 of 5000
    cursor = count - deep + 1  # the same page by cursor: ids are 1..count, newest first
    wf = data.runs[len(data.runs) // 2].id
    job = data.jobs // 2
    return [
        ("/api/workflows?limit=50", "/api/workflows?limit=50"),
        ("/api/workflows offset=4/5 of all", f"/api/workflows?limit=50&offset={deep}"),
        ("/api/workflows cursor=4/5 of all", f"/api/workflows?limit=50&cursor={cursor}"),
        ("/api/workflows?status=Running", "/api/workflows?limit=50&status=Running"),
        (f"/api/workflows?q={SEARCH}", f"/api/workflows?limit=50&q={quote(SEARCH)}"),
        ("/api/workflows/stats", "/api/workflows/stats"),
        ("/api/workflow/<id>", f"/api/workflow/{wf}"),
        ("/api/workflow/<id>/jobs?limit=100", f"/api/workflow/{wf}/jobs?limit=100"),
        ("/api/workflow/<id>/rules", f"/api/workflow/{wf}/rules"),
        ("/api/workflow/<id>/job/<jobid>", f"/api/workflow/{wf}/job/{job}"),
        ("/ (dashboard)", "/"),
        ("/workflow/<id>", f"/workflow/{wf}"),
        ("/workflow/<id>/job/<jobid>", f"/workflow/{wf}/job/{job}"),
    ]


# The endpoints the 20 ms target names: /api/workflows (paginated), a workflow page, its jobs.
TARGETED = {
    "/api/workflows?limit=50",
    "/api/workflows offset=4/5 of all",
    "/api/workflows cursor=4/5 of all",
    "/workflow/<id>",
    "/api/workflow/<id>/jobs?limit=100",
}


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)  # ms
    round_p50s: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        return percentile(sorted(self.samples), q)


Results = dict[str, dict[str, Timing]]  # size label -> endpoint label -> timing


def measure(sizes: list[tuple[Server, Dataset]], args: argparse.Namespace) -> Results:
    """Each round takes every size and, in it, every endpoint in turn: load from elsewhere
    on the machine then falls on the small and the big database alike."""
    per_round = max(1, args.requests // args.rounds)
    results: Results = {data.label: {} for _, data in sizes}
    clients = {data.label: httpx.Client(base_url=server.url, timeout=30) for server, data in sizes}

    def timed(http: httpx.Client, path: str) -> float:
        started = time.perf_counter()
        response = http.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text}")
        return elapsed

    try:
        for _, data in sizes:
            for label, path in endpoints(data):
                results[data.label][label] = Timing()
                for _ in range(args.warmup):
                    timed(clients[data.label], path)
        for _ in range(args.rounds):
            for _, data in sizes:
                for label, path in endpoints(data):
                    got = [timed(clients[data.label], path) for _ in range(per_round)]
                    results[data.label][label].samples += got
                    results[data.label][label].round_p50s.append(statistics.median(got))
    finally:
        for http in clients.values():
            http.close()
    return results


def spread(timing: Timing) -> str:
    return f"{min(timing.round_p50s):.1f}-{max(timing.round_p50s):.1f}"


def report_latency(small: Dataset, big: Dataset, results: Results) -> None:
    a, b = results[small.label], results[big.label]
    print(
        f"\n== latency, ms, sequential on one keep-alive connection: "
        f"small = {len(small.runs)} x {small.jobs}, big = {len(big.runs)} x {big.jobs}"
    )
    print(
        f"  {'endpoint':<34} {'small p50/p95/p99':>19} {'big p50/p95/p99':>19} "
        f"{'big/small':>9}  {'rounds p50 small':>16} {'big':>11}  target"
    )
    for label in a:
        s, g = a[label], b[label]
        verdict = ""
        if label in TARGETED:
            verdict = "ok" if g.pct(50) < TARGET_MS else "MISS"
        print(
            f"  {label:<34} {s.pct(50):>5.1f} {s.pct(95):>6.1f} {s.pct(99):>6.1f} "
            f"{g.pct(50):>5.1f} {g.pct(95):>6.1f} {g.pct(99):>6.1f} "
            f"{g.pct(50) / s.pct(50):>8.2f}x  {spread(s):>16} {spread(g):>11}  {verdict}"
        )
    shown = min(len(small.runs), DASHBOARD_ROWS)
    print(
        f"  target: p50 < {TARGET_MS:g} ms on big for the endpoints marked ok/MISS. The "
        f"dashboard shows {shown} rows on small, {DASHBOARD_ROWS} on big."
    )


# --------------------------------------------------------------------------- memory


@dataclass
class Subscriber:
    path: str
    workflow_id: int | None
    received: int = 0
    error: str | None = None
    deflate: bool = False  # whether the server agreed to compress its frames
    # Set at the first live message, or when the connection drops.
    heard: asyncio.Event = field(default_factory=asyncio.Event)


async def listen(ws: ClientConnection, sub: Subscriber) -> None:
    try:
        async for raw in ws:
            if orjson.loads(raw)["type"] not in {"ping", "hello"}:
                sub.received += 1
                sub.heard.set()
    except Exception as exc:  # a dropped connection is a result, not a crash
        sub.error = f"{type(exc).__name__}: {exc}"
        sub.heard.set()


def job_posts(workflow_id: int, jobid: int, done: int, total: int) -> list[str]:
    """What the Snakemake 9 plugin sends for one job: started, info, finished, progress."""
    info = {
        "level": "job_info",
        "jobid": jobid,
        "name": "multiqc",
        "msg": None,
        "input": ["results/qc"],
        "output": ["results/multiqc.html"],
        "log": ["logs/multiqc.log"],
        "wildcards": {},
        "shellcmd": "multiqc results/qc -o results",
        "threads": 1,
        "resources": {"mem_mb": 2000},
    }
    messages: list[dict[str, Any]] = [
        {"level": "job_started", "jobs": [jobid]},
        info,
        {"level": "job_finished", "jobid": jobid},
        {"level": "progress", "done": done, "total": total},
    ]
    stamp_ = time.asctime()
    return [form_body(workflow_id, m, stamp_) for m in messages]


def plan_subscribers(data: Dataset, count: int) -> list[Subscriber]:
    """Half on /ws; the others spread over the running workflows' /ws/workflow/<id>."""
    watched = data.running
    subs = [Subscriber("/ws", None) for _ in range(count // 2)]
    for i in range(count - len(subs)):
        wf = watched[i % len(watched)].id
        subs.append(Subscriber(f"/ws/workflow/{wf}", wf))
    return subs


async def connect_all(
    server: Server, subs: list[Subscriber], deflate: bool
) -> list[ClientConnection]:
    ws_base = server.url.replace("http://", "ws://")
    gate = asyncio.Semaphore(100)

    async def one(sub: Subscriber) -> ClientConnection:
        async with gate:
            ws = await connect(
                ws_base + sub.path, open_timeout=120, compression="deflate" if deflate else None
            )
            hello = orjson.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            agreed = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
            sub.deflate = "permessage-deflate" in (agreed or "")
            return ws

    return list(await asyncio.gather(*(one(sub) for sub in subs)))


async def post_jobs(server: Server, data: Dataset, jobs: int) -> int:
    """`jobs` more jobs for every running workflow, the way Snakemake reports them."""
    posts = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for k in range(jobs):
            for run in data.running:
                done, total = run.jobs_done + k + 1, data.jobs + jobs
                for body in job_posts(run.id, 100_000 + k, done, total):
                    response = await http.post(
                        "/update_workflow_status", content=body, headers=FORM
                    )
                    response.raise_for_status()
                    posts += 1
    return posts


async def close_all(sockets: list[ClientConnection]) -> None:
    async def one(ws: ClientConnection) -> None:
        with suppress(Exception):
            await ws.close()

    await asyncio.gather(*(one(ws) for ws in sockets))


async def memory(server: Server, data: Dataset, args: argparse.Namespace) -> bool:
    """Print the server's RSS before, with --subscribers connected, and after live events;
    whether every subscriber got live messages without losing its connection."""
    subs = plan_subscribers(data, args.subscribers)
    await asyncio.sleep(1.0)
    rss = {"before subscribers": server.rss_mib()}
    started = time.monotonic()
    sockets = await connect_all(server, subs, deflate=not args.no_deflate)
    connect_seconds = time.monotonic() - started
    listeners = [
        asyncio.create_task(listen(ws, sub)) for ws, sub in zip(sockets, subs, strict=True)
    ]
    await asyncio.sleep(1.0)
    rss["with subscribers"] = server.rss_mib()
    open_count = server.subscribers()
    posts = await post_jobs(server, data, args.events)
    with suppress(TimeoutError):
        async with asyncio.timeout(60):
            await asyncio.gather(*(sub.heard.wait() for sub in subs))
    await asyncio.sleep(1.0)
    rss["after live events"] = server.rss_mib()
    for task in listeners:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    await close_all(sockets)

    n, on_all = len(subs), sum(1 for sub in subs if sub.workflow_id is None)
    live = sum(1 for sub in subs if sub.received)
    dropped = sum(1 for sub in subs if sub.error)
    print(
        f"\n== memory: {n} subscribers on the big database ({on_all} on /ws, {n - on_all} on "
        f"/ws/workflow/<id> of {len(data.running)} running workflows); permessage-deflate "
        f"{'refused' if args.no_deflate else 'offered'} by the clients, agreed by the server "
        f"on {sum(sub.deflate for sub in subs)}"
    )
    print(f"  connected {n} in {connect_seconds:.1f} s; server counts {open_count} subscribers")
    print(
        f"  {posts} posts ({args.events} jobs x 4 messages x {len(data.running)} workflows); "
        f"{live} of {n} subscribers got live messages, {sum(sub.received for sub in subs)} "
        f"in all; {dropped} connections dropped"
    )
    for label, mib in rss.items():
        print(f"  server RSS {label:<20} {mib:6.1f} MiB = {mib * 2**20 / 1e6:6.1f} MB")
    base = rss["before subscribers"]
    for label in ("with subscribers", "after live events"):
        per = (rss[label] - base) * 1024 / n
        print(f"  per subscriber ({label} - before) / {n}: {per:.1f} KiB")
    peak_mb = max(rss.values()) * 2**20 / 1e6
    verdict = "ok" if peak_mb < TARGET_RSS_MB else "MISS"
    print(f"  target: < {TARGET_RSS_MB:g} MB with {n} subscribers: {peak_mb:.1f} MB, {verdict}")
    return live == n and dropped == 0


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=int, default=5000, help="big database (5000)")
    parser.add_argument("--small", type=int, default=10, help="baseline database (10)")
    parser.add_argument("--jobs", type=int, default=100, help="jobs per workflow (100)")
    parser.add_argument("--requests", type=int, default=200, help="timed per endpoint (200)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds they are spread over (4)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed per endpoint (20)")
    parser.add_argument("--subscribers", type=int, default=1000, help="websockets (1000)")
    parser.add_argument("--events", type=int, default=2, help="jobs posted per running workflow")
    parser.add_argument(
        "--no-deflate",
        action="store_true",
        help="subscribers refuse permessage-deflate (browsers always ask for it)",
    )
    parser.add_argument(
        "--ws-compression",
        action="store_true",
        help="run the server with PANOPTES_WS_COMPRESSION=1 (it declines deflate by default)",
    )
    parser.add_argument(
        "--server",
        choices=("uvicorn", "hypercorn"),
        default="uvicorn",
        help="the HTTP server panoptes runs on (PANOPTES_SERVER)",
    )
    parser.add_argument(
        "--keep", type=Path, help="build the databases in this folder, and reuse them next time"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fds = raise_fd_limit(args.subscribers * 2 + 256)
    load = os.getloadavg()
    print(
        f"panoptes read paths: {args.small} and {args.workflows} workflows x {args.jobs} jobs, "
        f"{args.requests} requests per endpoint in {args.rounds} rounds, {args.subscribers} "
        f"subscribers; {os.cpu_count()} CPUs, load average {load[0]:.1f}, fd limit {fds}"
    )
    env = {
        "PANOPTES_MAX_FEED_PER_CLIENT": "0",  # every subscriber here comes from 127.0.0.1
        "PANOPTES_WS_COMPRESSION": "1" if args.ws_compression else "0",
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="panoptes-readpath-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        small, big = (
            build(folder, label, count, args.jobs, reuse=args.keep is not None)
            for label, count in (("small", args.small), ("big", args.workflows))
        )
        servers: list[Server] = []
        try:
            for data in (small, big):
                servers.append(Server(data.db, env, http=args.server).start(timeout=300.0))
                verify(servers[-1], data)
            rss_start = [server.rss_mib() for server in servers]
            started = time.monotonic()
            results = measure(list(zip(servers, (small, big), strict=True)), args)
            rss_after = [server.rss_mib() for server in servers]
            print(
                f"  measured in {time.monotonic() - started:.1f} s; server RSS small "
                f"{rss_start[0]:.1f} -> {rss_after[0]:.1f} MiB, big {rss_start[1]:.1f} -> "
                f"{rss_after[1]:.1f} MiB",
                flush=True,
            )
            report_latency(small, big, results)
            servers[0].stop()
            if args.subscribers:
                ok = asyncio.run(memory(servers[1], big, args))
        finally:
            for server in servers:
                server.stop()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
