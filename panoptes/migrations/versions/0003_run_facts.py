"""What plugin 1.0.0 sends: the run's host, user, Snakemake version and rule graph; a failed
job's log tails and exit status; a job's benchmark measurements (docs/wire.md).

Every column is nullable and stays null for existing rows and for clients that do not send
it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

WORKFLOW_COLUMNS = (
    ("host", sa.Text()),
    ("user", sa.Text()),
    ("snakemake_version", sa.Text()),
    ("client", sa.Text()),
    ("rulegraph", sa.JSON(none_as_null=True)),
)
JOB_COLUMNS = (
    ("logs", sa.JSON(none_as_null=True)),
    ("exit_code", sa.Integer()),
    ("benchmark", sa.JSON(none_as_null=True)),
)


def _add(table: str, columns: tuple[tuple[str, Any], ...]) -> None:
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}
    with op.batch_alter_table(table) as batch:
        for name, kind in columns:
            if name not in present:
                batch.add_column(sa.Column(name, kind, nullable=True))


def upgrade() -> None:
    _add("workflows", WORKFLOW_COLUMNS)
    _add("jobs", JOB_COLUMNS)


def downgrade() -> None:
    for table, columns in (("jobs", JOB_COLUMNS), ("workflows", WORKFLOW_COLUMNS)):
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(columns):
                batch.drop_column(name)
