"""Broadcast hub: committed changes fan out to every live subscriber.

`publish` never waits on a subscriber. Each subscriber has a bounded queue; one that falls
behind has its queue emptied and gets a single `resync` item instead, after which it must
catch up from the database (the feed replays `since=<seq>`). A slow browser therefore
costs ingest nothing and holds back no other subscriber.

A backend carries published batches between processes (see `Backend`); the memory backend
delivers in-process only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedItem:
    seq: int
    workflow_id: int | None
    type: str
    text: str  # the message as JSON, encoded once for all subscribers


RESYNC = FeedItem(seq=-1, workflow_id=None, type="resync", text="")


class Backend(Protocol):
    """Carries batches of encoded messages to every process (this one included)."""

    async def start(self, deliver: Callable[[list[str]], None]) -> None: ...
    async def publish(self, texts: list[str]) -> None: ...
    async def stop(self) -> None: ...


class MemoryBackend:
    def __init__(self) -> None:
        self._deliver: Callable[[list[str]], None] | None = None

    async def start(self, deliver: Callable[[list[str]], None]) -> None:
        self._deliver = deliver

    async def publish(self, texts: list[str]) -> None:
        if self._deliver is not None:
            self._deliver(texts)

    async def stop(self) -> None:
        self._deliver = None


class Subscription:
    def __init__(self, hub: Hub, workflow_id: int | None, queue_size: int) -> None:
        self.hub = hub
        self.workflow_id = workflow_id
        self._queue: asyncio.Queue[FeedItem] = asyncio.Queue(queue_size)
        self.lagged = 0

    def offer(self, item: FeedItem) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagged += 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    async def get(self) -> FeedItem:
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[FeedItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[FeedItem]:
        while True:
            yield await self._queue.get()

    def close(self) -> None:
        self.hub._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """Subscribers to everything get workflow-level events (workflow.*); subscribers to
    one workflow get all of its events (workflow.*, job.updated, rule.updated)."""

    def __init__(self, backend: Backend | None = None, queue_size: int = 1000) -> None:
        self.backend: Backend = backend or MemoryBackend()
        self.queue_size = queue_size
        self._everything: set[Subscription] = set()
        self._by_workflow: dict[int, set[Subscription]] = {}

    async def start(self) -> None:
        await self.backend.start(self._deliver)

    async def close(self) -> None:
        await self.backend.stop()

    @property
    def subscriber_count(self) -> int:
        return len(self._everything) + sum(len(s) for s in self._by_workflow.values())

    def subscribe(self, workflow_id: int | None = None) -> Subscription:
        subscription = Subscription(self, workflow_id, self.queue_size)
        if workflow_id is None:
            self._everything.add(subscription)
        else:
            self._by_workflow.setdefault(workflow_id, set()).add(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription.workflow_id is None:
            self._everything.discard(subscription)
            return
        group = self._by_workflow.get(subscription.workflow_id)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._by_workflow[subscription.workflow_id]

    async def publish(self, messages: list[dict[str, Any]]) -> None:
        """Called by the writer after commit with the batch's events, in seq order."""
        texts = [orjson.dumps(message).decode() for message in messages]
        await self.backend.publish(texts)

    def _deliver(self, texts: list[str]) -> None:
        for text in texts:
            message = orjson.loads(text)
            item = FeedItem(message["seq"], message.get("workflow_id"), message["type"], text)
            if item.type.startswith("workflow."):
                for subscription in self._everything:
                    subscription.offer(item)
            for subscription in self._by_workflow.get(item.workflow_id or -1, ()):
                subscription.offer(item)
