"""Ingest against the earlier server: events/s, request latency and CPU per event of
panoptes-ui 1.6.2 (the Flask app on PyPI, under `gunicorn -w 2`) and of this panoptes, under
the same load in the same run, and how many times the first one's events/s panoptes reaches.

    .venv/bin/python benchmarks/upstream.py                       # 32 keep-alive connections
    .venv/bin/python benchmarks/upstream.py --concurrency 32,256 --connections keep-alive,close
    .venv/bin/python benchmarks/upstream.py --rounds 1            # about a minute
    .venv/bin/python benchmarks/upstream.py --workers 1,2         # panoptes in 1 and 2 processes
    .venv/bin/python benchmarks/upstream.py --repeat 3            # 3 alternating pairs, median

The load is ingest.py's: --workflows x --rounds workflows of --jobs jobs, registered through
GET /create_workflow, then for every job job_started, job_info and job_finished in order on
one connection (the way Snakemake does), spread over --concurrency connections by the Rust
load generator (benchmarks/loadgen), with each workflow's opening and closing progress
message. Both servers get the same bodies: panoptes-ui 1.6.2 takes the form the Snakemake 9
plugin posts (msg, timestamp, id) as panoptes does.

panoptes-ui 1.6.2 is installed once into .cache/e2e/upstream by `scripts/e2e-venvs upstream`
(`pip install panoptes-ui==1.6.2 gunicorn`, the venv the end-to-end tests use) and served
by `gunicorn -w 2 panoptes.app:app` (its README's
"Using a WSGI server", with two processes) with the default sync workers, which answer
`Connection: close`: its keep-alive rows are a connection per message too. It keeps its
SQLite file where PANOPTES_DB_URL says, by default `.panoptes.db` in its working directory;
each run gets a fresh temporary folder as both, so it starts from an empty database. A
non-200 answer counts as an error, but that server answers 200 `ok` even when storing a
message raised (it prints the traceback and carries on), so afterwards every workflow and job
is read back through its API (/api/workflow/<id>, /api/workflow/<id>/jobs) and the tracebacks
in its log are counted: what went wrong is printed under the table. Its row's check column
says `-` because ingest.py's verify() reads panoptes' API, not this one.

panoptes runs as ingest.py runs it (`python -m panoptes` on uvicorn, one process, a fresh
SQLite file; with --workers 2, two processes sharing live events through Redis: as many as
panoptes-ui's gunicorn) and is checked by ingest.py's verify(); the exit status is 1 if that
check found a wrong or missing job, or if panoptes refused a request. Server CPU is the
user+system time of every server process (gunicorn's master and workers) during the load,
from /proc; client CPU is the load generator's. The load generator runs on the same
machine, so the figures are a lower bound for both.

Both servers' speed moves with this shared VM's, by up to 30% between runs minutes apart,
and not always together (panoptes-ui waits on the disk more, panoptes on the CPU). With
--repeat N each row is measured N times, panoptes-ui and panoptes taking turns, and each
panoptes run is divided by the panoptes-ui run just before it; the ratios of the N pairs are
printed with their median.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
from ingest import (
    HEADER,
    RULES,
    Result,
    Shape,
    add_load_arguments,
    build_loadgen,
    children_cpu_seconds,
    describe,
    levels_and_modes,
    register,
    run,
    send_with_loadgen,
    units,
)
from server import Server

ROOT = Path(__file__).resolve().parent.parent
VERSION = "1.6.2"
VENV = ROOT / ".cache" / "e2e" / "upstream"
UPSTREAM = f"panoptes-ui {VERSION} (gunicorn -w 2)"


def upstream_venv() -> Path:
    """The venv with panoptes-ui 1.6.2 and gunicorn, which the end-to-end tests use too:
    scripts/e2e-venvs makes it on the first run and reuses it."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "e2e-venvs"), "upstream"], capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"scripts/e2e-venvs upstream failed:\n{done.stdout}{done.stderr}")
    return VENV


