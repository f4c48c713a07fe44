"""Instructions per ingest message, counted by valgrind: a figure the VM's speed does not move.

    .venv/bin/python benchmarks/instructions.py
    .venv/bin/python benchmarks/instructions.py --compare /tmp/before   # another tree too

The timed benchmarks (ingest.py, writer.py) move by up to two times with the day's speed
of this shared VM, and by 10 to 20% between runs minutes apart: too much to see a change
of a few percent. This one counts what the CPU executes instead (callgrind), which is the
same from run to run (within 0.1% here). It runs the app in this process, without an
HTTP server: the ASGI app that `panoptes` serves, on a fresh SQLite file, takes the
messages a Snakemake run sends for each job (job_started, job_info, job_finished, as
ingest.py sends them), from 32 concurrent tasks as from 32 kept-alive connections; the
writer commits them in its thread. Everything that happens per message is counted: the
fast endpoint, the body's decoding, the state machine, the writer, SQLite, the events
published. The HTTP server (uvicorn's parsing and writes) and the kernel are not.

It runs twice under valgrind, with `--jobs-small` and `--jobs` jobs per workflow, and
prints the difference in instructions over the difference in messages: what starting
Python, importing and making the schema cost drops out. With `--compare TREE`, the same is
counted with TREE (a folder holding a `panoptes` package, e.g. made with
`git archive REV panoptes | tar -x -C TREE`) first on Python's path, at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKFLOWS = 10
CONCURRENCY = 32


async def _call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request straight into the ASGI app, as an HTTP server would hand it over."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 5000),
        "state": {},
    }
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # never: the app has its body
        raise AssertionError

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _load(jobs: int) -> None:
    """The child: `jobs` jobs in each of WORKFLOWS workflows, then every job checked."""
    import orjson
    from ingest import job_bodies, message

    from panoptes.app import create_app
    from panoptes.config import Config, database_url

    folder = Path(tempfile.mkdtemp(prefix="panoptes-instructions-"))
    try:
        app = create_app(Config(db_url=database_url(str(folder / "p.db")), stale_hours=0))
        await app.startup()
        ids = []
        for _ in range(WORKFLOWS):
            status, body = await _call(app, "GET", "/create_workflow")
            assert status == 200, body
            ids.append(orjson.loads(body)["id"])
        # Each task sends whole jobs, in order, as one Snakemake connection would.
        units = [[message(wf, m) for m in job_bodies(jobid)] for jobid in range(jobs) for wf in ids]
        units.reverse()

        async def client() -> None:
            while units:
                for body in units.pop():
                    status, answer = await _call(app, "POST", "/update_workflow_status", body)
                    assert status == 200, answer

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        for wf in ids:
            status, body = await _call(app, "GET", f"/api/workflow/{wf}/rules")
            assert status == 200, body
            done = sum(rule["done"] for rule in orjson.loads(body)["rules"])
            if done != jobs:
                raise SystemExit(f"WRONG: workflow {wf} has {done} of {jobs} jobs done")
        await app.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _counted(jobs: int, tree: str | None, folder: Path) -> int:
    """Instructions valgrind counted in a child that sends `jobs` jobs per workflow."""
    env = dict(os.environ)
    path = [str(HERE), *([tree] if tree else []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    out = folder / f"callgrind.{jobs}.{abs(hash(tree))}"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    done = subprocess.run(
        [*valgrind, sys.executable, __file__, "--child", str(jobs)],
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"the run with {jobs} jobs failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return int(found.group(1))


def _per_message(tree: str | None, small: int, large: int, folder: Path) -> float:
    with ThreadPoolExecutor(2) as pool:  # the two runs at once: one core each
        runs = [pool.submit(_counted, jobs, tree, folder) for jobs in (small, large)]
        few, many = (run.result() for run in runs)
    messages = 3 * WORKFLOWS * (large - small)
    return (many - few) / messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=130, help="jobs per workflow, large run")
    parser.add_argument("--jobs-small", type=int, default=30, help="jobs per workflow, small run")
    parser.add_argument("--compare", metavar="TREE", help="also count with TREE on the path")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        import uvloop

        uvloop.run(_load(args.child))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    messages = 3 * WORKFLOWS * (args.jobs - args.jobs_small)
    print(
        f"instructions per message: the app in process, {WORKFLOWS} workflows, "
        f"{CONCURRENCY} concurrent senders, ({args.jobs} - {args.jobs_small}) jobs each: "
        f"{messages} messages"
    )
    with tempfile.TemporaryDirectory() as folder:
        trees = [(args.compare, f"--compare {args.compare}")] if args.compare else []
        figures = {}
        for tree, name in [*trees, (None, "this tree")]:
            figures[name] = _per_message(tree, args.jobs_small, args.jobs, Path(folder))
            print(f"  {name:40s} {figures[name]:12,.0f}")
        if args.compare:
            ratio = figures["this tree"] / figures[f"--compare {args.compare}"]
            print(f"  this tree / compared: {ratio:.3f} ({100 * (ratio - 1):+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
