"""Schema versions: the Alembic revisions in versions/ and the code that applies them.

`upgrade_schema` brings a database to the newest revision. Besides a fresh database and one
at an older revision it takes:
- a database a development build of this server made with `create_all` (no alembic_version):
  it is stamped as revision 0001, which it matches;
- a panoptes 1.x database: revision 0001 converts it in place (see versions/0001_initial.py).

Several processes may start at once on the same fresh database. Each upgrade is one transaction
that begins by taking a lock, so one process migrates and the others then find the schema
current: on PostgreSQL a transaction-level advisory lock; on SQLite an flock on
`<database file>.migrate.lock` (waited for as long as it takes) and a BEGIN IMMEDIATE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import make_migration_engine, sqlite_file
from .panoptes1 import is_panoptes1

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: BEGIN IMMEDIATE alone serialises there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
FIRST_REVISION = "0001"
# Any constant works as long as every panoptes process uses the same one: "panoptes" in ASCII.
PG_LOCK_KEY = int.from_bytes(b"panoptes", "big")

Kind = Literal["empty", "versioned", "unversioned", "panoptes1", "unknown"]


class SchemaError(Exception):
    """The database is not at a schema this panoptes can serve, and panoptes will not change it."""


@dataclass(frozen=True)
class SchemaState:
    kind: Kind
    revision: str | None  # what alembic_version says
    head: str  # the newest revision this panoptes knows

    @property
    def at_head(self) -> bool:
        return self.kind == "versioned" and self.revision == self.head

    def describe(self) -> str:
        if self.kind == "versioned":
            return f"at revision {self.revision}"
        return {
            "empty": "empty (no panoptes tables yet)",
            "unversioned": "made by a development build of panoptes 2 (no revision recorded)",
            "panoptes1": "a panoptes 1.x database",
            "unknown": "not a panoptes database (its workflows table is not one panoptes made)",
        }[self.kind]


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def _alembic_config(connection: Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    # The value goes through ConfigParser interpolation, where % is special.
    config.set_main_option("script_location", str(HERE).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError("panoptes has no migrations")
    return head


def _state(connection: Connection) -> SchemaState:
    inspector = inspect(connection)
    head = head_revision()
    if inspector.has_table("alembic_version"):
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return SchemaState("versioned", revision, head)
    if not inspector.has_table("workflows"):
        return SchemaState("empty", None, head)
    if is_panoptes1(inspector):
        return SchemaState("panoptes1", None, head)
    columns = {column["name"] for column in inspector.get_columns("workflows")}
    return SchemaState("unversioned" if "jobs_done" in columns else "unknown", None, head)


def _refuse_strangers(state: SchemaState) -> None:
    if state.kind == "unknown":
        raise SchemaError(f"the database is {state.describe()}; panoptes leaves it alone")
    known = {script.revision for script in _scripts().walk_revisions()}
    if state.kind == "versioned" and state.revision is not None and state.revision not in known:
        raise SchemaError(
            f"the database is at revision {state.revision}, which this panoptes does not know "
            "(a newer panoptes upgraded it); run that newer panoptes"
        )


# ---- the lock


@asynccontextmanager
async def _file_lock(database: Path | None) -> AsyncIterator[None]:
    if database is None or fcntl is None:
        yield
        return
    lock = os.open(f"{database}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)  # releases the lock


# ---- upgrade and check


async def upgrade_schema(engine: AsyncEngine) -> tuple[SchemaState, SchemaState]:
    """Bring the database to the newest revision; returns its state before and after."""
    url = engine.url
    database = sqlite_file(url)
    if url.get_backend_name() == "sqlite" and database is None:
        migrator = engine  # in memory: the server's own connection is the database
    else:
        migrator = make_migration_engine(url.render_as_string(hide_password=False))
    try:
        async with _file_lock(database), migrator.connect() as connection:
            return await connection.run_sync(_upgrade)
    finally:
        if migrator is not engine:
            await migrator.dispose()


def _upgrade(connection: Connection) -> tuple[SchemaState, SchemaState]:
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        before = _state(connection)
        if before.at_head:
            return before, before
        _refuse_strangers(before)
        config = _alembic_config(connection)
        if before.kind == "unversioned":
            log.info("the database has this version's tables but no revision: stamping 0001")
            command.stamp(config, FIRST_REVISION)
        command.upgrade(config, "head")
        after = _state(connection)
    log.info("database schema upgraded: it was %s, now at %s", before.describe(), after.revision)
    return before, after


async def schema_state(engine: AsyncEngine) -> SchemaState:
    async with engine.connect() as connection:
        return await connection.run_sync(_state)


async def check_schema(engine: AsyncEngine) -> SchemaState:
    """The state, if at the newest revision; SchemaError otherwise."""
    state = await schema_state(engine)
    if not state.at_head:
        _refuse_strangers(state)
        raise SchemaError(
            f"the database is {state.describe()}; this panoptes needs revision {state.head}. "
            "Run `panoptes db upgrade` (the server does it by itself unless "
            "PANOPTES_AUTO_MIGRATE=0)"
        )
    return state
