"""Feeds closed at once on SIGINT/SIGTERM, under whatever server runs the app."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def close_feeds_on_signals(hub: Any) -> None:
    """On SIGINT/SIGTERM close every feed connection at once, under whatever server runs the
    app, and then let the server's own handling of the signal go on.

    The server's handler stays in place: this one is put in front of it (signal.signal), and
    asyncio's handlers still run, since the signal also reaches the loop through its wakeup
    file descriptor. Only in the main thread, where signal handlers live."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        signal.signal(
            sig, _chained(signal.getsignal(sig), lambda: loop.call_soon_threadsafe(hub.end_all))
        )


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _chained(
    previous: Handler, first: Callable[[], object]
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        first()
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            # Nobody handled it before: do what the default would (end the process).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler
