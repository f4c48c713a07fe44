"""Feed subscribers send in turns: a few per pass of the event loop, none while a write
batch runs (panoptes/hub/turns.py)."""

from __future__ import annotations

import asyncio

from panoptes.hub import FeedItem, Subscription
from panoptes.hub.turns import Turns


class PassCounter:
    """Counts passes of the event loop: a callback that schedules itself for the next."""

    def __init__(self) -> None:
        self.passes = 0
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.passes += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_each_pass_grants_at_most_per_pass_turns_in_the_order_asked() -> None:
    turns = Turns(per_pass=3)
    counter = PassCounter()
    granted: list[tuple[int, int]] = []  # (taker, pass)

    async def taker(number: int) -> None:
        await turns.take()
        granted.append((number, counter.passes))

    await asyncio.gather(*(taker(n) for n in range(10)))
    counter.stop()
    assert [number for number, _ in granted] == list(range(10))
    per_pass: dict[int, int] = {}
    for _, at in granted:
        per_pass[at] = per_pass.get(at, 0) + 1
    assert max(per_pass.values()) == 3
    assert len(per_pass) == 4  # 3 + 3 + 3 + 1


async def test_no_turn_is_granted_while_the_writer_writes() -> None:
    turns = Turns(per_pass=3)
    turns.writing(True)
    taken = asyncio.ensure_future(turns.take())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not taken.done() and turns.waiting == 1
    turns.writing(False)
    await asyncio.wait_for(taken, 1)


async def test_a_cancelled_waiter_costs_nobody_a_turn() -> None:
    turns = Turns(per_pass=1)
    turns.writing(True)
    first = asyncio.ensure_future(turns.take())
    second = asyncio.ensure_future(turns.take())
    await asyncio.sleep(0)
    assert turns.waiting == 2
    first.cancel()
    turns.writing(False)
    await asyncio.sleep(0)  # the refill: the one turn goes to the second
    await asyncio.sleep(0)  # which then runs
    assert first.cancelled() and second.done()


async def test_a_turn_for_several_sends_counts_as_that_many() -> None:
    turns = Turns(per_pass=4)
    counter = PassCounter()
    granted: list[tuple[str, int]] = []

    async def taker(name: str, sends: int) -> None:
        await turns.take(sends)
        granted.append((name, counter.passes))

    # a: 3 sends, then b's 3 go past the pass's 4 (a turn is never split), c waits a pass.
    await asyncio.gather(taker("a", 3), taker("b", 3), taker("c", 1))
    counter.stop()
    passes = dict(granted)
    assert passes["a"] == passes["b"] < passes["c"]


async def test_a_subscriber_sends_what_piled_up_in_a_row_on_one_turn() -> None:
    turns = Turns(per_pass=8)
    subscription = Subscription(None, queue_size=50, turns=turns)
    items = [
        FeedItem(
            seq=n, workflow_id=None, type="workflow.updated", text=str(n), data=str(n).encode()
        )
        for n in range(12)
    ]
    for item in items:
        subscription.offer(item)
    first = await subscription.next_few(1.0, 8)
    assert first == items[:8]
    # One turn, counted as 8 sends: this pass has none left for anyone else (a take in it,
    # stepped by hand so that no pass goes by, has to wait).
    other = turns.take()
    other.send(None)  # suspends: StopIteration here would mean a turn was granted at once
    assert turns.waiting == 1
    other.close()
    assert await subscription.next_few(1.0, 8) == items[8:]
    assert await subscription.next_few(0.01, 8) == []  # nothing within the timeout
