"""Live events across processes: the hub's pump, the Redis and PostgreSQL backends, and real
servers (separate processes, and Hypercorn workers) sharing one database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.util import await_
from websockets.asyncio.client import ClientConnection, connect

from panoptes.config import Config, ConfigError
from panoptes.config import database_url as database_url_of
from panoptes.db import make_engine, make_sessionmaker
from panoptes.hub import Hub
from panoptes.hub.backends import (
    MemoryBackend,
    PostgresBackend,
    RedisBackend,
    SQLiteFileBackend,
    backend_for,
    channel_name,
)
from panoptes.models import Base, Event
from panoptes.store import Tx, Writer

from .conftest import ROOT, LiveServer, form_body, free_port, subscribed, throwaway_pg_database
from .test_feed import create, next_event, send, ws_url

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PG_PORT, REDIS_PORT = 5432, 6379
# Service derives its Redis channel from the database URL, and every test here makes a
# database of its own, so parallel runs on one Redis never hear each other.
REDIS = f"redis://127.0.0.1:{REDIS_PORT}/0"


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


needs_pg = pytest.mark.skipif(not _reachable(PG_PORT), reason="no PostgreSQL on 127.0.0.1:5432")
needs_redis = pytest.mark.skipif(not _reachable(REDIS_PORT), reason="no Redis on 127.0.0.1:6379")


# ---- the pump, in one process, over a stand-in events table and backend


class FakeEvents:
    """The events table: `after` sees what was committed when the read started."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.reads = 0
        self.gate: asyncio.Event | None = None  # holds reads open while set to an Event
        self.failures = 0

    def commit(self, workflow_id: int = 1, kind: str = "job.updated") -> int:
        seq = len(self.events) + 1
        self.events.append({"type": kind, "seq": seq, "workflow_id": workflow_id})
        return seq

    async def head(self) -> int:
        return len(self.events)

    async def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        if self.failures:
            self.failures -= 1
            raise OSError("the database went away")
        snapshot = [event for event in self.events if event["seq"] > seq][:limit]
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


class FakeBackend:
    name = "fake"
    crosses_processes = True
    may_cross_later = False
    connected = True

    def __init__(self) -> None:
        self.announced: list[int] = []

    async def start(self, on_notice: Any) -> None:
        pass

    async def announce(self, seq: int) -> None:
        self.announced.append(seq)

    async def stop(self) -> None:
        pass


async def eventually(condition: Any, wait: float = 5.0) -> None:
    deadline = time.monotonic() + wait
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


@pytest.fixture
async def pumped() -> AsyncIterator[tuple[Hub, FakeEvents, FakeBackend]]:
    events, backend = FakeEvents(), FakeBackend()
    hub = Hub(backend, events=events)
    await hub.start()
    yield hub, events, backend
    await hub.close()


async def test_pump_delivers_in_seq_order_and_coalesces_notices(
    pumped: tuple[Hub, FakeEvents, FakeBackend],
) -> None:
    hub, events, _ = pumped
    one, everything = subscribed(hub, 1), subscribed(hub, None)
    events.gate = asyncio.Event()
    for kind in ("workflow.created", "job.updated", "rule.updated"):
        events.commit(1, kind)
    events.commit(2, "job.updated")  # another workflow's
    hub.notice(4)
    await eventually(lambda: events.reads == 1)  # the first pass is reading
    # Committed while that pass runs, each with its notice: none may be lost, and the
    # twenty notices must cost one more pass, not twenty.
    for _ in range(20):
        hub.notice(events.commit(1, "job.updated"))
    events.gate.set()
    got = [await asyncio.wait_for(one.get(), 2) for _ in range(23)]
    assert [item.seq for item in got] == [1, 2, 3, *range(5, 25)]
    assert all(item.workflow_id == 1 for item in got)
    assert (await asyncio.wait_for(everything.get(), 2)).seq == 1
    assert everything._queue.empty()  # only workflow.* events for /ws subscribers
    assert events.reads == 2
    assert hub.delivered_seq == 24


