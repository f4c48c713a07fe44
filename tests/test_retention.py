"""Retention: finished workflows older than PANOPTES_RETENTION_DAYS go, at start and hourly,
through the writer (so the feed hears of it); `panoptes db prune` does it on demand."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from quart import Quart
from sqlalchemy import func, select

from panoptes import service as service_module
from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.db import make_engine, make_sessionmaker
from panoptes.migrations import upgrade_schema
from panoptes.models import Event, Job, Workflow, utcnow
from panoptes.service import Service

from .conftest import subscribed

# name: (status, started days ago, last update days ago, finished days ago or None)
SEED = {
    "old-done": ("Done", 41, 40, 40),
    "old-error": ("Error", 40, 40, 40),
    "old-cancelled": ("Cancelled", 32, 31, 31),
    "old-stale": ("Stale", 45, 40, None),
    "recent-done": ("Done", 60, 2, 2),  # started long ago, finished lately
    "recent-stale": ("Stale", 9, 5, None),
    "running": ("Running", 90, 40, None),  # silent, but Running: never removed
}
EXPIRED_AFTER_30 = {"old-done", "old-error", "old-cancelled", "old-stale"}


async def seed(url: str) -> dict[str, int]:
    """A migrated database holding SEED, each workflow with a job and an event."""
    engine = make_engine(url)
    await upgrade_schema(engine)
    now = utcnow()

    def ago(days: float | None) -> object:
        return None if days is None else now - timedelta(days=days)

    ids: dict[str, int] = {}
    async with make_sessionmaker(engine)() as session, session.begin():
        for name, (status, started, updated, finished) in SEED.items():
            wf = Workflow(
                name=name,
                status=status,
                jobs_done=1,
                jobs_total=1,
                started_at=ago(started),
                updated_at=ago(updated),
                finished_at=ago(finished),
                dry_run=False,
            )
            session.add(wf)
            await session.flush()
            ids[name] = wf.id
            session.add(
                Job(
                    workflow_id=wf.id, jobid=1, rule="r", status="Done", wildcards={},
                    input=[], output=[], log=[], is_checkpoint=False, attempt=1, attempts=[],
                )
            )  # fmt: skip
            session.add(
                Event(workflow_id=wf.id, type="job.updated", payload={}, created_at=ago(updated))
            )
    await engine.dispose()
    return ids


async def remaining(engine_url: str) -> tuple[set[str], dict[str, int], dict[str, list[str]]]:
    """Workflow names left; jobs per workflow id; event types per workflow id."""
    engine = make_engine(engine_url)
    async with make_sessionmaker(engine)() as session:
        names = set(await session.scalars(select(Workflow.name)))
        jobs = dict(
            (str(workflow_id), count)
            for workflow_id, count in (
                await session.execute(
                    select(Job.workflow_id, func.count()).group_by(Job.workflow_id)
                )
            ).all()
        )
        events: dict[str, list[str]] = {}
        for workflow_id, kind in await session.execute(
            select(Event.workflow_id, Event.type).order_by(Event.seq)
        ):
            events.setdefault(str(workflow_id), []).append(kind)
    await engine.dispose()
    return names, jobs, events


@pytest.fixture
async def url(tmp_path: Path) -> str:
    return database_url(str(tmp_path / "retention.db"))


@pytest.fixture
async def ids(url: str) -> dict[str, int]:
    return await seed(url)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Quart]:
    app = create_app(config)
    async with app.test_app():
        yield app


async def test_expired_workflows_are_removed_at_start(url: str, ids: dict[str, int]):
    config = Config(db_url=url, retention_days=30, stale_hours=0, stale_check_seconds=0)
    async with running(config) as app:
        listed = await (await app.test_client().get("/api/workflows")).get_json()
        assert {wf["name"] for wf in listed["workflows"]} == set(SEED) - EXPIRED_AFTER_30
        missing = await app.test_client().get(f"/api/workflow/{ids['old-done']}")
        assert missing.status_code == 404

    names, jobs, events = await remaining(url)
    assert names == set(SEED) - EXPIRED_AFTER_30
    for name, workflow_id in ids.items():
        if name in EXPIRED_AFTER_30:
            # Jobs and events gone; only the news of the deletion stays in the log.
            assert str(workflow_id) not in jobs
            assert events[str(workflow_id)] == ["workflow.deleted"]
        else:
            assert jobs[str(workflow_id)] == 1
            assert events[str(workflow_id)] == ["job.updated"]


async def test_without_retention_everything_stays(url: str, ids: dict[str, int]):
    config = Config(db_url=url, stale_hours=0, stale_check_seconds=0)  # retention_days=0
    async with running(config) as app:
        listed = await (await app.test_client().get("/api/workflows")).get_json()
        assert listed["count"] == len(SEED)
    assert (await remaining(url))[0] == set(SEED)


async def test_hourly_prune_goes_through_the_writer_to_the_feed(
    url: str, ids: dict[str, int], monkeypatch: pytest.MonkeyPatch
):
    config = Config(db_url=url, retention_days=30, stale_hours=0, stale_check_seconds=0)
    async with running(config) as app:
        service: Service = app.extensions["panoptes"]
        assert (await remaining(url))[0] == {"recent-done", "recent-stale", "running"}
        feed = subscribed(service.hub)
        # Days later, with a shorter retention: recent-done and recent-stale have expired.
        monkeypatch.setattr(service, "config", replace(config, retention_days=1))
        await service.prune_if_due()  # the last prune was at start: not due for an hour
        assert (await remaining(url))[0] == {"recent-done", "recent-stale", "running"}

        monkeypatch.setattr(service_module, "PRUNE_EVERY_SECONDS", 0.0)
        await service.prune_if_due()

        assert (await remaining(url))[0] == {"running"}
        deleted = set()
        for _ in range(2):
            item = await asyncio.wait_for(feed.get(), timeout=5)
            assert item.type == "workflow.deleted"
            deleted.add(item.workflow_id)
        assert deleted == {ids["recent-done"], ids["recent-stale"]}


async def test_prune_removes_in_batches(url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(service_module, "PRUNE_BATCH", 2)
    await seed(url)
    config = Config(db_url=url, stale_hours=0, stale_check_seconds=0)
    async with running(config) as app:
        service: Service = app.extensions["panoptes"]
        assert await service.prune(30) == len(EXPIRED_AFTER_30)
    assert (await remaining(url))[0] == set(SEED) - EXPIRED_AFTER_30


# --------------------------------------------------------------------------- panoptes db prune


def prune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "PANOPTES_RETENTION_DAYS"}
    return subprocess.run(
        [sys.executable, "-m", "panoptes", "db", "prune", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
    )


async def test_db_prune_removes_what_is_older_than_days(tmp_path: Path, url: str):
    await seed(url)
    path = str(tmp_path / "retention.db")

    done = prune("--days", "30", "--db", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "removed 4 workflows that ended more than 30 day(s) ago"
    assert (await remaining(url))[0] == set(SEED) - EXPIRED_AFTER_30

    # The default is PANOPTES_RETENTION_DAYS; Running is never removed.
    done = prune("--db", path, env={"PANOPTES_RETENTION_DAYS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 2 workflows")
    assert (await remaining(url))[0] == {"running"}


async def test_db_prune_needs_days(tmp_path: Path, url: str):
    await seed(url)
    path = str(tmp_path / "retention.db")
    refused = prune("--db", path)
    assert refused.returncode == 2
    assert "--days" in refused.stderr and "PANOPTES_RETENTION_DAYS" in refused.stderr
    refused = prune("--days", "0", "--db", path)
    assert refused.returncode == 2
    assert "above 0" in refused.stderr
    assert (await remaining(url))[0] == set(SEED)


def test_db_prune_refuses_a_database_that_needs_upgrading(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE workflows (id INTEGER PRIMARY KEY, status TEXT, done INTEGER)")
    conn.close()
    refused = prune("--days", "1", "--db", str(path))
    assert refused.returncode == 1
    assert "panoptes db upgrade" in refused.stderr
    tables = [row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")]
    assert tables == ["workflows"]
