"""Engine and session setup. The schema itself is made by the migrations (see migrations/)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from .config import DEFAULT_DB_TIMEOUT


def _sqlite_pragmas(timeout: float) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer. synchronous=NORMAL in WAL mode keeps every
        # committed transaction across a crash or kill -9 of the server process.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # How long a statement waits for another process's write lock.
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.close()

    return on_connect


def json_dumps(value: Any) -> str:
    """JSON columns are written with orjson (several times faster than json: every event
    and job row holds some), and with json for what orjson refuses (integers over 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # NaN and Infinity, which json writes and orjson refuses


JSON_OPTIONS: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": json_loads}


def database_failed(exc: BaseException) -> bool:
    """Whether an error says the database could not be reached or did not answer in time
    (as opposed to a fault of one operation): then no operation of the batch can succeed."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError
    ) or (isinstance(exc, OSError | TimeoutError))


def sqlite_file(url: URL) -> Path | None:
    """The file of an SQLite URL; None for other databases and in-memory ones."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def make_engine(url: str, timeout: float = DEFAULT_DB_TIMEOUT) -> AsyncEngine:
    """The server's engine. Every operation on it is bounded by `timeout` seconds: a database
    that hangs costs an error in that time, never a wait without end."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": timeout}, **JSON_OPTIONS)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(timeout))
        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql+asyncpg"):
        connect_args = {
            "timeout": timeout,  # connecting
            "command_timeout": timeout,  # each statement, measured here
            # ... and on the server, so a stuck statement does not go on after we gave up.
            "server_settings": {"statement_timeout": str(int(timeout * 1000))},
        }
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=timeout,  # waiting for a free connection
        connect_args=connect_args,
        **JSON_OPTIONS,
    )


def make_sync_sqlite_engine(url: URL, timeout: float = DEFAULT_DB_TIMEOUT) -> Engine:
    """A plain (sqlite3) engine on the same SQLite file as the app's async engine, for the
    writer's own thread (writer.py); same settings, same JSON encoding."""
    engine = create_engine(
        url.set(drivername="sqlite+pysqlite"),
        # Made in the writer's thread, disposed of from the event loop's at shutdown.
        connect_args={"timeout": timeout, "check_same_thread": False},
        **JSON_OPTIONS,
    )
    event.listen(engine, "connect", _sqlite_pragmas(timeout))
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_migration_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # panoptes emits BEGIN itself (below), which makes SQLite's DDL transactional: a
    # migration that fails half-way leaves the database as it was.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    # foreign_keys stays off: a batch migration copies a table and drops the original,
    # and with foreign keys on that drop would cascade into the rows that point at it.
    cursor.close()


def _begin_immediate(connection: Connection) -> None:
    # IMMEDIATE takes the write lock at once, so two processes cannot both read
    # "no schema yet" and both create it.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_migration_engine(url: str) -> AsyncEngine:
    """A one-connection engine for schema changes, separate from the server's pool."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 60})
        event.listen(engine.sync_engine, "connect", _sqlite_migration_pragmas)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    return create_async_engine(url, poolclass=NullPool)
