"""Feeds closed at once on SIGINT/SIGTERM, under whatever server runs the app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


# How long the server's own handling of a signal waits for the feeds to have said 1001 (a
# server such as uvicorn would otherwise close them first, with 1012).
FEEDS_CLOSE_SECONDS = 2.0


def close_feeds_on_signals(hub: Any) -> None:
    """On SIGINT/SIGTERM close every feed connection at once (1001, going away), under
    whatever server runs the app, and then let the server's own handling of the signal go on.

    The server's handler stays in place: this one is put in front of it (signal.signal) and
    calls it once the feeds have gone, or after FEEDS_CLOSE_SECONDS; a second signal calls it
    at once. asyncio's handlers run regardless, since the signal also reaches the loop
    through its wakeup file descriptor. Only in the main thread, where signal handlers live."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        signal.signal(sig, _chained(signal.getsignal(sig), loop, hub))


Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _chained(
    previous: Handler, loop: asyncio.AbstractEventLoop, hub: Any
) -> Callable[[int, FrameType | None], None]:
    waiting: set[int] = set()
    tasks: set[asyncio.Task[None]] = set()

    def rest(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            # Nobody handled it before: do what the default would (end the process).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    async def feeds_first(signum: int, frame: FrameType | None) -> None:
        hub.end_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FEEDS_CLOSE_SECONDS):
                await hub.all_gone()
        if signum in waiting:
            waiting.discard(signum)
            rest(signum, frame)

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum in waiting or not loop.is_running():
            waiting.discard(signum)
            rest(signum, frame)  # a second signal: no more waiting
            return
        waiting.add(signum)
        loop.call_soon_threadsafe(start, signum, frame)

    def start(signum: int, frame: FrameType | None) -> None:
        task = loop.create_task(feeds_first(signum, frame))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return handler
