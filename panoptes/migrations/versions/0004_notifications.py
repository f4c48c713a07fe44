"""Notifications (issue 14): the notifier's cursor in the event log, what it last told
about each workflow, and the queue of messages to deliver, which is also their log.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A database made with create_all by a development build has them already.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "notifications" in present:
        return
    op.create_table(
        "notifier_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "notify_workflows",
        sa.Column("workflow_id", BigId, autoincrement=False, nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("job_failed", sa.Boolean(), nullable=False),
        sa.Column("stuck_since", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("workflow_id"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", BigId, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("workflow_id", BigId, nullable=True),
        sa.Column("jobid", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("log", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_due", table_name="notifications")
    for table in ("notifications", "notify_workflows", "notifier_state"):
        op.drop_table(table)
