"""Workflows count their failed jobs and keep the client's plan.

- workflows.jobs_failed: jobs whose latest attempt failed (0 for every existing workflow;
  a run still going counts its next failures).
- workflows.plan: jobs planned per rule, from Snakemake 7/8's run_info (null until sent).
- workflows.rules_seen: the rules whose jobs came, in order (for a run's readable label).

A database that a development build made with create_all already has the columns (it is
stamped 0001 first): they are added only where missing.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("workflows")}
    with op.batch_alter_table("workflows") as batch:
        if "jobs_failed" not in present:
            batch.add_column(
                sa.Column("jobs_failed", sa.Integer(), nullable=False, server_default="0")
            )
        if "plan" not in present:
            batch.add_column(sa.Column("plan", sa.JSON(none_as_null=True), nullable=True))
        if "rules_seen" not in present:
            batch.add_column(sa.Column("rules_seen", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workflows") as batch:
        batch.drop_column("rules_seen")
        batch.drop_column("plan")
        batch.drop_column("jobs_failed")
