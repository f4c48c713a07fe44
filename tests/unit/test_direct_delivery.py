"""The hub writes committed events straight to idle subscribers' connections (hub/fanout.py,
hub/subscription.py): one write per subscriber for its share of a batch, in seq order, only
while the subscriber waits on an empty queue, never ahead of anything queued, from the pass
after the commit and at most DIRECT_PER_PASS subscribers a pass."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from panoptes.hub import Hub, MemoryBackend, Subscription
from panoptes.hub.fanout import DIRECT_PER_PASS

from .test_turns import PassCounter


class Connection:
    """A FrameWriter that records what it was given, and can refuse (a paused transport)."""

    def __init__(self, counter: PassCounter | None = None, log: list[str] | None = None):
        self.writes: list[list[bytes]] = []
        self.at_pass: list[int] = []
        self.taking = True
        self.refusals = 0  # the next so many writes are refused
        self._counter = counter
        self._log = log

    def write(self, payloads: Sequence[bytes]) -> bool:
        if not self.taking or self.refusals:
            self.refusals = max(0, self.refusals - 1)
            return False
        self.writes.append(list(payloads))
        if self._counter is not None:
            self.at_pass.append(self._counter.passes)
        if self._log is not None:
            self._log.append("write")
        return True


def message(seq: int, workflow_id: int = 1) -> dict[str, Any]:
    return {"type": "workflow.updated", "seq": seq, "workflow_id": workflow_id}


async def passes(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def waiting(subscription: Subscription) -> asyncio.Task[Any]:
    """The feed's side: wait on the subscription (idle from the next pass on)."""
    task = asyncio.ensure_future(subscription.next_few(5.0, 8))
    await passes(1)
    return task


async def test_an_idle_subscriber_gets_its_share_of_a_batch_in_one_write() -> None:
    hub = Hub(MemoryBackend())
    connection = Connection()
    with hub.subscribe(None) as subscription:
        subscription.write_directly(connection)
        subscription.last = 1  # seq 1 was replayed already: not written again
        feed = await waiting(subscription)
        await hub.publish([message(1), message(2), message(3, workflow_id=2)])
        await passes()
        assert connection.writes == [[_data(2), _data(3, 2)]]
        assert subscription.last == 3
        assert not feed.done()  # the feed task was not woken: nothing queued
        feed.cancel()


def _data(seq: int, workflow_id: int = 1) -> bytes:
    return f'{{"type":"workflow.updated","seq":{seq},"workflow_id":{workflow_id}}}'.encode()


async def test_a_subscriber_that_is_not_waiting_gets_its_events_queued() -> None:
    hub = Hub(MemoryBackend())
    connection = Connection()
    with hub.subscribe(None) as subscription:
        subscription.write_directly(connection)
        await hub.publish([message(1)])  # the feed is busy (replaying, sending a ping ...)
        await passes()
        assert connection.writes == []
        items = await subscription.next_few(1.0, 8)
        assert [item.seq for item in items] == [1]


async def test_after_a_refused_write_what_follows_waits_behind_what_was_queued() -> None:
    hub = Hub(MemoryBackend())
    connection = Connection()
    with hub.subscribe(None) as subscription:
        subscription.write_directly(connection)
        feed = await waiting(subscription)
        connection.refusals = 1  # its transport is paused for the first, then takes more
        await hub.publish([message(1)])
        await hub.publish([message(2)])  # delivered in the same pass: may not overtake 1
        await passes()
        assert connection.writes == []
        assert [item.seq for item in await asyncio.wait_for(feed, 1)] == [1, 2]


async def test_the_acknowledgements_go_first_and_a_pass_writes_to_so_many_at_most() -> None:
    hub = Hub(MemoryBackend())
    counter = PassCounter()
    count = DIRECT_PER_PASS * 2 + 10
    happened: list[str] = []
    connections = [Connection(counter, happened) for _ in range(count)]
    feeds = []
    with ExitStack() as stack:
        subscriptions = [stack.enter_context(hub.subscribe(None)) for _ in range(count)]
        for subscription, connection in zip(subscriptions, connections, strict=True):
            subscription.write_directly(connection)
            feeds.append(await waiting(subscription))
        # As the writer does: the batch's answers are set (their tasks woken), then the
        # events are published. Written from publish itself, they would go out first.
        asyncio.get_running_loop().call_soon(happened.append, "acknowledged")
        await hub.publish([message(1)])
        await passes(10)
        counter.stop()
        assert all(connection.writes == [[_data(1)]] for connection in connections)
        assert happened.index("acknowledged") == 0 and len(happened) == count + 1
        at = [connection.at_pass[0] for connection in connections]
        per_pass = {p: at.count(p) for p in set(at)}
        assert sorted(per_pass.values()) == [10, DIRECT_PER_PASS, DIRECT_PER_PASS]
        assert not any(feed.done() for feed in feeds)
        for feed in feeds:
            feed.cancel()


async def test_a_wait_that_direct_writes_went_past_is_not_taken_for_silence() -> None:
    """The feed pings after a wait with nothing sent; events written directly count."""
    hub = Hub(MemoryBackend())
    connection = Connection()
    with hub.subscribe(None) as subscription:
        subscription.write_directly(connection)
        feed = asyncio.ensure_future(subscription.next_few(0.5, 8))
        await asyncio.sleep(0.25)
        await hub.publish([message(1)])
        await asyncio.sleep(0.35)  # past the first timeout, inside the second
        assert connection.writes == [[_data(1)]] and not feed.done()
        assert await asyncio.wait_for(feed, 2) == []  # then a quiet timeout: a ping is due


async def test_batches_that_come_before_a_subscriber_is_written_to_go_in_one_write() -> None:
    hub = Hub(MemoryBackend())
    connection = Connection()
    with hub.subscribe(None) as subscription:
        subscription.write_directly(connection)
        feed = await waiting(subscription)
        await hub.publish([message(1)])
        await hub.publish([message(2), message(3)])  # before the pass that delivers 1
        await passes()
        assert connection.writes == [[_data(1), _data(2), _data(3)]]
        feed.cancel()