async def test_pump_reads_in_pages_and_retries_a_failed_read(
    pumped: tuple[Hub, FakeEvents, FakeBackend],
) -> None:
    hub, events, _ = pumped
    hub.page, hub.retry_first = 3, 0.01
    subscription = subscribed(hub, 1)
    events.failures = 1
    for _ in range(10):
        events.commit()
    hub.notice(10)
    got = [await asyncio.wait_for(subscription.get(), 2) for _ in range(10)]
    assert [item.seq for item in got] == list(range(1, 11))
    assert events.reads == 1 + 4  # the failed read, then 3 + 3 + 3 + 1


async def test_own_commits_are_announced_and_pumped_without_waiting_for_the_echo(
    pumped: tuple[Hub, FakeEvents, FakeBackend],
) -> None:
    hub, events, backend = pumped
    subscription = subscribed(hub, 1)
    seq = events.commit()
    await hub.publish([events.events[-1]])
    assert (await asyncio.wait_for(subscription.get(), 2)).seq == seq
    await eventually(lambda: backend.announced == [seq])
    reads = events.reads
    hub.notice(seq)  # our own announcement coming back: nothing new, no read
    await asyncio.sleep(0.05)
    assert events.reads == reads


async def test_without_subscribers_the_pump_moves_on_without_reading_events(
    pumped: tuple[Hub, FakeEvents, FakeBackend],
) -> None:
    hub, events, _ = pumped
    for _ in range(50):
        hub.notice(events.commit())  # another process's commits, nobody listening here
    await eventually(lambda: hub.delivered_seq == 50)
    hub.notice(None)  # "maybe missed some": the head is read, not the events
    events.commit()
    await eventually(lambda: hub.delivered_seq == 51)
    assert events.reads == 0
    # A subscriber that comes now gets what commits after it, read from the table.
    subscription = subscribed(hub, 1)
    hub.notice(events.commit())
    assert (await asyncio.wait_for(subscription.get(), 2)).seq == 52
    assert events.reads == 1


async def test_a_subscriber_that_arrives_while_the_pump_reads_the_head_misses_nothing(
    pumped: tuple[Hub, FakeEvents, FakeBackend],
) -> None:
    hub, events, _ = pumped
    looking, answer = asyncio.Event(), asyncio.Event()
    head = events.head

    async def slow_head() -> int:
        looking.set()
        await answer.wait()
        return await head()

    events.head = slow_head  # type: ignore[method-assign]
    events.commit()
    hub.notice(None)
    await asyncio.wait_for(looking.wait(), 2)
    # The feed subscribes, then reads the head for its hello (1); then 2 commits; then the
    # pump's head query answers 2. Jumping to 2 would lose event 2 for this subscriber.
    subscription = subscribed(hub, 1)
    hello = await head()
    events.commit()
    answer.set()
    got = await asyncio.wait_for(subscription.get(), 2)
    while got.seq <= hello:  # the feed skips what its hello already covered
        got = await asyncio.wait_for(subscription.get(), 2)
    assert got.seq == 2


async def test_memory_backend_delivers_directly_without_reading() -> None:
    hub = Hub(MemoryBackend())  # no events table at all: it must not need one
    await hub.start()
    subscription = subscribed(hub, 3)
    message = {"type": "job.updated", "seq": 7, "workflow_id": 3, "job": {"jobid": 1}}
    await hub.publish([message])
    item = await asyncio.wait_for(subscription.get(), 5)  # on the next pass of the loop
    assert (item.seq, item.type, json.loads(item.text)) == (7, "job.updated", message)
    assert hub.status == {
        "backend": "memory",
        "connected": True,
        "subscribers": 1,
        "delivered_seq": 7,
    }
    await hub.close()


