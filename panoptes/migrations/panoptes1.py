"""Converting a panoptes 1.x database, in place, for revision 0001 (whose docstring says what
becomes of each table and status).

The old tables are first set aside (renamed on SQLite, moved to a schema of their own on
PostgreSQL, which takes their indexes and sequences along), the new tables are created under
the real names, rows are copied over in chunks, and the old tables are dropped. Everything runs
in the upgrade's transaction: if anything fails, the database is left as 1.x had it.

Nothing here evaluates stored text: 1.x kept lists and dicts as Python repr() strings, which
are parsed with ast.literal_eval, and whatever does not parse is kept as text.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Inspector

log = logging.getLogger(__name__)

TABLES = ("workflows", "workflow_jobs", "workflow_messages", "users")
SQLITE_PREFIX = "panoptes1_"
PG_SCHEMA = "panoptes1_legacy"
CHUNK = 2000

WORKFLOW_STATUSES = {
    "Running": "Running",
    "Done": "Done",
    "Error": "Error",
    "Cancelled": "Cancelled",
    "Stale": "Stale",
    "No Execution": "Done",  # the run had nothing to do: it succeeded
}
UNKNOWN_WORKFLOW_STATUS = "Stale"
FINISHED = frozenset({"Done", "Error", "Cancelled"})
JOB_STATUSES = frozenset({"Running", "Done", "Error"})

WORKFLOW_COLUMNS = ("id", "name", "status", "done", "total", "started_at", "completed_at")
JOB_COLUMNS = (
    "id",
    "jobid",
    "wf_id",
    "msg",
    "name",
    "input",
    "output",
    "log",
    "wildcards",
    "is_checkpoint",
    "shell_command",
    "status",
    "started_at",
    "completed_at",
)


def is_panoptes1(inspector: Inspector) -> bool:
    """1.x's `workflows` has done/total where ours has jobs_done/jobs_total."""
    if not inspector.has_table("workflows"):
        return False
    columns = {column["name"] for column in inspector.get_columns("workflows")}
    return "done" in columns and "jobs_done" not in columns


@dataclass(frozen=True)
class Legacy:
    """Where the 1.x tables were set aside, and which of their columns exist."""

    schema: str | None
    names: dict[str, str]
    columns: dict[str, frozenset[str]]

    def table(self, name: str, wanted: tuple[str, ...]) -> sa.TableClause:
        present = [column for column in wanted if column in self.columns[name]]
        return sa.table(
            self.names[name], *(sa.column(column) for column in present), schema=self.schema
        )


def set_aside(bind: Connection) -> Legacy | None:
    """Move the 1.x tables out of the way of the new ones; None when this is not 1.x."""
    inspector = sa.inspect(bind)
    if not is_panoptes1(inspector):
        return None
    present = [name for name in TABLES if inspector.has_table(name)]
    columns = {
        name: frozenset(column["name"] for column in inspector.get_columns(name))
        for name in present
    }
    log.warning("converting a panoptes 1.x database (tables %s)", ", ".join(present))
    if bind.dialect.name == "postgresql":
        bind.execute(sa.text(f"CREATE SCHEMA {PG_SCHEMA}"))
        for name in present:
            bind.execute(sa.text(f'ALTER TABLE "{name}" SET SCHEMA {PG_SCHEMA}'))
        return Legacy(PG_SCHEMA, {name: name for name in present}, columns)
    for name in present:
        bind.execute(sa.text(f'ALTER TABLE "{name}" RENAME TO "{SQLITE_PREFIX}{name}"'))
    return Legacy(None, {name: SQLITE_PREFIX + name for name in present}, columns)


def drop(bind: Connection, legacy: Legacy) -> None:
    if legacy.schema is not None:
        bind.execute(sa.text(f"DROP SCHEMA {legacy.schema} CASCADE"))
        return
    for name in reversed(TABLES):  # children first
        if name in legacy.names:
            bind.execute(sa.text(f'DROP TABLE "{legacy.names[name]}"'))