@cache
def gunicorn() -> list[str]:
    """The venv's gunicorn, without the control socket that recent gunicorn (27 here) opens
    in ~/.gunicorn, one path for every instance, when it knows the option."""
    command = [str(upstream_venv() / "bin" / "gunicorn")]
    options = subprocess.run([*command, "--help"], capture_output=True, text=True).stdout
    return [*command, "--no-control-socket"] if "--no-control-socket" in options else command


def gunicorn_version() -> str:
    python = str(VENV / "bin" / "python")
    code = "import importlib.metadata as m; print(m.version('gunicorn'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


@dataclass
class Upstream(Server):
    """panoptes-ui 1.6.2 under gunicorn, in the folder of `db` (its SQLite file). Server's
    /proc readers (cpu_seconds, rss_mib) count the master and its workers; stop() and log()
    are Server's too."""

    http: str = "gunicorn"
    workers: int = 2

    def start(self, timeout: float = 60.0) -> Upstream:
        log = self.db.with_suffix(".log").open("ab")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PANOPTES_DB_URL"] = f"sqlite:///{self.db}?check_same_thread=False"
        command = [*gunicorn(), "-w", str(self.workers), "--bind", f"127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(
            [*command, "panoptes.app:app"],
            env=env,
            cwd=self.db.parent,  # where it would put .panoptes.db without PANOPTES_DB_URL
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/service-info", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log()}")

    def swallowed(self) -> tuple[int, str]:
        """How many tracebacks the server printed (messages it answered 200 but failed to
        store), and the last line of the first."""
        lines = self.log().splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
        if not starts:
            return 0, ""
        first = lines[starts[0] + 1 :]
        end = next((i for i, line in enumerate(first) if not line.startswith(" ")), 0)
        return len(starts), first[end] if first else ""


async def check_upstream(server: Upstream, ids: list[int], jobs: int) -> list[str]:
    """Every workflow Done at jobs/jobs with every job stored once, Done and as sent, read
    through panoptes-ui's own API (its job has `name` for the rule and no attempt)."""
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for workflow_id in ids:
            answer = await http.get(f"/api/workflow/{workflow_id}")
            if answer.status_code != 200:
                problems.append(f"workflow {workflow_id}: {answer.status_code} from its API")
                continue
            wf = answer.json()["workflow"]
            if (wf["status"], wf["jobs_done"], wf["jobs_total"]) != ("Done", jobs, jobs):
                status = f"{wf['status']} {wf['jobs_done']}/{wf['jobs_total']}"
                problems.append(f"workflow {workflow_id}: {status}")
            got = (await http.get(f"/api/workflow/{workflow_id}/jobs")).json()["jobs"]
            by_id = {job["jobid"]: job for job in got}
            for jobid in range(jobs):
                job = by_id.get(jobid)
                expected = (RULES[jobid % len(RULES)], "Done", {"sample": f"s{jobid:04d}"})
                actual = job and (job["name"], job["status"], job["wildcards"])
                if actual != expected:
                    problems.append(f"workflow {workflow_id} job {jobid}: {actual}")
            if len(got) != jobs:
                problems.append(f"workflow {workflow_id}: {len(got)} job rows stored")
    return problems


