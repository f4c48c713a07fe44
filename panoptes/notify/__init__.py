"""Notifications (issue 14): webhooks and email on finished, failed and stuck runs, off the
ingest path, through a queue in the database (notifier.py has the picture)."""

from .notifier import Notifier, Write

__all__ = ["Notifier", "Write"]
