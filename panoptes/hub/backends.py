"""Cross-process backends: how one process tells the others "events up to seq N are committed".

The database is the source of truth for events and their order; a backend carries only
that small notice (never an event body: PostgreSQL NOTIFY payloads stop at 8000 bytes).
Every process's hub, on a notice, reads the new events from the database itself (fanout.py).

- `memory://`: no broker. With the database in memory or on a server, one process: the hub
  hands its own events straight over. On an SQLite file, processes sharing the file (two
  `panoptes`, `hypercorn --workers N`) hear each other's commits through the file itself
  (SQLiteFileBackend): nothing to set up, within POLL_SECONDS.
- `redis://host:port/n` (or `rediss://`): Redis pub/sub on one channel.
- `postgresql://...`: PostgreSQL LISTEN/NOTIFY on one dedicated connection.

The channel is derived from the database URL, so deployments sharing a Redis (or a
PostgreSQL server used only for notices) never hear each other; processes of one deployment
must therefore spell PANOPTES_DB_URL the same way, or name a channel with `?channel=...`.
A backend that loses its connection reconnects with backoff and, once it listens again,
reports a notice of `None` ("something may have been missed"), so the hub catches up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy.engine import make_url

from ..config import ConfigError, broadcast_scheme
from ..db import sqlite_file

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# Called with the highest committed seq a notice names, or None after a (re)connect.
OnNotice = Callable[[int | None], None]

# Seconds between retries (reconnecting, re-reading, re-announcing) grow from first to max.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
# How often an idle listening connection is checked, so a silent loss is noticed.
KEEPALIVE_SECONDS = 10.0


class Backend(Protocol):
    name: str
    # False: this process is the only writer, and its hub delivers its own events directly.
    # It may turn True while the server runs (SQLiteFileBackend), never back.
    crosses_processes: bool
    # Whether crosses_processes may turn True later: the hub then runs its pump from the start.
    may_cross_later: bool

    @property
    def connected(self) -> bool: ...
    async def start(self, on_notice: OnNotice) -> None: ...
    async def announce(self, seq: int) -> None: ...
    async def stop(self) -> None: ...


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a backend's task, if it has one, and wait for it to end."""
    if task is not None:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


class MemoryBackend:
    name = "memory"
    crosses_processes = False
    may_cross_later = False
    connected = True

    async def start(self, on_notice: OnNotice) -> None:
        pass

    async def announce(self, seq: int) -> None:
        pass

    async def stop(self) -> None:
        pass


