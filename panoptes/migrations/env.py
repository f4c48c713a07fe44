"""Alembic's entry point: run the revisions on the connection panoptes hands over.

There is no alembic.ini: `panoptes db upgrade` and the server's start (see __init__.py) build
the Alembic configuration in code and pass an open connection in `attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from panoptes.models import Base


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run panoptes migrations with `panoptes db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # On SQLite too: panoptes opens the transaction itself with BEGIN (db.py).
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