def test_backend_is_chosen_by_scheme_and_unknown_schemes_are_refused() -> None:
    db = "sqlite+aiosqlite:////data/panoptes.db"
    # No broker: processes on an SQLite file hear each other through it; elsewhere, one.
    shared = backend_for("memory://", db)
    assert isinstance(shared, SQLiteFileBackend) and str(shared.path) == "/data/panoptes.db"
    assert isinstance(backend_for("memory://", "sqlite+aiosqlite:///:memory:"), MemoryBackend)
    assert isinstance(backend_for("memory://", "postgresql+asyncpg://u@h/db"), MemoryBackend)
    for url in ("redis://r:6379/2", "rediss://r:6380/0"):
        assert isinstance(backend_for(url, db), RedisBackend)
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+asyncpg://u@h/db"):
        backend = backend_for(url, db)
        assert isinstance(backend, PostgresBackend)
        assert backend.dsn.startswith(("postgresql://", "postgres://"))
    with pytest.raises(ConfigError, match="PANOPTES_BROADCAST_URL") as refused:
        Config.from_env({"PANOPTES_BROADCAST_URL": "kafka://user:secret@k:9092"})
    assert "secret" not in str(refused.value)
    with pytest.raises(ConfigError):
        Config(broadcast_url="redis-but-no-scheme")


def test_channel_belongs_to_the_database_and_can_be_named() -> None:
    pg = "postgresql+asyncpg://panoptes:one@db/panoptes"
    assert channel_name(pg) == channel_name("postgresql+asyncpg://panoptes:two@db/panoptes")
    assert channel_name(pg) != channel_name("postgresql+asyncpg://panoptes:one@db/other")
    backend = backend_for("redis://r:6379/0?channel=lab-a&socket_timeout=5", pg)
    assert isinstance(backend, RedisBackend)
    assert backend.channel == "lab-a"
    assert backend.url == "redis://r:6379/0?socket_timeout=5"
    assert backend_for("redis://r:6379/0", pg).channel == channel_name(pg)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="63 bytes"):
        backend_for(f"postgresql://u@h/db?channel={'x' * 64}", pg)


# ---- writers in several processes take turns


