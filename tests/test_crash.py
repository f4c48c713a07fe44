"""kill -9 in the middle of a load: after a restart, every acknowledged message is stored.

panoptes answers a client only after the transaction holding its message has committed
(SQLite in WAL mode), so a crash may lose what was in flight, never what was acknowledged.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from .conftest import LiveServer, form_body

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
POSTERS = 16


# Acknowledgements to wait for before the kill: enough load to prove something, however
# slowly a loaded machine gets there (a fixed wait once saw none at all).
BEFORE_KILL = 200
WAIT_FOR_LOAD_SECONDS = 120


async def post_until_refused(
    server: LiveServer, workflow_id: int, start: int, acknowledged: list[int]
) -> list[int]:
    """Post job_info for jobids start, start + POSTERS, ... until the server is gone; each
    acknowledged one goes into `acknowledged` (shared by the posters), and these are returned."""
    mine: list[int] = []
    jobid = start
    # A long timeout: a slow answer is not a dead server.
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        while True:
            msg = {"level": "job_info", "jobid": jobid, "name": "crash", "wildcards": {}}
            try:
                response = await http.post(
                    "/update_workflow_status", content=form_body(workflow_id, msg), headers=FORM
                )
            except httpx.HTTPError:
                return mine  # the server is gone
            assert response.status_code == 200, response.text
            acknowledged.append(jobid)
            mine.append(jobid)
            jobid += POSTERS


async def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    server = LiveServer(db=db).start()
    async with httpx.AsyncClient(base_url=server.url) as http:
        workflow_id = (await http.get("/create_workflow")).json()["id"]
    so_far: list[int] = []
    posters = [
        asyncio.create_task(post_until_refused(server, workflow_id, start, so_far))
        for start in range(POSTERS)
    ]
    # Let the load run, then pull the plug mid-stream, with every poster still posting.
    deadline = time.monotonic() + WAIT_FOR_LOAD_SECONDS
    try:
        while len(so_far) < BEFORE_KILL:
            assert time.monotonic() < deadline, f"only {len(so_far)} acknowledged so far"
            assert not any(p.done() for p in posters), "a poster stopped before the kill"
            await asyncio.sleep(0.05)
    except BaseException:
        server.stop(signal.SIGKILL)
        await asyncio.gather(*posters, return_exceptions=True)
        raise
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    started = time.monotonic()
    acknowledged = sorted(j for jobs in await asyncio.gather(*posters) for j in jobs)
    server.process.wait()
    assert time.monotonic() - started < 10
    assert server.process.returncode == -signal.SIGKILL
    assert len(acknowledged) >= BEFORE_KILL

    server.process = None
    restarted = LiveServer(db=db, port=server.port).start()
    try:
        async with httpx.AsyncClient(base_url=restarted.url) as http:
            response = await http.get(
                f"/api/workflow/{workflow_id}/jobs", params={"limit": 1000, "offset": 0}
            )
            body = response.json()
            stored = {job["jobid"] for job in body["jobs"]}
            offset = len(body["jobs"])
            while offset < body["count"]:
                more = await http.get(
                    f"/api/workflow/{workflow_id}/jobs", params={"limit": 1000, "offset": offset}
                )
                stored |= {job["jobid"] for job in more.json()["jobs"]}
                offset += len(more.json()["jobs"])
            missing = set(acknowledged) - stored
            assert not missing, f"{len(missing)} acknowledged jobs lost: {sorted(missing)[:20]}"
            # Nothing half-written either: every stored job is whole.
            assert all(job["rule"] == "crash" for job in body["jobs"])
            # The store is usable: it takes new messages after the crash.
            msg = {"level": "job_info", "jobid": 10**6, "name": "after", "wildcards": {}}
            after = await http.post(
                "/update_workflow_status", content=form_body(workflow_id, msg), headers=FORM
            )
            assert after.status_code == 200
    finally:
        restarted.stop()
