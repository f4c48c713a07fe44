"""The only write side: the writer's queue and group commit (writer.py), one operation's
view of the open transaction (tx.py), and the SQL under them, SQLite's and PostgreSQL's
specifics included (sql.py). Nothing here imports the read side."""

from .sql import Preload
from .tx import Changes, Tx
from .writer import Writer

__all__ = ["Changes", "Preload", "Tx", "Writer"]
