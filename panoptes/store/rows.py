"""Job rows and events through the driver: what every message writes, encoded once here.

Every message writes a job row and two or three events, and looks jobs up. Through
SQLAlchemy's Core each row's values went through its per-row parameter processing
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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from sqlalchemy import JSON, Boolean
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..db import json_dumps, json_loads
from ..models import JOB_COLUMNS, JOBS, JobRow, UTCDateTime

Encoder = Callable[[Any], Any]


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


def _kinds() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    times, jsons, flags = [], [], []
    for column in JOBS.columns:
        if isinstance(column.type, UTCDateTime):
            times.append(column.name)
        elif isinstance(column.type, JSON):
            jsons.append(column.name)
        elif isinstance(column.type, Boolean):
            flags.append(column.name)
    return tuple(times), tuple(jsons), tuple(flags)


_TIMES, _JSONS, _FLAGS = _kinds()
_NULLABLE_JSON = {
    column.name
    for column in JOBS.columns
    if isinstance(column.type, JSON) and column.type.none_as_null
}


class Driver:
    """The open transaction's driver connection, with the codecs of its database."""

    def __init__(self, session: Session) -> None:
        self.connection = session.connection()
        self.sqlite = self.connection.dialect.name == "sqlite"
        self._dbapi: Any = self.connection.connection.dbapi_connection
        self._error: type[Exception] = self.connection.dialect.loaded_dbapi.Error
        time_in: Encoder = _sqlite_time if self.sqlite else _pg_time
        self.time_in = time_in
        # Each column's codec, by its place in JOB_COLUMNS; only the columns that need one
        # are listed: most are stored as they are.
        self._job_in: list[tuple[int, Encoder]] = []
        self._job_out: list[tuple[int, Encoder]] = []
        for at, name in enumerate(JOB_COLUMNS):
            if name in _TIMES:
                self._job_in.append((at, time_in))
                self._job_out.append((at, _time_out))
            elif name in _JSONS:
                self._job_in.append((at, _json_or_null if name in _NULLABLE_JSON else _json))
                self._job_out.append((at, _json_out))
            elif name in _FLAGS:
                self._job_out.append((at, bool))

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
        cursor = self._dbapi.cursor()
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

    def job_values(self, job: JobRow) -> tuple[Any, ...]:
        values = list(_job_columns(job))
        for at, encode in self._job_in:
            values[at] = encode(values[at])
        return tuple(values)

    def job_row(self, row: Sequence[Any]) -> JobRow:
        values = list(row)
        for at, decode in self._job_out:
            values[at] = decode(values[at])
        return JobRow(dict(zip(JOB_COLUMNS, values, strict=True)), new=False)

    def jobs(self, workflow_id: int, jobids: Sequence[int]) -> list[JobRow]:
        """These jobs of a workflow, those that exist."""
        found: list[JobRow] = []
        for start in range(0, len(jobids), KEYS_PER_QUERY):
            chunk = list(jobids[start : start + KEYS_PER_QUERY])
            query = _select_jobs(len(chunk))
            found += [self.job_row(row) for row in self.rows(query, [workflow_id, *chunk])]
        return found

    def jobs_where(self, condition: str, params: Sequence[Any]) -> list[JobRow]:
        query = f"SELECT {_COLUMNS} FROM jobs WHERE {condition}"
        return [self.job_row(row) for row in self.rows(query, params)]

    def insert_jobs(self, jobs: list[JobRow]) -> None:
        """New jobs, each given its id."""
        for job, number in zip(jobs, self.keys("jobs", "id", len(jobs)), strict=True):
            job.id = number
        self.many(_INSERT_JOB, [self.job_values(job) for job in jobs])

    def update_jobs(self, jobs: list[JobRow]) -> None:
        """Changed jobs, each written whole."""
        self.many(_UPDATE_JOB, [(*self.job_values(job)[1:], job.id) for job in jobs])

    # ---- counting

    def rule_counts(self, workflow_id: int, rules: Sequence[str | None]) -> list[Sequence[Any]]:
        """(rule, status, count) of some rules of a workflow (None: jobs with no rule yet)."""
        named = [rule for rule in rules if rule is not None]
        matches = [f"rule IN ({', '.join('?' for _ in named)})"] if named else []
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


# Keeps each statement well inside every database's limit on bound parameters.
KEYS_PER_QUERY = 500

_COLUMNS = ", ".join(JOB_COLUMNS)
_job_columns = attrgetter(*JOB_COLUMNS)
_INSERT_JOB = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' for _ in JOB_COLUMNS)})"
_UPDATE_JOB = f"UPDATE jobs SET {', '.join(f'{name} = ?' for name in JOB_COLUMNS[1:])} WHERE id = ?"
_INSERT_EVENT = (
    "INSERT INTO events (seq, type, workflow_id, payload, created_at) VALUES (?, ?, ?, ?, ?)"
)
_SQLITE_LAST = {
    "jobs": "SELECT max(id) FROM jobs",
    "events": "SELECT max((SELECT coalesce(max(seq), 0) FROM sqlite_sequence"
    " WHERE name = 'events'), (SELECT coalesce(max(seq), 0) FROM events))",
}


@lru_cache(maxsize=64)
def _select_jobs(count: int) -> str:
    marks = ", ".join("?" for _ in range(count))
    return f"SELECT {_COLUMNS} FROM jobs WHERE workflow_id = ? AND jobid IN ({marks})"


@lru_cache(maxsize=256)
def _numbered(text: str) -> str:
    """? placeholders as $1, $2, ... (asyncpg's)."""
    parts = text.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))
