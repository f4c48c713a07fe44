"""The writer alone: CPU per ingest message with no HTTP in front, at several batch sizes.

    .venv/bin/python benchmarks/writer.py
    .venv/bin/python benchmarks/writer.py --submitters 1,8,32,256 --jobs 200

In this process, a real panoptes service on a fresh SQLite file takes the messages a
Snakemake run sends for each job (job_started, job_info, job_finished, the way
benchmarks/ingest.py sends them), submitted by N concurrent tasks: with N submitters the
writer's batches hold about N messages. CPU is this process's (the event loop and the
writer's thread). Every job is checked afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ingest import job_bodies
from sqlalchemy import func, select

from panoptes import ingest
from panoptes.config import Config, database_url
from panoptes.models import Job
from panoptes.service import Service


async def measure(folder: Path, submitters: int, workflows: int, jobs: int) -> tuple[float, float]:
    """(messages per batch, CPU seconds per message) for one fresh database."""
    db = folder / f"writer-{submitters}.db"
    service = Service(Config(db_url=database_url(str(db)), stale_hours=0))
    await service.open()
    try:
        ids = [(await service.register(ingest.Registration()))["id"] for _ in range(workflows)]
        # Each submitter sends whole jobs, in order, as one Snakemake connection would.
        work = [(wf, jobid) for jobid in range(jobs) for wf in ids]
        envelopes = {
            (wf, jobid): [
                ingest.parse_message({"msg": body, "id": wf}) for body in job_bodies(jobid)
            ]
            for wf, jobid in work
        }
        batches = 0
        original = service.writer._commit_batch

        async def counted(batch: list[object]) -> None:
            nonlocal batches
            batches += 1
            await original(batch)  # type: ignore[arg-type]

        service.writer._commit_batch = counted  # type: ignore[method-assign]
        queue = list(reversed(work))

        async def submitter() -> None:
            while queue:
                for message in envelopes[queue.pop()]:
                    await service.ingest(message)

        cpu = time.process_time()
        await asyncio.gather(*(submitter() for _ in range(submitters)))
        cpu = time.process_time() - cpu
        messages = 3 * len(work)
        async with service.sessions() as session:
            done = await session.scalar(select(func.count()).where(Job.status == "Done"))
        if done != len(work):
            raise SystemExit(f"WRONG: {done} of {len(work)} jobs done")
        return messages / batches, cpu / messages
    finally:
        await service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submitters", default="1,8,32,256", help="comma-separated")
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=100, help="jobs per workflow")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting; the median")
    args = parser.parse_args()
    print(
        f"panoptes writer alone: {args.workflows} workflows x {args.jobs} jobs, 3 messages "
        f"per job; SQLite; {os.cpu_count()} CPUs"
    )
    print(f"{'submitters':>10} {'msgs/batch':>10} {'us/msg':>8}")
    with tempfile.TemporaryDirectory(prefix="panoptes-writer-") as tmp:
        for count in (int(n) for n in args.submitters.split(",")):
            runs = []
            for repeat in range(args.repeat):
                folder = Path(tmp) / f"{count}-{repeat}"
                folder.mkdir()
                runs.append(asyncio.run(measure(folder, count, args.workflows, args.jobs)))
            per_batch = statistics.median(r[0] for r in runs)
            per_message = statistics.median(r[1] for r in runs)
            print(f"{count:>10} {per_batch:>10.1f} {1e6 * per_message:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
