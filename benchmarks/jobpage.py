"""The workflow page and the jobs API of one workflow with many jobs.

    .venv/bin/python benchmarks/jobpage.py                  # 10,000 jobs
    .venv/bin/python benchmarks/jobpage.py --jobs 50000 --requests 40

Starts a real panoptes on a fresh SQLite file, registers one workflow, sends it --jobs
job_info messages (32 at a time), then times --requests GETs of /workflow/<id> and of
/api/workflow/<id>/jobs (the first 5 of each are warm-up and not counted), and prints p50,
max and the response size. The baseline, in the same run: the same requests against a
workflow of 100 jobs, in the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from server import FORM, Server, form_body

WARM_UP = 5


async def workflow_of(url: str, jobs: int) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        workflow_id: int = (await http.get("/create_workflow")).json()["id"]
        slots = asyncio.Semaphore(32)

        async def send(jobid: int) -> None:
            msg = {
                "level": "job_info",
                "jobid": jobid,
                "name": f"rule{jobid % 5}",
                "wildcards": {"sample": f"s{jobid}"},
                "input": [f"in/{jobid}.fq"],
                "output": [f"out/{jobid}.bam"],
            }
            body = form_body(workflow_id, msg)
            async with slots:
                response = await http.post("/update_workflow_status", content=body, headers=FORM)
            response.raise_for_status()

        await asyncio.gather(*(send(jobid) for jobid in range(jobs)))
        return workflow_id


def timed(url: str, path: str, requests: int) -> str:
    times: list[float] = []
    size = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(requests + WARM_UP):
            started = time.perf_counter()
            response = http.get(path)
            times.append(time.perf_counter() - started)
            response.raise_for_status()
            size = len(response.content)
    counted = times[WARM_UP:]
    return (
        f"p50 {1000 * statistics.median(counted):7.1f} ms   max {1000 * max(counted):7.1f} ms"
        f"   {size / 1024:7.0f} KiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="panoptes-jobpage-") as tmp:
        server = Server(db=Path(tmp) / "jobpage.db").start()
        try:
            small = asyncio.run(workflow_of(server.url, 100))
            big = asyncio.run(workflow_of(server.url, args.jobs))
            for label, workflow_id in (("100 jobs", small), (f"{args.jobs} jobs", big)):
                for path in (f"/workflow/{workflow_id}", f"/api/workflow/{workflow_id}/jobs"):
                    shown = path.replace(str(workflow_id), "<id>")
                    print(f"{label:>12}  {shown:<26} {timed(server.url, path, args.requests)}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
