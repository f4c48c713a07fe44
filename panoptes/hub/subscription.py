"""A feed subscriber's side of the hub (fanout.py): the items it is sent, its bounded queue,
and, where its connection allows, the writer the hub uses instead of the queue while it is
idle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .turns import Turns


@dataclass(frozen=True)
class FeedItem:
    seq: int
    workflow_id: int | None
    type: str
    text: str  # the message as JSON, encoded once for all subscribers
    data: bytes  # the same, as UTF-8: what a frame holds (routes/frames.py)


RESYNC = FeedItem(seq=-1, workflow_id=None, type="resync", text="", data=b"")
# The server is stopping: the subscriber should say goodbye and end.
SHUTDOWN = FeedItem(seq=-1, workflow_id=None, type="shutdown", text="", data=b"")


class FrameWriter(Protocol):
    def write(self, payloads: Sequence[bytes]) -> bool:
        """Write one message per payload, in order and at once; False, with nothing
        written, when the connection cannot take them now."""
        ...


class Subscription:
    """One subscriber's bounded queue of feed items. It knows nothing of the hub: the hub's
    `subscribe` context adds it and takes it away again."""

    def __init__(
        self, workflow_id: int | None, queue_size: int, turns: Turns | None = None
    ) -> None:
        self.workflow_id = workflow_id
        self._queue: asyncio.Queue[FeedItem] = asyncio.Queue(queue_size)
        self._turns = turns or Turns()
        self.lagged = 0
        self.last = 0  # the seq of the last event this subscriber was sent
        self._writer: FrameWriter | None = None
        # Waiting on an empty queue with nothing in hand: events may be written directly.
        self._idle = False
        self._written = 0  # writes made directly, so a wait they went past is no silence

    def write_directly(self, writer: FrameWriter) -> None:
        """From now on, events that find this subscriber idle go straight to `writer`."""
        self._writer = writer

    def deliver(self, items: list[FeedItem]) -> None:
        """Write `items` (in seq order) directly if this subscriber is idle and its
        connection takes them; else queue them."""
        if self._idle and self._writer is not None:
            fresh = [item for item in items if item.seq > self.last]
            if not fresh:
                return
            if self._writer.write([item.data for item in fresh]):
                self.last = fresh[-1].seq
                self._written += 1
                return
        for item in items:
            self.offer(item)

    def offer(self, item: FeedItem) -> None:
        self._idle = False  # what comes after this must wait behind it
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.lagged += 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    def end(self) -> None:
        """Tell the subscriber to finish, ahead of anything it has not taken yet."""
        self._idle = False
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(SHUTDOWN)

    async def get(self) -> FeedItem:
        return await self._queue.get()

    async def next_few(self, timeout: float, most: int) -> list[FeedItem]:  # noqa: ASYNC109
        """Up to `most` items, as many as are queued once the first has come, on one turn
        for all of them (turns.py); [] if nothing came within `timeout` seconds, neither
        queued nor written directly. A busy feed sends what piled up in a row instead of
        waking once for every item. While this waits, events may be written directly."""
        while self._queue.empty():
            written = self._written
            self._idle = True
            try:
                async with asyncio.timeout(timeout):  # no task per wait, as wait_for makes
                    first = await self._queue.get()
                break
            except TimeoutError:
                if self._written == written:
                    return []
            finally:
                self._idle = False
        else:
            first = self._queue.get_nowait()
        items = [first]
        while len(items) < most and not self._queue.empty():
            items.append(self._queue.get_nowait())
        await self._turns.take(len(items))
        return items

    async def take_turn(self) -> None:
        """Wait for a turn to send something not from the queue (a replay)."""
        await self._turns.take()

    def __aiter__(self) -> AsyncIterator[FeedItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[FeedItem]:
        while True:
            yield await self._queue.get()
