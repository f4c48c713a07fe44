"""Fixtures: a fresh app on a real SQLite file, and a real server process on a free port."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from panoptes.app import create_app
from panoptes.config import Config, database_url
from panoptes.hub import Hub, Subscription

ROOT = Path(__file__).resolve().parent.parent
# Real recorded client traffic (one HTTP request per line) and the Snakefile it came from.
CAPTURES = ROOT / "tests" / "captures"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "panoptes.db"


# The API, ingest and capture suites run once on SQLite and once on a real PostgreSQL, in a
# throwaway database made for this test run (PANOPTES_TEST_PG names the server to use).
PG_SERVER = os.environ.get("PANOPTES_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
BACKENDS = ["sqlite", "postgresql"]


def pg_admin(statement: str) -> None:
    """Run one statement on the server's maintenance database (from any thread or loop)."""

    async def run() -> None:
        connection = await asyncpg.connect(f"{PG_SERVER}/postgres")
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    with ThreadPoolExecutor(1) as pool:  # this may be called inside a running event loop
        pool.submit(asyncio.run, run()).result()


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database of its own, dropped afterwards."""
    name = f"panoptes_test_{os.getpid()}_{secrets.token_hex(6)}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"panoptes_test_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER} is not usable ({exc}); .ci/run starts it")
    yield f"{PG_SERVER}/{name}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def empty_pg_database(url: str) -> None:
    """Every table emptied and every id counter back at 1, as in a new database."""
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@pytest.fixture(params=BACKENDS)
async def config(request: pytest.FixtureRequest, db_path: Path) -> Config:
    if request.param == "sqlite":
        return Config(db_url=database_url(str(db_path)), stale_check_seconds=0)
    url: str = request.getfixturevalue("pg_url")
    await empty_pg_database(url)
    return Config(db_url=database_url(url), stale_check_seconds=0)


@pytest.fixture
async def app(config: Config) -> AsyncIterator[Quart]:
    app = create_app(config)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> Client:
    return app.test_client()


_held: list[AbstractContextManager[Subscription]] = []


def subscribed(hub: Hub, workflow_id: int | None = None) -> Subscription:
    """A subscription held until the test ends."""
    held = hub.subscribe(workflow_id)
    _held.append(held)  # a context nobody holds is closed, and its subscription ended
    return held.__enter__()


@pytest.fixture(autouse=True)
def _release_subscriptions() -> Iterator[None]:
    yield
    while _held:
        _held.pop().__exit__(None, None, None)


def form_body(workflow_id: int | str, msg: dict[str, Any]) -> str:
    """An update exactly as the Snakemake 9 plugin encodes it."""
    return urlencode({"msg": json.dumps(msg), "timestamp": time.asctime(), "id": str(workflow_id)})


async def post_event(client: Client, workflow_id: int, msg: dict[str, Any]) -> Any:
    response = await client.post(
        "/update_workflow_status",
        data=form_body(workflow_id, msg),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return response


async def create_workflow(client: Client, **query: str) -> dict[str, Any]:
    response = await client.get("/create_workflow", query_string=query)
    assert response.status_code == 200, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def send_recorded(client: Client, request: dict[str, Any]) -> Any:
    """Send one request of a capture (tests/captures) as the client sent it; its answer,
    which must be 2xx."""
    headers = {"Content-Type": request["content_type"]} if request["content_type"] else {}
    response = await client.open(
        request["path"],
        method=request["method"],
        query_string=request["query"] or None,
        data=request["body"].encode(),
        headers=headers,
    )
    text = await response.get_data(as_text=True)
    assert 200 <= response.status_code < 300, (request["seq"], response.status_code, text)
    return response


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """A real `panoptes` process serving on a loopback port."""

    db: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # Another database than the SQLite file `db` (whose name then only places the log).
    db_url: str | None = None
    # More flags for `panoptes` (--access-log FILE, ...).
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> LiveServer:
        self.log_path = self.db.with_suffix(f".{self.port}.log")
        env = {**os.environ, **self.env}
        database = self.db_url or str(self.db)
        with self.log_path.open("wb") as log:  # the process has its own copy of the file
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "panoptes", "--port", str(self.port)),
                    *("--db", database, *self.args),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"panoptes exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/service-info", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"panoptes did not start:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(db=tmp_path / "live.db").start()
    yield server
    server.stop()