def convert(
    bind: Connection, legacy: Legacy, *, workflows: sa.Table, jobs: sa.Table, events: sa.Table
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    kept = _copy_workflows(bind, legacy, workflows, now)
    dropped = _copy_jobs(bind, legacy, jobs, kept) if "workflow_jobs" in legacy.names else 0
    if "workflow_messages" in legacy.names:
        dropped += _copy_messages(bind, legacy, events, kept, now)
    if bind.dialect.name == "postgresql":
        # The ids were inserted explicitly: new rows must be numbered after them.
        for table in ("workflows", "jobs"):
            bind.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )
            )
    log.warning(
        "converted %d panoptes 1.x workflows%s",
        len(kept),
        f"; dropped {dropped} jobs/messages without a workflow (or jobid)" if dropped else "",
    )


# ---- reading


def _chunks(
    bind: Connection, table: sa.TableClause, wanted: tuple[str, ...]
) -> Iterator[list[dict[str, Any]]]:
    """Every row in id order, a chunk at a time, as dicts with a key for every wanted column."""
    last: Any = None
    while True:
        query = sa.select(table).order_by(table.c.id).limit(CHUNK)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = bind.execute(query).mappings().all()
        if not rows:
            return
        yield [{column: row.get(column) for column in wanted} for row in rows]
        last = rows[-1]["id"]


def local_to_utc(value: Any) -> datetime | None:
    """1.x stored datetime.now(): naive local time. Returns naive UTC, as the new tables hold."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    try:
        # astimezone() reads a naive time as local time, with the DST rules of that date.
        return value.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):  # out of the platform's range
        return None


def _int(value: Any, default: int = 0) -> int:
    number = _int_or_none(value)
    return default if number is None else number


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def _literal(text: Any) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNPARSED


_UNPARSED = object()


def parse_list(text: Any) -> list[Any]:
    """A repr()'d list ("['a.txt', 'b.txt']") as a list; anything else kept as its text."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    if not isinstance(text, str):
        return [_jsonable(text)]
    value = _literal(text)
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    return [text]


def parse_dict(text: Any) -> dict[str, Any]:
    """A repr()'d dict ("{'sample': 'a'}") as a dict; anything else as {}."""
    if not isinstance(text, str):
        return {}
    value = _literal(text)
    return _jsonable(value) if isinstance(value, dict) else {}


# ---- workflows


def _copy_workflows(
    bind: Connection, legacy: Legacy, target: sa.Table, now: datetime
) -> dict[int, datetime]:
    """Returns each copied workflow's id and last update."""
    wanted = (*WORKFLOW_COLUMNS, "updated_at")  # updated_at only exists since 1.2.0
    kept: dict[int, datetime] = {}
    names: set[str] = set()
    for chunk in _chunks(bind, legacy.table("workflows", wanted), wanted):
        rows = [_workflow(row, names, now) for row in chunk]
        bind.execute(target.insert(), rows)
        kept.update((row["id"], row["updated_at"]) for row in rows)
    return kept


def _workflow(row: dict[str, Any], names: set[str], now: datetime) -> dict[str, Any]:
    started = local_to_utc(row["started_at"])
    updated = local_to_utc(row["updated_at"])
    completed = local_to_utc(row["completed_at"])
    known = [stamp for stamp in (started, updated, completed) if stamp is not None]
    started = started or (min(known) if known else now)
    updated = max(known) if known else started
    status = WORKFLOW_STATUSES.get(str(row["status"]), UNKNOWN_WORKFLOW_STATUS)
    name = str(row["name"]) if row["name"] else f"panoptes1-{row['id']}"
    while name in names:  # only possible for the invented names
        name += "-1x"
    names.add(name)
    return {
        "id": row["id"],
        "name": name,
        "status": status,
        "jobs_done": _int(row["done"]),
        "jobs_total": _int(row["total"]),
        "started_at": started,
        "updated_at": updated,
        # 1.x set completed_at on Done and Cancelled only; an Error ended at its last update.
        "finished_at": (completed or updated) if status in FINISHED else None,
        "error": None,
        "command": None,
        "workdir": None,
        "snakefile": None,
        "dry_run": False,
        "last_job_info": None,
        "last_digest": None,
        "last_error": None,
    }


