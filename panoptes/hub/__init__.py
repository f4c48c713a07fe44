"""Live events to subscribers: the fan-out in this process (fanout.py) and the backends
that carry "new events committed" notices between processes (backends.py)."""

from .backends import Backend, MemoryBackend, backend_for
from .fanout import RESYNC, SHUTDOWN, EventLog, FeedItem, Hub, Subscription

__all__ = [
    "RESYNC",
    "SHUTDOWN",
    "Backend",
    "EventLog",
    "FeedItem",
    "Hub",
    "MemoryBackend",
    "Subscription",
    "backend_for",
]
