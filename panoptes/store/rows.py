"""Workflow and job rows and events through the driver: what every message writes, encoded
once here.

Every message writes a workflow row, a job row and two or three events, and looks rows up.
Through SQLAlchemy's Core each row's values went through its per-row parameter processing
(bind processors, type coercion, statement caching keys), which cost more than the
database's own work (benchmarks/README.md, issue 16). Here the statements are plain SQL,
prepared once per shape, and the values are encoded by one function per column kind,
then handed to the driver in one executemany. SQLite and PostgreSQL differ only in how
they take times (SQLite: SQLAlchemy's text format; PostgreSQL: naive UTC datetimes),
JSON (text either way; PostgreSQL's driver decodes it when read) and their placeholders.
The writer holds the database's write lock (sql.take_turn), so the keys given here are the
ones nobody else can take.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any, TypeVar

from sqlalchemy import JSON, Boolean, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..db import json_dumps, json_loads
from ..models import JOBS, WORKFLOWS, JobRow, Row, UTCDateTime, WorkflowRow
from ..status import EventKind, JobStatus, WorkflowStatus

Encoder = Callable[[Any], Any]
T = TypeVar("T")

# Keeps each statement well inside every database's limit on bound parameters.
KEYS_PER_QUERY = 500


def _null(_value: None) -> None:
    return None


# sqlite3 binds an int, float, str or bytearray as it is; any other value (None, a flag, a
# status, which is a StrEnum) goes through its adapter registry first, and where that has
# no adapter for the value's type, two attribute look-ups that fail (each raising and
# clearing an AttributeError): about 5% of all the instructions a message costs, as every
# job row holds several NULLs (callgrind, benchmarks/README.md). With an adapter registered
# the registry answers at once. The values bound are the same: NULL, 0 or 1, the status's
# text.
sqlite3.register_adapter(type(None), _null)
sqlite3.register_adapter(bool, int)
for _kind in (WorkflowStatus, JobStatus, EventKind):
    sqlite3.register_adapter(_kind, str)


def chunks(keys: Sequence[T]) -> Iterator[list[T]]:
    """`keys` in lists of at most KEYS_PER_QUERY, one statement's worth each."""
    for start in range(0, len(keys), KEYS_PER_QUERY):
        yield list(keys[start : start + KEYS_PER_QUERY])


def marks(count: int) -> str:
    """`count` placeholders, for an IN (...) or VALUES (...)."""
    return ", ".join("?" for _ in range(count))


@lru_cache(maxsize=8192)  # a job's times are written again with each of its updates
def _sqlite_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # "YYYY-MM-DD HH:MM:SS.ffffff", always with the microseconds, as SQLAlchemy writes it
    return value.isoformat(" ", "microseconds")[:26]