class SQLiteFileBackend:
    """memory:// on an SQLite file. Alone on the file, a process delivers its own events
    directly, as with memory://. Every server on the file holds a shared POSIX lock on
    `<database>-servers.lock`; one that can upgrade it to exclusive is alone. Once another
    process is there (checked at start and at every poll) this one delivers, for good, what
    it reads from the events table, as with a broker, and learns of other processes' commits
    from the file: `PRAGMA data_version` on a connection of its own changes whenever another
    connection has committed. That reads the WAL index in shared memory, not the disk, so
    polling it every `poll_seconds` costs next to nothing. A process that finds others at
    start waits `settle_seconds` before it writes, so none of them delivers directly past
    an event of the newcomer's."""

    name = "sqlite"
    crosses_processes = False  # until another process opens the file
    may_cross_later = True
    poll_seconds = 0.25
    # How long a process that finds others on the file waits before it may write, so that
    # each of them has polled and turned to reading its events from the table.
    settle_seconds = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._ok = True
        self._lock_fd: int | None = None

    @property
    def connected(self) -> bool:
        return self._ok

    async def start(self, on_notice: OnNotice) -> None:
        await asyncio.to_thread(self._hold_lock)
        if not self._alone():
            self._share()
            await asyncio.sleep(self.settle_seconds)
        self._version = await asyncio.to_thread(self._read)
        self._task = asyncio.create_task(self._poll(on_notice), name="panoptes-sqlite-notices")

    def _hold_lock(self) -> None:
        if fcntl is None:  # no POSIX locks (Windows): take others as always there
            self.crosses_processes = True
            return
        self._lock_fd = os.open(f"{self.path}-servers.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.lockf(self._lock_fd, fcntl.LOCK_SH, 1, 0)

    def _alone(self) -> bool:
        """Whether no other process holds the lock: this process's own shared lock becomes
        exclusive if so (POSIX locks belong to the process), and shared again at once."""
        if self._lock_fd is None or fcntl is None:
            return not self.crosses_processes
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        except OSError:
            return False
        fcntl.lockf(self._lock_fd, fcntl.LOCK_SH, 1, 0)
        return True

    def _share(self) -> None:
        if not self.crosses_processes:
            log.info(
                "another panoptes process serves %s: live events now go through the file",
                self.path,
            )
        self.crosses_processes = True

    def _read(self) -> int:
        if self._connection is None:
            self._connection = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        version: int = self._connection.execute("PRAGMA data_version").fetchone()[0]
        return version

    async def _poll(self, on_notice: OnNotice) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            if not self.crosses_processes and not self._alone():
                self._share()
                on_notice(None)
            if not self.crosses_processes:
                continue
            try:
                version = await asyncio.to_thread(self._read)
            except sqlite3.Error as exc:
                if self._ok:
                    log.warning("broadcast: cannot read %s (%s); retrying", self.path, exc)
                self._ok = False
                continue
            if not self._ok:
                self._ok = True
                on_notice(None)  # what came meanwhile
            if version != self._version:
                self._version = version
                on_notice(None)  # committed by some connection: the pump looks

    async def announce(self, seq: int) -> None:
        pass  # the commit itself is the notice

    async def stop(self) -> None:
        await _cancelled(self._task)
        self._task = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # which releases the lock
            self._lock_fd = None


def channel_name(db_url: str) -> str:
    """One channel per database: a hash of its URL without the password."""
    identity = make_url(db_url).render_as_string(hide_password=True)
    return "panoptes:events:" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def _split_channel(url: str, db_url: str) -> tuple[str, str]:
    """The URL without a `channel` query parameter, and the channel it names (or derived)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "channel" and value]
    rest = urlencode([(key, value) for key, value in query if key != "channel"])
    return urlunsplit(parts._replace(query=rest)), named[-1] if named else channel_name(db_url)


def _parse_seq(payload: str | bytes) -> int | None:
    try:
        return int(payload)
    except ValueError:
        log.warning("ignoring a broadcast notice that is not a seq: %r", payload[:100])
        return None


class _Listener:
    """A reconnecting listen loop; subclasses say how to connect and listen once."""

    name = ""
    crosses_processes = True
    may_cross_later = False

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._on_notice: OnNotice = lambda seq: None
        self._task: asyncio.Task[None] | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self, on_notice: OnNotice) -> None:
        self._on_notice = on_notice
        self._task = asyncio.create_task(self._listen_forever(), name=f"panoptes-{self.name}")

    async def stop(self) -> None:
        await _cancelled(self._task)
        self._task = None
        self._connected = False

    def _listening(self) -> None:
        """The subscription is in place: from now on no notice is missed; catch up."""
        self._connected = True
        log.info("broadcast: listening on %s channel %s", self.name, self.channel)
        self._on_notice(None)

    def _notice(self, payload: str | bytes) -> None:
        seq = _parse_seq(payload)
        if seq is not None:
            self._on_notice(seq)

    async def _listen_forever(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._connected:
                    backoff = BACKOFF_FIRST
                log.warning(
                    "broadcast: %s connection lost or refused (%s: %s); retrying in %.1f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            finally:
                self._connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _listen_once(self) -> None:
        raise NotImplementedError


class RedisBackend(_Listener):
    name = "redis"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(channel)
        self.url = url
        self._client: aioredis.Redis | None = None

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # No silent retries inside redis-py: a lost connection must reach the listen
            # loop, which catches up after reconnecting (pub/sub keeps nothing for us).
            self._client = aioredis.from_url(
                self.url,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=5,
                socket_keepalive=True,
                health_check_interval=KEEPALIVE_SECONDS,
            )
        return self._client

    async def _listen_once(self) -> None:
        async with self._redis().pubsub() as pubsub:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=KEEPALIVE_SECONDS)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._listening()
                elif message["type"] == "message":
                    self._notice(message["data"])

    async def announce(self, seq: int) -> None:
        await self._redis().publish(self.channel, str(seq))

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class PostgresBackend(_Listener):
    """LISTEN on one connection, which also sends the NOTIFYs.

    The NOTIFY is sent after the write transaction committed, not inside it: the writer
    stays the same for every backend and never waits on this connection. A process that
    dies between its commit and its NOTIFY leaves those events unannounced until the next
    notice from anyone (or the hub's idle check); a reconnecting client replays them anyway.
    """

    name = "postgresql"

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(channel)
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._conn: asyncpg.Connection[Any] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    async def _listen_once(self) -> None:
        import asyncpg

        lost = asyncio.Event()
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.channel, self._on_pg_notify)
            self._conn = conn
            self._listening()
            while not lost.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                if not lost.is_set():
                    async with self._lock:
                        await conn.execute("SELECT 1", timeout=5)
            raise ConnectionError("the LISTEN connection was closed")
        finally:
            self._conn = None
            conn.terminate()

    def _on_pg_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._notice(payload)

    async def announce(self, seq: int) -> None:
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected to PostgreSQL")
        async with self._lock:
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(seq), timeout=5)


def backend_for(broadcast_url: str, db_url: str) -> Backend:
    """The backend PANOPTES_BROADCAST_URL names (an unknown scheme is a ConfigError)."""
    scheme = broadcast_scheme(broadcast_url)
    if scheme == "memory":
        database = sqlite_file(make_url(db_url))
        return MemoryBackend() if database is None else SQLiteFileBackend(database)
    url, channel = _split_channel(broadcast_url, db_url)
    if scheme in ("redis", "rediss"):
        return RedisBackend(url, channel)
    if len(channel.encode()) > 63:  # LISTEN would truncate it, and hear nothing
        raise ConfigError(f"a PostgreSQL channel name has at most 63 bytes: {channel!r}")
    return PostgresBackend(url, channel)
