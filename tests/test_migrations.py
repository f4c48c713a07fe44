"""Migrations: the migrated schema is the models' schema, on SQLite and PostgreSQL; a panoptes
1.x database is converted in place and served; processes starting at once migrate once."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from quart.typing import TestClientProtocol as Client
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.db import make_engine
from panoptes.migrations import (
    PG_LOCK_KEY,
    SchemaError,
    head_revision,
    panoptes1,
    upgrade_schema,
)
from panoptes.models import Base, Event, Workflow, utcnow

from .conftest import (
    LiveServer,
    create_workflow,
    free_port,
    post_event,
    throwaway_pg_database,
)

# A fixed zone with daylight saving time, written out so it needs no tz database.
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own (conftest's pg_url is shared and emptied)."""
    with throwaway_pg_database() as url:
        yield database_url(url)


@pytest.fixture
def local_berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time is Berlin's (1.x stored local times)."""
    monkeypatch.setenv("TZ", BERLIN)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def upgraded(url: str) -> tuple[Any, Any]:
    engine = make_engine(url)
    try:
        return await upgrade_schema(engine)
    finally:
        await engine.dispose()


async def schema_differences(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()


async def scalar_rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).scalars())


# --------------------------------------------------------------------------- the schema


async def test_migrated_sqlite_schema_is_the_models_schema(tmp_path: Path):
    url = database_url(str(tmp_path / "fresh.db"))
    before, after = await upgraded(url)
    assert (before.kind, after.revision) == ("empty", head_revision())
    assert await schema_differences(url) == []
    # AUTOINCREMENT (which compare_metadata does not see): ids are never handed out twice.
    ddl = dict(
        sqlite3.connect(tmp_path / "fresh.db").execute("SELECT name, sql FROM sqlite_master")
    )
    assert "AUTOINCREMENT" in ddl["workflows"] and "AUTOINCREMENT" in ddl["events"]
    # A second upgrade finds nothing to do.
    before, after = await upgraded(url)
    assert before.at_head and after.at_head


async def test_migrated_postgresql_schema_is_the_models_schema(fresh_pg_url: str):
    before, after = await upgraded(fresh_pg_url)
    assert (before.kind, after.revision) == ("empty", head_revision())
    assert await schema_differences(fresh_pg_url) == []


async def test_database_from_create_all_is_stamped_not_recreated(tmp_path: Path):
    """Development builds of this server made their tables with create_all."""
    url = database_url(str(tmp_path / "dev.db"))
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with engine.begin() as conn:
        now = utcnow()
        await conn.execute(
            Workflow.__table__.insert().values(
                name="kept", status="Done", jobs_done=2, jobs_total=2, started_at=now,
                updated_at=now, dry_run=False,
            )
        )  # fmt: skip
    before, after = await upgrade_schema(engine)
    assert (before.kind, after.revision) == ("unversioned", head_revision())
    assert await scalar_rows(engine, "SELECT name FROM workflows") == ["kept"]
    await engine.dispose()
    assert await schema_differences(url) == []