def _pg_time(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _time_out(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def _json(value: Any) -> str:
    return json_dumps(value)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json_dumps(value)


def _json_out(value: Any) -> Any:
    return json_loads(value) if isinstance(value, str | bytes) else value


class Shape:
    """A table as the driver writes it: its columns, their codecs and its statements."""

    def __init__(self, table: Table, row: type[Row]) -> None:
        self.row = row
        self.columns: tuple[str, ...] = row.COLUMNS
        assert self.columns == tuple(column.name for column in table.columns)
        self.table = table.name
        self.get = attrgetter(*self.columns)
        # Quoted: some are words PostgreSQL reserves ("user").
        quoted = [f'"{name}"' for name in self.columns]
        names = ", ".join(quoted)
        self.select = f"SELECT {names} FROM {table.name}"
        self.insert = f"INSERT INTO {table.name} ({names}) VALUES ({marks(len(quoted))})"
        self.update = (
            f"UPDATE {table.name} SET {', '.join(f'{name} = ?' for name in quoted[1:])}"
            " WHERE id = ?"
        )
        # The places in `columns` of the times, the JSON values (with whether None is SQL
        # NULL) and the flags: most columns are stored as they are.
        self.times: list[int] = []
        self.jsons: list[tuple[int, bool]] = []
        self.flags: list[int] = []
        for at, column in enumerate(table.columns):
            if isinstance(column.type, UTCDateTime):
                self.times.append(at)
            elif isinstance(column.type, JSON):
                self.jsons.append((at, column.type.none_as_null))
            elif isinstance(column.type, Boolean):
                self.flags.append(at)


JOB_SHAPE = Shape(JOBS, JobRow)
WORKFLOW_SHAPE = Shape(WORKFLOWS, WorkflowRow)


class _Codecs:
    """A Shape's encoders and decoders on one database, by column place, only for the
    columns that need one.

    A row remembers its values as last read or written, and their encodings (Row.encoded):
    a value that is still the same object is written as it was encoded then. Most of a
    job's JSON columns (its files, wildcards, resources) never change after job_info,
    and were encoded again with each update (nearly eight JSON encodings a message). On
    SQLite, what a row is read with is that encoding (text as written); PostgreSQL's
    driver hands back JSON decoded, so there only what was written is remembered."""

    def __init__(self, shape: Shape, time_in: Encoder, *, reads_encoded: bool) -> None:
        self.shape = shape
        self.reads_encoded = reads_encoded
        self.encode: list[tuple[int, Encoder]] = []
        self.decode: list[tuple[int, Encoder]] = []
        for at in shape.times:
            self.encode.append((at, time_in))
            self.decode.append((at, _time_out))
        for at, none_as_null in shape.jsons:
            self.encode.append((at, _json_or_null if none_as_null else _json))
            self.decode.append((at, _json_out))
        self.decode += [(at, bool) for at in shape.flags]

    def values(self, row: Row) -> tuple[Any, ...]:
        """The row's values for the driver (and remembered as what is stored from now on:
        a statement that fails ends the batch, whose rows are not used again)."""
        current: tuple[Any, ...] = self.shape.get(row)
        values = list(current)
        known = row.encoded
        if known is None:
            for at, encode in self.encode:
                values[at] = encode(values[at])
        else:
            was, encoded = known
            for at, encode in self.encode:
                value = values[at]
                values[at] = encoded[at] if value is was[at] else encode(value)
        result = tuple(values)
        object.__setattr__(row, "encoded", (current, result))
        return result

    def row(self, found: Sequence[Any]) -> Any:
        values = list(found)
        for at, decode in self.decode:
            values[at] = decode(values[at])
        row = self.shape.row.stored(values)
        if self.reads_encoded:
            object.__setattr__(row, "encoded", (tuple(values), tuple(found)))
        return row


class Driver:
    """The open transaction's driver connection, with the codecs of its database."""

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.sqlite = self.connection.dialect.name == "sqlite"
        # The driver's own connection (sqlite3's, asyncpg's adapted).
        self.dbapi: Any = self.connection.connection.dbapi_connection
        self._error: type[Exception] = self.connection.dialect.loaded_dbapi.Error
        time_in: Encoder = _sqlite_time if self.sqlite else _pg_time
        self.time_in = time_in
        self._jobs = _Codecs(JOB_SHAPE, time_in, reads_encoded=self.sqlite)
        self._workflows = _Codecs(WORKFLOW_SHAPE, time_in, reads_encoded=self.sqlite)

    def sql(self, text: str) -> str:
        """`text` with this database's placeholders (written with ? here)."""
        return text if self.sqlite else _numbered(text)

    def rows(self, text: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """The rows a query returns, straight from the driver's cursor."""
        return self._run(text, tuple(params), many=False, fetch=True)

    def run(self, text: str, params: Sequence[Any] = ()) -> None:
        self._run(text, tuple(params), many=False, fetch=False)

    def many(self, text: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._run(text, rows, many=True, fetch=False)

    def _run(self, text: str, params: Any, *, many: bool, fetch: bool) -> list[Sequence[Any]]:
        # The driver's own cursor: SQLAlchemy's execution of a plain string still cost more
        # than the statement. Its errors are SQLAlchemy's as anywhere else
        # (db.database_failed tells an outage from a fault by them).
        cursor = self.dbapi.cursor()
        try:
            if many:
                cursor.executemany(self.sql(text), params)
            else:
                cursor.execute(self.sql(text), params)
            return list(cursor.fetchall()) if fetch else []
        except self._error as exc:
            raise DBAPIError.instance(text, params, exc, self._error) from exc
        finally:
            cursor.close()

    # ---- jobs

    def job_row(self, row: Sequence[Any]) -> JobRow:
        job: JobRow = self._jobs.row(row)
        return job

    def jobs(self, workflow_id: int, jobids: Sequence[int]) -> list[JobRow]:
        """These jobs of a workflow, those that exist."""
        found: list[JobRow] = []
        for chunk in chunks(jobids):
            query = _select_jobs(len(chunk))
            found += [self.job_row(row) for row in self.rows(query, [workflow_id, *chunk])]
        return found

    def jobs_where(self, condition: str, params: Sequence[Any]) -> list[JobRow]:
        query = f"{JOB_SHAPE.select} WHERE {condition}"
        return [self.job_row(row) for row in self.rows(query, params)]

    def insert_jobs(self, jobs: list[JobRow]) -> None:
        """New jobs, each given its id."""
        self._insert(self._jobs, jobs)

    def update_jobs(self, jobs: list[JobRow]) -> None:
        """Changed jobs, each written whole."""
        self._update(self._jobs, jobs)

    # ---- workflows

    def workflows_where(self, condition: str, params: Sequence[Any] = ()) -> list[WorkflowRow]:
        rows = self.rows(f"{WORKFLOW_SHAPE.select} WHERE {condition}", params)
        return [self._workflows.row(row) for row in rows]

    def workflows(self, ids: Sequence[int]) -> list[WorkflowRow]:
        """These workflows, those that exist."""
        found: list[WorkflowRow] = []
        for chunk in chunks(ids):
            found += self.workflows_where(f"id IN ({marks(len(chunk))})", chunk)
        return found

    def insert_workflows(self, workflows: list[WorkflowRow]) -> None:
        """New workflows, each given its id."""
        self._insert(self._workflows, workflows)

    def update_workflows(self, workflows: list[WorkflowRow]) -> None:
        self._update(self._workflows, workflows)

    def delete_workflows(self, ids: Sequence[int]) -> None:
        """These workflows and (by the foreign key's cascade) their jobs."""
        for chunk in chunks(ids):
            self.run(f"DELETE FROM workflows WHERE id IN ({marks(len(chunk))})", chunk)

    def _insert(self, codecs: _Codecs, rows: Sequence[Any]) -> None:
        table = codecs.shape.table
        for row, number in zip(rows, self.keys(table, "id", len(rows)), strict=True):
            row.id = number
        self.many(codecs.shape.insert, [codecs.values(row) for row in rows])

    def _update(self, codecs: _Codecs, rows: Sequence[Any]) -> None:
        self.many(codecs.shape.update, [(*codecs.values(row)[1:], row.id) for row in rows])

    # ---- counting

    def rule_counts(self, workflow_id: int, rules: Sequence[str | None]) -> list[Sequence[Any]]:
        """(rule, status, count) of some rules of a workflow (None: jobs with no rule yet)."""
        named = [rule for rule in rules if rule is not None]
        matches = [f"rule IN ({marks(len(named))})"] if named else []
        if len(named) < len(rules):
            matches.append("rule IS NULL")
        query = (
            "SELECT rule, status, count(*) FROM jobs WHERE workflow_id = ?"
            f" AND ({' OR '.join(matches)}) GROUP BY rule, status"
        )
        return self.rows(query, [workflow_id, *named])

    # ---- events

    def insert_events(
        self, rows: list[tuple[str, int | None, dict[str, Any], datetime]]
    ) -> list[int]:
        """(type, workflow_id, payload, created_at) rows; their seqs, in order."""
        seqs = self.keys("events", "seq", len(rows))
        values = [
            (seq, kind, workflow_id, json_dumps(payload), self.time_in(at))
            for seq, (kind, workflow_id, payload, at) in zip(seqs, rows, strict=True)
        ]
        self.many(_INSERT_EVENT, values)
        return seqs

    def keys(self, table: str, column: str, count: int) -> list[int]:
        """`count` new keys for `table`, in increasing order. SQLite: after the highest
        handed out (for events, AUTOINCREMENT's record of it too); PostgreSQL: from the
        column's sequence, as a default would have."""
        if not count:
            return []
        if self.sqlite:
            (last,) = self.rows(_SQLITE_LAST[table])[0]
            return list(range((last or 0) + 1, (last or 0) + 1 + count))
        query = "SELECT nextval(pg_get_serial_sequence(?, ?)) FROM generate_series(1, ?)"
        return sorted(row[0] for row in self.rows(query, [table, column, count]))


_INSERT_EVENT = (
    "INSERT INTO events (seq, type, workflow_id, payload, created_at) VALUES (?, ?, ?, ?, ?)"
)
# Workflows and events are AUTOINCREMENT tables: a key is never handed out twice, even
# after its row was deleted, and SQLite records the highest in sqlite_sequence (it moves
# up to the keys given here by itself).
_SQLITE_LAST = {
    "jobs": "SELECT max(id) FROM jobs",
    "workflows": "SELECT max((SELECT coalesce(max(seq), 0) FROM sqlite_sequence"
    " WHERE name = 'workflows'), (SELECT coalesce(max(id), 0) FROM workflows))",
    "events": "SELECT max((SELECT coalesce(max(seq), 0) FROM sqlite_sequence"
    " WHERE name = 'events'), (SELECT coalesce(max(seq), 0) FROM events))",
}


@lru_cache(maxsize=64)
def _select_jobs(count: int) -> str:
    return f"{JOB_SHAPE.select} WHERE workflow_id = ? AND jobid IN ({marks(count)})"


@lru_cache(maxsize=256)
def _numbered(text: str) -> str:
    """? placeholders as $1, $2, ... (asyncpg's)."""
    parts = text.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
