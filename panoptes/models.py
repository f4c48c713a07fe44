"""Tables: workflows, their jobs, and the numbered log of every change (events)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from .status import JobStatus, WorkflowStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no zones), always handed back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# Integer on SQLite so the key is the rowid alias; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# The largest values the columns hold: BigId (and SQLite's INTEGER), and a plain Integer
# (INTEGER on PostgreSQL), which job ids, counts, threads and priorities are.
MAX_BIGINT = 2**63 - 1
MAX_INT = 2**31 - 1


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Workflow(Base):
    __tablename__ = "workflows"
    # AUTOINCREMENT: a deleted workflow's id is never handed out again, so a client still
    # sending events for it cannot attach them to somebody else's new run.
    __table_args__ = (
        Index("ix_workflows_status_updated", "status", "updated_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    status: Mapped[str] = mapped_column(String(16), default=WorkflowStatus.RUNNING)
    jobs_done: Mapped[int] = mapped_column(default=0)
    jobs_total: Mapped[int] = mapped_column(default=0)
    # Jobs whose latest attempt failed (kept by the state machine).
    jobs_failed: Mapped[int] = mapped_column(default=0, server_default="0")
    # Jobs planned per rule, from the client's plan (Snakemake 7/8's run_info), if it sent one.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # The rules whose jobs came so far, in the order they came (the first MAX_RULES_SEEN).
    rules_seen: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # What the legacy clients tell us at registration.
    command: Mapped[str | None] = mapped_column(Text)
    workdir: Mapped[str | None] = mapped_column(Text)
    snakefile: Mapped[str | None] = mapped_column(Text)
    # What plugin 1.0.0 tells about the run at registration (docs/wire.md).
    host: Mapped[str | None] = mapped_column(Text)
    user: Mapped[str | None] = mapped_column(Text)
    snakemake_version: Mapped[str | None] = mapped_column(Text)
    client: Mapped[str | None] = mapped_column(Text)
    # The rule graph the plugin sends: {"rules": [...], "edges": [[from, to], ...]}.
    rulegraph: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    # Ingest bookkeeping: the job a following jobid-less shellcmd belongs to, and the
    # digest of the last legacy message (Snakemake 8 sends every message twice).
    last_job_info: Mapped[int | None]
    last_digest: Mapped[str | None] = mapped_column(String(64))
    # The text of the last `error` message: the job_error that follows it is its cause.
    last_error: Mapped[str | None] = mapped_column(Text)


def silent_since(cutoff: datetime) -> ColumnElement[bool]:
    """Running workflows with no event since `cutoff`: Stale, whether recorded yet or not."""
    return and_(Workflow.status == WorkflowStatus.RUNNING, Workflow.updated_at < cutoff)


def is_silent(wf: Workflow | WorkflowRow, stale_before: datetime | None) -> bool:
    """silent_since in Python, for one workflow (None: the check is off)."""
    return (
        stale_before is not None
        and wf.status == WorkflowStatus.RUNNING
        and wf.updated_at < stale_before
    )


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("workflow_id", "jobid", name="uq_jobs_workflow_jobid"),
        Index("ix_jobs_workflow_status", "workflow_id", "status"),
        Index("ix_jobs_workflow_rule", "workflow_id", "rule"),
        # What eta.py reads of every job of a running workflow, so that it reads only this.
        Index(
            "ix_jobs_workflow_rule_timing",
            "workflow_id",
            "rule",
            "status",
            "threads",
            "started_at",
            "finished_at",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    workflow_id: Mapped[int] = mapped_column(BigId, ForeignKey("workflows.id", ondelete="CASCADE"))
    jobid: Mapped[int]
    rule: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.RUNNING)
    message: Mapped[str | None] = mapped_column(Text)
    wildcards: Mapped[dict[str, Any]] = mapped_column(default=dict)
    input: Mapped[list[Any]] = mapped_column(default=list)
    output: Mapped[list[Any]] = mapped_column(default=list)
    log: Mapped[list[Any]] = mapped_column(default=list)
    shellcmd: Mapped[str | None] = mapped_column(Text)
    threads: Mapped[int | None]
    # none_as_null: None is SQL NULL, also when the writer passes it explicitly (JobRow).
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    priority: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(Text)
    is_checkpoint: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(default=1)
    # One entry per attempt: {"attempt", "status", "started_at", "finished_at", "error"}.
    attempts: Mapped[list[Any]] = mapped_column(default=list)
    # Why the latest attempt failed, as plugin 1.0.0 sends it: the ends of the job's log
    # files ([{"path", "tail", "truncated"}]) and the command's exit status.
    logs: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))
    exit_code: Mapped[int | None]
    # What the job used: its parsed benchmark: file ({"s", "max_rss", ...}).
    benchmark: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class Event(Base):
    """Every change panoptes publishes, numbered; the live feed replays from here."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_workflow_seq", "workflow_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Not a foreign key: the deletion of a workflow is itself an event that must survive.
    workflow_id: Mapped[int | None] = mapped_column(BigId)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


