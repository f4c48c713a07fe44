"""The hub: committed events fan out to every live subscriber, in seq order.

`publish` never waits on a subscriber. Each subscriber has a bounded queue; one that falls
behind has its queue emptied and gets a single `resync` item instead, after which it must
catch up from the database (the feed replays `since=<seq>`). A slow browser therefore
costs ingest nothing and holds back no other subscriber.

Where the events come from depends on the backend (backends.py):

- memory://: this process is the only writer. The writer hands each committed batch to
  `publish`, already in seq order, and it goes straight to the subscribers.
- redis:// or postgresql://: other processes write to the same database. The database
  decides the order, so every process delivers what it reads from the events table: a
  pump reads the events after the last one it delivered, in seq order, whenever a notice
  says something was committed (from this process's writer, or from another process
  through the backend). Notices that arrive while a pass runs ask for one more pass, so a
  burst costs a query per pass, not per event. A notice is sent only after its commit and
  the pump clears its flag before it reads, so an event that commits during a pass is read
  by the next one. This relies on seqs becoming visible in seq order (store/sql.py).

A subscriber whose connection can take frames at once (`Subscription.write_directly`; the
feed gives one under uvicorn, routes/frames.py) and that is idle, its queue empty and its
feed waiting on it, gets its events written by the hub itself: one write for all of a
batch's events for it, with no task woken and no turn taken. At a thousand subscribers
that is most of what an event costs (benchmarks/README.md, "Fan-out"). These writes start
on the pass after the commit, so the acknowledgements go first, and a pass makes at most
`DIRECT_PER_PASS` of them, so a request that comes meanwhile waits for a few hundred µs at
most, not for the whole fan-out. Everything else goes through the queue as before: a
subscriber with something queued or in hand, or whose connection is paused or closing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import orjson

from ..status import is_workflow_level
from .backends import BACKOFF_FIRST, BACKOFF_MAX, Backend, MemoryBackend
from .subscription import FeedItem, Subscription
from .turns import Turns

log = logging.getLogger(__name__)


# Subscribers the hub writes to in one pass of the event loop; the rest wait for the next
# passes, in order. A write costs a few µs here (benchmarks/README.md, "Fan-out").
DIRECT_PER_PASS = 128


def _item(message: dict[str, Any]) -> FeedItem:
    data = orjson.dumps(message)
    return FeedItem(
        message["seq"], message.get("workflow_id"), message["type"], data.decode(), data
    )


class EventLog(Protocol):
    """The events table, as the pump reads it."""

    async def head(self) -> int: ...
    async def after(self, seq: int, limit: int) -> list[dict[str, Any]]: ...


class Hub:
    """Subscribers to everything get workflow-level events (workflow.*); subscribers to
    one workflow get all of its events (workflow.*, job.updated, rule.updated)."""

    # A pump pass also runs after this long without any notice: a safety net for a notice
    # that never came (a process killed between its commit and its announcement).
    idle_pump_seconds = 30.0
    page = 1000
    retry_first, retry_max = BACKOFF_FIRST, BACKOFF_MAX

    def __init__(
        self,
        backend: Backend | None = None,
        queue_size: int = 1000,
        events: EventLog | None = None,
    ) -> None:
        self.backend: Backend = backend or MemoryBackend()
        if self.backend.crosses_processes and events is None:
            raise ValueError(f"the {self.backend.name} backend needs the events table to read")
        self.queue_size = queue_size
        self.turns = Turns()  # one pace for all of this process's subscribers
        self._events = events
        self._everything: set[Subscription] = set()
        self._by_workflow: dict[int, set[Subscription]] = {}
        # Told the number of subscribers whenever it changes (the metrics' gauge).
        self.on_count: Callable[[int], None] | None = None
        self._none_left: asyncio.Event | None = None  # set when the last subscriber leaves
        self.delivered_seq = 0  # the last event handed to subscribers
        # The highest seq noticed since the last pass; None after a "maybe missed some".
        self._noticed: int | None = 0
        self._committed = 0  # the last seq this process's writer committed
        self._announced = 0  # ... and told the other processes about
        # Each subscriber's share of the committed batches not yet delivered, in seq order,
        # and the subscribers in the order their shares came: a subscriber still waiting when
        # another batch comes gets both in one write.
        self._shares: dict[Subscription, list[FeedItem]] = {}
        self._in_line: deque[Subscription] = deque()
        self._delivering = False  # a pass of `_deliver` is due
        self._pump_wanted = asyncio.Event()
        self._announce_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        crossing = self.backend.crosses_processes or self.backend.may_cross_later
        if self._events is None or not crossing:
            return
        self.delivered_seq = await self._events.head()
        await self.backend.start(self.notice)
        self._tasks = [
            asyncio.create_task(self._pump_forever(), name="panoptes-pump"),
            asyncio.create_task(self._announce_forever(), name="panoptes-announce"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._shares.clear()
        self._in_line.clear()
        if self._committed > self._announced:  # the writer's last commits, on the way out
            try:
                await asyncio.wait_for(self.backend.announce(self._committed), 2.0)
            except Exception as exc:
                log.warning("broadcast: could not announce seq %d: %s", self._committed, exc)
        await self.backend.stop()

    @property
    def healthy(self) -> bool:
        """Whether live events from other processes reach this one (always, for memory)."""
        return self.backend.connected

    @property
    def status(self) -> dict[str, Any]:
        return {
            "backend": self.backend.name,
            "connected": self.backend.connected,
            "subscribers": self.subscriber_count,
            "delivered_seq": self.delivered_seq,
        }

    def end_all(self) -> None:
        """The server is stopping: every subscriber closes its connection now, instead of
        holding shutdown up until the grace period runs out."""
        for subscription in self._everything:
            subscription.end()
        for group in self._by_workflow.values():
            for subscription in group:
                subscription.end()

    async def all_gone(self) -> None:
        """Return once the last subscriber has left (callers bound the wait)."""
        if self.subscriber_count:
            if self._none_left is None or self._none_left.is_set():
                self._none_left = asyncio.Event()  # one for every caller waiting now
            await self._none_left.wait()

    @property
    def subscriber_count(self) -> int:
        return len(self._everything) + sum(len(s) for s in self._by_workflow.values())

    @contextmanager
    def subscribe(self, workflow_id: int | None = None) -> Iterator[Subscription]:
        """Receive every workflow-level event (None) or all of one workflow's, while inside."""
        subscription = Subscription(workflow_id, self.queue_size, self.turns)
        if workflow_id is None:
            self._everything.add(subscription)
        else:
            self._by_workflow.setdefault(workflow_id, set()).add(subscription)
        self._counted()
        try:
            yield subscription
        finally:
            self._remove(subscription)

    def _remove(self, subscription: Subscription) -> None:
        if subscription.workflow_id is None:
            self._everything.discard(subscription)
        else:
            group = self._by_workflow.get(subscription.workflow_id)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._by_workflow[subscription.workflow_id]
        self._counted()

    def _counted(self) -> None:
        if self._none_left is not None and not self.subscriber_count:
            self._none_left.set()
        if self.on_count is not None:
            self.on_count(self.subscriber_count)

    async def publish(self, messages: list[dict[str, Any]]) -> None:
        """Called by the writer after commit with the batch's events, in seq order."""
        if not messages:
            return
        if not self.backend.crosses_processes:
            self._fan_out(messages)
            return
        self._committed = max(self._committed, messages[-1]["seq"])
        self._announce_wanted.set()
        self.notice(self._committed)

    def notice(self, seq: int | None) -> None:
        """Events up to `seq` are committed somewhere (None: maybe missed some; look)."""
        if seq is None:
            self._noticed = None
        elif self._noticed is not None:
            self._noticed = max(self._noticed, seq)
        if seq is None or seq > self.delivered_seq:
            self._pump_wanted.set()

    async def _pump_forever(self) -> None:
        delay = self.retry_first
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._pump_wanted.wait(), self.idle_pump_seconds)
            self._pump_wanted.clear()
            try:
                await self._pump()
            except Exception as exc:
                log.warning("broadcast: reading new events failed (%s); retrying", exc)
                self._pump_wanted.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                delay = self.retry_first

    async def _pump(self) -> None:
        """One pass: deliver every event committed after the last one delivered."""
        assert self._events is not None
        if not self.backend.crosses_processes:
            return  # alone on an SQLite file (so far): publish delivers directly
        if not self.subscriber_count:
            # Nobody to deliver to: move past what was committed without reading it. A
            # subscriber that comes later reads the head itself after subscribing (feed.py),
            # so it gets everything after this point from the next pass.
            noticed, self._noticed = self._noticed, 0
            head = noticed if noticed is not None else await self._events.head()
            if not self.subscriber_count:  # still nobody, after the query
                self.delivered_seq = max(self.delivered_seq, head)
                return
        while True:
            messages = await self._events.after(self.delivered_seq, self.page)
            if messages:
                self._fan_out(messages)
            if len(messages) < self.page:
                return

    async def _announce_forever(self) -> None:
        delay = self.retry_first
        while True:
            await self._announce_wanted.wait()
            self._announce_wanted.clear()
            seq = self._committed
            if seq <= self._announced:
                continue
            try:
                await self.backend.announce(seq)
            except Exception as exc:
                # The listener already reports the outage; say it once here, not per retry.
                level = logging.WARNING if delay == self.retry_first else logging.DEBUG
                log.log(level, "broadcast: could not announce seq %d (%s); retrying", seq, exc)
                self._announce_wanted.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            else:
                self._announced = seq
                delay = self.retry_first

    def _fan_out(self, messages: list[dict[str, Any]]) -> None:
        """Give each message to whoever subscribed to it, encoded once, and only if anyone
        did: most job events of a busy server have no subscriber at all. Each subscriber
        gets its share at once, from the next passes of the loop: its share of this batch
        and of any before it still waiting."""
        shares = self._shares
        in_line = self._in_line
        for message in messages:
            everyone = self._everything if is_workflow_level(message["type"]) else ()
            group = self._by_workflow.get(message.get("workflow_id") or -1, ())
            if everyone or group:
                item = _item(message)
                for subscription in (*everyone, *group):
                    share = shares.get(subscription)
                    if share is None:
                        shares[subscription] = [item]
                        in_line.append(subscription)
                    else:
                        share.append(item)
        self.delivered_seq = messages[-1]["seq"]
        if in_line:
            self._deliver_soon()

    def _deliver_soon(self) -> None:
        if not self._delivering:
            self._delivering = True
            asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        """One pass's worth of the shares waiting, oldest first."""
        self._delivering = False
        shares, in_line = self._shares, self._in_line
        for _ in range(min(DIRECT_PER_PASS, len(in_line))):
            subscription = in_line.popleft()
            subscription.deliver(shares.pop(subscription))
        if in_line:
            self._deliver_soon()