@pytest.fixture(params=[pytest.param("postgresql", marks=needs_pg), "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield database_url_of(str(tmp_path / "turns.db"))
        return
    with throwaway_pg_database() as url:
        yield database_url_of(url)


async def test_writers_of_two_processes_take_turns(database_url: str) -> None:
    """While one writer's transaction is open, another's neither reads nor commits: its
    reads see the first one's commit, and seqs become visible only in order."""
    engines = [make_engine(database_url) for _ in range(3)]
    async with engines[2].begin() as conn:
        await conn.run_sync(Base.metadata.create_all)

    async def publish(messages: list[dict[str, Any]]) -> None:
        pass

    writers = [Writer(engine, publish) for engine in engines[:2]]
    for writer in writers:
        await writer.start()
    # Operations run synchronously: on an SQLite file in the writer's thread, elsewhere in
    # a greenlet on the event loop (run_sync), where waiting must go through the loop.
    holding, release = threading.Event(), threading.Event()

    def wait_for_release() -> None:
        if asyncio_running():
            await_(asyncio.to_thread(release.wait, 10))
        else:
            release.wait(10)

    def hold(tx: Tx) -> int:
        tx.emit("workflow.updated", None, {"by": "first"})
        tx.session.flush()  # it has its seq
        holding.set()
        wait_for_release()
        return tx.events[-1].seq

    def look(tx: Tx) -> tuple[int, int]:
        seen = tx.session.scalar(select(func.count()).select_from(Event))
        tx.emit("workflow.updated", None, {"by": "second"})
        tx.session.flush()
        return tx.events[-1].seq, seen or 0

    async def visible() -> list[int]:
        async with make_sessionmaker(engines[2])() as session:
            return list(await session.scalars(select(Event.seq)))

    try:
        first = asyncio.create_task(writers[0].submit(hold))
        assert await asyncio.to_thread(holding.wait, 10)
        second = asyncio.create_task(writers[1].submit(look))
        await asyncio.sleep(0.3)
        assert await visible() == [], "the second writer committed during the first's turn"
        release.set()
        first_seq, (second_seq, seen) = await first, await second
        assert second_seq > first_seq
        assert seen == 1, "the second writer read before the first committed"
    finally:
        release.set()
        for writer in writers:
            await writer.stop()
        for engine in engines:
            await engine.dispose()


def asyncio_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# ---- the real backends losing their connection


class Relay:
    """A TCP relay to a real service, which the test can cut and restore."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.up = True
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self._writers:
            writer.transport.abort()
        self._writers = []

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@pytest.mark.parametrize(
    ("scheme", "port"),
    [
        pytest.param("redis", REDIS_PORT, marks=needs_redis),
        pytest.param("postgresql", PG_PORT, marks=needs_pg),
    ],
)
async def test_backend_reconnects_and_catches_up_on_what_it_missed(scheme: str, port: int) -> None:
    relay = Relay(port)
    await relay.start()
    path = "/0" if scheme == "redis" else "/postgres"
    user = "" if scheme == "redis" else "postgres@"
    query = f"?channel=panoptes-test-{uuid.uuid4().hex}"
    db = "sqlite+aiosqlite:////unused.db"
    events = FakeEvents()
    through_relay = f"{scheme}://{user}127.0.0.1:{relay.port}{path}{query}"
    hub = Hub(backend_for(through_relay, db), events=events)
    # Another process's backend, straight to the service.
    other = backend_for(f"{scheme}://{user}127.0.0.1:{port}{path}{query}", db)
    await other.start(lambda seq: None)
    await hub.start()
    try:
        await eventually(lambda: hub.healthy and other.connected)
        subscription = subscribed(hub, 1)
        await other.announce(events.commit())
        assert (await asyncio.wait_for(subscription.get(), 5)).seq == 1

        relay.cut()
        await eventually(lambda: not hub.healthy)
        missed = [events.commit(), events.commit()]
        await other.announce(missed[-1])  # nobody hears it through the relay
        await asyncio.sleep(0.3)
        assert subscription._queue.empty()
        assert hub.status["connected"] is False

        relay.up = True
        got = [await asyncio.wait_for(subscription.get(), 10) for _ in missed]
        assert [item.seq for item in got] == missed
        assert hub.healthy
        await other.announce(events.commit())  # and it listens again
        assert (await asyncio.wait_for(subscription.get(), 5)).seq == 4
    finally:
        await hub.close()
        await other.stop()
        await relay.close()


# ---- real servers sharing a database


@dataclass
class Shared:
    """A database several servers use, and what its events table holds."""

    db: str | Path

    def server(self, tmp_path: Path, broadcast: str) -> LiveServer:
        env = {"PANOPTES_BROADCAST_URL": broadcast, "PANOPTES_WS_PING_SECONDS": "0.5"}
        if isinstance(self.db, Path):
            return LiveServer(db=self.db, env=env)
        return LiveServer(db=tmp_path / "pg", db_url=self.db, env=env)

    async def stored(self, workflow_id: int | None = None) -> list[tuple[int, str]]:
        """The feed's view of the table: one workflow's events, or every workflow.* event."""
        where = "workflow_id = $1" if workflow_id is not None else "type LIKE 'workflow.%'"
        sql = f"SELECT seq, type FROM events WHERE {where} ORDER BY seq"
        args = [] if workflow_id is None else [workflow_id]
        if isinstance(self.db, Path):
            with sqlite3.connect(self.db) as db:
                rows = list(db.execute(sql.replace("$1", "?"), args))
        else:
            conn = await asyncpg.connect(self.db)
            try:
                rows = [tuple(row) for row in await conn.fetch(sql, *args)]
            finally:
                await conn.close()
        return [(seq, kind) for seq, kind in rows]


SETUPS = {
    "postgresql+redis": pytest.param(("postgresql", "redis"), marks=[needs_pg, needs_redis]),
    "postgresql+listen": pytest.param(("postgresql", "postgresql"), marks=needs_pg),
    "sqlite+redis": pytest.param(("sqlite", "redis"), marks=needs_redis),
}


@pytest.fixture(scope="module", params=list(SETUPS.values()), ids=list(SETUPS))
def two_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Shared, LiveServer, LiveServer]]:
    """Two servers on one database; the tests share them, each with workflows of its own."""
    database, broadcast = request.param
    tmp_path = tmp_path_factory.mktemp(f"{database}-{broadcast}")
    with ExitStack() as cleanup:
        if database == "sqlite":
            shared = Shared(tmp_path / "shared.db")
        else:
            shared = Shared(cleanup.enter_context(throwaway_pg_database()))
        url = str(shared.db) if broadcast == "postgresql" else REDIS
        # One after the other: the first makes the schema.
        servers = []
        for _ in range(2):
            servers.append(shared.server(tmp_path, url))
            cleanup.callback(servers[-1].stop)
            servers[-1].start()
        yield shared, servers[0], servers[1]
        for server in servers:
            assert server.stop() == 0, server.log()
            assert "Traceback" not in server.log(), server.log()


async def collect(ws: ClientConnection, count: int) -> list[tuple[int, str]]:
    return [(event["seq"], event["type"]) for event in [await next_event(ws) for _ in range(count)]]


def after(events: list[tuple[int, str]], seq: int) -> list[tuple[int, str]]:
    return [event for event in events if event[0] > seq]


async def test_events_posted_to_one_server_reach_subscribers_of_the_other(
    two_servers: tuple[Shared, LiveServer, LiveServer],
) -> None:
    shared, a, b = two_servers
    async with httpx.AsyncClient(base_url=b.url, timeout=30) as to_b:
        workflow_id = await create(to_b)
        async with (
            connect(ws_url(a, f"/ws/workflow/{workflow_id}")) as one,
            connect(ws_url(a, "/ws")) as everything,
        ):
            hello, hello_all = await next_event(one), await next_event(everything)
            await send(to_b, workflow_id, {"level": "progress", "done": 0, "total": 2})
            await send(to_b, workflow_id, {"level": "job_info", "jobid": 1, "name": "map"})
            await send(to_b, workflow_id, {"level": "job_finished", "jobid": 1})
            expected = after(await shared.stored(workflow_id), hello["head"])
            assert len(expected) >= 4
            seen = await collect(one, len(expected))
            assert seen == expected
            expected_all = after(await shared.stored(), hello_all["head"])
            assert expected_all, "progress changed the workflow"
            assert await collect(everything, len(expected_all)) == expected_all
        last = seen[-1][0]

        # Nobody listens on A while these happen on B; A replays them from the database.
        await send(to_b, workflow_id, {"level": "job_info", "jobid": 2, "name": "reduce"})
        await send(to_b, workflow_id, {"level": "progress", "done": 1, "total": 2})
        missed = after(await shared.stored(workflow_id), last)
        async with connect(ws_url(a, f"/ws/workflow/{workflow_id}?since={last}")) as again:
            assert (await next_event(again))["type"] == "hello"
            assert await collect(again, len(missed)) == missed
            # Then live from B, continuing exactly where the replay stopped.
            await send(to_b, workflow_id, {"level": "job_finished", "jobid": 2})
            live = after(await shared.stored(workflow_id), missed[-1][0])
            assert await collect(again, len(live)) == live


async def test_concurrent_posts_to_both_servers_reach_everyone_in_seq_order(
    two_servers: tuple[Shared, LiveServer, LiveServer],
) -> None:
    shared, a, b = two_servers
    per_server = 150
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=30) as to_a,
        httpx.AsyncClient(base_url=b.url, timeout=30) as to_b,
    ):
        workflow_id = await create(to_a)
        sockets = [
            await connect(ws_url(server, f"/ws/workflow/{workflow_id}")) for server in (a, b, a, b)
        ]
        hellos = [(await next_event(ws))["head"] for ws in sockets]
        received: list[list[tuple[int, str]]] = [[] for _ in sockets]
        rule_totals: list[int] = []

        async def listen(ws: ClientConnection, into: list[tuple[int, str]]) -> None:
            while True:
                event = await next_event(ws, wait=60)
                into.append((event["seq"], event["type"]))
                if event["type"] == "rule.updated" and ws is sockets[0]:
                    rule_totals.append(event["rule"]["total"])

        pairs = zip(sockets, received, strict=True)
        listeners = [asyncio.create_task(listen(ws, into)) for ws, into in pairs]

        async def post_all(http: httpx.AsyncClient, first_jobid: int) -> None:
            gate = asyncio.Semaphore(8)

            async def one(jobid: int) -> None:
                async with gate:
                    msg = {"level": "job_info", "jobid": jobid, "name": "align"}
                    await send(http, workflow_id, msg)

            await asyncio.gather(*(one(first_jobid + i) for i in range(per_server)))

        await asyncio.gather(post_all(to_a, 0), post_all(to_b, per_server))
        stored = await shared.stored(workflow_id)
        # One job.updated per post (each names another job); the rule's counts go out once
        # per batch, as a batch announces each object it changed once.
        assert [kind for _, kind in stored].count("job.updated") == 2 * per_server
        try:
            await eventually(
                lambda: all(
                    len(got) >= len(after(stored, hello))
                    for got, hello in zip(received, hellos, strict=True)
                ),
                wait=30,
            )
        finally:
            for task in listeners:
                task.cancel()
            for ws in sockets:
                await ws.close()
    for got, hello in zip(received, hellos, strict=True):
        seqs = [seq for seq, _ in got]
        assert seqs == sorted(set(seqs)), "strictly increasing"
        assert got == after(stored, hello), "every stored event, no gap, nothing else"
    # Writers in both processes took turns: the last count saw every job.
    assert rule_totals[-1] == 2 * per_server


# ---- Worker processes behind one port (hypercorn --workers 2, uvicorn --workers 2)


def _children(pid: int) -> list[int]:
    """The server's worker processes (not multiprocessing's resource tracker, which
    uvicorn's spawned workers come with)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with suppress(OSError):
                if b"resource_tracker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    continue
            found.append(int(child))
    return found


def _worker_of(client_port: int, server_port: int, workers: list[int]) -> int | None:
    """Which worker holds the server side of the loopback connection from client_port."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port) and fields[9] != "0":
            inodes.add(f"socket:[{fields[9]}]")
    for pid in workers:
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None


async def _owner(client_port: int, server_port: int, workers: list[int]) -> int:
    for _ in range(200):
        owner = _worker_of(client_port, server_port, workers)
        if owner is not None:
            return owner
        await asyncio.sleep(0.01)
    raise AssertionError(f"no worker holds the connection from port {client_port}")


async def _post_on_new_connection(
    port: int, workflow_id: int, msg: dict[str, Any], workers: list[int]
) -> int:
    """POST over a fresh connection; the worker that answered it."""
    body = form_body(workflow_id, msg)
    head = (
        f"POST /update_workflow_status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {FORM['Content-Type']}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    owner, _ = await _exchange(port, (head + body).encode(), workers)
    return owner


async def _exchange(port: int, request: bytes, workers: list[int]) -> tuple[int, str]:
    """One request over a fresh connection: the worker that answered it, and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        assert head.split()[1] == "200", head
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        body = (await reader.readexactly(length)).decode()
        return await _owner(writer.get_extra_info("sockname")[1], port, workers), body
    finally:
        writer.close()


async def _subscribe_on_both_workers(
    port: int, workflow_id: int, workers: list[int], at_least: int
) -> list[ClientConnection]:
    """Feed subscribers until both workers hold some (the kernel picks who accepts)."""
    sockets: list[ClientConnection] = []
    by_worker: dict[int, int] = {}
    url = f"ws://127.0.0.1:{port}/ws/workflow/{workflow_id}"
    try:
        while len(by_worker) < 2 or len(sockets) < at_least:
            assert len(sockets) < 80, f"every subscriber landed on one worker: {by_worker}"
            # A few at once: one by one, the worker that just accepted tends to win the
            # next one too, and then the other may not get one for dozens of connections.
            batch = await asyncio.gather(*(connect(url) for _ in range(4)))
            sockets += batch
            for ws in batch:
                owner = await _owner(ws.local_address[1], port, workers)
                by_worker[owner] = by_worker.get(owner, 0) + 1
    except BaseException:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        raise
    return sockets


@pytest.fixture(params=["hypercorn", "uvicorn"])
def server_workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Shared, int, subprocess.Popen[bytes]]]:
    shared = Shared(tmp_path / "workers.db")
    port = free_port()
    env = {
        **os.environ,
        "PANOPTES_DB_URL": str(shared.db),
        "PANOPTES_BROADCAST_URL": REDIS,
        "PANOPTES_WS_PING_SECONDS": "0.5",
        # Metrics of both workers in one scrape (README, "Several processes").
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    (tmp_path / "prometheus").mkdir()
    log = (tmp_path / "workers.log").open("wb")
    if request.param == "hypercorn":
        command = [sys.executable, "-m", "hypercorn", "--workers", "2"]
        command += ["--bind", f"127.0.0.1:{port}", "panoptes.app:create_app()"]
    else:  # uvicorn's own worker processes, as a site may run them
        command = [sys.executable, "-m", "uvicorn", "--workers", "2", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(port), "panoptes.app:create_app"]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "workers.log").read_text()
            with suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/api/service-info").status_code == 200:
                    break
            assert time.monotonic() < deadline, (tmp_path / "workers.log").read_text()
            time.sleep(0.1)
        yield shared, port, process
    finally:
        workers = _children(process.pid)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for pid in workers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()


