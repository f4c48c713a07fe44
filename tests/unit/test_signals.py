"""A signal first closes the feeds, then goes on to the server's own handler
(panoptes/serving/signals.py): so that uvicorn run as `uvicorn --factory` cannot close a feed
with 1012 before the app has said 1001. Real signals, raised in this (the main) thread."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from panoptes.hub import SHUTDOWN, Hub
from panoptes.serving import signals


@contextmanager
def handlers_restored() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in signals.SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


async def test_the_servers_handler_runs_once_the_feeds_have_gone() -> None:
    hub = Hub()
    seen: list[str] = []

    def servers_handler(signum: int, frame: FrameType | None) -> None:
        seen.append(f"server heard {signal.Signals(signum).name}")

    async def feed() -> None:
        with hub.subscribe() as subscription:
            assert await subscription.get() is SHUTDOWN
            await asyncio.sleep(0.05)  # saying 1001 takes a while
            seen.append("feed closed")

    with handlers_restored():
        signal.signal(signal.SIGTERM, servers_handler)
        signals.close_feeds_on_signals(hub)
        following = asyncio.create_task(feed())
        await asyncio.sleep(0)
        signal.raise_signal(signal.SIGTERM)
        assert seen == []  # not at once: the feed has not closed yet
        await following
        for _ in range(10):
            await asyncio.sleep(0.01)
            if len(seen) == 2:
                break
    assert seen == ["feed closed", "server heard SIGTERM"]


async def test_a_second_signal_goes_to_the_server_at_once() -> None:
    hub = Hub()
    heard: list[int] = []
    with handlers_restored():
        signal.signal(signal.SIGINT, lambda signum, frame: heard.append(signum))
        signals.close_feeds_on_signals(hub)
        with hub.subscribe():  # a feed that never leaves
            signal.raise_signal(signal.SIGINT)
            await asyncio.sleep(0.05)
            assert heard == []
            signal.raise_signal(signal.SIGINT)
            assert heard == [signal.SIGINT]


async def test_a_feed_that_does_not_close_holds_the_server_up_only_so_long() -> None:
    hub = Hub()
    heard: list[int] = []
    signals.FEEDS_CLOSE_SECONDS, before = 0.1, signals.FEEDS_CLOSE_SECONDS
    try:
        with handlers_restored():
            signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
            signals.close_feeds_on_signals(hub)
            with hub.subscribe():
                signal.raise_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                assert heard == [signal.SIGTERM]
    finally:
        signals.FEEDS_CLOSE_SECONDS = before


async def test_everyone_waiting_for_the_feeds_to_go_hears_that_they_have() -> None:
    """The server's shutdown and the signal handler both wait for the last feed to leave."""
    hub = Hub()
    with hub.subscribe():
        waiters = [asyncio.create_task(hub.all_gone()) for _ in range(2)]
        await asyncio.sleep(0)
    async with asyncio.timeout(1):
        await asyncio.gather(*waiters)
