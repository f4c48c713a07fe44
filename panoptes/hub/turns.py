"""Turns: feed subscribers send a few at a time, so acknowledgements never wait behind them.

The server is one event loop. A committed event wakes every subscriber of it at once, and
each sends its frame in one go (the servers' send paths do not suspend): with a thousand
subscribers, one pass of the loop would run a thousand sends before it got back to the
client whose POST caused the event, and every step of that POST's answer waits for such a
pass. So a subscriber takes a turn before it sends, and each pass of the loop grants at
most `per_pass` sends' worth of turns; the others wait, in the order they asked, for the
next passes. A subscriber with several events queued takes one turn for all of them (up to
the feed's SENDS_IN_A_ROW), counted as that many sends. A pass then holds at most about
that many sends beside whatever else is ready (ingest, pages), so
ingest keeps its speed while the feed catches up as the CPU allows. What a subscriber
cannot send in time piles up in its queue, which ends in a resync (fanout.py), never in a
delay for anyone else.
"""

from __future__ import annotations

import asyncio
from collections import deque

# Sends per pass of the event loop: each costs about 0.05 ms of CPU here (benchmarks/README).
PER_PASS = 4


class Turns:
    def __init__(self, per_pass: int = PER_PASS) -> None:
        self.per_pass = per_pass
        self._granted = 0  # in this pass
        self._waiting: deque[tuple[asyncio.Future[None], int]] = deque()
        self._refill_due = False
        self._paused = False

    def writing(self, busy: bool) -> None:
        """Told by the writer when a write batch starts (True) and ends (False): no turns
        are granted meanwhile. The batch then has the CPU, and the interpreter, to itself:
        a loop busy sending would hold the GIL the writer's thread needs."""
        self._paused = busy
        if not busy and self._waiting:
            self._refill_soon()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def take(self, sends: int = 1) -> None:
        """Wait for this subscriber's turn to send `sends` messages in a row (at once, if this
        pass has turns left). A turn for several counts as that many: the pass that grants it
        grants no more once they are used up."""
        if self._granted < self.per_pass and not self._waiting and not self._paused:
            self._granted += sends
            self._refill_soon()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, sends))
        self._refill_soon()
        await future  # cancelled: the refill skips it

    def _refill_soon(self) -> None:
        if not self._refill_due:
            self._refill_due = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        """At the next pass: new turns, first to those who waited longest."""
        self._refill_due = False
        self._granted = 0
        if self._paused:
            return  # writing() asks again
        while self._waiting and self._granted < self.per_pass:
            future, sends = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                self._granted += sends
        if self._waiting or self._granted:
            self._refill_soon()