@needs_redis
async def test_server_workers_share_live_events(
    server_workers: tuple[Shared, int, subprocess.Popen[bytes]],
) -> None:
    shared, port, process = server_workers
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        workflow_id = await create(http)
    await eventually(lambda: len(_children(process.pid)) >= 2, wait=10)
    workers = _children(process.pid)

    sockets = await _subscribe_on_both_workers(port, workflow_id, workers, at_least=4)
    hellos = [(await next_event(ws))["head"] for ws in sockets]

    # Posts on fresh connections until both workers have written some.
    writers: dict[int, int] = {}
    jobid = 0
    while min(writers.values(), default=0) < 3 or len(writers) < 2 or jobid < 10:
        assert jobid < 100, f"every post landed on one worker: {writers}"
        msg = {"level": "job_info", "jobid": jobid, "name": "sort"}
        owner = await _post_on_new_connection(port, workflow_id, msg, workers)
        writers[owner] = writers.get(owner, 0) + 1
        jobid += 1

    stored = await shared.stored(workflow_id)
    for ws, hello in zip(sockets, hellos, strict=True):
        expected = after(stored, hello)
        assert await collect(ws, len(expected)) == expected
        await ws.close()


@needs_redis
async def test_metrics_from_any_worker_count_every_worker(
    server_workers: tuple[Shared, int, subprocess.Popen[bytes]],
) -> None:
    """A scrape reaches one worker at random; whichever it is, it reports all of them."""
    _, port, process = server_workers
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        workflow_id = await create(http)
    await eventually(lambda: len(_children(process.pid)) >= 2, wait=10)
    workers = _children(process.pid)

    stored: dict[int, int] = {}
    while len(stored) < 2 or sum(stored.values()) < 6:
        assert sum(stored.values()) < 100, f"every post landed on one worker: {stored}"
        msg = {"level": "job_info", "jobid": sum(stored.values()), "name": "sort"}
        owner = await _post_on_new_connection(port, workflow_id, msg, workers)
        stored[owner] = stored.get(owner, 0) + 1
    sockets = await _subscribe_on_both_workers(port, workflow_id, workers, at_least=3)

    async def scrape() -> tuple[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
        request = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        owner, text = await _exchange(port, request, workers)
        return owner, {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def scrape_until_both_answered(subscribers: int) -> None:
        answered: dict[int, int] = {}
        while len(answered) < 2 or min(answered.values()) < 2:
            assert sum(answered.values()) < 60, f"every scrape landed on one worker: {answered}"
            owner, samples = await scrape()
            answered[owner] = answered.get(owner, 0) + 1
            assert samples[("panoptes_events_ingested_total", (("outcome", "stored"),))] == sum(
                stored.values()
            ), f"worker {owner} of {stored}"
            assert samples[("panoptes_workflows_registered_total", ())] == 1
            assert samples[("panoptes_websocket_subscribers", ())] == subscribers
            assert samples[("panoptes_workflows", (("status", "Running"),))] == 1
            count = samples[("panoptes_ingest_seconds_count", ())]
            assert count == sum(stored.values())
            # What runs is said once, not summed over the workers.
            build = [v for (name, _), v in samples.items() if name == "panoptes_build_info"]
            assert build == [1]

    try:
        await scrape_until_both_answered(len(sockets))
        await sockets.pop().close()
        deadline = time.monotonic() + 10
        while (await scrape())[1][("panoptes_websocket_subscribers", ())] != len(sockets):
            assert time.monotonic() < deadline, "the closed subscriber is still counted"
        await scrape_until_both_answered(len(sockets))
    finally:
        for ws in sockets:
            await ws.close()