async def test_unknown_database_is_left_alone(tmp_path: Path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE workflows (id INTEGER PRIMARY KEY, title TEXT)")
    with pytest.raises(SchemaError, match="not a panoptes database"):
        await upgraded(database_url(str(path)))
    tables = [row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")]
    assert tables == ["workflows"]


async def test_revision_from_a_newer_panoptes_is_refused(tmp_path: Path):
    url = database_url(str(tmp_path / "newer.db"))
    await upgraded(url)
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="9999"):
        await upgraded(url)


# --------------------------------------------------------------------------- panoptes 1.x

# The tables exactly as panoptes 1.6 (SQLAlchemy create_all) made them on SQLite.
PANOPTES1_SQLITE_DDL = [
    """CREATE TABLE users (
	id INTEGER NOT NULL,
	name VARCHAR(50),
	email VARCHAR(120),
	PRIMARY KEY (id),
	UNIQUE (name),
	UNIQUE (email)
)""",
    """CREATE TABLE workflows (
	id INTEGER NOT NULL,
	name VARCHAR(50),
	status VARCHAR(30),
	done INTEGER,
	total INTEGER,
	started_at DATETIME,
	completed_at DATETIME,
	PRIMARY KEY (id),
	UNIQUE (name)
)""",
    # 1.2.0 added it with this statement at boot.
    "ALTER TABLE workflows ADD COLUMN updated_at DATETIME",
    """CREATE TABLE workflow_jobs (
	id INTEGER NOT NULL,
	jobid INTEGER,
	wf_id INTEGER,
	msg VARCHAR(100),
	name VARCHAR(30),
	input VARCHAR(500),
	output VARCHAR(500),
	log VARCHAR(100),
	wildcards VARCHAR(100),
	is_checkpoint BOOLEAN,
	shell_command VARCHAR(100),
	status VARCHAR(30),
	started_at DATETIME,
	completed_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(wf_id) REFERENCES workflows (id)
)""",
    """CREATE TABLE workflow_messages (
	id INTEGER NOT NULL,
	wf_id INTEGER,
	msg VARCHAR(100),
	status VARCHAR(30),
	PRIMARY KEY (id),
	FOREIGN KEY(wf_id) REFERENCES workflows (id)
)""",
]

# The same on PostgreSQL (panoptes 1.6 with psycopg2).
PANOPTES1_PG_DDL = [
    """CREATE TABLE users (id SERIAL PRIMARY KEY, name VARCHAR(50) UNIQUE,
        email VARCHAR(120) UNIQUE)""",
    """CREATE TABLE workflows (id SERIAL PRIMARY KEY, name VARCHAR(50) UNIQUE,
        status VARCHAR(30), done INTEGER, total INTEGER, started_at TIMESTAMP WITHOUT TIME ZONE,
        completed_at TIMESTAMP WITHOUT TIME ZONE, updated_at TIMESTAMP WITHOUT TIME ZONE)""",
    """CREATE TABLE workflow_jobs (id SERIAL PRIMARY KEY, jobid INTEGER,
        wf_id INTEGER REFERENCES workflows (id), msg VARCHAR(100), name VARCHAR(30),
        input VARCHAR(500), output VARCHAR(500), log VARCHAR(100), wildcards VARCHAR(100),
        is_checkpoint BOOLEAN, shell_command VARCHAR(100), status VARCHAR(30),
        started_at TIMESTAMP WITHOUT TIME ZONE, completed_at TIMESTAMP WITHOUT TIME ZONE)""",
    """CREATE TABLE workflow_messages (id SERIAL PRIMARY KEY,
        wf_id INTEGER REFERENCES workflows (id), msg VARCHAR(100), status VARCHAR(30))""",
]

WF_COLUMNS = ("id", "name", "status", "done", "total", "started_at", "completed_at", "updated_at")
JOB_COLUMNS = (
    "id", "jobid", "wf_id", "msg", "name", "input", "output", "log", "wildcards",
    "is_checkpoint", "shell_command", "status", "started_at", "completed_at",
)  # fmt: skip


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def panoptes1_rows(now: datetime, orphans: bool) -> dict[str, list[tuple[Any, ...]]]:
    """1.x data: naive local (Berlin) times, repr() lists; ids with a gap (4 was deleted)."""
    summer, winter = "2024-07-01", "2024-01-15"
    workflows = [
        (1, "rnaseq", "Done", 3, 3, t(f"{summer} 10:00:00.123456"), t(f"{summer} 10:30:00"),
         t(f"{summer} 10:30:00")),
        # 1.x set no completed_at on Error.
        (2, "failing", "Error", 1, 4, t(f"{winter} 09:00:00"), None, t(f"{winter} 09:05:00")),
        (3, "up-to-date", "No Execution", 1, 1, t(f"{winter} 11:00:00"), None,
         t(f"{winter} 11:00:01")),
        (5, "live", "Running", 0, 2, now, None, now),
        (6, "stopped", "Cancelled", 1, 5, t(f"{winter} 12:00:00"), t(f"{winter} 12:10:00"),
         t(f"{winter} 12:10:00")),
        (7, "forgotten", "Stale", 2, 9, t(f"{winter} 13:00:00"), None, t(f"{winter} 13:30:00")),
        (8, None, None, 1, 1, t(f"{winter} 14:00:00"), None, None),
    ]  # fmt: skip
    jobs = [
        (1, 1, 1, "making a", "make_input", "[]", "['raw/a.txt']", "['logs/a.log']",
         "{'sample': 'a'}", False, "mkdir -p raw && echo a > raw/a.txt", "Done",
         t(f"{summer} 10:01:00"), t(f"{summer} 10:02:00")),
        (2, 2, 1, None, "process", "['raw/a.txt']", "['proc/a.txt', 'proc/a.idx']", "[]",
         "{'sample': 'a', 'n': 2}", False, "cat raw/a.txt > proc/a.txt", "Done",
         t(f"{summer} 10:03:00"), t(f"{summer} 10:04:00")),
        (3, 0, 1, None, "all", "['proc/a.txt']", "[]", "[]", "{}", False, None, "Done",
         t(f"{summer} 10:05:00"), t(f"{summer} 10:05:00")),
        # Job 3 of workflow 2 was tried twice (1.x before 1.1.2 stored a row per try).
        (4, 3, 2, None, "flaky", "[]", "['f.txt']", "[]", "{}", False, "exit 1", "Error",
         t(f"{winter} 09:01:00"), t(f"{winter} 09:02:00")),
        # Values that are not Python literals are kept as text, never evaluated.
        (5, 4, 2, None, "odd", "['unterminated", None, "", "Wildcards(sample='b')", True, None,
         "Running", t(f"{winter} 09:01:30"), None),
        (6, 3, 2, None, "flaky", "[]", "['f.txt']", "[]", "{}", False, "exit 1", "Error",
         t(f"{winter} 09:03:00"), t(f"{winter} 09:04:00")),
        (7, 1, 5, None, "align", "['r1.fq', 'r2.fq']", "['a.bam']", "['align.log']",
         "{'sample': 'x'}", False, "bwa mem", "Running", now, None),
    ]  # fmt: skip
    messages = [
        (1, 1, '{"level": "shellcmd", "jobid": null, "msg": "echo a"}', None),
        (2, 2, '{"msg": "no level"}', None),
    ]
    if orphans:  # SQLite never enforced the foreign key
        jobs.append((8, 1, 99, None, "ghost", "[]", "[]", "[]", "{}", False, None, "Done",
                     None, None))  # fmt: skip
        messages.append((3, 99, '{"msg": "ghost"}', None))
    return {
        "users": [(1, "admin", "admin@example.org")],
        "workflows": workflows,
        "workflow_jobs": jobs,
        "workflow_messages": messages,
    }


COLUMNS = {
    "users": ("id", "name", "email"),
    "workflows": WF_COLUMNS,
    "workflow_jobs": JOB_COLUMNS,
    "workflow_messages": ("id", "wf_id", "msg", "status"),
}


def build_panoptes1_sqlite(path: Path, now: datetime) -> None:
    def stored(value: Any) -> Any:  # as SQLAlchemy's SQLite DATETIME kept it
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

    with sqlite3.connect(path) as conn:
        for ddl in PANOPTES1_SQLITE_DDL:
            conn.execute(ddl)
        for table, rows in panoptes1_rows(now, orphans=True).items():
            marks = ", ".join("?" * len(COLUMNS[table]))
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) VALUES ({marks})",
                [tuple(stored(value) for value in row) for row in rows],
            )
    conn.close()