JOBS = Job.metadata.tables[Job.__tablename__]
JOB_COLUMNS: tuple[str, ...] = tuple(column.name for column in JOBS.columns)
WORKFLOWS = Workflow.metadata.tables[Workflow.__tablename__]
WORKFLOW_COLUMNS: tuple[str, ...] = tuple(column.name for column in WORKFLOWS.columns)


class Row:
    """A row's values as the writer's batch holds them: a plain object, not an ORM instance.

    Every message changes a workflow and a job, and SQLAlchemy's unit of work (tracking each
    attribute, then sorting and grouping the flush; loading through the ORM) cost more than
    the state machine that changes them. The writer loads these with plain SELECTs and
    writes them with one INSERT and one UPDATE statement per table and flush
    (store/rows.py). Any attribute set marks the row changed; a changed row is written
    whole. A JSON value (a list, a dict) is replaced by a new one, never changed in place:
    that is what marks the row changed, and what tells the writer which columns it must
    encode again (`encoded`)."""

    __slots__ = ("changed", "encoded", "new")
    COLUMNS: ClassVar[tuple[str, ...]] = ()

    new: bool
    changed: bool
    # The values as the database has them, if known: (the row's values, in the order of
    # COLUMNS, and the same encoded for the driver). A value still the same object needs
    # no encoding again (rows.py, _Codecs.values).
    encoded: tuple[tuple[Any, ...], tuple[Any, ...]] | None

    def __init__(self, values: Any, *, new: bool) -> None:
        for name in self.COLUMNS:
            object.__setattr__(self, name, values.get(name))
        object.__setattr__(self, "new", new)
        object.__setattr__(self, "changed", new)
        object.__setattr__(self, "encoded", None)

    @classmethod
    def stored(cls, values: Sequence[Any]) -> Self:
        """A row as read: `values` in the order of COLUMNS, decoded."""
        row = cls.__new__(cls)
        put = object.__setattr__
        for name, value in zip(cls.COLUMNS, values, strict=True):
            put(row, name, value)
        put(row, "new", False)
        put(row, "changed", False)
        put(row, "encoded", None)
        return row

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "changed", True)

    def written(self) -> None:
        object.__setattr__(self, "new", False)
        object.__setattr__(self, "changed", False)

    def snapshot(self) -> Self:
        """A copy to hand out of the writer: the batches after this one may go on changing
        the row itself (store/sql.py, Carried) while the copy is read elsewhere."""
        return self.stored([getattr(self, name) for name in self.COLUMNS])


class JobRow(Row):
    """A job of the writer's batch (Row)."""

    __slots__ = JOB_COLUMNS
    COLUMNS = JOB_COLUMNS

    id: int | None
    workflow_id: int
    jobid: int
    rule: str | None
    status: str
    message: str | None
    wildcards: dict[str, Any]
    input: list[Any]
    output: list[Any]
    log: list[Any]
    shellcmd: str | None
    threads: int | None
    resources: dict[str, Any] | None
    priority: int | None
    reason: str | None
    is_checkpoint: bool
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    attempt: int
    attempts: list[Any]
    logs: list[Any] | None
    exit_code: int | None
    benchmark: dict[str, Any] | None


class WorkflowRow(Row):
    """A workflow of the writer's batch (Row); made with `created` for a new run."""

    __slots__ = WORKFLOW_COLUMNS
    COLUMNS = WORKFLOW_COLUMNS

    id: int
    name: str
    status: str
    jobs_done: int
    jobs_total: int
    jobs_failed: int
    plan: dict[str, Any] | None
    rules_seen: list[Any] | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    error: str | None
    command: str | None
    workdir: str | None
    snakefile: str | None
    host: str | None
    user: str | None
    snakemake_version: str | None
    client: str | None
    rulegraph: dict[str, Any] | None
    dry_run: bool
    last_job_info: int | None
    last_digest: str | None
    last_error: str | None

    @classmethod
    def created(cls, name: str) -> WorkflowRow:
        """A new workflow with the columns' defaults (it gets its id when inserted)."""
        now = utcnow()
        values = {
            "name": name,
            "status": WorkflowStatus.RUNNING.value,
            "jobs_done": 0,
            "jobs_total": 0,
            "jobs_failed": 0,
            "started_at": now,
            "updated_at": now,
            "dry_run": False,
        }
        return cls(values, new=True)


# ---- notifications (issue 14; panoptes/notify/)


class NotifierState(Base):
    """One row: the last event seq the notifier examined, moved by compare-and-set."""

    __tablename__ = "notifier_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)


class NotifyWorkflow(Base):
    """What the notifier last told about a workflow: its status, whether a job.failed went
    out for this run, and since when it is stuck (None: it is not)."""

    __tablename__ = "notify_workflows"

    workflow_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    status: Mapped[str | None] = mapped_column(String(16))
    job_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    stuck_since: Mapped[datetime | None]


class Notification(Base):
    """One message for one target, from due to delivered (or failed): the queue and the log."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_due", "status", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    event: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[int | None] = mapped_column(BigId)
    jobid: Mapped[int | None]
    target: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    # One entry per attempt: {"at", "outcome" (HTTP status or error), "ms"}.
    log: Mapped[list[Any]] = mapped_column(default=list)