# ---- jobs


def _copy_jobs(
    bind: Connection, legacy: Legacy, target: sa.Table, workflows: dict[int, datetime]
) -> int:
    """Copies the jobs of existing workflows; returns how many orphans were dropped."""
    source = legacy.table("workflow_jobs", JOB_COLUMNS)
    repeated = _repeated_jobs(bind, source)
    retries: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    orphans = 0
    for chunk in _chunks(bind, source, JOB_COLUMNS):
        rows = []
        for row in chunk:
            if row["wf_id"] not in workflows or _int_or_none(row["jobid"]) is None:
                orphans += 1
            elif (row["wf_id"], row["jobid"]) in repeated:
                retries.setdefault((row["wf_id"], row["jobid"]), []).append(row)
            else:
                rows.append(_job([row]))
        if rows:
            bind.execute(target.insert(), rows)
    if retries:
        bind.execute(target.insert(), [_job(attempts) for attempts in retries.values()])
    return orphans


def _repeated_jobs(bind: Connection, source: sa.TableClause) -> set[tuple[Any, Any]]:
    """(workflow, jobid) pairs 1.x stored more than once: retries, before it upserted."""
    query = (
        sa.select(source.c.wf_id, source.c.jobid)
        .group_by(source.c.wf_id, source.c.jobid)
        .having(sa.func.count() > 1)
    )
    return {(row[0], row[1]) for row in bind.execute(query)}


def _job_status(row: dict[str, Any], finished: datetime | None) -> str:
    status = str(row["status"])
    if status in JOB_STATUSES:
        return status
    return "Running" if finished is None else "Done"


def _job(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One job from its 1.x rows (several when it was retried): the last one's fields, every
    row an attempt."""
    attempts = []
    for number, row in enumerate(rows, start=1):
        started = local_to_utc(row["started_at"])
        finished = local_to_utc(row["completed_at"])
        attempts.append(
            {
                "attempt": number,
                "status": _job_status(row, finished),
                "started_at": _iso(started),
                "finished_at": _iso(finished),
                "error": None,
            }
        )
    last = rows[-1]
    return {
        "id": rows[0]["id"],
        "workflow_id": last["wf_id"],
        "jobid": _int(last["jobid"]),
        "rule": last["name"],
        "status": attempts[-1]["status"],
        "message": last["msg"],
        "wildcards": parse_dict(last["wildcards"]),
        "input": parse_list(last["input"]),
        "output": parse_list(last["output"]),
        "log": parse_list(last["log"]),
        "shellcmd": last["shell_command"],
        "threads": None,
        "resources": None,
        "priority": None,
        "reason": None,
        "is_checkpoint": bool(last["is_checkpoint"]),
        "started_at": local_to_utc(last["started_at"]),
        "finished_at": local_to_utc(last["completed_at"]),
        "error": None,
        "attempt": len(rows),
        "attempts": attempts,
    }


def _iso(value: datetime | None) -> str | None:
    # Attempts hold aware ISO times, as ingest writes them.
    return None if value is None else value.replace(tzinfo=UTC).isoformat()


# ---- messages


def _copy_messages(
    bind: Connection,
    legacy: Legacy,
    target: sa.Table,
    workflows: dict[int, datetime],
    now: datetime,
) -> int:
    wanted = ("id", "wf_id", "msg")
    orphans = 0
    for chunk in _chunks(bind, legacy.table("workflow_messages", wanted), wanted):
        rows = []
        for row in chunk:
            if row["wf_id"] not in workflows:
                orphans += 1
                continue
            rows.append(
                {
                    "workflow_id": row["wf_id"],
                    "type": "legacy.message",
                    "payload": {"msg": row["msg"]},
                    # 1.x kept no time for a message; it was no later than the run's last update.
                    "created_at": workflows[row["wf_id"]] or now,
                }
            )
        if rows:
            bind.execute(target.insert(), rows)
    return orphans
