"""The first schema: workflows, jobs and events; converts a panoptes 1.x database in place.

On an empty database this creates the three tables. On a panoptes 1.x database (tables
`workflows` with `done`/`total`, `workflow_jobs`, `workflow_messages`, `users`) it sets the old
tables aside, creates the new ones, copies everything over and drops the old tables, all in
the one transaction of the upgrade (see panoptes/migrations/panoptes1.py for the details):

- workflows keep their id, name and counts (`done`/`total` become `jobs_done`/`jobs_total`);
  `completed_at` becomes `finished_at`. 1.x wrote naive *local* times; they are read as the
  local time of the machine running the upgrade (its TZ) and stored in UTC.
- statuses: Running, Done, Error, Cancelled and Stale stay what they are; "No Execution" (a run
  that had nothing to do) becomes Done; anything else becomes Stale. Done, Error and Cancelled
  get a `finished_at` (1.x did not set one on Error: its last update is used).
- jobs keep id, jobid, rule (`name`), message (`msg`), shell command, status and times; the
  Python-repr columns input/output/log/wildcards are parsed with ast.literal_eval (a value that
  does not parse is kept as a one-element list of its text, or {} for wildcards). 1.x rows
  repeating a (workflow, jobid) (retries before 1.1.2) become one job with one attempt each.
- workflow_messages become events of type "legacy.message" with payload {"msg": <text>}.
- jobs and messages of workflows that no longer exist (1.x never enforced the foreign key) are
  dropped, as is the unused `users` table.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from panoptes.migrations import panoptes1

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Integer on SQLite so the key is the rowid alias; BIGINT elsewhere (as in models.py).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    legacy = panoptes1.set_aside(bind)
    workflows, jobs, events = _create_tables()
    if legacy is not None:
        panoptes1.convert(bind, legacy, workflows=workflows, jobs=jobs, events=events)
        panoptes1.drop(bind, legacy)


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("events")
    op.drop_table("workflows")


def _create_tables() -> tuple[sa.Table, sa.Table, sa.Table]:
    events = op.create_table(
        "events",
        sa.Column("seq", BigId, nullable=False),
        sa.Column("workflow_id", BigId, nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_workflow_seq", "events", ["workflow_id", "seq"])
    workflows = op.create_table(
        "workflows",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("jobs_done", sa.Integer(), nullable=False),
        sa.Column("jobs_total", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("workdir", sa.Text(), nullable=True),
        sa.Column("snakefile", sa.Text(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("last_job_info", sa.Integer(), nullable=True),
        sa.Column("last_digest", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_workflows_status_updated", "workflows", ["status", "updated_at"])
    jobs = op.create_table(
        "jobs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("workflow_id", BigId, nullable=False),
        sa.Column("jobid", sa.Integer(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("wildcards", sa.JSON(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.Column("shellcmd", sa.Text(), nullable=True),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("resources", sa.JSON(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("is_checkpoint", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow_id", "jobid", name="uq_jobs_workflow_jobid"),
    )
    op.create_index("ix_jobs_workflow_status", "jobs", ["workflow_id", "status"])
    op.create_index("ix_jobs_workflow_rule", "jobs", ["workflow_id", "rule"])
    return workflows, jobs, events