async def build_panoptes1_postgresql(url: str, now: datetime) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for ddl in PANOPTES1_PG_DDL:
            await conn.execute(text(ddl))
        for table, rows in panoptes1_rows(now, orphans=False).items():
            columns = COLUMNS[table]
            await conn.execute(
                text(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                ),
                [dict(zip(columns, row, strict=True)) for row in rows],
            )
        # As 1.x's SERIAL left them after inserting (ids 1..8).
        for table in ("workflows", "workflow_jobs", "workflow_messages"):
            await conn.execute(
                text(f"SELECT setval('{table}_id_seq', (SELECT MAX(id) FROM {table}))")
            )
    await engine.dispose()


async def get_json(client: Client, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return await response.get_json()


async def check_converted(client: Client, now: datetime) -> None:
    """What a 1.x database looks like through the API once upgraded."""
    listed = await get_json(client, "/api/workflows")
    by_id = {wf["id"]: wf for wf in listed["workflows"]}
    assert sorted(by_id) == [1, 2, 3, 5, 6, 7, 8]
    assert {i: (wf["name"], wf["status"], wf["jobs_done"], wf["jobs_total"])
            for i, wf in by_id.items()} == {
        1: ("rnaseq", "Done", 3, 3),
        2: ("failing", "Error", 1, 4),
        3: ("up-to-date", "Done", 1, 1),
        5: ("live", "Running", 0, 2),
        6: ("stopped", "Cancelled", 1, 5),
        7: ("forgotten", "Stale", 2, 9),
        8: ("panoptes1-8", "Stale", 1, 1),
    }  # fmt: skip
    # Local Berlin times became UTC: +2 h in summer, +1 h in winter.
    assert by_id[1]["started_at"] == "2024-07-01T08:00:00.123456+00:00"
    assert by_id[1]["finished_at"] == "2024-07-01T08:30:00+00:00"
    assert by_id[2]["started_at"] == "2024-01-15T08:00:00+00:00"
    assert by_id[2]["finished_at"] == "2024-01-15T08:05:00+00:00"  # its last update
    assert by_id[3]["finished_at"] == "2024-01-15T10:00:01+00:00"
    assert by_id[5]["finished_at"] is None and by_id[7]["finished_at"] is None
    assert by_id[8]["updated_at"] == "2024-01-15T13:00:00+00:00"  # no updated_at: started_at

    jobs = (await get_json(client, "/api/workflow/1/jobs"))["jobs"]
    assert [(j["jobid"], j["rule"], j["status"]) for j in jobs] == [
        (1, "make_input", "Done"),
        (2, "process", "Done"),
        (0, "all", "Done"),
    ]
    first = jobs[0]
    assert (first["input"], first["output"], first["log"]) == ([], ["raw/a.txt"], ["logs/a.log"])
    assert first["wildcards"] == {"sample": "a"}
    assert first["message"] == "making a"
    assert first["shell_command"] == "mkdir -p raw && echo a > raw/a.txt"
    assert first["started_at"] == "2024-07-01T08:01:00+00:00"
    assert first["attempt"] == 1
    assert first["attempts"] == [
        {
            "attempt": 1,
            "status": "Done",
            "started_at": "2024-07-01T08:01:00+00:00",
            "finished_at": "2024-07-01T08:02:00+00:00",
            "error": None,
        }
    ]
    assert jobs[1]["output"] == ["proc/a.txt", "proc/a.idx"]
    assert jobs[1]["wildcards"] == {"sample": "a", "n": 2}
    assert jobs[2]["shell_command"] is None

    jobs = {j["jobid"]: j for j in (await get_json(client, "/api/workflow/2/jobs"))["jobs"]}
    assert sorted(jobs) == [3, 4]
    flaky = jobs[3]
    assert (flaky["status"], flaky["attempt"]) == ("Error", 2)
    assert [(a["attempt"], a["status"], a["started_at"]) for a in flaky["attempts"]] == [
        (1, "Error", "2024-01-15T08:01:00+00:00"),
        (2, "Error", "2024-01-15T08:03:00+00:00"),
    ]
    odd = jobs[4]
    assert (odd["input"], odd["output"], odd["log"]) == (["['unterminated"], [], [])
    assert odd["wildcards"] == {}
    assert odd["is_checkpoint"] is True

    live = (await get_json(client, "/api/workflow/5/jobs"))["jobs"]
    assert [(j["jobid"], j["input"], j["status"]) for j in live] == [
        (1, ["r1.fq", "r2.fq"], "Running")
    ]
    # The run that was live when 1.x stopped goes on under its id.
    response = await post_event(client, 5, {"level": "job_finished", "jobid": 1})
    assert response.status_code == 200
    job = await get_json(client, "/api/workflow/5/job/1")
    assert job["job"]["status"] == "Done"
    # New workflows are numbered after the old ones.
    assert (await create_workflow(client, workflow_id="after-upgrade"))["id"] == 9


async def check_events(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        events = (
            await conn.execute(
                select(Event.workflow_id, Event.type, Event.payload)
                .where(Event.type == "legacy.message")
                .order_by(Event.seq)
            )
        ).all()
    assert [tuple(event) for event in events] == [
        (1, "legacy.message", {"msg": '{"level": "shellcmd", "jobid": null, "msg": "echo a"}'}),
        (2, "legacy.message", {"msg": '{"msg": "no level"}'}),
    ]


async def serve(config: Config, now: datetime) -> None:
    app = create_app(config)
    async with app.test_app():
        await check_converted(app.test_client(), now)
        await check_events(app.extensions["panoptes"].engine)


async def test_panoptes1_sqlite_database_is_converted_in_place(tmp_path: Path, local_berlin: None):
    path = tmp_path / ".panoptes.db"
    now = datetime.now().replace(microsecond=0)  # local time, as 1.x wrote it
    build_panoptes1_sqlite(path, now)
    url = database_url(str(path))

    before, after = await upgraded(url)

    assert (before.kind, after.revision) == ("panoptes1", head_revision())
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert not tables & {"users", "workflow_jobs", "workflow_messages"}
    assert not any(name.startswith("panoptes1_") for name in tables)
    assert await schema_differences(url) == []
    await serve(Config(db_url=url, stale_check_seconds=0), now)


async def test_panoptes1_postgresql_database_is_converted_in_place(
    fresh_pg_url: str, local_berlin: None
):
    now = datetime.now().replace(microsecond=0)
    await build_panoptes1_postgresql(fresh_pg_url, now)

    before, after = await upgraded(fresh_pg_url)

    assert (before.kind, after.revision) == ("panoptes1", head_revision())
    engine = create_async_engine(fresh_pg_url)
    schemas = await scalar_rows(engine, "SELECT nspname FROM pg_namespace")
    tables = await scalar_rows(engine, "SELECT tablename FROM pg_tables")
    await engine.dispose()
    assert panoptes1.PG_SCHEMA not in schemas
    assert not set(tables) & {"users", "workflow_jobs", "workflow_messages"}
    assert await schema_differences(fresh_pg_url) == []
    await serve(Config(db_url=fresh_pg_url, stale_check_seconds=0), now)


async def test_panoptes1_database_before_1_2_has_no_updated_at(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(PANOPTES1_SQLITE_DDL[1])  # workflows, without the 1.2.0 column
        conn.execute(
            "INSERT INTO workflows VALUES (4, 'old', 'Done', 2, 2, "
            "'2021-03-01 10:00:00.000000', '2021-03-01 11:00:00.000000')"
        )
    conn.close()
    url = database_url(str(path))
    await upgraded(url)
    engine = make_engine(url)
    async with engine.connect() as conn:
        wf = (await conn.execute(select(Workflow.__table__))).one()
    await engine.dispose()
    assert (wf.id, wf.name, wf.status, wf.jobs_done) == (4, "old", "Done", 2)
    assert wf.updated_at == wf.finished_at  # its last sign of life: completed_at


async def test_failed_conversion_leaves_the_panoptes1_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / ".panoptes.db"
    build_panoptes1_sqlite(path, datetime.now())
    before = sorted(sqlite3.connect(path).iterdump())
    convert = panoptes1.convert

    def convert_then_fail(*args: Any, **kwargs: Any) -> None:
        convert(*args, **kwargs)  # everything copied, old tables not yet dropped
        raise RuntimeError("disk full")

    monkeypatch.setattr(panoptes1, "convert", convert_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        await upgraded(database_url(str(path)))
    assert sorted(sqlite3.connect(path).iterdump()) == before


def test_repr_values_are_parsed_never_evaluated(tmp_path: Path):
    marker = tmp_path / "evaluated"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    assert panoptes1.parse_list(code) == [code]
    assert panoptes1.parse_dict(code) == {}
    assert not marker.exists()
    assert panoptes1.parse_list("('a', 'b')") == ["a", "b"]
    assert panoptes1.parse_list("'single.txt'") == ["'single.txt'"]
    assert panoptes1.parse_list("[b'x', {1, 2}]") == ["x", [1, 2]]
    assert panoptes1.parse_dict("{'n': 1, 2: (3,)}") == {"n": 1, "2": [3]}
    assert panoptes1.parse_list("[" * 10000) == ["[" * 10000]  # too deep: kept as text


# --------------------------------------------------------------------------- command line


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "panoptes", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_db_upgrade_and_current_on_a_panoptes1_file(tmp_path: Path):
    path = tmp_path / ".panoptes.db"
    build_panoptes1_sqlite(path, datetime.now())

    current = run_cli("db", "current", "--db", str(path))
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == "none: the database is a panoptes 1.x database"

    upgrade = run_cli("--db", str(path), "db", "upgrade")  # --db before the command works too
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"upgraded to revision {head_revision()} (head)" in upgrade.stdout
    assert "it was a panoptes 1.x database" in upgrade.stdout

    assert run_cli("db", "current", "--db", str(path)).stdout.strip() == f"{head_revision()} (head)"
    again = run_cli("db", "upgrade", "--db", str(path))
    assert f"already at revision {head_revision()}" in again.stdout
    names = [row[0] for row in sqlite3.connect(path).execute("SELECT name FROM workflows")]
    assert len(names) == 7


def test_server_without_auto_migrate_refuses_an_old_schema(tmp_path: Path):
    path = tmp_path / ".panoptes.db"
    build_panoptes1_sqlite(path, datetime.now())
    refused = subprocess.run(
        [sys.executable, "-m", "panoptes", "--port", str(free_port()), "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PANOPTES_AUTO_MIGRATE": "0"},
    )
    assert refused.returncode == 1
    assert "a panoptes 1.x database" in refused.stderr
    assert "panoptes db upgrade" in refused.stderr
    assert "workflow_jobs" in [
        row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")
    ]

    assert run_cli("db", "upgrade", "--db", str(path)).returncode == 0
    server = LiveServer(db=path, env={"PANOPTES_AUTO_MIGRATE": "0"}).start()
    try:
        listed = httpx.get(f"{server.url}/api/workflows", timeout=10).json()
        assert listed["count"] == 7
    finally:
        server.stop()


# --------------------------------------------------------------------------- several workers


Worker = tuple[subprocess.Popen[bytes], Path, int]


def launch(db: str, count: int, log_dir: Path) -> list[Worker]:
    workers: list[Worker] = []
    for index in range(count):
        log, port = log_dir / f"worker{index}.log", free_port()
        with log.open("wb") as out:  # the process has its own copy of the file
            process = subprocess.Popen(
                [sys.executable, "-m", "panoptes", "--port", str(port), "--db", db],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        workers.append((process, log, port))
    return workers


def serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/service-info", timeout=1).is_success
    except httpx.HTTPError:
        return False


def wait_until_blocked(workers: list[Worker]) -> None:
    """Every worker is past its start-up and waiting for the migration lock, not serving."""
    deadline = time.monotonic() + 60
    while not all("panoptes 2" in log.read_text() for _, log, _ in workers):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    time.sleep(1.5)  # time to reach the lock, and to start serving if they did not wait
    for process, log, port in workers:
        assert process.poll() is None, log.read_text()
        assert not serving(port), f"a worker did not wait for the lock:\n{log.read_text()}"


def wait_until_serving(workers: list[Worker]) -> None:
    deadline = time.monotonic() + 60
    for process, log, port in workers:
        while not serving(port):
            assert process.poll() is None, f"a worker exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"a worker did not start:\n{log.read_text()}"
            time.sleep(0.05)


def stop_all(workers: list[Worker]) -> None:
    for process, _, _ in workers:
        process.terminate()
    for process, _, _ in workers:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def migrated_once(workers: list[Worker]) -> bool:
    logs = [log.read_text() for _, log, _ in workers]
    return sum("database schema upgraded" in log for log in logs) == 1


# Interpreter start-up takes longer than a migration, so workers merely launched together
# would mostly not overlap. Holding the migration lock until all four wait on it makes them
# race for real once it is released.


async def test_workers_starting_at_once_on_a_fresh_sqlite_file(tmp_path: Path):
    path = tmp_path / "fresh.db"
    lock = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    workers = launch(str(path), 4, tmp_path)
    try:
        try:
            wait_until_blocked(workers)
        finally:
            os.close(lock)
        wait_until_serving(workers)
        assert migrated_once(workers)
    finally:
        stop_all(workers)
    versions = sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall()
    assert versions == [(head_revision(),)]
    assert await schema_differences(database_url(str(path))) == []


async def test_workers_starting_at_once_on_a_fresh_postgresql_database(
    fresh_pg_url: str, tmp_path: Path
):
    engine = create_async_engine(fresh_pg_url)
    async with engine.connect() as holder:
        await holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        await holder.commit()
        workers = launch(fresh_pg_url, 4, tmp_path)
        try:
            try:
                wait_until_blocked(workers)
            finally:
                await holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
                await holder.commit()
            wait_until_serving(workers)
            assert migrated_once(workers)
        finally:
            stop_all(workers)
    assert await scalar_rows(engine, "SELECT version_num FROM alembic_version") == [head_revision()]
    await engine.dispose()
    assert await schema_differences(fresh_pg_url) == []