def run_upstream(args: argparse.Namespace, concurrency: int, mode: str, folder: Path) -> Result:
    """The same load as ingest.py's load() against panoptes-ui 1.6.2, in a fresh folder."""
    home = folder / f"upstream-{len(list(folder.iterdir()))}"
    home.mkdir()
    server = Upstream(db=home / ".panoptes.db").start()
    try:
        ids = asyncio.run(register(server, args.workflows * args.rounds))
        work = units(ids, args.jobs)
        server_cpu = server.cpu_seconds()
        client_cpu = children_cpu_seconds()
        sent = send_with_loadgen(server.port, concurrency, work, folder, mode)
        client_cpu = children_cpu_seconds() - client_cpu
        server_cpu = server.cpu_seconds() - server_cpu
        rss = server.rss_mib()
        if sent.first_error:
            print(f"panoptes-ui: first refused request: {sent.first_error[:300]}", file=sys.stderr)
        problems = asyncio.run(check_upstream(server, ids, args.jobs))
        raised, first = server.swallowed()
        if raised:
            problems.insert(0, f"{raised} messages answered 200 but raised in the server: {first}")
        return Result(
            f"panoptes-ui {describe(server, concurrency, mode)}",
            len(sent.latencies),
            sent.seconds,
            sent.latencies,
            sent.failures,
            rss,
            problems,
            server_cpu,
            client_cpu,
            checked=False,
        )
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser, rounds=3, concurrency="32", connections="keep-alive")
    # What ingest.py's run() and load() read: the Rust load generator, SQLite.
    parser.set_defaults(client="rust", postgres=None)
    parser.add_argument(
        "--workers",
        default="1",
        help="comma-separated panoptes process counts (`panoptes --workers N`); above 1 they "
        "share live events through --broadcast, as a site running several would",
    )
    parser.add_argument(
        "--broadcast",
        default="redis://127.0.0.1:6379/0",
        help="PANOPTES_BROADCAST_URL for runs with several workers",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each row this many times, the two servers taking turns",
    )
    args = parser.parse_args()
    worker_counts = [int(count) for count in args.workers.split(",")]
    levels, modes = levels_and_modes(parser, args)
    upstream_venv()
    build_loadgen()
    print(
        f"panoptes vs {UPSTREAM} ingest: {args.workflows} workflows x {args.jobs} jobs x "
        f"{args.rounds} rounds, 3 messages per job; {os.cpu_count()} CPUs; "
        f"client: rust; database: SQLite; gunicorn {gunicorn_version()} (sync workers)"
    )
    print(HEADER)
    pairs: list[tuple[Result, Result]] = []  # (panoptes, panoptes-ui) with the same load
    upstreams: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="panoptes-upstream-") as tmp:
        folder = Path(tmp)
        for mode in modes:
            for level in levels:
                for _ in range(args.repeat):
                    theirs = run_upstream(args, level, mode, folder)
                    upstreams.append(theirs)
                    print(theirs.row(), flush=True)
                    for workers in worker_counts:
                        env = {"PANOPTES_BROADCAST_URL": args.broadcast} if workers > 1 else {}
                        ours = run(args, env, Shape("uvicorn", workers, level, mode), folder)
                        print(ours.row(), flush=True)
                        pairs.append((ours, theirs))
    print("srv us / cli us: CPU time per event of the server processes / of the load generator")
    for theirs in upstreams:
        for problem in theirs.problems[:5]:
            print(f"{theirs.label}: {problem}")
        if len(theirs.problems) > 5:
            print(f"{theirs.label}: ... {len(theirs.problems)} problems in all")
        if not theirs.problems:
            print(f"{theirs.label}: every workflow Done, every job stored once, Done, as sent")
    for ours, theirs in pairs:
        print(f"{ours.label}: {ours.rate / theirs.rate:.1f}x {UPSTREAM}'s {theirs.rate:.0f}/s")
    if args.repeat > 1:
        ratios: dict[str, list[float]] = {}
        for ours, theirs in pairs:
            ratios.setdefault(ours.label, []).append(ours.rate / theirs.rate)
        for name, found in ratios.items():
            each = ", ".join(f"{ratio:.1f}x" for ratio in found)
            print(f"{name}: median {statistics.median(found):.1f}x of {len(found)} pairs ({each})")
    wrong = [problem for ours, _ in pairs for problem in ours.problems]
    for problem in wrong[:20]:
        print("WRONG:", problem)
    return 1 if wrong or any(ours.failures for ours, _ in pairs) else 0


if __name__ == "__main__":
    sys.exit(main())
