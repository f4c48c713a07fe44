"""Live events to subscribers: the fan-out in this process (fanout.py, subscription.py)
and the backends that carry "new events committed" notices between processes
(backends.py)."""

from .backends import Backend, MemoryBackend, backend_for
from .fanout import EventLog, Hub
from .subscription import RESYNC, SHUTDOWN, FeedItem, FrameWriter, Subscription

__all__ = [
    "RESYNC",
    "SHUTDOWN",
    "Backend",
    "EventLog",
    "FeedItem",
    "FrameWriter",
    "Hub",
    "MemoryBackend",
    "Subscription",
    "backend_for",
]
